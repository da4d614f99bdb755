// The client side of a connection: reading and parsing requests, limits, timeouts, writing
// answers, and closing (gracefully: write side first, then read and discard for a while, so
// that the last response is not destroyed by a reset; RFC 9112 §9.6).
#include "proxy/client.hpp"

#include <algorithm>
#include <cstring>

#include "http/parser.hpp"
#include "log.hpp"
#include "net/io.hpp"
#include "proxy/upstream.hpp"
#include "proxy/worker.hpp"

namespace ebb {

namespace {
constexpr std::uint64_t kLingerMs = 2000;
constexpr std::uint64_t kWsCloseWaitMs = 1000;
// In the drain phase, how long a connection with nothing in flight may stay before it is closed:
// a fresh one may have its first request on the wire, and one whose last answer went out without
// Connection: close (its head left before the drain started) may be sending its next request.
constexpr std::uint64_t kDrainIdleGraceMs = 1000;
}  // namespace

const llhttp_settings_t* ClientConn::settings() {
  static const llhttp_settings_t s = [] {
    llhttp_settings_t t;
    llhttp_settings_init(&t);
    using B = http::Bind<ClientConn>;
    t.on_message_begin = B::cb<&ClientConn::on_message_begin>;
    t.on_url = B::data<&ClientConn::on_url>;
    t.on_header_field = B::data<&ClientConn::on_header_field>;
    t.on_header_value = B::data<&ClientConn::on_header_value>;
    t.on_headers_complete = B::cb<&ClientConn::on_headers_complete>;
    t.on_body = B::data<&ClientConn::on_body>;
    t.on_message_complete = B::cb<&ClientConn::on_message_complete>;
    return t;
  }();
  return &s;
}

ClientConn::ClientConn(Worker& w, std::uint64_t id) : w_(w), id_(id) {
  uv_tcp_init(w_.loop(), &tcp_);
  uv_timer_init(w_.loop(), &timer_);
  tcp_.data = this;
  timer_.data = this;
  llhttp_init(&parser_, HTTP_REQUEST, settings());
  parser_.data = this;
  w_.link(this);
  ++w_.metrics().connections_active;
}

void ClientConn::start() {
  net::set_nodelay(&tcp_);
  std::string ip = net::peer_ip(&tcp_);
  std::strncpy(client_ip_, ip.c_str(), sizeof client_ip_ - 1);
  ++w_.metrics().connections_accepted;
  idle_since_ms_ = w_.now_ms();
  refresh_timer(false);
  update_read();
}

// ---- reading ----------------------------------------------------------------------------

void ClientConn::update_read() {
  bool want;
  if (closing_) want = false;
  else if (lingering_) want = true;
  else if (read_refused_) want = false;  // budget: until the queue drains or memory frees
  else if (tunnel_) want = up_ != nullptr && up_->queued() <= w_.budget().high;
  else if (!ex_.active) want = pending_in_.empty();
  else if (!ex_.head_done) want = true;
  else if (ex_.request_complete) {
    // Keep reading while the answer is pending: stopping and restarting costs two epoll_ctl
    // per request, and an early EOF is noticed. Pipelined bytes wait, bounded, in pending_in_.
    want = !client_eof_ && pending_in_.size() + pending_body_.size() < w_.budget().held_input;
  }
  else if (ex_.local) want = true;
  else want = up_ != nullptr && up_->connected() && pending_body_.empty() &&
              up_->queued() <= w_.budget().high;
  sync_held_input();
  if (want != reading_) {
    auto* s = reinterpret_cast<uv_stream_t*>(&tcp_);
    if (want) {
      // budget: the read is sized so that the queue it feeds stays within the budget.
      auto alloc = [](uv_handle_t* h, size_t, uv_buf_t* b) {
        Worker::give_read_buffer(h, static_cast<ClientConn*>(h->data)->read_allowance(), b);
      };
      uv_read_start(s, alloc, [](uv_stream_t* st, ssize_t n, const uv_buf_t* b) {
        static_cast<ClientConn*>(st->data)->on_read(n, b);
      });
    } else {
      uv_read_stop(s);
      if (up_ != nullptr && up_->queued() > w_.budget().high) ++w_.metrics().backpressure_pauses_client;
    }
    reading_ = want;
  }
  refresh_timer(false);  // the exchange's phase may have moved on even if reading did not
}

void ClientConn::on_read(ssize_t nread, const uv_buf_t* buf) {
  if (closing_ || nread == 0) return;
  if (nread == UV_ENOBUFS) {
    // budget: read_allowance() found no room; nothing was read. Resumed by this connection's
    // own queues draining, or by the worker once its total allows (resume_memory).
    read_refused_ = true;
    update_read();
    if (!w_.memory().may_read(held_bytes())) w_.memory_paused(w_.memory().over_cap());
    return;
  }
  if (nread < 0) {
    if (slot_state() == SlotWaiter::State::kQueued) {
      // Gone, or half-closed, while it waits for the app (HAProxy's abortonclose): a client that
      // gave up must not take a slot at the app when its turn comes.
      close(Unanswered::kClientClosed);
      return;
    }
    if (tunnel_ && up_ != nullptr && nread == UV_EOF) {
      // The client is done sending; let the app see the end after what is queued to it.
      up_->shutdown_write();
      uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
      reading_ = false;
      return;
    }
    if (ex_.active && ex_.request_complete && !lingering_ && nread == UV_EOF) {
      // A half-close after a complete request: the answer is still wanted (HAProxy's default).
      client_eof_ = true;
      update_read();
      return;
    }
    if (ex_.active && ex_.head_done && !ex_.request_complete && !ex_.response_started) {
      LOG_DEBUG("client closed mid-request", {"conn", id_}, {"body_bytes", ex_.body_bytes});
    }
    close(Unanswered::kClientClosed);
    return;
  }
  if (lingering_) {  // discarded: the connection is closing
    if (boundary_close_) {
      boundary_close_ = false;
      count_unanswered(Unanswered::kAfterClose, "request arrived after the connection was closed");
    }
    return;
  }
  if (ex_.active && ex_.request_complete && !tunnel_) {
    // The next request (pipelined), or for an upgrade the new protocol's first bytes.
    (ex_.upgrade ? pending_body_ : pending_in_).append(buf->base, static_cast<size_t>(nread));
    update_read();
    return;
  }
  if (tunnel_) {
    uv_buf_t b = uv_buf_init(buf->base, static_cast<unsigned>(nread));
    if (up_ == nullptr || up_->send(&b, 1) < 0) {
      close(Unanswered::kUpstreamBroken);
      return;
    }
    update_read();
    return;
  }
  parse(buf->base, static_cast<size_t>(nread));
  if (resume_pending_ && !closing_) resume_input();
}

void ClientConn::parse(char* data, size_t len) {
  if (!scan_.done()) {
    if (const char* bad = scan_.feed(data, len)) {
      if (!pending_in_.empty() && data == pending_in_.data()) pending_in_.clear();
      LOG_INFO("bad request", {"conn", id_}, {"status", 400}, {"reason", bad});
      send_error(400, bad);
      return;
    }
  }
  parsing_ = true;
  llhttp_errno_t err = llhttp_execute(&parser_, data, len);
  parsing_ = false;
  if (closing_) return;
  bool from_pending = !pending_in_.empty() && data == pending_in_.data();
  if (err == HPE_OK) {
    if (from_pending) pending_in_.clear();
  } else if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
    const char* pos = llhttp_get_error_pos(&parser_);
    size_t used = static_cast<size_t>(pos - data);
    size_t rest = len - used;
    if (ex_.upgrade) {
      // Bytes after an upgrade request belong to the new protocol: hold them for the tunnel.
      if (rest > 0) pending_body_.append(pos, rest);
      if (from_pending) pending_in_.clear();
    } else if (from_pending) {
      pending_in_.erase(0, used);
    } else if (rest > 0) {
      pending_in_.assign(pos, rest);
    }
    if (ex_.local && ex_.request_complete) {
      finish_exchange();
      return;
    }
  } else {
    if (from_pending) pending_in_.clear();
    if (lingering_) return;  // an upstream failure already answered and ended the exchange
    int status = 400;
    const char* reason = llhttp_get_error_reason(&parser_);
    if (reject_reason_ != nullptr) {  // from our own callback (llhttp may report it as HPE_CB_*)
      status = reject_status_;
      reason = reject_reason_;
    } else if (err == HPE_INVALID_VERSION) {
      status = 505;
    }
    if (reason == nullptr || *reason == '\0') reason = llhttp_errno_name(err);
    if (!ex_.shed) {  // a request turned away at upstream_limits was logged as such
      LOG_INFO("bad request", {"conn", id_}, {"status", status}, {"reason", reason},
               {"error", llhttp_errno_name(err)});
    }
    send_error(status, reason);
    return;
  }
  update_read();
}

