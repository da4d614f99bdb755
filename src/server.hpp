// The process: the Server owns the loop, the listeners, the workers, the admin endpoints, the
// signals and the timers. It turns their events into Lifecycle events and carries out the steps
// the Lifecycle (src/lifecycle.hpp, where every lifecycle decision is made) returns.
#pragma once

#include <uv.h>

#include <atomic>
#include <memory>
#include <string>

#include "admin/admin.hpp"
#include "admin/config_watch.hpp"
#include "admin/readiness.hpp"
#include "config.hpp"
#include "lifecycle.hpp"
#include "net/listener.hpp"
#include "proxy/worker_group.hpp"

namespace ebb {

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
  bool drained() const override { return lc_.state() == State::kDrained; }
  void start_drain(const char* trigger) override;
  std::string drain_summary() const override;
  ReloadOutcome reload(const char* trigger) override;
  const Config& cfg() const override { return *cfg_; }

 private:
  void publish_readiness();
  void on_signal(int signum);
  void on_accept();
  void apply_connection_cap();
  void on_check(bool ok, const char* why);
  void carry_out(Step step, const char* trigger = "");
  void carry_out_step(Step step, const char* trigger);
  void set_phase(Phase p);
  void close_listener();
  void arm_phase_timer(std::uint64_t ms);
  void check_drained();
  void exit_now();
  ReloadOutcome apply_reload();
  static std::uint64_t requests_total(const Metrics& m);
  bool resolve_upstream(const Config& c, sockaddr_storage& addr, std::string& host);

  std::unique_ptr<Config> cfg_;
  std::string config_path_;
  uv_loop_t loop_;
  std::string workers_how_;  // how `workers` was resolved, for the start-up log
  WorkerGroup workers_;
  net::Listener listener_;  // the proxy port
  AdminServer admin_;
  ReadinessCheck check_;
  ConfigWatch watch_;
  uv_signal_t sigterm_, sigint_, sighup_;
  uv_timer_t phase_timer_;
  sockaddr_storage upstream_addr_{};
  std::string upstream_host_;

  Lifecycle lc_;
  // lc_'s readiness reason as of its last step, for probes answered on worker threads.
  std::atomic<const char*> readiness_reason_{"starting"};
  std::uint64_t fd_limit_ = 0;             // RLIMIT_NOFILE, raised to its hard limit at start
  // Config reloads (SIGHUP, POST /reload, the file watch), for /metrics.
  bool last_reload_ok_ = true;
  double last_reload_time_ = 0;  // seconds since the epoch; the start-up load counts
  std::uint64_t reloads_ok_ = 0;
  std::uint64_t reloads_failed_ = 0;
  // The drain's figures: counters at its start, and what it served and lost.
  std::uint64_t from_backlog_ = 0;
  std::uint64_t requests_at_drain_ = 0;
  std::uint64_t drained_requests_ = 0;
  std::uint64_t unanswered_at_drain_ = 0;
  std::uint64_t unanswered_requests_ = 0;
};

}  // namespace ebb
