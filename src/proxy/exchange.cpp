// The exchange's policy, in the order a request lives it: start (probe, or a slot at the app),
// pick a connection (pool, or connect with retries), send the head, stream the body, pass the
// answer on, then finish: count, log, release.
#include "proxy/exchange.hpp"

#include <algorithm>
#include <cstring>

#include "http/grpc.hpp"
#include "http/writer.hpp"
#include "log.hpp"
#include "proxy/pool.hpp"
#include "proxy/worker.hpp"

namespace ebb {

namespace {
constexpr std::uint64_t kFirstRetryDelayMs = 25;
constexpr std::uint64_t kMaxRetryDelayMs = 250;
}  // namespace

void Exchange::begin(const http::Request* req) {
  req_ = req;
  up_ = nullptr;
  pending_body_.clear();
  waiting_ = Waiting::kNone;
  active_ = true;
  request_complete_ = response_started_ = local_ = shed_ = retried_ = tunnel_ = grpc_ = false;
  status_ = 0;
  grpc_status_ = -1;
  grpc_deadline_ms_ = 0;
  ebb_reason_ = nullptr;
  started_ns_ = uv_hrtime();
  upstream_sent_ns_ = upstream_first_ns_ = retry_until_ms_ = retry_delay_ms_ = response_bytes_ = 0;
  request_id_[0] = '\0';
  ++w_.metrics().requests_in_flight;
}

Exchange::Refusal Exchange::start() {
  // gRPC runs over HTTP/2 only: an HTTP/1 request costs no look at its fields here.
  if (req_->http2 && http::is_grpc_content_type(req_->head.find("content-type"))) {
    grpc_ = true;
    std::uint64_t ms = 0;
    if (http::parse_grpc_timeout(req_->head.find("grpc-timeout"), ms)) grpc_deadline_ms_ = w_.now_ms() + ms;
  }
  if (w_.cfg().probes.on_proxy_listener && w_.observer() != nullptr) {
    // Probes are answered here and never queue.
    std::string_view target = req_->head.target();
    int status = 200;
    std::string body;
    if (w_.observer()->probe(target.substr(0, target.find('?')), status, body)) {
      local_ = true;
      status_ = status;
      ebb_reason_ = "probe";
      response_started_ = true;
      down_.send_probe(status, body);
      return {};
    }
  }
  return ask_for_slot();
}

void Exchange::begin_forward() {
  const http::Request& r = *req_;
  std::string_view id = w_.next_request_id();
  size_t n = 0;
  if (!r.info.has_request_id) {
    n = std::min(id.size(), sizeof request_id_ - 1);
    std::memcpy(request_id_, id.data(), n);
    request_id_[n] = '\0';
  }
  ctx_.method = r.method_name();
  ctx_.client_ip = down_.peer_ip();
  ctx_.request_id = {request_id_, n};  // kept here: a replay sends the same one
  ctx_.default_host = w_.upstream_host();
  ctx_.body_chunked = r.chunked;
  ctx_.upgrade = r.upgrade;
  open_leg(false);
}

// A way to the app: a pooled connection (unless `fresh`), a new one, or a stream of a shared
// HTTP/2 connection. Ready at once, or upstream_connected follows.
void Exchange::open_leg(bool fresh) {
  AppLeg* leg = nullptr;
  bool ready = false;
  int r = w_.pool().lend(this, req_->head_method, fresh, leg, ready);
  up_ = r < 0 ? nullptr : leg;
  if (ready) {
    send_request_head();
    return;
  }
  // Connecting: the retry budget runs from the first connect.
  if (retry_until_ms_ == 0) retry_until_ms_ = w_.now_ms() + w_.cfg().upstream_retry.connect_retry_budget;
  if (r < 0) upstream_connected(nullptr, r);
}

void Exchange::upstream_connected(AppLeg* up, int status) {
  if (up != nullptr && up != up_) return;
  if (status == 0) {
    send_request_head();
    return;
  }
  up_ = nullptr;
  // A refused connect reached no app process, so it is safe to try again for any method:
  // this covers the app restarting (or not listening yet) within the retry budget.
  bool refused = status == UV_ECONNREFUSED;
  std::uint64_t delay = retry_delay_ms_ == 0 ? kFirstRetryDelayMs : std::min(retry_delay_ms_ * 2, kMaxRetryDelayMs);
  if (refused && w_.now_ms() + delay <= retry_until_ms_) {
    retry_delay_ms_ = delay;
    waiting_ = Waiting::kRetry;
    down_.exchange_timer(delay);
    return;
  }
  UpstreamError kind = refused ? UpstreamError::kConnectRefused : UpstreamError::kConnectOther;
  w_.metrics().count_upstream_error(kind);
  LOG_WARN("upstream connect failed", {"conn", down_.conn_id()}, {"error", uv_err_name(status)});
  down_.send_error(502, refused ? "upstream refused the connection" : "upstream unreachable");
}

void Exchange::on_timer() {
  Waiting w = waiting_;
  waiting_ = Waiting::kNone;
  if (w == Waiting::kRetry) open_leg(true);
  else if (w == Waiting::kQueue) queue_timed_out();
}

void Exchange::send_request_head() {
  AppLeg* u = up_;
  upstream_sent_ns_ = uv_hrtime();
  int r = u->send_head(*req_, ctx_, pending_body_, request_complete_);
  if (r < 0) {
    leg_broke(u, UpstreamError::kClosedEarly, r);
    return;
  }
  pending_body_.clear();
  if (request_complete_ && !tunnel_) u->arm_response_timer();
  down_.request_flow();
}

int Exchange::forward_body(const char* at, size_t len) {
  if (len == 0) return 0;
  if (up_ == nullptr || !up_->connected() || !pending_body_.empty()) {
    // The app cannot take it yet (connecting, or retrying): hold it; reading stops meanwhile.
    pending_body_.append(at, len);
    return 0;
  }
  AppLeg* u = up_;
  int r = u->send_body(at, len);
  if (r < 0) {
    leg_broke(u, UpstreamError::kClosedEarly, r);
    return HPE_USER;
  }
  return 0;
}

int Exchange::request_complete() {
  if (!local_ && up_ != nullptr && up_->connected() && pending_body_.empty()) {
    // Otherwise the end goes with the head (send_request_head).
    AppLeg* u = up_;
    int r = u->end_body();
    if (r < 0) {
      leg_broke(u, UpstreamError::kClosedEarly, r);
      return HPE_USER;
    }
  }
  request_complete_ = true;
  if (up_ != nullptr && up_->connected() && !response_started_) up_->arm_response_timer();
  return 0;
}

void Exchange::hold_for_app(const char* at, size_t len) { pending_body_.append(at, len); }

bool Exchange::to_app(const char* at, size_t len) {
  return up_ != nullptr && up_->send_raw(at, len) >= 0;
}

void Exchange::app_shutdown_write() {
  if (up_ != nullptr) up_->shutdown_write();
}

size_t Exchange::app_queued() const { return up_ != nullptr ? up_->queued() : 0; }

bool Exchange::app_backed_up() const { return up_ != nullptr && up_->queued() > w_.budget().high; }

bool Exchange::app_can_take() const {
  return up_ != nullptr && up_->connected() && pending_body_.empty() && up_->queued() <= w_.budget().high;
}

void Exchange::client_drained() {
  if (up_ != nullptr) up_->set_client_blocked(false);
}

// A send to the app failed: the leg is of no more use. Whether the request may go again is
// asked before it is let go.
void Exchange::leg_broke(AppLeg* up, UpstreamError kind, int err) {
  up_ = nullptr;
  bool replay = !retried_ && !response_started_ && up->may_replay(*req_, pending_body_);
  up->abort();
  replay_or_fail(replay, kind, err);
}

// `replay`: the app cannot have acted on the request (a stale pooled connection, a stream an
// HTTP/2 app refused or never saw), so it goes again, once, on a fresh leg.
void Exchange::replay_or_fail(bool replay, UpstreamError kind, int err) {
  if (replay) {
    retried_ = true;
    w_.metrics().count_upstream_error(UpstreamError::kStaleRetried);
    LOG_DEBUG("the app did not take the request; sending it again", {"conn", down_.conn_id()});
    open_leg(true);
    return;
  }
  w_.metrics().count_upstream_error(kind);
  if (tunnel_) {
    down_.abort(Unanswered::kUpstreamBroken);
    return;
  }
  bool timeout = kind == UpstreamError::kResponseTimeout || kind == UpstreamError::kConnectTimeout;
  LOG_WARN("upstream failed", {"conn", down_.conn_id()}, {"kind", upstream_error_name(kind)}, {"error", err < 0 ? uv_err_name(err) : "protocol"},
           {"response_started", response_started_});
  if (response_started_) {
    down_.abort(Unanswered::kUpstreamBroken);  // the status line is out: closing is the only honest signal left
    return;
  }
  const char* reason = "upstream failed";
  switch (kind) {
    case UpstreamError::kConnectTimeout: reason = "upstream connect timeout"; break;
    case UpstreamError::kResponseTimeout: reason = "upstream response timeout"; break;
    case UpstreamError::kClosedEarly: reason = "upstream closed the connection before answering"; break;
    case UpstreamError::kBadResponse: reason = "upstream sent a malformed response"; break;
    default: break;
  }
  down_.send_error(timeout ? 504 : 502, reason);
}

void Exchange::upstream_failed(AppLeg* up, UpstreamError kind, int err) {
  if (up != up_) return;
  up_ = nullptr;
  bool replay = kind == UpstreamError::kClosedEarly && !retried_ && !response_started_ &&
                up->may_replay(*req_, pending_body_);
  replay_or_fail(replay, kind, err);
}

// The app's answer began: its time to first byte.
void Exchange::upstream_began() {
  if (upstream_first_ns_ != 0) return;
  upstream_first_ns_ = uv_hrtime();
  w_.metrics().upstream_response.observe(static_cast<double>(upstream_first_ns_ - upstream_sent_ns_) / 1e9);
}

int Exchange::upstream_informational(AppLeg* up) {
  upstream_began();
  if (req_->http10) return 0;  // HTTP/1.0 clients do not expect 1xx
  return down_.send_informational(up->head(), up->status()) ? 0 : HPE_USER;
}

int Exchange::upstream_head(AppLeg* up) {
  upstream_began();
  int status = up->status();
  status_ = status;
  if (status == 101) {
    if (!req_->upgrade) {
      down_.send_error(502, "upstream switched protocols unasked");
      return HPE_USER;
    }
    tunnel_ = true;
  }
  response_started_ = true;
  if (grpc_) note_grpc_status(up->head());  // a trailers-only answer has it in its head
  if (!down_.send_head(up->head(), status, up->head_only())) return HPE_USER;
  if (tunnel_) {
    up->begin_tunnel();
    if (!pending_body_.empty()) {
      up->send_raw(pending_body_.data(), pending_body_.size());
      pending_body_.clear();
    }
    down_.request_flow();
  }
  return 0;
}

int Exchange::upstream_body(const char* at, size_t len) {
  if (!down_.send_body(at, len)) return HPE_USER;
  if (up_ != nullptr && down_.send_queued() > w_.budget().high) up_->set_client_blocked(true);
  return 0;
}

void Exchange::upstream_done(AppLeg* up) {
  if (up != up_) return;
  if (const http::MessageHead* t = up->trailers()) {
    if (grpc_) note_grpc_status(*t);
    if (!down_.send_trailers(*t)) return;
  } else if (!down_.send_end()) {
    return;
  }
  release_upstream(request_complete_);
  down_.answer_complete();
}

void Exchange::upstream_tunnel(const char* at, size_t len) {
  if (!down_.send_tunnel(at, len)) return;
  if (up_ != nullptr && down_.send_queued() > w_.budget().high) up_->set_client_blocked(true);
}

void Exchange::upstream_eof() { down_.tunnel_closed(); }

void Exchange::upstream_writable() { down_.request_flow(); }

void Exchange::upstream_read_begin() { down_.cork(); }

void Exchange::upstream_read_end() { down_.uncork(); }

void Exchange::release_upstream(bool complete) {
  AppLeg* u = up_;
  if (u == nullptr) return;
  up_ = nullptr;
  u->release(complete);
}

void Exchange::drop_app() {
  AppLeg* u = up_;
  if (u == nullptr) return;
  up_ = nullptr;
  u->abort();
}

std::uint64_t Exchange::response_timeout() const {
  std::uint64_t t = w_.cfg().timeouts.upstream_response;
  if (grpc_deadline_ms_ == 0) return t;
  // The client's deadline: past it nobody waits for the answer (DEADLINE_EXCEEDED).
  std::uint64_t now = w_.now_ms();
  return std::min(t, grpc_deadline_ms_ > now ? grpc_deadline_ms_ - now : 1);
}

void Exchange::note_grpc_status(const http::MessageHead& fields) {
  int s = http::parse_grpc_status(fields.find("grpc-status"));
  if (s >= 0) grpc_status_ = s;
}

void Exchange::answered_locally(int status, const char* reason) {
  drop_app();
  local_ = true;
  status_ = status;
  ebb_reason_ = reason;
  response_started_ = true;
  if (grpc_) grpc_status_ = http::grpc_status_for(status);
}

void Exchange::finish() {
  if (!active_) return;
  Metrics& m = w_.metrics();
  double secs = static_cast<double>(uv_hrtime() - started_ns_) / 1e9;
  m.count_request(status_, secs, local_);
  if (grpc_) m.count_grpc(grpc_status_);
  if (req_ != nullptr) m.request_bytes += req_->head_bytes + req_->body_bytes;
  m.response_bytes += response_bytes_;
  --m.requests_in_flight;
  log_access();
  active_ = false;
  // The app's slot goes to the next in line now; an answer the app made is a latency sample.
  release_slot(!local_ && status_ != 101);
  if (up_ != nullptr) release_upstream(false);
  if (waiting_ != Waiting::kNone) {
    waiting_ = Waiting::kNone;
    down_.exchange_timer(0);
  }
}

void Exchange::abandon() {
  if (!active_) return;
  Metrics& m = w_.metrics();
  if (req_ != nullptr) m.request_bytes += req_->head_bytes + req_->body_bytes;
  m.response_bytes += response_bytes_;
  --m.requests_in_flight;
  active_ = false;
  release_slot(false);
  drop_app();
  waiting_ = Waiting::kNone;
}

void Exchange::log_access() {
  if (!w_.cfg().log.access) return;
  // Only what the request really said: a request rejected before its head was read has no
  // method, target or fields.
  bool head = head_done();
  auto field = [&](std::string_view name) { return head ? http::trim(req_->head.find(name)) : std::string_view{}; };
  std::string_view id = field("x-request-id");
  if (id.empty()) id = request_id_;
  double upstream_ms = upstream_first_ns_ > 0 ? static_cast<double>(upstream_first_ns_ - upstream_sent_ns_) / 1e6 : -1;
  std::uint64_t bytes_in = req_ != nullptr ? req_->head_bytes + req_->body_bytes : 0;
  LOG_INFO("access", {"conn", down_.conn_id()}, {"request_id", id}, {"client", down_.peer_ip()},
           {"protocol", head ? req_->protocol() : ""},
           {"method", head ? req_->method_name() : ""}, {"target", head ? req_->head.target() : std::string_view{}},
           {"host", field("host")}, {"user_agent", field("user-agent")}, {"status", status_},
           {"answered_by", local_ ? "ebb" : "app"}, {"ebb_error", ebb_reason_ != nullptr ? ebb_reason_ : ""},
           {"bytes_in", bytes_in}, {"bytes_out", response_bytes_}, {"upstream_ms", upstream_ms},
           {"ms", static_cast<double>(uv_hrtime() - started_ns_) / 1e6});
}

}  // namespace ebb
