// The process's handles, driven by the Lifecycle: events in, steps carried out.
#include "server.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <utility>

#include "build_commit.hpp"
#include "cpu_count.hpp"
#include "log.hpp"
#include "net/io.hpp"

namespace ebb {

namespace {
double seconds(std::uint64_t ms) { return static_cast<double>(ms) / 1000.0; }

// Descriptors kept out of the client budget: listeners, the loop's own (epoll, signal pipe,
// async), admin and readiness-check connections, the log. Pooled app connections come on top.
constexpr std::uint64_t kReservedFds = 32;

// The soft descriptor limit raised to the hard one (as Go's runtime and nginx's
// worker_rlimit_nofile do): a proxy holds two descriptors per client.
std::uint64_t raise_fd_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
  if (rl.rlim_cur < rl.rlim_max) {
    rlimit want = rl;
    want.rlim_cur = rl.rlim_max == RLIM_INFINITY ? (1u << 20) : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &want) == 0) rl = want;
  }
  return rl.rlim_cur == RLIM_INFINITY ? (1u << 20) : rl.rlim_cur;
}

double wall_seconds() {
  uv_timeval64_t tv{};
  uv_gettimeofday(&tv);
  return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
}
}  // namespace

Server::Server(Config cfg, std::string config_path)
    : cfg_(std::make_unique<Config>(std::move(cfg))),
      config_path_(std::move(config_path)),
      loop_(),
      workers_((uv_loop_init(&loop_), &loop_), cfg_.get(), this, resolve_workers(*cfg_, workers_how_)),
      listener_(&loop_, [this] { on_accept(); }),
      admin_(&loop_, *this),
      check_(&loop_, [this](bool ok, const char* why) { on_check(ok, why); }),
      watch_(&loop_, [this] { reload("watch"); }),
      lc_(LifecycleSettings::from(*cfg_)) {
  last_reload_time_ = wall_seconds();
  for (uv_signal_t* s : {&sigterm_, &sigint_, &sighup_}) {
    uv_signal_init(&loop_, s);
    s->data = this;
  }
  uv_timer_init(&loop_, &phase_timer_);
  phase_timer_.data = this;
}

Server::~Server() = default;

bool Server::resolve_upstream(const Config& c, sockaddr_storage& addr, std::string& host) {
  std::string error;
  if (net::resolve(c.upstream, addr, error) != 0) {
    LOG_ERROR("cannot resolve upstream", {"upstream", c.upstream.str()}, {"error", error});
    return false;
  }
  host = c.upstream.str();
  return true;
}

int Server::run() {
  // Handlers first: a SIGTERM that arrives as soon as the port listens must drain, not kill.
  // libuv queues it until the loop runs.
  for (auto [h, signum] : {std::pair{&sigterm_, SIGTERM}, std::pair{&sigint_, SIGINT}, std::pair{&sighup_, SIGHUP}}) {
    uv_signal_start(h, [](uv_signal_t* s, int n) { static_cast<Server*>(s->data)->on_signal(n); }, signum);
  }
  fd_limit_ = raise_fd_limit();
  apply_connection_cap();
  if (!resolve_upstream(*cfg_, upstream_addr_, upstream_host_)) {
    carry_out(lc_.fail());
  } else {
    workers_.for_each([this](Worker& w) { w.set_upstream(upstream_addr_, upstream_host_); });
    sockaddr_storage proxy_addr{}, admin_addr{};
    std::string error;
    int r = net::resolve(cfg_->listen, proxy_addr, error);
    if (r == 0) r = listener_.listen(proxy_addr);
    if (r != 0) {
      LOG_ERROR("cannot listen", {"listen", cfg_->listen.str()}, {"error", error.empty() ? uv_strerror(r) : error});
      carry_out(lc_.fail());
    } else {
      r = net::resolve(cfg_->admin.listen, admin_addr, error);
      if (r == 0) r = admin_.listen(admin_addr);
      if (r != 0) {
        LOG_ERROR("cannot listen", {"admin", cfg_->admin.listen.str()},
                  {"error", error.empty() ? uv_strerror(r) : error});
        carry_out(lc_.fail());
      }
    }
  }
  if (!lc_.exited() && !config_path_.empty()) {
    // Before `listening`: a change made as soon as ebb announces itself must not be missed.
    if (int w = watch_.start(config_path_); w != 0)
      LOG_WARN("cannot watch the config file; reload with SIGHUP or POST /reload", {"path", config_path_},
               {"error", uv_strerror(w)});
  }
  if (!lc_.exited()) {
    LOG_INFO("listening", {"proxy", listener_.address()}, {"admin", admin_.bound_address()},
             {"upstream", upstream_host_}, {"pid", static_cast<long>(getpid())},
             {"max_connections", workers_.connection_cap()}, {"fd_limit", fd_limit_},
             {"workers", workers_.size()}, {"workers_from", workers_how_},
             {"version", EBB_VERSION}, {"commit", EBB_COMMIT});
    if (cfg_->readiness.upstream_check == UpstreamCheck::kNone) on_check(true, "check disabled");
    else check_.start(*cfg_, upstream_addr_, upstream_host_);
  }
  uv_run(&loop_, UV_RUN_DEFAULT);
  int rc = uv_loop_close(&loop_);
  if (rc != 0) LOG_ERROR("event loop closed with handles still open", {"error", uv_err_name(rc)});
  return lc_.exit_code();
}

