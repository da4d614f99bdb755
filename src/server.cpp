// The lifecycle state machine (SPEC §2) and the process's ownership of handles.
#include "server.hpp"

#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <utility>

#include "log.hpp"
#include "net/io.hpp"

namespace ebb {

const char* state_name(State s) {
  switch (s) {
    case State::kStarting: return "starting";
    case State::kReady: return "ready";
    case State::kDraining: return "draining";
    case State::kDrained: return "drained";
  }
  return "starting";
}

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
}  // namespace

Server::Server(Config cfg, std::string config_path)
    : cfg_(std::make_unique<Config>(std::move(cfg))),
      config_path_(std::move(config_path)),
      loop_(),
      worker_((uv_loop_init(&loop_), &loop_), cfg_.get(), this),
      admin_(&loop_, *this),
      check_(&loop_, [this](bool ok, const char* why) { on_check(ok, why); }) {
  uv_tcp_init(&loop_, &listener_);
  listener_.data = this;
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
    exit_with(1);
  } else {
    worker_.set_upstream(upstream_addr_, upstream_host_);
    sockaddr_storage proxy_addr{}, admin_addr{};
    std::string error;
    int r = net::resolve(cfg_->listen, proxy_addr, error);
    if (r == 0) r = net::listen_tcp(&listener_, proxy_addr, [](uv_stream_t* l, int status) {
      static_cast<Server*>(l->data)->on_accept(status);
    });
    if (r != 0) {
      LOG_ERROR("cannot listen", {"listen", cfg_->listen.str()}, {"error", error.empty() ? uv_strerror(r) : error});
      exit_with(1);
    } else {
      listener_open_ = true;
      r = net::resolve(cfg_->admin.listen, admin_addr, error);
      if (r == 0) r = admin_.listen(admin_addr);
      if (r != 0) {
        LOG_ERROR("cannot listen", {"admin", cfg_->admin.listen.str()},
                  {"error", error.empty() ? uv_strerror(r) : error});
        exit_with(1);
      }
    }
  }
  if (!exiting_) {
    LOG_INFO("listening", {"proxy", net::sock_name(&listener_)}, {"admin", admin_.bound_address()},
             {"upstream", upstream_host_}, {"pid", static_cast<long>(getpid())},
             {"max_connections", worker_.connection_cap()}, {"fd_limit", fd_limit_},
             {"version", EBB_VERSION});
    if (cfg_->readiness.upstream_check == UpstreamCheck::kNone) on_check(true, "check disabled");
    else check_.start(*cfg_, upstream_addr_, upstream_host_);
  }
  uv_run(&loop_, UV_RUN_DEFAULT);
  int rc = uv_loop_close(&loop_);
  if (rc != 0) LOG_ERROR("event loop closed with handles still open", {"error", uv_err_name(rc)});
  return exit_code_;
}

// ---- events -----------------------------------------------------------------------------

// Client connections stop at limits.max_connections, and lower when the descriptor limit could
// not hold that many clients with an app connection each: the proxy never takes the descriptors
// that the admin port, probes and app connections need (an fd-exhausted proxy fails its probes).
void Server::apply_connection_cap() {
  std::uint64_t reserve = kReservedFds + cfg_->upstream_pool.max_idle;
  std::uint64_t budget = fd_limit_ > reserve ? (fd_limit_ - reserve) / 2 : 1;
  std::uint64_t cap = std::max<std::uint64_t>(1, std::min<std::uint64_t>(cfg_->limits.max_connections, budget));
  if (cap < cfg_->limits.max_connections) {
    LOG_WARN("limits.max_connections lowered to fit the descriptor limit", {"configured", cfg_->limits.max_connections},
             {"max_connections", cap}, {"fd_limit", fd_limit_});
  }
  worker_.set_connection_cap(cap);
}

void Server::on_accept(int status) {
  if (status < 0) {
    // Out of descriptors (EMFILE) would repeat for every pending connection: warn once a second.
    ++accept_errors_;
    std::uint64_t now = uv_now(&loop_);
    if (accept_error_logged_ms_ == 0 || now - accept_error_logged_ms_ >= 1000) {
      LOG_WARN("accept failed", {"error", uv_err_name(status)}, {"count", accept_errors_});
      accept_error_logged_ms_ = now;
      accept_errors_ = 0;
    }
    return;
  }
  last_accept_ms_ = uv_now(&loop_);
  if (state_ == State::kDraining) ++accepted_in_propagation_;
  worker_.on_accept(reinterpret_cast<uv_stream_t*>(&listener_));
}

