// The upstream check behind /readyz: a TCP connect, or an HTTP GET of readiness.http_path,
// every readiness.interval. It only reports pass or fail; the Server decides what that means.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <string>

#include "config.hpp"

namespace ebb {

class ReadinessCheck {
 public:
  using Report = std::function<void(bool ok, const char* why)>;

  ReadinessCheck(uv_loop_t* loop, Report report);
  ~ReadinessCheck();
  // (Re)starts checking with these settings; the first check runs at once.
  void start(const Config& cfg, const sockaddr_storage& upstream, std::string host_header);
  void stop();
  void close();  // for exit: stop and close handles

 private:
  class Probe;
  void run_one();
  void finish(Probe* p, bool ok, const char* why);

  uv_loop_t* loop_;
  Report report_;
  uv_timer_t timer_;
  bool closed_ = false;
  UpstreamCheck kind_ = UpstreamCheck::kTcp;
  std::string request_;
  std::uint64_t interval_ = 1000;
  std::uint64_t timeout_ = 1000;
  sockaddr_storage addr_{};
  Probe* current_ = nullptr;
};

}  // namespace ebb
