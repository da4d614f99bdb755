// The admin listener: /healthz, /readyz, /metrics and /drain for the kubelet, Prometheus and
// preStop hooks. It stays up until the process exits, so probes answer during a drain.
#pragma once

#include <llhttp.h>
#include <uv.h>

#include <string>

#include "config.hpp"
#include "http/message.hpp"

namespace ebb {

// What the admin endpoints ask of the lifecycle (implemented by the Server).
class AdminBackend {
 public:
  virtual ~AdminBackend() = default;
  virtual int readiness(std::string& reason) const = 0;  // 200 or 503
  virtual std::string metrics_text() = 0;
  virtual bool drained() const = 0;
  virtual void start_drain(const char* trigger) = 0;
  virtual std::string drain_summary() const = 0;  // JSON
  virtual void count_refused() = 0;
  virtual const Config& cfg() const = 0;
};

class AdminConn;

class AdminServer {
 public:
  AdminServer(uv_loop_t* loop, AdminBackend& backend);
  int listen(const sockaddr_storage& addr);
  std::string bound_address() const;
  void answer_drain_waiters();  // the drain finished
  void close_all();             // exit: the listener and every connection (after flushing)
  bool idle() const { return conns_ == nullptr; }

 private:
  friend class AdminConn;
  uv_loop_t* loop_;
  AdminBackend& backend_;
  uv_tcp_t listener_;
  bool listening_ = false;
  bool closing_ = false;
  AdminConn* conns_ = nullptr;
};

}  // namespace ebb