// Requests that were pipelined behind the one just answered.
void ClientConn::resume_input() {
  resume_pending_ = false;
  while (!closing_ && !lingering_ && !ex_.active && !pending_in_.empty()) {
    parse(pending_in_.data(), pending_in_.size());
  }
  update_read();
}

int ClientConn::reject(int status, const char* reason) {
  reject_status_ = status;
  reject_reason_ = reason;
  return http::fail(&parser_, reason);
}

int ClientConn::on_message_begin() {
  ex_ = Exchange{};
  ex_.active = true;
  ex_.started_ns = uv_hrtime();
  head_.clear();
  out_.clear();
  pending_body_.clear();
  reject_reason_ = nullptr;
  ++w_.metrics().requests_in_flight;
  refresh_timer(false);
  return 0;
}

int ClientConn::on_url(const char* at, size_t len) {
  size_t n = head_.add_target(at, len);
  if (head_.target().size() > w_.cfg().limits.max_uri_bytes) return reject(414, "request target too long");
  if (n > w_.cfg().limits.max_header_bytes) return reject(431, "request head too large");
  return 0;
}

int ClientConn::on_header_field(const char* at, size_t len) {
  if (head_.add_name(at, len) > w_.cfg().limits.max_header_bytes) return reject(431, "request head too large");
  return 0;
}

