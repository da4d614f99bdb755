// The app over HTTP/2, the connections: client sessions (connect, bytes in and out of nghttp2,
// the app's SETTINGS and GOAWAY, its death) shared by the streams of h2_app_stream.cpp.
#include "proxy/h2_app.hpp"

#include <cstring>
#include <vector>

#include "http/h2.hpp"
#include "log.hpp"
#include "net/io.hpp"
#include "proxy/pool.hpp"
#include "proxy/worker.hpp"

namespace ebb {

namespace {
// The connection's receive window: every stream may fill its own 64 KiB window while its
// client is slow, and its siblings still flow.
constexpr std::int32_t kConnectionWindow = 16 << 20;
H2AppConn* conn_of(void* self) { return static_cast<H2AppConn*>(self); }

H2AppStream* stream_of(nghttp2_session* session, std::int32_t id) {
  return static_cast<H2AppStream*>(nghttp2_session_get_stream_user_data(session, id));
}
}  // namespace

// ---- a connection -------------------------------------------------------------------------

H2AppConn::H2AppConn(Worker& w) : net::Conn(w.loop(), Worker::alloc_cb), w_(w), id_(w.next_upstream_id()) {
  nghttp2_session_callbacks* cb;
  nghttp2_session_callbacks_new(&cb);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
  nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
  nghttp2_option* opt;
  nghttp2_option_new(&opt);
  // The app's answer is acknowledged as the client takes it (H2AppStream::set_client_blocked).
  nghttp2_option_set_no_auto_window_update(opt, 1);
  nghttp2_session_client_new2(&session_, cb, this, opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cb);
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, static_cast<std::uint32_t>(w.cfg().limits.max_header_bytes)},
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, kConnectionWindow);
}

int H2AppConn::connect() {
  ++w_.metrics().upstream_connections_opened;
  int r = net::Conn::connect(reinterpret_cast<const sockaddr*>(&w_.upstream_addr()));
  if (r < 0) return r;
  start_timer(w_.cfg().timeouts.upstream_connect);
  return 0;
}