void Server::on_signal(int signum) {
  const char* name = signum == SIGTERM ? "SIGTERM" : signum == SIGINT ? "SIGINT" : "SIGHUP";
  if (signum == SIGHUP) {
    reload();
    return;
  }
  if (state_ == State::kDrained) {
    // After /drain the kubelet's SIGTERM follows; nothing is left to wait for.
    LOG_INFO("signal after drain; exiting", {"signal", name});
    exit_with(cut_requests_ > 0 ? 1 : 0);
    return;
  }
  if (state_ == State::kDraining) {
    if (signum == SIGINT) {
      LOG_WARN("second SIGINT: exiting now", {"in_flight", worker_.in_flight()});
      std::uint64_t before = worker_.metrics().drain_cut_requests;
      worker_.cut_all();
      cut_requests_ += worker_.metrics().drain_cut_requests - before;
      exit_with(cut_requests_ > 0 ? 1 : 0);
      return;
    }
    exit_when_drained_ = true;
    LOG_INFO("signal during drain ignored", {"signal", name});
    return;
  }
  exit_when_drained_ = true;
  start_drain(name);
}

void Server::on_check(bool ok, const char* why) {
  if (state_ == State::kDraining || state_ == State::kDrained) return;
  if (state_ == State::kStarting) {
    if (!ok) return;
    state_ = State::kReady;
    upstream_ok_ = true;
    failures_ = 0;
    LOG_INFO("ready", {"upstream", upstream_host_});
    return;
  }
  if (ok) {
    failures_ = 0;
    if (!upstream_ok_) {
      upstream_ok_ = true;
      LOG_INFO("upstream available again", {"upstream", upstream_host_});
    }
    return;
  }
  if (++failures_ >= cfg_->readiness.failure_threshold && upstream_ok_) {
    upstream_ok_ = false;
    LOG_WARN("upstream unavailable", {"upstream", upstream_host_}, {"failures", failures_}, {"error", why});
  }
}

// ---- draining ---------------------------------------------------------------------------

void Server::start_drain(const char* trigger) {
  if (state_ == State::kDraining || state_ == State::kDrained || exiting_) return;
  state_ = State::kDraining;
  check_.stop();
  drain_started_ms_ = uv_now(&loop_);
  last_accept_ms_ = drain_started_ms_;
  requests_at_drain_ = requests_total();
  cut_at_drain_ = worker_.metrics().drain_cut_requests;
  unanswered_at_drain_ = worker_.metrics().unanswered_total();
  worker_.set_phase(Phase::kPropagation);
  const auto& s = cfg_->shutdown;
  LOG_INFO("drain started", {"trigger", trigger}, {"in_flight", worker_.in_flight()},
           {"connections", worker_.connections()}, {"propagation_delay_s", seconds(s.propagation_delay)},
           {"drain_timeout_s", seconds(s.drain_timeout)});
  uv_timer_start(&phase_timer_, [](uv_timer_t* t) { static_cast<Server*>(t->data)->on_propagation_timer(); },
                 s.propagation_delay, 0);
}

void Server::on_propagation_timer() {
  // Past the delay, propagation lasts until no new connection came for quiet_period, and at
  // most propagation_max: a cluster still routing here keeps being served, not refused.
  const auto& s = cfg_->shutdown;
  std::uint64_t now = uv_now(&loop_);
  std::uint64_t elapsed = now - drain_started_ms_;
  std::uint64_t quiet_end = last_accept_ms_ + s.quiet_period;
  if (elapsed >= s.propagation_max || now >= quiet_end) {
    end_propagation();
    return;
  }
  std::uint64_t wait = std::min(quiet_end - now, s.propagation_max - elapsed);
  uv_timer_start(&phase_timer_, [](uv_timer_t* t) { static_cast<Server*>(t->data)->on_propagation_timer(); },
                 wait, 0);
}

void Server::end_propagation() {
  // Closing a listening socket resets the connections still in its backlog, so they are
  // accepted and served first.
  uv_os_fd_t fd = -1;
  std::uint64_t from_backlog = 0;
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(&listener_), &fd) == 0) {
    for (;;) {
      int c = accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (c < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        break;
      }
      ++from_backlog;
      worker_.adopt(c);
    }
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
  listener_open_ = false;
  listener_closed_ms_ = uv_now(&loop_);
  LOG_INFO("listener closed", {"propagation_s", seconds(listener_closed_ms_ - drain_started_ms_)},
           {"accepted_during_propagation", accepted_in_propagation_ + from_backlog},
           {"in_flight", worker_.in_flight()}, {"connections", worker_.connections()});
  worker_.set_phase(Phase::kDrain);
  uv_timer_start(&phase_timer_, [](uv_timer_t* t) { static_cast<Server*>(t->data)->on_drain_deadline(); },
                 cfg_->shutdown.drain_timeout, 0);
  check_drained();
}

void Server::on_drain_deadline() {
  LOG_WARN("drain timeout: cutting what remains", {"in_flight", worker_.in_flight()},
           {"connections", worker_.connections()});
  worker_.cut_all();
  check_drained();
}

void Server::on_connection_closed() { check_drained(); }