int ClientConn::on_header_value(const char* at, size_t len) {
  if (head_.add_value(at, len) > w_.cfg().limits.max_header_bytes) return reject(431, "request head too large");
  return 0;
}

int ClientConn::on_headers_complete() {
  ex_.head_done = true;
  ex_.head_bytes = scan_.size();
  const Config& cfg = w_.cfg();
  if (parser_.http_major != 1 || parser_.http_minor > 1) return reject(505, "only HTTP/1.0 and HTTP/1.1 are supported");
  ex_.http10 = parser_.http_minor == 0;
  auto method = static_cast<llhttp_method_t>(parser_.method);
  if (method == HTTP_CONNECT) return reject(405, "CONNECT is not supported");
  info_ = http::analyse_request(head_, !ex_.http10);
  if (info_.error != nullptr) return reject(400, info_.error);
  bool has_cl = (parser_.flags & F_CONTENT_LENGTH) != 0;
  if (cfg.limits.max_body_bytes > 0 && has_cl && parser_.content_length > cfg.limits.max_body_bytes) {
    return reject(413, "request body too large");
  }
  ex_.head_method = method == HTTP_HEAD;
  ex_.body_chunked = info_.chunked;
  ex_.upgrade = info_.has_upgrade && info_.connection.upgrade && !ex_.http10;
  ex_.close_after = !llhttp_should_keep_alive(&parser_);
  bool has_body = ex_.body_chunked || (has_cl && parser_.content_length > 0);
  bool idempotent = method == HTTP_GET || method == HTTP_HEAD || method == HTTP_OPTIONS ||
                    method == HTTP_PUT || method == HTTP_DELETE || method == HTTP_TRACE;
  ex_.replayable = idempotent && !has_body;
  if (cfg.probes.on_proxy_listener && answer_probe()) return 0;  // probes never queue
  return ask_for_slot();
}

int ClientConn::on_body(const char* at, size_t len) {
  if (ex_.local) return 0;
  ex_.body_bytes += len;
  std::uint64_t max = w_.cfg().limits.max_body_bytes;
  if (max > 0 && ex_.body_bytes > max) return reject(413, "request body too large");
  return forward_body(at, len);
}

int ClientConn::on_message_complete() {
  if (!ex_.local && ex_.body_chunked) {
    static const char kLast[] = "0\r\n\r\n";
    int r = forward_body(kLast, 0);  // len 0 with body_chunked writes the last chunk
    if (r != 0) return r;
  }
  ex_.request_complete = true;
  if (up_ != nullptr && up_->connected() && !ex_.response_started) up_->arm_response_timer();
  return HPE_PAUSED;
}

// ---- writing and closing ----------------------------------------------------------------