// ---- events -----------------------------------------------------------------------------

// Client connections stop at limits.max_connections, and lower when the descriptor limit could
// not hold that many clients with an app connection each: the proxy never takes the descriptors
// that the admin port, probes and app connections need (an fd-exhausted proxy fails its probes).
void Server::apply_connection_cap() {
  std::uint64_t reserve = kReservedFds + std::uint64_t{cfg_->upstream_pool.max_idle} * workers_.size();  // a pool each
  std::uint64_t budget = fd_limit_ > reserve ? (fd_limit_ - reserve) / 2 : 1;
  std::uint64_t cap = std::max<std::uint64_t>(1, std::min<std::uint64_t>(cfg_->limits.max_connections, budget));
  // Said once in the `listening` line at start (nothing may be logged before it), and here when
  // a reload changes it.
  if (cap != workers_.connection_cap() && workers_.connection_cap() != 0) {
    LOG_INFO("max_connections in force", {"configured", cfg_->limits.max_connections}, {"max_connections", cap},
             {"fd_limit", fd_limit_});
  }
  workers_.set_connection_cap(cap);
}

void Server::on_accept() {
  lc_.on_accept(uv_now(&loop_));
  workers_.on_accept(listener_);
}

void Server::on_signal(int signum) {
  const char* name = signum == SIGTERM ? "SIGTERM" : signum == SIGINT ? "SIGINT" : "SIGHUP";
  if (signum == SIGHUP) {
    reload(name);
    return;
  }
  Step step = lc_.on_signal(signum == SIGINT ? Trigger::kSigint : Trigger::kSigterm, uv_now(&loop_));
  if (step.kind == Step::kExit) LOG_INFO("signal after drain; exiting", {"signal", name});
  carry_out(step, name);
}

void Server::on_check(bool ok, const char* why) { carry_out(lc_.on_check(ok), why); }

void Server::start_drain(const char* trigger) { carry_out(lc_.on_drain_request(uv_now(&loop_)), trigger); }

void Server::on_connection_closed() { check_drained(); }

void Server::check_drained() {
  if (workers_.connections() == 0 && listener_.closed()) carry_out(lc_.on_idle(uv_now(&loop_)));
}

// `detail`: the signal or trigger that caused the step, or the reason a check failed.
void Server::carry_out(Step step, const char* detail) {
  carry_out_step(step, detail);
  publish_readiness();
}

void Server::publish_readiness() {
  const char* why = "";
  lc_.readiness(why);
  readiness_reason_.store(why, std::memory_order_release);
}

