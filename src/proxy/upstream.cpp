// Connections to the app: connecting, sending, parsing responses, and the idle pool.
// The exchange that borrows a connection hears of everything through ClientConn's upstream_*.
#include "proxy/upstream.hpp"

#include "http/parser.hpp"
#include "log.hpp"
#include "net/io.hpp"
#include "proxy/client.hpp"
#include "proxy/worker.hpp"

namespace ebb {

const llhttp_settings_t* UpstreamConn::settings() {
  static const llhttp_settings_t s = [] {
    llhttp_settings_t t;
    llhttp_settings_init(&t);
    using B = http::Bind<UpstreamConn>;
    t.on_message_begin = B::cb<&UpstreamConn::on_message_begin>;
    t.on_status = B::data<&UpstreamConn::on_status>;
    t.on_header_field = B::data<&UpstreamConn::on_header_field>;
    t.on_header_value = B::data<&UpstreamConn::on_header_value>;
    t.on_headers_complete = B::cb<&UpstreamConn::on_headers_complete>;
    t.on_body = B::data<&UpstreamConn::on_body>;
    t.on_message_complete = B::cb<&UpstreamConn::on_message_complete>;
    return t;
  }();
  return &s;
}

UpstreamConn::UpstreamConn(Worker& w) : w_(w) {
  static thread_local std::uint64_t next_id = 1;
  id_ = next_id++;
  uv_tcp_init(w_.loop(), &tcp_);
  uv_timer_init(w_.loop(), &timer_);
  tcp_.data = this;
  timer_.data = this;
  llhttp_init(&parser_, HTTP_RESPONSE, settings());
  parser_.data = this;
}

void UpstreamConn::begin_exchange(ClientConn* owner, bool head_request) {
  owner_ = owner;
  head_request_ = head_request;
  llhttp_init(&parser_, HTTP_RESPONSE, settings());
  parser_.data = this;
  keep_alive_ = false;
  got_bytes_ = false;
  final_seen_ = false;
  client_blocked_ = false;
  read_refused_ = false;
  tunnel_ = false;
}

int UpstreamConn::connect(ClientConn* owner, bool head_request) {
  begin_exchange(owner, head_request);
  state_ = State::kConnecting;
  ++w_.metrics().upstream_connections_opened;
  int r = uv_tcp_connect(&connect_req_, &tcp_, reinterpret_cast<const sockaddr*>(&w_.upstream_addr()),
                         [](uv_connect_t* req, int status) {
                           static_cast<UpstreamConn*>(req->handle->data)->on_connect(status);
                         });
  if (r < 0) return r;
  arm(TimerFor::kConnect, w_.cfg().timeouts.upstream_connect);
  return 0;
}

void UpstreamConn::on_connect(int status) {
  if (state_ == State::kClosing) return;  // UV_ECANCELED after close()
  arm(TimerFor::kNone, 0);
  ClientConn* owner = owner_;
  if (status < 0) {
    close();
    if (owner) owner->upstream_connected(this, status);
    return;
  }
  state_ = State::kBusy;
  net::set_nodelay(&tcp_);
  update_read();
  if (owner) owner->upstream_connected(this, 0);
}

void UpstreamConn::attach(ClientConn* owner, bool head_request) {
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
  // budget: what the app's kernel does not take is counted in the worker's total.
  return net::write(reinterpret_cast<uv_stream_t*>(&tcp_), bufs, n, [](uv_stream_t* s, int status) {
    auto* self = static_cast<UpstreamConn*>(s->data);
    self->w_.memory_released();
    if (self->state_ == State::kClosing) return;
    if (status < 0) {
      self->fail(UpstreamError::kClosedEarly, status);
      return;
    }
    if (self->owner_ && self->queued() <= self->w_.budget().low) self->owner_->upstream_writable();
  }, w_.memory().counter());
}

size_t UpstreamConn::queued() const { return net::queued(reinterpret_cast<const uv_stream_t*>(&tcp_)); }

void UpstreamConn::set_client_blocked(bool blocked) {
  // budget: the client's queue drained, so a refused read may try again. A read is refused
  // (not blocked) when a batch flushed after the read took the queue past `high`.
  if (!blocked) retry_read();
  if (blocked == client_blocked_) return;
  client_blocked_ = blocked;
  if (blocked) ++w_.metrics().backpressure_pauses_upstream;
  // While the client holds us back, the client's send timeout is the one that counts.
  if (blocked && timer_for_ == TimerFor::kResponse) arm(TimerFor::kNone, 0);
  else if (!blocked && got_bytes_ && !tunnel_) arm_response_timer();
  update_read();
}

void UpstreamConn::retry_read() {
  if (!read_refused_) return;
  read_refused_ = false;
  if (got_bytes_ && !tunnel_) arm_response_timer();
  update_read();
}

size_t UpstreamConn::read_allowance() const {
  if (state_ != State::kBusy || owner_ == nullptr) return Worker::kReadBufferSize;  // idle: a read means close
  size_t n = w_.budget().read_allowance(owner_->queued_to_client());
  return w_.memory().may_read(owner_->held_bytes()) ? n : 0;
}

void UpstreamConn::arm_response_timer() {
  // Held back by the client (its queue, or ebb's memory): the client's send timeout counts.
  if (state_ != State::kBusy || tunnel_ || client_blocked_ || read_refused_) return;
  arm(TimerFor::kResponse, w_.cfg().timeouts.upstream_response);
}

void UpstreamConn::begin_tunnel() {
  tunnel_ = true;
  arm(TimerFor::kNone, 0);
  update_read();
}

void UpstreamConn::shutdown_write() {
  if (state_ != State::kBusy) return;
  uv_shutdown(&shutdown_req_, reinterpret_cast<uv_stream_t*>(&tcp_), [](uv_shutdown_t*, int) {});
}

void UpstreamConn::update_read() {
  bool want = state_ == State::kIdle ||
              (state_ == State::kBusy && owner_ != nullptr && !client_blocked_ && !read_refused_);
  if (want == reading_) return;
  auto* s = reinterpret_cast<uv_stream_t*>(&tcp_);
  if (want) {
    // budget: the read is sized so that the client's write queue stays within the budget.
    auto alloc = [](uv_handle_t* h, size_t, uv_buf_t* b) {
      Worker::give_read_buffer(h, static_cast<UpstreamConn*>(h->data)->read_allowance(), b);
    };
    uv_read_start(s, alloc, [](uv_stream_t* st, ssize_t n, const uv_buf_t* b) {
      static_cast<UpstreamConn*>(st->data)->on_read(n, b);
    });
  } else {
    uv_read_stop(s);
  }
  reading_ = want;
}

void UpstreamConn::arm(TimerFor t, std::uint64_t ms) {
  timer_for_ = t;
  if (t == TimerFor::kNone) {
    uv_timer_stop(&timer_);
    return;
  }
  uv_timer_start(&timer_, [](uv_timer_t* h) { static_cast<UpstreamConn*>(h->data)->on_timer(); }, ms, 0);
}

void UpstreamConn::on_timer() {
  switch (timer_for_) {
    case TimerFor::kConnect: fail(UpstreamError::kConnectTimeout, UV_ETIMEDOUT); break;
    case TimerFor::kResponse: fail(UpstreamError::kResponseTimeout, UV_ETIMEDOUT); break;
    case TimerFor::kIdle: close(); break;
    case TimerFor::kNone: break;
  }
}

void UpstreamConn::fail(UpstreamError kind, int err) {
  ClientConn* owner = owner_;
  close();
  if (owner) owner->upstream_failed(this, kind, err);
}

void UpstreamConn::on_read(ssize_t nread, const uv_buf_t* buf) {
  if (state_ == State::kClosing || nread == 0) return;
  if (nread == UV_ENOBUFS && owner_ != nullptr) {
    // budget: read_allowance() found no room; nothing was read. The client's queue draining
    // (set_client_blocked(false)) or the worker's total falling (retry_read) lifts it.
    read_refused_ = true;
    if (timer_for_ == TimerFor::kResponse) arm(TimerFor::kNone, 0);
    update_read();
    if (!w_.memory().may_read(owner_->held_bytes())) w_.memory_paused(w_.memory().over_cap());
    return;
  }
  if (state_ == State::kIdle) {
    // An idle connection has nothing to say: the app closed it, or broke the protocol.
    close();
    return;
  }
  ClientConn* owner = owner_;
  if (owner == nullptr) return;
  if (nread < 0) {
    if (tunnel_) {
      owner->upstream_eof();
      return;
    }
    if (nread == UV_EOF && got_bytes_ && llhttp_message_needs_eof(&parser_)) {
      llhttp_errno_t e = llhttp_finish(&parser_);
      if ((e == HPE_OK || e == HPE_PAUSED) && final_seen_) {
        keep_alive_ = false;
        owner->upstream_done(this);
        return;
      }
    }
    fail(UpstreamError::kClosedEarly, static_cast<int>(nread));
    return;
  }
  got_bytes_ = true;
  owner->cork();
  process(owner, buf->base, static_cast<size_t>(nread));
  owner->uncork();
}

void UpstreamConn::process(ClientConn* owner, const char* data, size_t len) {
  if (tunnel_) {
    owner->upstream_tunnel(data, len);
    return;
  }
  if (timer_for_ == TimerFor::kResponse || timer_for_ == TimerFor::kNone) arm_response_timer();
  llhttp_errno_t err = llhttp_execute(&parser_, data, len);
  if (state_ == State::kClosing || owner_ != owner) return;  // the exchange gave up meanwhile
  if (err == HPE_OK) return;
  const char* pos = llhttp_get_error_pos(&parser_);
  size_t rest = static_cast<size_t>(data + len - pos);
  if (err == HPE_PAUSED) {
    if (rest > 0) keep_alive_ = false;  // bytes after a complete response: not reusable
    owner->upstream_done(this);
    return;
  }
  if (err == HPE_PAUSED_UPGRADE) {
    if (rest > 0 && tunnel_) owner->upstream_tunnel(pos, rest);
    return;
  }
  LOG_WARN("bad response from upstream", {"upstream_conn", id_},
           {"error", llhttp_errno_name(err)}, {"reason", llhttp_get_error_reason(&parser_)});
  fail(UpstreamError::kBadResponse, UV_EPROTO);
}

int UpstreamConn::on_message_begin() {
  head_.clear();
  return 0;
}

int UpstreamConn::on_status(const char* at, size_t len) {
  head_.add_target(at, len);
  return 0;
}

int UpstreamConn::on_header_field(const char* at, size_t len) {
  if (head_.add_name(at, len) > w_.cfg().limits.max_header_bytes) {
    return http::fail(&parser_, "response head too large");
  }
  return 0;
}

int UpstreamConn::on_header_value(const char* at, size_t len) {
  if (head_.add_value(at, len) > w_.cfg().limits.max_header_bytes) {
    return http::fail(&parser_, "response head too large");
  }
  return 0;
}

int UpstreamConn::on_headers_complete() {
  if (state_ == State::kClosing || owner_ == nullptr) return HPE_USER;
  int status = llhttp_get_status_code(&parser_);
  // Not an HTTP status (RFC 9110 §15): the answer is not forwarded; the exchange gets a 502.
  if (status < 100 || status > 599) return http::fail(&parser_, "status code outside 100-599");
  if (status >= 100 && status < 200 && status != 101) return owner_->upstream_informational(this);
  int r = owner_->upstream_head(this);
  if (state_ == State::kClosing) return HPE_USER;
  // No body after HEAD, 204 or 304, whatever Content-Length says (RFC 9110 §6.4.1);
  // llhttp would wait for one.
  if (r == 0 && (head_request_ || status == 204 || status == 304)) return 1;
  return r;
}

int UpstreamConn::on_body(const char* at, size_t len) {
  if (state_ == State::kClosing || owner_ == nullptr) return HPE_USER;
  return owner_->upstream_body(at, len);
}

int UpstreamConn::on_message_complete() {
  int status = llhttp_get_status_code(&parser_);
  if (status >= 100 && status < 200) return 0;  // informational, or 101 (llhttp pauses for upgrade)
  final_seen_ = true;
  keep_alive_ = llhttp_should_keep_alive(&parser_) != 0;
  return HPE_PAUSED;
}

void UpstreamConn::close() {
  if (state_ == State::kClosing) return;
  if (state_ == State::kIdle) w_.pool().remove(this);
  state_ = State::kClosing;
  owner_ = nullptr;
  net::close_pair<UpstreamConn, &UpstreamConn::pending_closes_, &UpstreamConn::on_closed>(
      this, reinterpret_cast<uv_handle_t*>(&tcp_), reinterpret_cast<uv_handle_t*>(&timer_));
}

void UpstreamConn::on_closed(UpstreamConn* self) { delete self; }

UpstreamConn* Pool::take() {
  UpstreamConn* c = head_;
  if (c == nullptr) return nullptr;
  remove(c);
  return c;
}

void Pool::put(UpstreamConn* c) {
  if (size_ >= w_.cfg().upstream_pool.max_idle) {
    c->close();
    return;
  }
  c->pool_prev_ = nullptr;
  c->pool_next_ = head_;
  if (head_) head_->pool_prev_ = c;
  head_ = c;
  ++size_;
  c->enter_pool();
}

void Pool::remove(UpstreamConn* c) {
  if (c->pool_prev_) c->pool_prev_->pool_next_ = c->pool_next_;
  else if (head_ == c) head_ = c->pool_next_;
  else return;  // not in the pool
  if (c->pool_next_) c->pool_next_->pool_prev_ = c->pool_prev_;
  c->pool_prev_ = c->pool_next_ = nullptr;
  --size_;
}

void Pool::close_all() {
  while (head_) head_->close();  // close() removes it
}

}  // namespace ebb