void ClientConn::send(const uv_buf_t* bufs, unsigned n) {
  if (closing_) return;
  for (unsigned i = 0; i < n; ++i) ex_.response_bytes += bufs[i].len;
  OutBatch& b = w_.batch();
  if (b.owner == this) {
    if (b.n + n > OutBatch::kMax) flush_batch();
    if (n <= OutBatch::kMax) {
      for (unsigned i = 0; i < n; ++i) b.bufs[b.n++] = bufs[i];
      return;
    }
  }
  write_now(bufs, n);
}

void ClientConn::write_now(const uv_buf_t* bufs, unsigned n) {
  // budget: what the kernel does not take is copied and counted in the worker's total.
  int r = net::write(reinterpret_cast<uv_stream_t*>(&tcp_), bufs, n, [](uv_stream_t* s, int status) {
    static_cast<ClientConn*>(s->data)->on_write_done(status);
  }, w_.memory().counter());
  if (r < 0) {
    LOG_DEBUG("client write failed", {"conn", id_}, {"error", uv_err_name(r)});
    close(Unanswered::kClientClosed);
    return;
  }
  if (net::queued(reinterpret_cast<uv_stream_t*>(&tcp_)) > 0) refresh_timer(false);
}

void ClientConn::cork() { w_.batch().owner = this; }

void ClientConn::uncork() {
  flush_batch();
  OutBatch& b = w_.batch();
  if (b.owner == this) b.owner = nullptr;
}

void ClientConn::flush_batch() {
  OutBatch& b = w_.batch();
  if (b.owner != this || b.n == 0) return;
  unsigned n = b.n;
  b.n = 0;
  write_now(b.bufs, n);
  b.lines_used = 0;
}

// Storage for a chunk-size line that lives until the batch is flushed.
char* ClientConn::chunk_line_buffer(char* fallback) {
  OutBatch& b = w_.batch();
  if (b.owner != this) return fallback;
  if (b.lines_used == OutBatch::kMax) flush_batch();
  return b.lines[b.lines_used++];
}

void ClientConn::on_write_done(int status) {
  w_.memory_released();  // budget: also for writes a close cancelled, which free their bytes
  if (closing_) return;
  if (status < 0) {
    close(Unanswered::kClientClosed);
    return;
  }
  size_t q = net::queued(reinterpret_cast<uv_stream_t*>(&tcp_));
  if (q <= w_.budget().low) {
    if (up_ != nullptr) up_->set_client_blocked(false);
    if (read_refused_) {  // budget: own progress lifts a refused read
      read_refused_ = false;
      update_read();
    }
  }
  if (lingering_ && q == 0 && !shutdown_sent_) {
    graceful_close(boundary_close_);  // the last bytes are out: now the FIN
    return;
  }
  refresh_timer(true);
}

void ClientConn::send_error(int status, const char* reason) {
  if (closing_) return;
  if (!ex_.active) {
    ex_ = Exchange{};
    ex_.active = true;
    ex_.started_ns = uv_hrtime();
    ++w_.metrics().requests_in_flight;
  }
  if (ex_.response_started) {  // the status line is out: all we can do is close
    ex_.status = ex_.status ? ex_.status : status;
    close(Unanswered::kRequestError);
    return;
  }
  if (up_ != nullptr) {
    up_->close();
    up_ = nullptr;
  }
  flush_batch();
  // Unread request bytes (or an upgrade's) cannot be told from the next request.
  ex_.close_after = announce_close(!ex_.request_complete || ex_.upgrade || status == 400 || status == 408);
  ex_.ebb_reason = reason;
  ex_.status = status;
  ex_.response_started = true;
  ex_.local = true;
  scratch_.clear();
  // The app is at its concurrency limit: a second is long enough for a slot to free up or for
  // the client to try another pod, short enough not to make a client wait for nothing.
  http::write_error_response(scratch_, status, reason, ex_.close_after, ex_.shed ? "Retry-After: 1\r\n" : "");
  uv_buf_t b = uv_buf_init(scratch_.data(), static_cast<unsigned>(scratch_.size()));
  send(&b, 1);
  if (closing_) return;
  finish_exchange();
}