void Server::carry_out_step(Step step, const char* detail) {
  const auto& s = cfg_->shutdown;
  switch (step.kind) {
    case Step::kNothing:
      return;
    case Step::kReady:
      LOG_INFO("ready", {"upstream", upstream_host_});
      return;
    case Step::kUpstreamUp:
      LOG_INFO("upstream available again", {"upstream", upstream_host_});
      return;
    case Step::kUpstreamDown:
      LOG_WARN("upstream unavailable", {"upstream", upstream_host_}, {"failures", lc_.failures()}, {"error", detail});
      return;
    case Step::kDrainStarted: {
      check_.stop();
      Metrics m = workers_.sum();
      requests_at_drain_ = requests_total(m);
      unanswered_at_drain_ = m.unanswered_total();
      set_phase(lc_.phase());
      LOG_INFO("drain started", {"trigger", detail}, {"in_flight", m.requests_in_flight},
               {"connections", workers_.connections()}, {"propagation_delay_s", seconds(s.propagation_delay)},
               {"drain_timeout_s", seconds(s.drain_timeout)});
      arm_phase_timer(step.timer_ms);
      return;
    }
    case Step::kSignalIgnored:
      LOG_INFO("signal during drain ignored", {"signal", detail});
      return;
    case Step::kPropagationWait:
      arm_phase_timer(step.timer_ms);
      return;
    case Step::kPropagationEnd:
      close_listener();
      set_phase(lc_.phase());
      arm_phase_timer(step.timer_ms);
      check_drained();
      return;
    case Step::kDrainDeadline:
    case Step::kCutAndExit: {
      std::uint64_t in_flight = workers_.sum().requests_in_flight;
      if (step.kind == Step::kDrainDeadline) {
        LOG_WARN("drain timeout: cutting what remains", {"in_flight", in_flight},
                 {"connections", workers_.connections()});
      } else {
        LOG_WARN("second SIGINT: exiting now", {"in_flight", in_flight});
      }
      std::atomic<std::uint64_t> cut{0};
      workers_.for_each([&cut](Worker& w) {
        std::uint64_t before = w.metrics().drain_cut_requests;
        w.cut_all();
        cut.fetch_add(w.metrics().drain_cut_requests - before, std::memory_order_relaxed);
      });
      lc_.on_cut(cut.load(std::memory_order_relaxed));
      if (step.kind == Step::kCutAndExit) exit_now();
      else check_drained();
      return;
    }
    case Step::kDrained: {
      uv_timer_stop(&phase_timer_);
      Metrics m = workers_.sum();
      drained_requests_ = requests_total(m) - requests_at_drain_;
      unanswered_requests_ = m.unanswered_total() - unanswered_at_drain_;
      LOG_INFO("drained", {"requests", drained_requests_}, {"cut", lc_.cut()}, {"unanswered", unanswered_requests_},
               {"seconds", seconds(lc_.drained_ms() - lc_.drain_started_ms())},
               {"drain_s", seconds(lc_.drained_ms() - lc_.listener_closed_ms())});
      admin_.answer_drain_waiters();
      if (step.then_exit) exit_now();
      return;
    }
    case Step::kExit:
      exit_now();
      return;
  }
}

void Server::arm_phase_timer(std::uint64_t ms) {
  uv_timer_start(&phase_timer_, [](uv_timer_t* t) {
    auto* self = static_cast<Server*>(t->data);
    self->carry_out(self->lc_.on_timer(uv_now(&self->loop_)));
  }, ms, 0);
}

// New handshakes are refused at once; the listener itself closes when those in flight are
// done (net::Listener), and only then may the drain be over.
void Server::close_listener() {
  listener_.close_gracefully([this](int fd) { workers_.adopt(fd); }, [this](std::uint64_t taken) {
    from_backlog_ += taken;
    LOG_INFO("listener closed", {"propagation_s", seconds(lc_.listener_closed_ms() - lc_.drain_started_ms())},
             {"accepted_during_propagation", lc_.accepted_in_propagation() + from_backlog_},
             {"in_flight", workers_.sum().requests_in_flight}, {"connections", workers_.connections()});
    check_drained();
  });
}

std::string Server::drain_summary() const {
  char buf[200];
  std::uint64_t end = lc_.state() == State::kDrained ? lc_.drained_ms() : uv_now(&loop_);
  std::snprintf(buf, sizeof buf,
                "{\"drained_requests\":%llu,\"cut_requests\":%llu,\"unanswered_requests\":%llu,\"seconds\":%.3f}\n",
                static_cast<unsigned long long>(drained_requests_), static_cast<unsigned long long>(lc_.cut()),
                static_cast<unsigned long long>(unanswered_requests_), seconds(end - lc_.drain_started_ms()));
  return buf;
}

// The Lifecycle has decided to exit (lc_.exited()): close every handle so the loop ends.
void Server::exit_now() {
  LOG_INFO("exiting", {"code", lc_.exit_code()});
  uv_timer_stop(&phase_timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(&phase_timer_), nullptr);
  for (uv_signal_t* s : {&sigterm_, &sigint_, &sighup_}) uv_close(reinterpret_cast<uv_handle_t*>(s), nullptr);
  listener_.close();
  check_.close();
  watch_.close();
  admin_.close_all();
  workers_.stop();
}

// ---- probes, metrics, reload ------------------------------------------------------------

int Server::readiness(std::string& reason) const {
  const char* why = "";
  int status = lc_.readiness(why);
  reason = why;
  return status;
}

