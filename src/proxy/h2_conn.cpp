// The HTTP/2 connection: bytes in and out of nghttp2, the settings and limits it enforces, the
// streams it opens, and the drain (GOAWAY twice, RFC 9113 §6.8).
#include "proxy/h2_conn.hpp"

#include <cstring>

#include "http/h2.hpp"
#include "log.hpp"
#include "net/io.hpp"

namespace ebb {

namespace {
constexpr std::uint32_t kMaxConcurrentStreams = 100;
// The connection's receive window: large enough that every stream may have its own 64 KiB
// window full (a slow app holds its stream's bytes back, never its siblings').
constexpr std::int32_t kConnectionWindow = 16 << 20;
constexpr std::uint64_t kLingerMs = 2000;
constexpr std::uint64_t kPingWaitMs = 1000;  // the PING of the two-step GOAWAY, at most

H2Conn* conn_of(void* self) { return static_cast<H2Conn*>(self); }
}  // namespace

H2Conn::H2Conn(Worker& w, std::uint64_t id) : Client(w.loop(), Worker::alloc_cb), w_(w), id_(id) {
  w_.link(this);
  ++w_.metrics().connections_active;
}

void H2Conn::start(std::string_view first_bytes) {
  net::set_nodelay(tcp());
  std::string ip = net::peer_ip(tcp());
  std::strncpy(client_ip_, ip.c_str(), sizeof client_ip_ - 1);
  ++w_.metrics().h2_connections;

  nghttp2_session_callbacks* cb;
  nghttp2_session_callbacks_new(&cb);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
  nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
  nghttp2_option* opt;
  nghttp2_option_new(&opt);
  // Request bodies are acknowledged as the app takes them (H2Stream::release_flow).
  nghttp2_option_set_no_auto_window_update(opt, 1);
  // The known attacks, at nghttp2's advised bounds: rapid reset (CVE-2023-44487), CONTINUATION
  // floods (CVE-2024-27316 and kin), SETTINGS and PING floods (outbound ACK queue).
  nghttp2_option_set_stream_reset_rate_limit(opt, 1000, 33);
  nghttp2_option_set_max_continuations(opt, 8);
  nghttp2_option_set_max_outbound_ack(opt, 1000);
  nghttp2_option_set_max_settings(opt, 32);
  nghttp2_session_server_new2(&session_, cb, this, opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cb);

  const Config& c = w_.cfg();
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, kMaxConcurrentStreams},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, static_cast<std::uint32_t>(c.limits.max_header_bytes)},
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, kConnectionWindow);
  born_ms_ = w_.now_ms();
  // Arriving while ebb drains: served, and told at once to go elsewhere for what follows.
  if (w_.phase() != Phase::kServing) on_phase();
  receive(first_bytes.data(), first_bytes.size());
  if (closing()) return;
  set_reading(true);
  flush();
  refresh_timer();
}

void H2Conn::receive(const char* data, size_t len) {
  in_session_ = true;
  ssize_t rv = nghttp2_session_mem_recv(session_, reinterpret_cast<const std::uint8_t*>(data), len);
  in_session_ = false;
  if (rv < 0) {
    // nghttp2 has queued the GOAWAY that says why (on_frame_send counts it), when it could.
    LOG_INFO("HTTP/2 connection error", {"conn", id_}, {"client", client_ip_},
             {"error", nghttp2_strerror(static_cast<int>(rv))});
    flush();
    if (!error_counted_) ++w_.metrics().h2_protocol_errors;
    error_counted_ = true;
    close(Unanswered::kRequestError);
  }
}

void H2Conn::on_read(ssize_t nread, const uv_buf_t* buf) {
  if (nread == 0) return;
  if (nread < 0) {
    close(Unanswered::kClientClosed);
    return;
  }
  if (closing_gracefully_) return;  // all was said: what still comes is dropped
  receive(buf->base, static_cast<size_t>(nread));
  if (closing()) return;
  flush();
  reap();
  refresh_timer();
}

void H2Conn::uncork() {
  if (corked_ > 0 && --corked_ == 0) flush();
}

void H2Conn::flush() {
  if (in_session_ || corked_ > 0 || closing() || closing_gracefully_) return;
  in_session_ = true;
  int rv = http::gather_frames(session_, out_, queued(), Worker::kReadBufferSize);
  in_session_ = false;
  if (rv < 0) {
    LOG_WARN("HTTP/2 send failed", {"conn", id_}, {"error", nghttp2_strerror(rv)});
    close(Unanswered::kRequestError);
    return;
  }
  if (!out_.empty()) {
    uv_buf_t b = uv_buf_init(out_.data(), static_cast<unsigned>(out_.size()));
    int r = write(&b, 1, w_.memory().counter());
    out_.clear();
    if (r < 0) {
      close(Unanswered::kClientClosed);
      return;
    }
  }
  maybe_finish();
}