// The one rule for an answer's Connection header. A connection is closed only after an answer that
// announced it (or when idle, or by a timeout or limit): a client that got no such announcement
// may already be sending its next request, so that request is read and answered, with the close
// announced then (SPEC §2). `for_this_response` carries what this answer's own shape demands.
bool ClientConn::announce_close(bool for_this_response) const {
  if (for_this_response || ex_.close_after) return true;
  // Draining, or the client finished sending: the last answer the client will get. Requests
  // already pipelined behind this one are answered first, each in turn, so none is dropped.
  return (w_.phase() != Phase::kServing || client_eof_) && pending_in_.empty();
}

// May the connection close now that an answer is complete? Only if the answer announced it, or
// if the client can send nothing more.
bool ClientConn::may_close_after_answer() const {
  return ex_.close_after || (client_eof_ && pending_in_.empty());
}

void ClientConn::count_unanswered(Unanswered why, const char* what) {
  w_.metrics().count_unanswered(why);
  std::string_view method = ex_.head_done ? llhttp_method_name(static_cast<llhttp_method_t>(parser_.method)) : "";
  // A client that leaves is its own choice (and frequent): info. Every other reason is ebb's or
  // the app's failure to answer: warn.
  LogLevel level = why == Unanswered::kClientClosed ? LogLevel::kInfo : LogLevel::kWarn;
  EBB_LOG(level, what, {"conn", id_}, {"client", client_ip_}, {"reason", unanswered_name(why)}, {"method", method},
           {"target", ex_.head_done ? head_.target() : std::string_view{}});
}

// `at_boundary`: the close falls between requests, so any request bytes that still arrive were
// sent by a client that did not see the close coming; they are counted, never silently dropped.
void ClientConn::graceful_close(bool at_boundary) {
  if (closing_) return;
  boundary_close_ = at_boundary;
  if (at_boundary && !pending_in_.empty()) {
    boundary_close_ = false;
    pending_in_.clear();
    count_unanswered(Unanswered::kAfterClose, "pipelined request dropped after the connection was closed");
  }
  flush_batch();
  if (up_ != nullptr) {
    up_->close();
    up_ = nullptr;
  }
  if (!lingering_) {
    lingering_ = true;
    tunnel_ = false;
    arm(TimerFor::kLinger, kLingerMs);
  }
  update_read();
  if (net::queued(reinterpret_cast<uv_stream_t*>(&tcp_)) > 0 || shutdown_sent_) return;
  shutdown_sent_ = true;
  int r = uv_shutdown(&shutdown_req_, reinterpret_cast<uv_stream_t*>(&tcp_), [](uv_shutdown_t* req, int status) {
    auto* self = static_cast<ClientConn*>(req->handle->data);
    if (status < 0 && !self->closing_) self->close(Unanswered::kClientClosed);
  });
  if (r < 0) close(Unanswered::kClientClosed);
}

void ClientConn::close(Unanswered why) {
  if (closing_) return;
  // A tunnel's request was answered (101); a cut tunnel is counted by cut().
  if (ex_.active && ex_.head_done && !tunnel_) {
    count_unanswered(why, why == Unanswered::kClientClosed ? "client left before its answer" : "request unanswered");
  } else if (!pending_in_.empty() && !ex_.upgrade && !lingering_) {
    count_unanswered(why, "pipelined request unanswered");
  }
  closing_ = true;
  release_slot(false);
  if (w_.batch().owner == this) {
    w_.batch().n = 0;
    w_.batch().lines_used = 0;
  }
  if (up_ != nullptr) {
    up_->close();
    up_ = nullptr;
  }
  if (ex_.active) {
    account_exchange();
    ex_.active = false;
    --w_.metrics().requests_in_flight;
  }
  sync_held_input();  // budget: closing_ is set, so the held input leaves the total
  net::close_pair<ClientConn, &ClientConn::pending_closes_, &ClientConn::on_closed>(
      this, reinterpret_cast<uv_handle_t*>(&tcp_), reinterpret_cast<uv_handle_t*>(&timer_));
}

// ---- buffer budgets (proxy/budget.hpp) ----------------------------------------------------

size_t ClientConn::queued_to_client() const { return net::queued(reinterpret_cast<const uv_stream_t*>(&tcp_)); }

size_t ClientConn::held_bytes() const {
  if (closing_) return 0;
  return queued_to_client() + (up_ != nullptr ? up_->queued() : 0) + pending_in_.size() + pending_body_.size();
}