bool Server::probe(std::string_view path, int& status, std::string& body) {
  if (path == "/healthz") {
    status = 200;
    body = "ok\n";
    return true;
  }
  if (path == "/readyz") {
    // Asked on a worker's thread: the reason lc_ gave at its last step, never lc_ itself.
    const char* why = readiness_reason_.load(std::memory_order_acquire);
    status = std::strcmp(why, "ready") == 0 ? 200 : 503;
    body = why;
    body += '\n';
    return true;
  }
  return false;
}

std::uint64_t Server::requests_total(const Metrics& m) {
  std::uint64_t n = 0;
  for (auto v : m.requests_by_code) n += v;
  return n;
}

// Every worker at once, each on its own thread: the phase reaches them all before this returns.
void Server::set_phase(Phase p) {
  workers_.for_each([p](Worker& w) { w.set_phase(p); });
}

std::string Server::metrics_text() {
  ProcessFigures p;
  p.state = state_name(lc_.state());
  p.admin_refused = admin_.stats().refused;
  p.version = EBB_VERSION;
  p.commit = EBB_COMMIT;
  p.admin_not_found = admin_.stats().not_found;
  p.admin_bad_method = admin_.stats().bad_method;
  p.admin_malformed = admin_.stats().malformed;
  p.reload_success = last_reload_ok_;
  p.reload_timestamp = last_reload_time_;
  p.reloads_ok = reloads_ok_;
  p.reloads_failed = reloads_failed_;
  if (lc_.listener_closed_ms() != 0)
    p.last_propagation_seconds = seconds(lc_.listener_closed_ms() - lc_.drain_started_ms());
  if (lc_.state() == State::kDrained) p.last_drain_seconds = seconds(lc_.drained_ms() - lc_.listener_closed_ms());
  read_process_figures(p);
  std::vector<Metrics> shards = workers_.shards();
  Metrics total = workers_.sum_of(shards);
  for (const Metrics& m : shards) p.worker_connections.push_back(m.connections_accepted);
  return render_prometheus(total, p);
}

// One path for SIGHUP, POST /reload and the file watch: load, check, swap, log, count.
ReloadOutcome Server::reload(const char* trigger) {
  ReloadOutcome out = apply_reload();
  watch_.resync();
  last_reload_ok_ = out.status == 200;
  last_reload_time_ = wall_seconds();
  ++(last_reload_ok_ ? reloads_ok_ : reloads_failed_);
  if (last_reload_ok_) {
    LOG_INFO("config reloaded", {"trigger", trigger}, {"result", "success"}, {"source", cfg_->source},
             {"drain_timeout_s", seconds(cfg_->shutdown.drain_timeout)});
  } else {
    LOG_ERROR(out.status == 409 ? "reload refused; keeping the running config" : "reload failed; keeping the running config",
              {"trigger", trigger}, {"result", "failure"}, {"error", out.message});
  }
  return out;
}

ReloadOutcome Server::apply_reload() {
  ConfigResult r = load_config(config_path_, ebb_environment());
  if (!r.config) return {422, "invalid config: " + r.error};
  Config& next = *r.config;
  if (!(next.listen == cfg_->listen) || !(next.admin.listen == cfg_->admin.listen)) {
    return {409, "listen addresses cannot change without a restart (listen " + next.listen.str() + ", admin " +
                     next.admin.listen.str() + ")"};
  }
  sockaddr_storage addr{};
  std::string host;
  if (!resolve_upstream(next, addr, host)) return {503, "cannot resolve upstream " + next.upstream.str()};
  if (!(next.workers == cfg_->workers)) {
    return {409, "workers cannot change without a restart (running " + std::to_string(workers_.size()) + ")"};
  }
  auto fresh = std::make_unique<Config>(std::move(next));
  // Every worker has switched when this returns, so the old config may go.
  workers_.for_each([&](Worker& w) {
    w.set_config(fresh.get());
    w.set_upstream(addr, host);
  });
  upstream_addr_ = addr;
  upstream_host_ = host;
  cfg_ = std::move(fresh);
  apply_connection_cap();
  lc_.configure(LifecycleSettings::from(*cfg_));
  logger().configure(cfg_->log.format, cfg_->log.level);
  publish_readiness();
  if (lc_.state() == State::kStarting || lc_.state() == State::kReady) {
    if (cfg_->readiness.upstream_check == UpstreamCheck::kNone) {
      check_.stop();
      on_check(true, "check disabled");
    } else {
      check_.start(*cfg_, upstream_addr_, upstream_host_);
    }
  }
  return {200, "config reloaded from " + describe_source(*cfg_)};
}

}  // namespace ebb
