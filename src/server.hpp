// The lifecycle: starting -> ready -> draining (propagation, then drain) -> drained -> exit.
// The Server owns the loop, the listeners, the Worker, the admin endpoints and the signals,
// and every transition happens here, driven by events: a signal, an admin call, a timer, the
// last connection closing.
#pragma once

#include <uv.h>

#include <memory>
#include <string>

#include "admin/admin.hpp"
#include "admin/readiness.hpp"
#include "config.hpp"
#include "proxy/worker.hpp"

namespace ebb {

enum class State { kStarting, kReady, kDraining, kDrained };
const char* state_name(State s);

class Server final : public WorkerObserver, public AdminBackend {
 public:
  Server(Config cfg, std::string config_path);
  ~Server() override;
  // Binds, serves until the lifecycle ends, and returns the exit code.
  int run();

  // WorkerObserver
  void on_connection_closed() override;
  bool probe(std::string_view path, int& status, std::string& body) override;
  // AdminBackend
  int readiness(std::string& reason) const override;
  std::string metrics_text() override;
  bool drained() const override { return state_ == State::kDrained; }
  void start_drain(const char* trigger) override;
  std::string drain_summary() const override;
  void count_refused() override { ++admin_refused_; }
  const Config& cfg() const override { return *cfg_; }

 private:
  void on_signal(int signum);
  void on_accept(int status);
  void apply_connection_cap();
  void on_check(bool ok, const char* why);
  void on_propagation_timer();
  void end_propagation();
  void on_drain_deadline();
  void check_drained();
  void finish_drain();
  void reload();
  void exit_with(int code);
  std::uint64_t requests_total() const;
  bool resolve_upstream(const Config& c, sockaddr_storage& addr, std::string& host);

  std::unique_ptr<Config> cfg_;
  std::string config_path_;
  uv_loop_t loop_;
  Worker worker_;
  AdminServer admin_;
  ReadinessCheck check_;
  uv_tcp_t listener_;
  uv_signal_t sigterm_, sigint_, sighup_;
  uv_timer_t phase_timer_;
  sockaddr_storage upstream_addr_{};
  std::string upstream_host_;

  State state_ = State::kStarting;
  bool upstream_ok_ = true;      // in ready: false after failure_threshold failed checks
  std::uint32_t failures_ = 0;
  bool listener_open_ = false;
  bool exit_when_drained_ = false;
  bool exiting_ = false;
  int exit_code_ = 0;
  std::uint64_t admin_refused_ = 0;
  std::uint64_t fd_limit_ = 0;             // RLIMIT_NOFILE, raised to its hard limit at start
  std::uint64_t accept_errors_ = 0;        // failed accepts since the last warning about them
  std::uint64_t accept_error_logged_ms_ = 0;
  std::uint64_t drain_started_ms_ = 0;
  std::uint64_t listener_closed_ms_ = 0;
  std::uint64_t drained_ms_ = 0;
  std::uint64_t last_accept_ms_ = 0;
  std::uint64_t accepted_in_propagation_ = 0;
  std::uint64_t requests_at_drain_ = 0;
  std::uint64_t cut_at_drain_ = 0;
  std::uint64_t drained_requests_ = 0;
  std::uint64_t cut_requests_ = 0;
  std::uint64_t unanswered_at_drain_ = 0;
  std::uint64_t unanswered_requests_ = 0;
};

}  // namespace ebb