// A read from the client feeds the app's write queue (a body, a tunnel) or the held input
// (pipelined requests, a body the app cannot take yet): it may take the room left in both.
size_t ClientConn::read_allowance() const {
  if (lingering_) return Worker::kReadBufferSize;  // discarded as it arrives
  size_t to_app = up_ != nullptr ? up_->queued() : 0;
  size_t n = w_.budget().read_allowance(std::max(to_app, pending_in_.size() + pending_body_.size()));
  return w_.memory().may_read(held_bytes()) ? n : 0;
}

void ClientConn::sync_held_input() {
  size_t now = closing_ ? 0 : pending_in_.size() + pending_body_.size();
  if (now == held_input_accounted_) return;
  bool freed = now < held_input_accounted_;
  if (freed) w_.memory().sub(held_input_accounted_ - now);
  else w_.memory().add(now - held_input_accounted_);
  held_input_accounted_ = now;
  // Bytes freed without a write finishing (a shed connection's held input) may be what paused
  // readers wait for.
  if (freed) w_.memory_released();
}

void ClientConn::resume_memory() {
  if (closing_) return;
  if (read_refused_) {
    read_refused_ = false;
    update_read();
  }
  if (up_ != nullptr) up_->retry_read();
}

void ClientConn::shed() {
  if (closing_) return;
  LOG_WARN("connection shed: buffers at limits.max_memory", {"conn", id_}, {"client", client_ip_},
           {"held_bytes", held_bytes()}, {"buffered_bytes", w_.memory().held()}, {"max_memory", w_.memory().max()});
  // An answer fully read from the app but not yet delivered is as unanswered as one in flight
  // (close() counts only the latter).
  bool counted_by_close = ex_.active && ex_.head_done && !tunnel_;
  if (!counted_by_close && queued_to_client() > 0) {
    count_unanswered(Unanswered::kMemoryShed, "answer cut: connection shed at limits.max_memory");
  }
  close(Unanswered::kMemoryShed);
}

void ClientConn::on_closed(ClientConn* self) {
  Worker& w = self->w_;
  w.unlink(self);
  --w.metrics().connections_active;
  delete self;
  if (w.observer()) w.observer()->on_connection_closed();
}

// ---- lifecycle --------------------------------------------------------------------------

void ClientConn::on_phase() {
  // Idle connections have kDrainIdleGraceMs left in the drain (refresh_timer): re-arm with it.
  if (closing_ || lingering_ || ex_.active || w_.phase() != Phase::kDrain) return;
  if (timer_for_ == TimerFor::kHeader || timer_for_ == TimerFor::kIdle) timer_for_ = TimerFor::kNone;
  refresh_timer(false);
}

void ClientConn::cut() {
  if (closing_) return;
  if (!ex_.active || lingering_) {
    close(Unanswered::kDrainTimeout);
    return;
  }
  ++w_.metrics().drain_cut_requests;
  LOG_WARN("request cut at drain timeout", {"conn", id_}, {"tunnel", tunnel_});
  if (tunnel_ && ex_.websocket) {
    ws_close_pending_ = true;
    if (ws_.at_boundary()) {
      send_ws_close_and_close();
    } else {
      arm(TimerFor::kWsClose, kWsCloseWaitMs);  // the app's frame in progress may still end
    }
    return;
  }
  close(Unanswered::kDrainTimeout);
}

void ClientConn::send_ws_close_and_close() {
  uv_buf_t b = uv_buf_init(reinterpret_cast<char*>(const_cast<unsigned char*>(WsFrameTracker::kGoingAway)), 4);
  send(&b, 1);
  if (closing_) return;
  if (ex_.active) {
    ex_.active = false;
    --w_.metrics().requests_in_flight;
  }
  release_slot(false);
  ws_close_pending_ = false;
  graceful_close(false);
}

// ---- timers -----------------------------------------------------------------------------

void ClientConn::arm(TimerFor t, std::uint64_t ms) {
  timer_for_ = t;
  if (t == TimerFor::kNone) {
    uv_timer_stop(&timer_);
    return;
  }
  uv_timer_start(&timer_, [](uv_timer_t* h) { static_cast<ClientConn*>(h->data)->on_timer(); }, ms, 0);
}