bool H2AppConn::usable() const {
  if (state_ == State::kClosing || goaway_last_ >= 0) return false;
  // Before the app's SETTINGS nghttp2 assumes 100 (RFC 9113 §6.5.2 advises no fewer).
  std::uint32_t max = nghttp2_session_get_remote_settings(session_, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
  return streams_.size() < max;
}

H2AppStream* H2AppConn::open(UpstreamSink* owner) {
  auto* s = new H2AppStream(*this, owner);
  streams_.push_front(s);
  if (state_ == State::kReady) {
    s->mark_ready();
    ++w_.metrics().upstream_connections_reused;
    idle_since_ = 0;
    stop_timer();  // no longer idle
  }
  return s;
}

void H2AppConn::on_connect(int status) {
  stop_timer();
  if (status < 0) {
    // Each exchange decides (a refused connect is retried within the budget).
    state_ = State::kClosing;
    w_.pool().remove_h2(this);
    streams_.for_each([status](H2AppStream* s) { s->conn_ready(status); });
    close();
    return;
  }
  // Streams wait for the app's SETTINGS: until then nghttp2 would assume 100 concurrent
  // streams, more than an app may allow (the connect timeout covers this round trip too).
  state_ = State::kHandshake;
  net::set_nodelay(tcp());
  set_reading(true);
  flush();  // the preface and SETTINGS
  start_timer(w_.cfg().timeouts.upstream_connect);
}

void H2AppConn::become_ready() {
  stop_timer();
  state_ = State::kReady;
  streams_.for_each([](H2AppStream* s) { s->conn_ready(0); });
  flush();
}

void H2AppConn::flush() {
  if (in_session_ || state_ == State::kConnecting || state_ == State::kClosing) return;
  in_session_ = true;
  int rv = http::gather_frames(session_, out_, queued(), Worker::kReadBufferSize);
  in_session_ = false;
  if (rv < 0) {
    LOG_WARN("HTTP/2 send to the app failed", {"upstream_conn", id_}, {"error", nghttp2_strerror(rv)});
    fail_all(UpstreamError::kClosedEarly, UV_EPROTO);
    return;
  }
  if (!out_.empty()) {
    uv_buf_t b = uv_buf_init(out_.data(), static_cast<unsigned>(out_.size()));
    int r = write(&b, 1, w_.memory().counter());
    out_.clear();
    if (r < 0) {
      fail_all(UpstreamError::kClosedEarly, r);
      return;
    }
  }
  // Request bodies that drained: their clients may send more.
  streams_.for_each([](H2AppStream* s) {
    if (s->take_writable()) s->owner_writable();
  });
  // Streams closed by what was sent (a reset) are freed from the timer, never here: a stream's
  // own call may have led here.
  if (reap_due_ && state_ == State::kReady) start_timer(0);
}

void H2AppConn::on_write_done(int status) {
  w_.memory_released();
  if (closing()) return;
  if (status < 0) {
    fail_all(UpstreamError::kClosedEarly, status);
    return;
  }
  flush();
  reap();
}

void H2AppConn::on_read(ssize_t nread, const uv_buf_t* buf) {
  if (nread == 0) return;
  if (nread < 0) {
    if (!streams_.empty()) LOG_WARN("app closed its HTTP/2 connection", {"upstream_conn", id_}, {"error", uv_err_name(static_cast<int>(nread))});
    fail_all(UpstreamError::kClosedEarly, static_cast<int>(nread));
    return;
  }
  in_session_ = true;
  ssize_t rv = nghttp2_session_mem_recv(session_, reinterpret_cast<const std::uint8_t*>(buf->base),
                                        static_cast<size_t>(nread));
  in_session_ = false;
  if (rv >= 0 && state_ == State::kHandshake && settings_seen_) become_ready();
  if (rv >= 0) flush();
  // A fatal error, or a protocol error for which nghttp2 sent a GOAWAY with its code (or will
  // not read any more without having been told to go away): the app broke the protocol.
  if (rv < 0 || protocol_error_ || (!closing() && goaway_last_ < 0 && !nghttp2_session_want_read(session_))) {
    LOG_WARN("bad HTTP/2 from the app", {"upstream_conn", id_},
             {"error", rv < 0 ? nghttp2_strerror(static_cast<int>(rv)) : "protocol error"});
    fail_all(UpstreamError::kBadResponse, UV_EPROTO);
    return;
  }
  reap();
}

void H2AppConn::on_timer() {
  if (state_ == State::kConnecting || state_ == State::kHandshake) {
    fail_all(UpstreamError::kConnectTimeout, UV_ETIMEDOUT);
    return;
  }
  reap();
  if (state_ == State::kReady && streams_.empty() && idle_since_ != 0 &&
      w_.now_ms() - idle_since_ >= w_.cfg().timeouts.upstream_idle) {
    close();  // idle for timeouts.upstream_idle
  }
}

// Frees streams nobody holds any more, then: a connection the app told to go away closes once
// its last stream is done; an idle one waits timeouts.upstream_idle for the next exchange.
void H2AppConn::reap() {
  reap_due_ = false;
  streams_.for_each([this](H2AppStream* s) {
    if (s->detached() && (s->closed_by_session() || s->id() < 0)) {
      streams_.remove(s);
      delete s;
    }
  });
  if (state_ != State::kReady || !streams_.empty()) return;
  if (goaway_last_ >= 0 || !nghttp2_session_want_read(session_)) {
    close();
    return;
  }
  std::uint64_t now = w_.now_ms(), idle = w_.cfg().timeouts.upstream_idle;
  if (idle_since_ == 0) idle_since_ = now;
  start_timer(now - idle_since_ >= idle ? 0 : idle - (now - idle_since_));
}

void H2AppConn::fail_all(UpstreamError kind, int err) {
  if (state_ == State::kClosing && closing()) return;
  state_ = State::kClosing;
  w_.pool().remove_h2(this);
  streams_.for_each([&](H2AppStream* s) {
    bool unseen = goaway_last_ >= 0 && s->id() > goaway_last_;
    s->fail(kind, err, unseen);
  });
  close();
}

void H2AppConn::close() {
  if (closing()) return;
  if (state_ != State::kClosing) {
    state_ = State::kClosing;
    w_.pool().remove_h2(this);
    streams_.for_each([](H2AppStream* s) { s->fail(UpstreamError::kClosedEarly, UV_ECONNRESET, false); });
  }
  close_handles();
}

void H2AppConn::on_closed() {
  while (H2AppStream* s = streams_.front()) {
    streams_.remove(s);
    delete s;
  }
  nghttp2_session_del(session_);
  session_ = nullptr;
}

// ---- nghttp2's callbacks --------------------------------------------------------------

int H2AppConn::on_begin_headers(nghttp2_session* session, const nghttp2_frame* f, void*) {
  if (f->hd.type != NGHTTP2_HEADERS) return 0;
  if (H2AppStream* s = stream_of(session, f->hd.stream_id)) s->begin_headers();
  return 0;
}

int H2AppConn::on_header(nghttp2_session* session, const nghttp2_frame* f, const std::uint8_t* name, size_t namelen,
                         const std::uint8_t* value, size_t valuelen, std::uint8_t, void*) {
  if (f->hd.type != NGHTTP2_HEADERS) return 0;
  H2AppStream* s = stream_of(session, f->hd.stream_id);
  if (s != nullptr && !s->header({reinterpret_cast<const char*>(name), namelen},
                                 {reinterpret_cast<const char*>(value), valuelen})) {
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }
  return 0;
}

int H2AppConn::on_frame_recv(nghttp2_session* session, const nghttp2_frame* f, void* self) {
  H2AppConn* c = conn_of(self);
  bool end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  switch (f->hd.type) {
    case NGHTTP2_HEADERS:
      if (H2AppStream* s = stream_of(session, f->hd.stream_id)) s->headers_end(end);
      return 0;
    case NGHTTP2_DATA:
      if (end) {
        if (H2AppStream* s = stream_of(session, f->hd.stream_id)) s->data_end();
      }
      return 0;
    case NGHTTP2_SETTINGS:
      if ((f->hd.flags & NGHTTP2_FLAG_ACK) == 0) c->settings_seen_ = true;
      return 0;
    case NGHTTP2_GOAWAY:
      // No new streams here; nghttp2 closes the streams above last_stream_id with
      // REFUSED_STREAM, and their exchanges go again on a fresh connection.
      c->goaway_last_ = f->goaway.last_stream_id;
      LOG_INFO("app sent GOAWAY", {"upstream_conn", c->id_}, {"last_stream", f->goaway.last_stream_id},
               {"error", nghttp2_http2_strerror(f->goaway.error_code)});
      return 0;
    default:
      return 0;
  }
}

int H2AppConn::on_data_chunk(nghttp2_session* session, std::uint8_t, std::int32_t stream_id, const std::uint8_t* data,
                             size_t len, void*) {
  H2AppStream* s = stream_of(session, stream_id);
  if (s == nullptr) {
    nghttp2_session_consume(session, stream_id, len);
    return 0;
  }
  s->data(reinterpret_cast<const char*>(data), len);
  return 0;
}

int H2AppConn::on_frame_send(nghttp2_session* session, const nghttp2_frame* f, void* self) {
  if (f->hd.type == NGHTTP2_GOAWAY && f->goaway.error_code != NGHTTP2_NO_ERROR) conn_of(self)->protocol_error_ = true;
  if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
    if (H2AppStream* s = stream_of(session, f->hd.stream_id)) s->headers_sent();
  }
  return 0;
}

int H2AppConn::on_stream_close(nghttp2_session* session, std::int32_t stream_id, std::uint32_t error_code,
                               void* self) {
  H2AppStream* s = stream_of(session, stream_id);
  if (s == nullptr) return 0;
  nghttp2_session_set_stream_user_data(session, stream_id, nullptr);
  s->closed(error_code);
  conn_of(self)->reap_due_ = true;
  return 0;
}

}  // namespace ebb