void Server::check_drained() {
  if (state_ != State::kDraining || listener_open_ || worker_.connections() > 0) return;
  finish_drain();
}

void Server::finish_drain() {
  uv_timer_stop(&phase_timer_);
  state_ = State::kDrained;
  drained_ms_ = uv_now(&loop_);
  drained_requests_ = requests_total() - requests_at_drain_;
  cut_requests_ = worker_.metrics().drain_cut_requests - cut_at_drain_;
  unanswered_requests_ = worker_.metrics().unanswered_total() - unanswered_at_drain_;
  LOG_INFO("drained", {"requests", drained_requests_}, {"cut", cut_requests_}, {"unanswered", unanswered_requests_},
           {"seconds", seconds(drained_ms_ - drain_started_ms_)},
           {"drain_s", seconds(drained_ms_ - listener_closed_ms_)});
  admin_.answer_drain_waiters();
  if (exit_when_drained_) exit_with(cut_requests_ > 0 ? 1 : 0);
}

std::string Server::drain_summary() const {
  char buf[200];
  std::uint64_t end = state_ == State::kDrained ? drained_ms_ : uv_now(&loop_);
  std::snprintf(buf, sizeof buf,
                "{\"drained_requests\":%llu,\"cut_requests\":%llu,\"unanswered_requests\":%llu,\"seconds\":%.3f}\n",
                static_cast<unsigned long long>(drained_requests_), static_cast<unsigned long long>(cut_requests_),
                static_cast<unsigned long long>(unanswered_requests_), seconds(end - drain_started_ms_));
  return buf;
}

void Server::exit_with(int code) {
  if (exiting_) return;
  exiting_ = true;
  exit_code_ = code;
  LOG_INFO("exiting", {"code", code});
  uv_timer_stop(&phase_timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(&phase_timer_), nullptr);
  for (uv_signal_t* s : {&sigterm_, &sigint_, &sighup_}) uv_close(reinterpret_cast<uv_handle_t*>(s), nullptr);
  if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&listener_))) {
    uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
  }
  listener_open_ = false;
  check_.close();
  worker_.close_all();
  admin_.close_all();
}

// ---- probes, metrics, reload ------------------------------------------------------------

int Server::readiness(std::string& reason) const {
  switch (state_) {
    case State::kStarting: reason = "starting"; return 503;
    case State::kDraining: reason = "draining"; return 503;
    case State::kDrained: reason = "drained"; return 503;
    case State::kReady:
      if (!upstream_ok_) {
        reason = "upstream unavailable";
        return 503;
      }
      reason = "ready";
      return 200;
  }
  return 503;
}

bool Server::probe(std::string_view path, int& status, std::string& body) {
  if (path == "/healthz") {
    status = 200;
    body = "ok\n";
    return true;
  }
  if (path == "/readyz") {
    status = readiness(body);
    body += '\n';
    return true;
  }
  return false;
}

std::uint64_t Server::requests_total() const {
  std::uint64_t n = 0;
  for (auto v : const_cast<Worker&>(worker_).metrics().requests_by_code) n += v;
  return n;
}

std::string Server::metrics_text() {
  ProcessFigures p;
  p.state = state_name(state_);
  p.admin_refused = admin_refused_;
  p.version = EBB_VERSION;
  return render_prometheus(worker_.metrics(), p);
}

void Server::reload() {
  ConfigResult r = load_config(config_path_, ebb_environment());
  if (!r.config) {
    LOG_ERROR("reload failed; keeping the running config", {"error", r.error});
    return;
  }
  Config& next = *r.config;
  if (!(next.listen == cfg_->listen) || !(next.admin.listen == cfg_->admin.listen)) {
    LOG_ERROR("reload refused: listen addresses cannot change without a restart; keeping the running config",
              {"listen", next.listen.str()}, {"admin", next.admin.listen.str()});
    return;
  }
  sockaddr_storage addr{};
  std::string host;
  if (!resolve_upstream(next, addr, host)) {
    LOG_ERROR("reload failed; keeping the running config", {"error", "cannot resolve upstream"});
    return;
  }
  auto fresh = std::make_unique<Config>(std::move(next));
  worker_.set_config(fresh.get());
  worker_.set_upstream(addr, host);
  upstream_addr_ = addr;
  upstream_host_ = host;
  cfg_ = std::move(fresh);
  apply_connection_cap();
  logger().configure(cfg_->log.format, cfg_->log.level);
  if (state_ == State::kStarting || state_ == State::kReady) {
    if (cfg_->readiness.upstream_check == UpstreamCheck::kNone) {
      check_.stop();
      on_check(true, "check disabled");
      upstream_ok_ = true;
    } else {
      check_.start(*cfg_, upstream_addr_, upstream_host_);
    }
  }
  LOG_INFO("config reloaded", {"source", cfg_->source}, {"drain_timeout_s", seconds(cfg_->shutdown.drain_timeout)});
}

}  // namespace ebb