// nghttp2 has nothing more to read or write: every stream ended after a GOAWAY, or the
// session failed. The write side closes after the last frame; the read side is drained.
void H2Conn::maybe_finish() {
  if (nghttp2_session_want_read(session_) || nghttp2_session_want_write(session_)) return;
  if (queued() > 0) return;  // on_write_done comes back here
  closing_gracefully_ = true;
  start_timer(kLingerMs);
  if (shutdown() < 0) close(Unanswered::kClientClosed);
}

void H2Conn::on_write_done(int status) {
  w_.memory_released();  // budget: a finished or cancelled write freed its copy
  if (closing()) return;
  if (status < 0) {
    close(Unanswered::kClientClosed);
    return;
  }
  if (closing_gracefully_) return;
  flush();
  reap();
}

void H2Conn::refresh_timer() {
  if (closing() || closing_gracefully_) return;
  std::uint64_t ms = UINT64_MAX;
  if (shutdown_notice_ && !final_goaway_) {
    ms = kPingWaitMs;
  } else if (streams_.empty()) {
    // No stream open: the idle timeout, or in the drain the same grace as an HTTP/1 connection.
    ms = w_.phase() == Phase::kDrain ? 1000 : w_.cfg().timeouts.client_idle;
  }
  std::uint64_t age = w_.cfg().http2.max_connection_age;
  if (age > 0 && !shutdown_notice_) {
    std::uint64_t lived = w_.now_ms() - born_ms_;
    ms = std::min(ms, lived >= age ? 0 : age - lived);
  }
  if (ms == UINT64_MAX) stop_timer();
  else start_timer(ms);
}

void H2Conn::on_timer() {
  if (closing_gracefully_) {
    close(Unanswered::kAfterClose);
    return;
  }
  std::uint64_t age = w_.cfg().http2.max_connection_age;
  if (!shutdown_notice_ && age > 0 && w_.now_ms() - born_ms_ >= age) {
    LOG_DEBUG("HTTP/2 connection reached max_connection_age", {"conn", id_});
    send_shutdown_notice();  // the drain's GOAWAY, for this connection alone
  } else if (shutdown_notice_ && !final_goaway_) {
    send_final_goaway();  // the client did not answer the PING in time
  } else if (streams_.empty()) {
    nghttp2_session_terminate_session(session_, NGHTTP2_NO_ERROR);  // idle: GOAWAY and close
  }
  flush();
  reap();
  refresh_timer();
}

void H2Conn::on_phase() {
  if (closing() || w_.phase() == Phase::kServing) return;
  if (!shutdown_notice_) {
    send_shutdown_notice();
  } else if (w_.phase() == Phase::kDrain && !final_goaway_) {
    send_final_goaway();
  }
  flush();
  refresh_timer();
}

// Step one: "stop opening streams soon" (last-stream-id 2^31-1), and a PING whose answer shows
// that every stream the client opened before it has reached us.
void H2Conn::send_shutdown_notice() {
  if (shutdown_notice_) return;
  shutdown_notice_ = true;
  nghttp2_submit_shutdown_notice(session_);
  nghttp2_submit_ping(session_, NGHTTP2_FLAG_NONE, nullptr);
  ++w_.metrics().h2_goaway_sent;
}

// Step two: the real last stream id. Streams above it were never seen, so the client may retry
// them elsewhere; streams at or below it are answered.
void H2Conn::send_final_goaway() {
  if (final_goaway_) return;
  final_goaway_ = true;
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(session_),
                        NGHTTP2_NO_ERROR, nullptr, 0);
}

void H2Conn::cut() {
  if (closing()) return;
  streams_.for_each([](H2Stream* s) { s->cut(); });
  flush();
  close(Unanswered::kDrainTimeout);
}

void H2Conn::close(Unanswered why) {
  if (closing()) return;
  streams_.for_each([why](H2Stream* s) { s->abort_quietly(why); });
  close_handles();
}

void H2Conn::shed() {
  if (closing()) return;
  LOG_WARN("connection shed: buffers at limits.max_memory", {"conn", id_}, {"client", client_ip_},
           {"protocol", "HTTP/2"}, {"held_bytes", held_bytes()}, {"buffered_bytes", w_.memory().held()},
           {"max_memory", w_.memory().max()});
  close(Unanswered::kMemoryShed);  // counts the answers in flight or not yet delivered
}

void H2Conn::streams_hold(size_t before, size_t now) {
  streams_held_ += now - before;  // unsigned: wraps back correctly when `now` is smaller
  if (now > before) {
    w_.memory().add(now - before);
    return;
  }
  w_.memory().sub(before - now);
  w_.memory_released();
}

