// Connections to the app: connecting, sending, reading responses, idling in the pool. The
// exchange that borrows a connection hears of everything through its UpstreamSink.
#include "proxy/upstream.hpp"

#include "http/writer.hpp"
#include "log.hpp"
#include "net/io.hpp"
#include "proxy/pool.hpp"
#include "proxy/worker.hpp"

namespace ebb {

UpstreamConn::UpstreamConn(Worker& w) : net::Conn(w.loop(), alloc), w_(w), id_(w.next_upstream_id()) {}

void UpstreamConn::begin_exchange(UpstreamSink* owner, bool head_request) {
  owner_ = owner;
  head_request_ = head_request;
  reader_.begin(head_request, w_.cfg().limits.max_header_bytes);
  client_blocked_ = false;
  read_refused_ = false;
  tunnel_ = false;
  trailing_bytes_ = false;
  request_done_ = false;
}

int UpstreamConn::connect(UpstreamSink* owner, bool head_request) {
  begin_exchange(owner, head_request);
  state_ = State::kConnecting;
  ++w_.metrics().upstream_connections_opened;
  int r = net::Conn::connect(reinterpret_cast<const sockaddr*>(&w_.upstream_addr()));
  if (r < 0) return r;
  arm(TimerFor::kConnect, w_.cfg().timeouts.upstream_connect);
  return 0;
}

void UpstreamConn::on_connect(int status) {
  arm(TimerFor::kNone, 0);
  UpstreamSink* owner = owner_;
  if (status < 0) {
    close();
    if (owner) owner->upstream_connected(this, status);
    return;
  }
  state_ = State::kBusy;
  net::set_nodelay(tcp());
  update_read();
  if (owner) owner->upstream_connected(this, 0);
}

void UpstreamConn::attach(UpstreamSink* owner, bool head_request) {
  begin_exchange(owner, head_request);
  state_ = State::kBusy;
  reused_ = true;
  arm(TimerFor::kNone, 0);
  ++w_.metrics().upstream_connections_reused;
  update_read();
}

void UpstreamConn::detach() {
  owner_ = nullptr;
  client_blocked_ = false;
  read_refused_ = false;
  arm(TimerFor::kNone, 0);
}

void UpstreamConn::enter_pool() {
  state_ = State::kIdle;
  owner_ = nullptr;
  arm(TimerFor::kIdle, w_.cfg().timeouts.upstream_idle);
  update_read();
}

int UpstreamConn::send(const uv_buf_t* bufs, unsigned n) {
  int r = write(bufs, n, w_.memory().counter());
  // The request waits in the queue: an app that stops reading its body gets upstream_response
  // to take more, as it has to answer (nginx's proxy_send_timeout); the client is held back
  // meanwhile (Exchange::app_can_take), so nothing else would ever end the wait.
  if (r == 0 && !tunnel_ && !request_done_ && timer_for_ == TimerFor::kNone && queued() > 0) {
    arm(TimerFor::kSend, response_ms_);
  }
  return r;
}

// The head, and what the client sent before the app could take it, in one write.
int UpstreamConn::send_head(const http::Request& r, const http::ForwardContext& ctx, std::string_view early,
                            bool end) {
  response_ms_ = owner_->response_timeout();  // asked once: a re-arm on every read costs nothing
  request_done_ = end;
  out_.clear();
  http::write_request_head(out_, r.head, r.info, ctx);
  chunked_ = ctx.body_chunked;
  char line[24];
  uv_buf_t bufs[5];
  unsigned n = 0;
  bufs[n++] = uv_buf_init(out_.data(), static_cast<unsigned>(out_.size()));
  if (!early.empty()) {
    if (chunked_) bufs[n++] = uv_buf_init(line, static_cast<unsigned>(http::chunk_line(line, early.size())));
    bufs[n++] = uv_buf_init(const_cast<char*>(early.data()), static_cast<unsigned>(early.size()));
    if (chunked_) bufs[n++] = uv_buf_init(const_cast<char*>("\r\n"), 2);
  }
  if (end && chunked_) bufs[n++] = uv_buf_init(const_cast<char*>("0\r\n\r\n"), 5);  // the last chunk
  return send(bufs, n);
}

int UpstreamConn::send_body(const char* at, size_t len) {
  if (!chunked_) {
    uv_buf_t b = uv_buf_init(const_cast<char*>(at), static_cast<unsigned>(len));
    return send(&b, 1);
  }
  char line[24];
  uv_buf_t bufs[3] = {uv_buf_init(line, static_cast<unsigned>(http::chunk_line(line, len))),
                      uv_buf_init(const_cast<char*>(at), static_cast<unsigned>(len)),
                      uv_buf_init(const_cast<char*>("\r\n"), 2)};
  return send(bufs, 3);
}

int UpstreamConn::end_body() {
  request_done_ = true;
  uv_buf_t b = uv_buf_init(const_cast<char*>("0\r\n\r\n"), 5);
  int r = chunked_ ? send(&b, 1) : 0;
  // An answer that began before the request ended (the app answered early): its deadline runs
  // from here (the exchange arms it only for an answer not yet begun).
  if (r == 0 && got_bytes()) arm_response_timer();
  return r;
}

int UpstreamConn::send_raw(const char* at, size_t len) {
  uv_buf_t b = uv_buf_init(const_cast<char*>(at), static_cast<unsigned>(len));
  return send(&b, 1);
}

// A pooled connection that the app closed before answering: the request never reached it, or an
// idempotent, body-less request can be sent again without harm (RFC 9110 §9.2.2).
bool UpstreamConn::may_replay(const http::Request& r, std::string&) { return reused_ && !got_bytes() && r.replayable; }

void UpstreamConn::release(bool complete) {
  detach();
  if (complete && response_keep_alive()) w_.pool().put(this);
  else close();
}

void UpstreamConn::on_write_done(int status) {
  w_.memory_released();  // budget: a finished or cancelled write freed its copy
  if (closing()) return;
  if (status < 0) {
    fail(UpstreamError::kClosedEarly, status);
    return;
  }
  if (timer_for_ == TimerFor::kSend) {
    if (queued() > 0) {
      arm(TimerFor::kSend, response_ms_);  // progress: the app took some
    } else {
      arm(TimerFor::kNone, 0);
      arm_response_timer();  // the request is all out (if it is): now its answer is waited for
    }
  }
  if (owner_ && queued() <= w_.budget().low) owner_->upstream_writable();
}

void UpstreamConn::set_client_blocked(bool blocked) {
  // budget: the client's queue drained, so a refused read may try again. A read is refused
  // (not blocked) when a batch flushed after the read took the queue past `high`.
  if (!blocked) retry_read();
  if (blocked == client_blocked_) return;
  client_blocked_ = blocked;
  if (blocked) ++w_.metrics().backpressure_pauses_upstream;
  // While the client holds us back, the client's send timeout is the one that counts.
  if (blocked && timer_for_ == TimerFor::kResponse) arm(TimerFor::kNone, 0);
  else if (!blocked && got_bytes() && !tunnel_) arm_response_timer();
  update_read();
}

void UpstreamConn::retry_read() {
  if (!read_refused_) return;
  read_refused_ = false;
  if (got_bytes() && !tunnel_) arm_response_timer();
  update_read();
}

void UpstreamConn::alloc(uv_handle_t* h, size_t, uv_buf_t* buf) {
  // budget: the read is sized so that the client's write queue stays within the budget.
  auto* self = static_cast<UpstreamConn*>(static_cast<net::Conn*>(h->data));
  Worker::give_read_buffer(h, self->read_allowance(), buf);
}

size_t UpstreamConn::read_allowance() const {
  if (state_ != State::kBusy || owner_ == nullptr) return Worker::kReadBufferSize;  // idle: a read means close
  size_t n = w_.budget().read_allowance(owner_->client_queued());
  return w_.memory().may_read(owner_->client_held()) ? n : 0;
}

void UpstreamConn::arm_response_timer() {
  // Held back by the client (its queue, or ebb's memory): the client's send timeout counts.
  // Request bytes still queued: kSend, until they are out.
  if (state_ != State::kBusy || tunnel_ || client_blocked_ || read_refused_ || !request_done_) return;
  if (timer_for_ == TimerFor::kSend) return;
  arm(TimerFor::kResponse, response_ms_);
}

void UpstreamConn::begin_tunnel() {
  tunnel_ = true;
  arm(TimerFor::kNone, 0);
  update_read();
}

void UpstreamConn::shutdown_write() {
  if (state_ == State::kBusy) shutdown();
}

void UpstreamConn::update_read() {
  set_reading(state_ == State::kIdle ||
              (state_ == State::kBusy && owner_ != nullptr && !client_blocked_ && !read_refused_));
}

void UpstreamConn::arm(TimerFor t, std::uint64_t ms) {
  timer_for_ = t;
  if (t == TimerFor::kNone) stop_timer();
  else start_timer(ms);
}

void UpstreamConn::on_timer() {
  switch (timer_for_) {
    case TimerFor::kConnect: fail(UpstreamError::kConnectTimeout, UV_ETIMEDOUT); break;
    case TimerFor::kSend:  // the app took none of the request for upstream_response: no answer is coming
    case TimerFor::kResponse: fail(UpstreamError::kResponseTimeout, UV_ETIMEDOUT); break;
    case TimerFor::kIdle: close(); break;
    case TimerFor::kNone: break;
  }
}

void UpstreamConn::fail(UpstreamError kind, int err) {
  UpstreamSink* owner = owner_;
  close();
  if (owner) owner->upstream_failed(this, kind, err);
}

void UpstreamConn::on_read(ssize_t nread, const uv_buf_t* buf) {
  if (nread == 0) return;
  if (nread == UV_ENOBUFS && owner_ != nullptr) {
    // budget: read_allowance() found no room; nothing was read. The client's queue draining
    // (set_client_blocked(false)) or the worker's total falling (retry_read) lifts it.
    read_refused_ = true;
    if (timer_for_ == TimerFor::kResponse) arm(TimerFor::kNone, 0);
    update_read();
    if (!w_.memory().may_read(owner_->client_held())) w_.memory_paused(w_.memory().over_cap());
    return;
  }
  if (state_ == State::kIdle) {
    // An idle connection has nothing to say: the app closed it, or broke the protocol.
    close();
    return;
  }
  UpstreamSink* owner = owner_;
  if (owner == nullptr) return;
  if (nread < 0) {
    if (tunnel_) {
      owner->upstream_eof();
      return;
    }
    if (nread == UV_EOF && reader_.finish_at_eof()) {
      owner->upstream_done(this);
      return;
    }
    fail(UpstreamError::kClosedEarly, static_cast<int>(nread));
    return;
  }
  owner->upstream_read_begin();
  handle(owner, buf->base, static_cast<size_t>(nread));
  owner->upstream_read_end();
}

void UpstreamConn::handle(UpstreamSink* owner, const char* data, size_t len) {
  if (tunnel_) {
    owner->upstream_tunnel(data, len);
    return;
  }
  if (timer_for_ == TimerFor::kResponse || timer_for_ == TimerFor::kNone) arm_response_timer();
  http::ResponseReader::Result r = reader_.feed(data, len);
  if (closing() || owner_ != owner) return;  // the exchange gave up meanwhile
  size_t rest = len - r.used;
  switch (r.kind) {
    case http::ResponseReader::Result::Kind::kMore:
      return;
    case http::ResponseReader::Result::Kind::kComplete:
      trailing_bytes_ = rest > 0;  // bytes after a complete response: not reusable
      owner->upstream_done(this);
      return;
    case http::ResponseReader::Result::Kind::kUpgrade:
      if (rest > 0 && tunnel_) owner->upstream_tunnel(data + r.used, rest);
      return;
    case http::ResponseReader::Result::Kind::kError:
      break;
  }
  LOG_WARN("bad response from upstream", {"upstream_conn", id_}, {"error", r.error_name}, {"reason", r.reason});
  fail(UpstreamError::kBadResponse, UV_EPROTO);
}

int UpstreamConn::on_informational() {
  if (closing() || owner_ == nullptr) return HPE_USER;
  return owner_->upstream_informational(this);
}

int UpstreamConn::on_response_head() {
  if (closing() || owner_ == nullptr) return HPE_USER;
  int r = owner_->upstream_head(this);
  return closing() ? HPE_USER : r;
}

int UpstreamConn::on_response_body(const char* at, size_t len) {
  if (closing() || owner_ == nullptr) return HPE_USER;
  return owner_->upstream_body(at, len);
}

void UpstreamConn::close() {
  if (state_ == State::kClosing) return;
  if (state_ == State::kIdle) w_.pool().remove(this);
  state_ = State::kClosing;
  owner_ = nullptr;
  close_handles();
}

}  // namespace ebb
