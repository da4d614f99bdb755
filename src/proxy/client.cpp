// The reading side of a client connection: accepting it, reading requests through the
// RequestReader into Exchanges (one at a time, pipelined ones held), its timeouts, and what
// the lifecycle asks of it (the drain's idle grace, the cut at the deadline).
#include "proxy/client.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "log.hpp"
#include "net/io.hpp"
#include "proxy/worker.hpp"

namespace ebb {

namespace {
constexpr std::uint64_t kWsCloseWaitMs = 1000;
// In the drain phase, how long a connection with nothing in flight may stay before it is closed:
// a fresh one may have its first request on the wire, and one whose last answer went out without
// Connection: close (its head left before the drain started) may be sending its next request.
constexpr std::uint64_t kDrainIdleGraceMs = 1000;
}  // namespace

ClientConn::ClientConn(Worker& w, std::uint64_t id)
    : Client(w.loop(), alloc), w_(w), id_(id), ex_(w, *this) {
  w_.link(this);
  ++w_.metrics().connections_active;
}

void ClientConn::start() {
  net::set_nodelay(tcp());
  std::string ip = net::peer_ip(tcp());
  std::strncpy(client_ip_, ip.c_str(), sizeof client_ip_ - 1);
  ++w_.metrics().connections_accepted;
  idle_since_ms_ = w_.now_ms();
  refresh_timer(false);
  update_read();
}

// ---- reading ----------------------------------------------------------------------------

void ClientConn::update_read() {
  bool want;
  if (closing()) return;
  if (lingering_) want = !client_eof_;  // drained until the client's FIN (a read after it is EOF again)
  else if (read_refused_) want = false;  // budget: until a queue drains or memory frees
  else if (tunnel_) want = ex_.has_app() && !ex_.app_backed_up();
  else if (!ex_.active()) want = pending_in_.empty();
  else if (!ex_.head_done()) want = true;
  else if (ex_.request_is_complete()) {
    // Keep reading while the answer is pending: stopping and restarting costs two epoll_ctl
    // per request, and an early EOF is noticed. Pipelined bytes wait, bounded, in pending_in_.
    want = !client_eof_ && pending_in_.size() + ex_.held_for_app() < w_.budget().held_input;
  }
  else if (ex_.local()) want = true;
  else want = ex_.app_can_take();
  sync_held_input();
  if (want != reading() && !want && ex_.app_backed_up()) ++w_.metrics().backpressure_pauses_client;
  set_reading(want);
  refresh_timer(false);  // the exchange's phase may have moved on even if reading did not
}

void ClientConn::on_read(ssize_t nread, const uv_buf_t* buf) {
  if (nread == 0) return;
  if (nread == UV_ENOBUFS) {
    // budget: read_allowance() found no room; nothing was read. Resumed by this connection's
    // own queues draining, or by the worker once its total allows (resume_memory).
    read_refused_ = true;
    update_read();
    if (!w_.memory().may_read(held_bytes())) w_.memory_paused(w_.memory().over_cap());
    return;
  }
  if (nread < 0) {
    if (lingering_ && nread == UV_EOF && queued() > 0) {
      // The client is done sending, as the close allows; the answer's tail still goes out.
      LOG_DEBUG("client half-closed during the linger", {"conn", id_}, {"undelivered_bytes", queued()});
      client_eof_ = true;
      update_read();
      return;
    }
    if (ex_.slot_state() == SlotWaiter::State::kQueued) {
      // Gone, or half-closed, while it waits for the app (HAProxy's abortonclose): a client that
      // gave up must not take a slot at the app when its turn comes.
      close(Unanswered::kClientClosed);
      return;
    }
    if (tunnel_ && ex_.has_app() && nread == UV_EOF) {
      // The client is done sending; let the app see the end after what is queued to it.
      ex_.app_shutdown_write();
      set_reading(false);
      return;
    }
    if (ex_.active() && ex_.request_is_complete() && !lingering_ && nread == UV_EOF) {
      // A half-close after a complete request: the answer is still wanted (HAProxy's default).
      client_eof_ = true;
      update_read();
      return;
    }
    if (ex_.active() && ex_.head_done() && !ex_.request_is_complete() && !ex_.response_started()) {
      LOG_DEBUG("client closed mid-request", {"conn", id_}, {"body_bytes", ex_.request()->body_bytes});
    }
    close(Unanswered::kClientClosed);
    return;
  }
  size_t len = static_cast<size_t>(nread);
  if (lingering_) {  // discarded: the connection is closing
    if (boundary_close_) {
      boundary_close_ = false;
      count_unanswered(Unanswered::kAfterClose, "request arrived after the connection was closed");
    }
    return;
  }
  if (!sniffed_) {
    if (hand_over_h2(buf->base, len)) return;
    if (!preface_.empty()) {  // held while it looked like the preface; it is HTTP/1 after all
      std::string held = std::move(preface_);
      preface_.clear();
      parse(held.data(), held.size());
      if (resume_pending_ && !closing()) resume_input();
      return;
    }
  }
  if (tunnel_) {
    if (!ex_.to_app(buf->base, len)) {
      close(Unanswered::kUpstreamBroken);
      return;
    }
    update_read();
    return;
  }
  if (ex_.active() && ex_.request_is_complete()) {
    // The next request (pipelined), or for an upgrade the new protocol's first bytes.
    if (ex_.request()->upgrade) ex_.hold_for_app(buf->base, len);
    else pending_in_.append(buf->base, len);
    update_read();
    return;
  }
  parse(buf->base, len);
  if (resume_pending_ && !closing()) resume_input();
}

void ClientConn::parse(char* data, size_t len) {
  const auto& lim = w_.cfg().limits;
  http::RequestLimits limits{lim.max_header_bytes, lim.max_uri_bytes, lim.max_body_bytes};
  bool from_pending = !pending_in_.empty() && data == pending_in_.data();
  http::RequestReader::Result r = reader_.feed(data, len, limits);
  if (closing()) return;
  using Kind = http::RequestReader::Result::Kind;
  if (r.kind == Kind::kError) {
    if (from_pending) pending_in_.clear();
    if (lingering_) return;  // an upstream failure already answered and ended the exchange
    if (!ex_.shed()) {       // a request turned away at upstream_limits was logged as such
      LOG_INFO("bad request", {"conn", id_}, {"status", r.status}, {"reason", r.reason},
               {"error", r.error_name != nullptr ? r.error_name : "framing"});
    }
    send_error(r.status, r.reason);
    return;
  }
  if (r.kind == Kind::kMore) {
    if (from_pending) pending_in_.clear();
  } else {
    size_t rest = len - r.used;
    if (ex_.active() && reader_.request().upgrade) {
      // Bytes after an upgrade request belong to the new protocol: hold them for the tunnel.
      if (rest > 0) ex_.hold_for_app(data + r.used, rest);
      if (from_pending) pending_in_.clear();
    } else if (from_pending) {
      pending_in_.erase(0, r.used);
    } else if (rest > 0) {
      pending_in_.assign(data + r.used, rest);
    }
    if (ex_.local() && ex_.request_is_complete()) {
      finish_exchange();
      return;
    }
  }
  update_read();
}

// Prior knowledge HTTP/2 (h2c): a connection that opens with the preface is served by an H2Conn.
// The socket is duplicated for it and this connection closes without a word; the few bytes of a
// preface split across reads are held until it is certain.
bool ClientConn::hand_over_h2(const char* data, size_t len) {
  static constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  std::string_view got(data, len);
  if (!preface_.empty()) {
    preface_.append(data, len);
    got = preface_;
  }
  size_t n = std::min(got.size(), kPreface.size());
  if (got.substr(0, n) != kPreface.substr(0, n)) {
    sniffed_ = true;
    return false;
  }
  if (got.size() < kPreface.size()) {
    if (preface_.empty()) preface_.assign(data, len);
    return true;
  }
  sniffed_ = true;
  uv_os_fd_t fd = -1;
  int dup_fd = uv_fileno(reinterpret_cast<uv_handle_t*>(tcp()), &fd) == 0 ? ::dup(fd) : -1;
  if (dup_fd < 0) {
    close(Unanswered::kClientClosed);
    return true;
  }
  std::string first(got);
  close_handles();
  w_.adopt_h2(dup_fd, first);
  return true;
}

// ---- buffer budgets (proxy/budget.hpp) ----------------------------------------------------

void ClientConn::alloc(uv_handle_t* h, size_t, uv_buf_t* buf) {
  // budget: the read is sized so that the queue it feeds stays within the budget.
  auto* self = static_cast<ClientConn*>(static_cast<net::Conn*>(h->data));
  Worker::give_read_buffer(h, self->read_allowance(), buf);
}

size_t ClientConn::held_bytes() const {
  if (closing()) return 0;
  return queued() + ex_.app_queued() + pending_in_.size() + ex_.held_for_app();
}

// A read from the client feeds the app's write queue (a body, a tunnel) or the held input
// (pipelined requests, a body the app cannot take yet): it may take the room left in both.
size_t ClientConn::read_allowance() const {
  if (lingering_) return Worker::kReadBufferSize;  // discarded as it arrives
  size_t n = w_.budget().read_allowance(std::max(ex_.app_queued(), pending_in_.size() + ex_.held_for_app()));
  return w_.memory().may_read(held_bytes()) ? n : 0;
}

void ClientConn::sync_held_input() {
  size_t now = closing() ? 0 : pending_in_.size() + ex_.held_for_app();
  if (now == held_input_accounted_) return;
  bool freed = now < held_input_accounted_;
  if (freed) w_.memory().sub(held_input_accounted_ - now);
  else w_.memory().add(now - held_input_accounted_);
  held_input_accounted_ = now;
  // Bytes freed without a write finishing (a shed connection's held input) may be what paused
  // readers wait for.
  if (freed) w_.memory_released();
}

void ClientConn::request_flow() {
  read_refused_ = false;  // budget: the app's side moved on, a refused read may try again
  update_read();
}

void ClientConn::resume_memory() {
  if (closing()) return;
  if (read_refused_) {
    read_refused_ = false;
    update_read();
  }
  ex_.client_drained();  // the app's side may read again too
}

void ClientConn::shed() {
  if (closing()) return;
  LOG_WARN("connection shed: buffers at limits.max_memory", {"conn", id_}, {"client", client_ip_},
           {"held_bytes", held_bytes()}, {"buffered_bytes", w_.memory().held()}, {"max_memory", w_.memory().max()});
  close(Unanswered::kMemoryShed);  // counts an answer in flight or not yet delivered
}

// Requests that were pipelined behind the one just answered.
void ClientConn::resume_input() {
  resume_pending_ = false;
  while (!closing() && !lingering_ && !ex_.active() && !pending_in_.empty()) {
    parse(pending_in_.data(), pending_in_.size());
  }
  update_read();
}

void ClientConn::on_request_begin() {
  ex_.begin(&reader_.request());
  close_after_ = false;
  response_chunked_ = false;
  // In the drain, a connection waiting for its first request had only the idle grace; once the
  // request begins, its head gets client_header like any other.
  if (w_.phase() == Phase::kDrain && timer_for_ == TimerFor::kHeader) timer_for_ = TimerFor::kNone;
  refresh_timer(false);
}

int ClientConn::on_request_head() {
  close_after_ = reader_.request().close;
  websocket_ = false;
  Exchange::Refusal no = ex_.start();
  return no.status != 0 ? reader_.reject(no.status, no.reason) : 0;
}

int ClientConn::on_request_body(const char* at, size_t len) {
  if (!ex_.active() || ex_.local()) return 0;  // answered already: the body is read and dropped
  return ex_.forward_body(at, len);
}

int ClientConn::on_request_complete() { return ex_.active() ? ex_.request_complete() : 0; }

// ---- lifecycle --------------------------------------------------------------------------

void ClientConn::on_phase() {
  // Idle connections have kDrainIdleGraceMs left in the drain (refresh_timer): re-arm with it.
  if (closing() || lingering_ || ex_.active() || w_.phase() != Phase::kDrain) return;
  if (timer_for_ == TimerFor::kHeader || timer_for_ == TimerFor::kIdle) timer_for_ = TimerFor::kNone;
  refresh_timer(false);
}

void ClientConn::cut() {
  if (closing()) return;
  cut_ = true;
  bool in_flight = ex_.active() && !lingering_;
  if (in_flight || delivering_) {
    w_.metrics().drain_cut_requests += (in_flight ? 1 : 0) + (delivering_ ? 1 : 0);
    LOG_WARN("request cut at drain timeout", {"conn", id_}, {"tunnel", tunnel_ && in_flight},
             {"undelivered_bytes", queued()});
  }
  if (!in_flight) {
    close(Unanswered::kDrainTimeout);  // counts an answer not yet delivered
    return;
  }
  if (tunnel_ && websocket_) {
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
  send(&b, 1, 0);
  if (closing()) return;
  ex_.abandon();
  ws_close_pending_ = false;
  graceful_close(false);
}

// ---- timers -----------------------------------------------------------------------------

void ClientConn::arm(TimerFor t, std::uint64_t ms) {
  timer_for_ = t;
  if (t == TimerFor::kNone) stop_timer();
  else start_timer(ms);
}

void ClientConn::exchange_timer(std::uint64_t ms) {
  if (ms > 0) arm(TimerFor::kExchange, ms);
  else if (timer_for_ == TimerFor::kExchange) arm(TimerFor::kNone, 0);
}

void ClientConn::refresh_timer(bool progress) {
  if (closing() || lingering_ || ws_close_pending_ || timer_for_ == TimerFor::kExchange) return;
  const auto& t = w_.cfg().timeouts;
  TimerFor want = TimerFor::kNone;
  std::uint64_t ms = 0;
  if (queued() > 0) {
    want = TimerFor::kSend, ms = t.client_send;
  } else if (!ex_.active()) {
    if (requests_ == 0) want = TimerFor::kHeader, ms = t.client_header;
    else want = TimerFor::kIdle, ms = t.client_idle;
    if (w_.phase() == Phase::kDrain) {
      // A fresh connection gets the grace from now (its request would arrive within a round
      // trip); a used one from its last answer, so one idle since before the drain goes at once.
      std::uint64_t now = w_.now_ms();
      std::uint64_t idle = requests_ == 0 ? 0 : now - std::min(idle_since_ms_, now);
      ms = std::min(ms, idle >= kDrainIdleGraceMs ? 0 : kDrainIdleGraceMs - idle);
    }
  } else if (!ex_.head_done()) {
    want = TimerFor::kHeader, ms = t.client_header;
  } else if (!tunnel_ && !ex_.request_is_complete() && reading()) {
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
      if (ex_.active()) send_error(408, "request head not received in time");
      // Nothing arrived yet: a FIN and the linger, like an idle close, so that a request already
      // on its way is read and counted rather than met with a reset.
      else graceful_close(true);
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
    case TimerFor::kExchange:
      ex_.on_timer();
      break;
    case TimerFor::kLinger:
      close(Unanswered::kAfterClose);
      break;
    case TimerFor::kWsClose:
      close(Unanswered::kDrainTimeout);
      break;
    case TimerFor::kNone:
      break;
  }
}

}  // namespace ebb