void H2Conn::resume_memory() {
  if (closing()) return;
  // The app's side of each stream may read again (a read refused for memory waits for this).
  streams_.for_each([](H2Stream* s) {
    if (s->exchange().active()) s->exchange().client_drained();
  });
}

void H2Conn::stream_gone(H2Stream* s) {
  streams_.remove(s);
  dead_.push_front(s);
  if (streams_.empty()) refresh_timer();  // the last stream ended: the idle timeout runs again
}

void H2Conn::reap() {
  while (H2Stream* s = dead_.front()) {
    dead_.remove(s);
    delete s;
  }
}

void H2Conn::on_closed() {
  while (H2Stream* s = streams_.front()) stream_gone(s);
  reap();
  nghttp2_session_del(session_);
  session_ = nullptr;
  w_.unlink(this);
  --w_.metrics().connections_active;
  if (w_.observer()) w_.observer()->on_connection_closed();
}

// ---- nghttp2's callbacks --------------------------------------------------------------

int H2Conn::on_begin_headers(nghttp2_session*, const nghttp2_frame* f, void* self) {
  H2Conn* c = conn_of(self);
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  auto* s = new H2Stream(*c, f->hd.stream_id);
  c->streams_.push_front(s);
  nghttp2_session_set_stream_user_data(c->session_, f->hd.stream_id, s);
  c->refresh_timer();  // a stream is open: no idle timeout (the PING wait and the age still run)
  return 0;
}

int H2Conn::on_header(nghttp2_session* session, const nghttp2_frame* f, const std::uint8_t* name, size_t namelen,
                      const std::uint8_t* value, size_t valuelen, std::uint8_t, void*) {
  if (f->hd.type != NGHTTP2_HEADERS) return 0;
  auto* s = static_cast<H2Stream*>(nghttp2_session_get_stream_user_data(session, f->hd.stream_id));
  if (s == nullptr) return 0;  // trailers of a stream already answered, or not ours
  if (!s->add_header({reinterpret_cast<const char*>(name), namelen}, {reinterpret_cast<const char*>(value), valuelen}))
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  // RST_STREAM for this stream alone
  return 0;
}

int H2Conn::on_frame_recv(nghttp2_session* session, const nghttp2_frame* f, void* self) {
  H2Conn* c = conn_of(self);
  switch (f->hd.type) {
    case NGHTTP2_HEADERS:
    case NGHTTP2_DATA: {
      auto* s = static_cast<H2Stream*>(nghttp2_session_get_stream_user_data(session, f->hd.stream_id));
      if (s == nullptr) return 0;
      bool end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
      if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) s->headers_done(end);
      else if (end) s->end_of_request();
      return 0;
    }
    case NGHTTP2_PING:
      if ((f->hd.flags & NGHTTP2_FLAG_ACK) != 0 && c->shutdown_notice_) c->send_final_goaway();
      return 0;
    default:
      return 0;
  }
}

int H2Conn::on_data_chunk(nghttp2_session* session, std::uint8_t, std::int32_t stream_id, const std::uint8_t* data,
                          size_t len, void* self) {
  auto* s = static_cast<H2Stream*>(nghttp2_session_get_stream_user_data(session, stream_id));
  if (s == nullptr) {
    nghttp2_session_consume(conn_of(self)->session_, stream_id, len);  // nobody wants it
    return 0;
  }
  s->body(reinterpret_cast<const char*>(data), len);
  return 0;
}

// A GOAWAY with an error code is nghttp2 ending the connection for a protocol error or a
// flood it detected (rapid reset, too many SETTINGS or PINGs to acknowledge): said and counted.
int H2Conn::on_frame_send(nghttp2_session*, const nghttp2_frame* f, void* self) {
  if (f->hd.type != NGHTTP2_GOAWAY || f->goaway.error_code == NGHTTP2_NO_ERROR) return 0;
  H2Conn* c = conn_of(self);
  if (!c->error_counted_) ++c->w_.metrics().h2_protocol_errors;
  c->error_counted_ = true;
  LOG_WARN("HTTP/2 connection ended by ebb", {"conn", c->id_}, {"client", c->client_ip_},
           {"error", nghttp2_http2_strerror(f->goaway.error_code)});
  return 0;
}

int H2Conn::on_stream_close(nghttp2_session* session, std::int32_t stream_id, std::uint32_t error_code, void* self) {
  auto* s = static_cast<H2Stream*>(nghttp2_session_get_stream_user_data(session, stream_id));
  if (s == nullptr) return 0;
  nghttp2_session_set_stream_user_data(session, stream_id, nullptr);
  s->closed(error_code);
  conn_of(self)->stream_gone(s);
  return 0;
}

}  // namespace ebb