void ClientConn::refresh_timer(bool progress) {
  if (closing_ || lingering_ || ws_close_pending_ || timer_for_ == TimerFor::kRetry ||
      timer_for_ == TimerFor::kQueue)
    return;
  const auto& t = w_.cfg().timeouts;
  TimerFor want = TimerFor::kNone;
  std::uint64_t ms = 0;
  if (net::queued(reinterpret_cast<uv_stream_t*>(&tcp_)) > 0) {
    want = TimerFor::kSend, ms = t.client_send;
  } else if (!ex_.active) {
    if (requests_ == 0) want = TimerFor::kHeader, ms = t.client_header;
    else want = TimerFor::kIdle, ms = t.client_idle;
    if (w_.phase() == Phase::kDrain) {
      // A fresh connection gets the grace from now (its request would arrive within a round
      // trip); a used one from its last answer, so one idle since before the drain goes at once.
      std::uint64_t now = w_.now_ms();
      std::uint64_t idle = requests_ == 0 ? 0 : now - std::min(idle_since_ms_, now);
      ms = std::min(ms, idle >= kDrainIdleGraceMs ? 0 : kDrainIdleGraceMs - idle);
    }
  } else if (!ex_.head_done) {
    want = TimerFor::kHeader, ms = t.client_header;
  } else if (!tunnel_ && !ex_.request_complete && reading_) {
    want = TimerFor::kBody, ms = t.client_idle;
  }
  bool restart = progress && (want == TimerFor::kSend || want == TimerFor::kBody);
  if (want == timer_for_ && !restart) return;
  arm(want, ms);
}

void ClientConn::on_timer() {
  TimerFor t = timer_for_;
  timer_for_ = TimerFor::kNone;
  switch (t) {
    case TimerFor::kHeader:
      if (ex_.active) send_error(408, "request head not received in time");
      else close(Unanswered::kClientClosed);  // nothing ever arrived
      break;
    case TimerFor::kIdle:
      graceful_close(true);
      break;
    case TimerFor::kBody:
      send_error(408, "request body stalled");
      break;
    case TimerFor::kSend:
      ++w_.metrics().client_send_timeouts;
      LOG_INFO("client stopped reading; closing", {"conn", id_});
      close(Unanswered::kClientSendTimeout);
      break;
    case TimerFor::kRetry:
      connect_upstream();
      break;
    case TimerFor::kLinger:
      close(Unanswered::kAfterClose);
      break;
    case TimerFor::kWsClose:
      close(Unanswered::kDrainTimeout);
      break;
    case TimerFor::kQueue:
      queue_timed_out();
      break;
    case TimerFor::kNone:
      break;
  }
}

void ClientConn::account_exchange() {
  Metrics& m = w_.metrics();
  m.request_bytes += ex_.head_bytes + ex_.body_bytes;
  m.response_bytes += ex_.response_bytes;
}

void ClientConn::log_access() {
  if (!w_.cfg().log.access) return;
  // Only what the request really said: a request rejected before its head was read has no
  // method, target or fields.
  bool head = ex_.head_done;
  auto field = [&](std::string_view name) { return head ? http::trim(head_.find(name)) : std::string_view{}; };
  std::string_view id = field("x-request-id");
  if (id.empty()) id = ex_.request_id;
  double upstream_ms = ex_.upstream_first_ns > 0 ? static_cast<double>(ex_.upstream_first_ns - ex_.upstream_sent_ns) / 1e6 : -1;
  LOG_INFO("access", {"conn", id_}, {"request_id", id}, {"client", client_ip_},
           {"protocol", head ? (ex_.http10 ? "HTTP/1.0" : "HTTP/1.1") : ""},
           {"method", head ? llhttp_method_name(static_cast<llhttp_method_t>(parser_.method)) : ""},
           {"target", head ? head_.target() : std::string_view{}}, {"host", field("host")},
           {"user_agent", field("user-agent")}, {"status", ex_.status}, {"answered_by", ex_.local ? "ebb" : "app"},
           {"ebb_error", ex_.ebb_reason != nullptr ? ex_.ebb_reason : ""},
           {"bytes_in", ex_.head_bytes + ex_.body_bytes}, {"bytes_out", ex_.response_bytes},
           {"upstream_ms", upstream_ms}, {"ms", static_cast<double>(uv_hrtime() - ex_.started_ns) / 1e6});
}

}  // namespace ebb
