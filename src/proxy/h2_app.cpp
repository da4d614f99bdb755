// The app over HTTP/2: the client sessions (connect, bytes in and out of nghttp2, the app's
// GOAWAY, its death) and their streams (the request head translated to HTTP/2 fields, the body
// paced by the app's windows, the answer and its trailers reported to the exchange).
#include "proxy/h2_app.hpp"

#include <cstring>
#include <vector>

#include "log.hpp"
#include "net/io.hpp"
#include "proxy/pool.hpp"
#include "proxy/worker.hpp"

namespace ebb {

namespace {
// The connection's receive window: every stream may fill its own 64 KiB window while its
// client is slow, and its siblings still flow.
constexpr std::int32_t kConnectionWindow = 16 << 20;
// Request body bytes kept after they went out, so that a stream the app never saw (GOAWAY,
// REFUSED_STREAM) can go again whole; a longer body is let go and such a stream fails instead.
constexpr size_t kReplayKeep = 64 * 1024;

nghttp2_nv nv(std::string_view name, std::string_view value) {
  return {reinterpret_cast<std::uint8_t*>(const_cast<char*>(name.data())),
          reinterpret_cast<std::uint8_t*>(const_cast<char*>(value.data())), name.size(), value.size(),
          NGHTTP2_NV_FLAG_NONE};
}

ssize_t read_body_cb(nghttp2_session*, std::int32_t, std::uint8_t* buf, size_t length, std::uint32_t* flags,
                     nghttp2_data_source* source, void*) {
  return static_cast<H2AppStream*>(source->ptr)->read_body(buf, length, flags);
}

H2AppConn* conn_of(void* self) { return static_cast<H2AppConn*>(self); }

H2AppStream* stream_of(nghttp2_session* session, std::int32_t id) {
  return static_cast<H2AppStream*>(nghttp2_session_get_stream_user_data(session, id));
}
}  // namespace

// ---- a stream -----------------------------------------------------------------------------

H2AppStream::H2AppStream(H2AppConn& conn, UpstreamSink* owner) : conn_(conn), owner_(owner) {}

// The head as HTTP/2 fields: pseudo-headers from the request line and Host, hop-by-hop fields
// dropped but `te: trailers` (gRPC needs it), the same X-Forwarded-* and X-Request-Id as HTTP/1.
int H2AppStream::send_head(const http::Request& r, const http::ForwardContext& ctx, std::string_view early,
                           bool end) {
  const http::MessageHead& h = r.head;
  std::string_view target = r.info.target.empty() ? h.target() : r.info.target;
  std::string path;
  if (!target.empty() && target.front() == '?') path = "/";  // "http://h?q" -> "/?q"
  path.append(target);
  std::string_view authority = r.info.authority;
  if (authority.empty()) authority = r.info.host_index >= 0 ? http::trim(h.value(r.info.host_index)) : ctx.default_host;
  std::string xff;
  std::vector<std::string> names;  // lower-cased copies; nghttp2 copies what it is given
  names.reserve(h.count());
  std::vector<nghttp2_nv> nva;
  nva.reserve(h.count() + 9);
  nva.push_back(nv(":method", ctx.method));
  nva.push_back(nv(":scheme", "http"));
  nva.push_back(nv(":authority", authority));
  nva.push_back(nv(":path", path));
  for (size_t i = 0; i < h.count(); ++i) {
    std::string_view n = h.name(i), v = h.value(i);
    if (static_cast<int>(i) == r.info.host_index || http::iequals(n, "host")) continue;
    if (http::iequals(n, "te")) {
      if (http::iequals(http::trim(v), "trailers")) nva.push_back(nv("te", "trailers"));
      continue;
    }
    if (http::is_hop_by_hop(n) || (r.info.connection.named_count > 0 && r.info.connection.names(n) &&
                                   !http::iequals(n, "content-length"))) {
      continue;
    }
    if (http::iequals(n, "x-forwarded-for")) {
      std::string_view val = http::trim(v);
      if (!val.empty()) xff.append(val).append(", ");
      continue;
    }
    std::string& lower = names.emplace_back(n);
    for (char& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    nva.push_back(nv(lower, v));
  }
  xff.append(ctx.client_ip);
  nva.push_back(nv("x-forwarded-for", xff));
  if (!r.info.has_forwarded_proto) nva.push_back(nv("x-forwarded-proto", "http"));
  if (!r.info.has_forwarded_host && !authority.empty() && (r.info.host_index >= 0 || !r.info.authority.empty()))
    nva.push_back(nv("x-forwarded-host", authority));
  if (!r.info.has_request_id) nva.push_back(nv("x-request-id", ctx.request_id));

  body_.assign(early);
  body_off_ = 0;
  body_end_ = end;
  nghttp2_data_provider prd;
  prd.source.ptr = this;
  prd.read_callback = read_body_cb;
  bool body = !early.empty() || !end;
  std::int32_t id = nghttp2_submit_request(conn_.session(), nullptr, nva.data(), nva.size(), body ? &prd : nullptr, this);
  if (id < 0) {
    LOG_WARN("HTTP/2 request to the app not submitted", {"upstream_conn", conn_.id()},
             {"error", nghttp2_strerror(id)});
    return UV_EPROTO;
  }
  id_ = id;
  conn_.flush();
  return 0;
}

int H2AppStream::send_body(const char* at, size_t len) {
  if (closed_ || done_) return 0;  // the app answered or reset it: the rest is not wanted
  body_.append(at, len);
  nghttp2_session_resume_data(conn_.session(), id_);
  conn_.flush();
  return 0;
}

int H2AppStream::end_body() {
  if (closed_ || done_) return 0;
  body_end_ = true;
  nghttp2_session_resume_data(conn_.session(), id_);
  conn_.flush();
  return 0;
}

ssize_t H2AppStream::read_body(std::uint8_t* buf, size_t length, std::uint32_t* flags) {
  size_t n = std::min(length, body_.size() - body_off_);
  std::memcpy(buf, body_.data() + body_off_, n);
  body_off_ += n;
  if (body_off_ > kReplayKeep) {
    body_.erase(0, body_off_);
    body_off_ = 0;
    replay_lost_ = true;
  }
  if (n > 0 && queued() <= conn_.worker().budget().low) writable_ = true;
  if (body_off_ == body_.size() && body_end_) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    return static_cast<ssize_t>(n);
  }
  return n > 0 ? static_cast<ssize_t>(n) : static_cast<ssize_t>(NGHTTP2_ERR_DEFERRED);
}

bool H2AppStream::take_writable() {
  bool w = writable_ && owner_ != nullptr;
  writable_ = false;
  return w;
}

// Until the answer's head: the app's time to answer. After it, a stream (gRPC's server and bidi
// streams) may rightly stay quiet for long; the client's own deadline and cancel govern it.
void H2AppStream::arm_response_timer() {
  if (owner_ == nullptr || done_ || final_head_ || client_blocked_) return;
  timer_.start(conn_.worker().loop(), owner_->response_timeout(), [](void* arg) {
    auto* s = static_cast<H2AppStream*>(arg);
    if (s->id_ > 0 && !s->closed_)
      nghttp2_submit_rst_stream(s->conn_.session(), NGHTTP2_FLAG_NONE, s->id_, NGHTTP2_CANCEL);  // the app stops too
    s->fail(UpstreamError::kResponseTimeout, UV_ETIMEDOUT, false);
    s->conn_.flush();
  }, this);
}

// The client is behind: the bytes the app sent are not acknowledged, so its window closes and
// it stops sending on this stream alone.
void H2AppStream::set_client_blocked(bool blocked) {
  if (blocked == client_blocked_) return;
  client_blocked_ = blocked;
  if (blocked) {
    ++conn_.worker().metrics().backpressure_pauses_upstream;
    timer_.stop();
    return;
  }
  if (unconsumed_ > 0 && !closed_) {
    nghttp2_session_consume(conn_.session(), id_, unconsumed_);
    unconsumed_ = 0;
    conn_.flush();
  }
  arm_response_timer();
}

bool H2AppStream::may_replay(const http::Request&, std::string& body) {
  // The app never saw it (refused, above its GOAWAY's last stream, never sent): any method may
  // go again, with the body bytes kept so far.
  if (on_wire_ || replay_lost_) return false;
  body.insert(0, body_);
  return true;
}

void H2AppStream::detach() {
  owner_ = nullptr;
  timer_.stop();
}

void H2AppStream::release(bool) {
  detach();
  // The answer is complete: if the request side is still open (the app answered before the
  // upload ended), the rest is not needed. Anything unfinished is cancelled.
  if (id_ > 0 && !closed_ && !(done_ && nghttp2_session_get_stream_local_close(conn_.session(), id_) == 1)) {
    nghttp2_submit_rst_stream(conn_.session(), NGHTTP2_FLAG_NONE, id_, done_ ? NGHTTP2_NO_ERROR : NGHTTP2_CANCEL);
  }
  conn_.flush();
}

void H2AppStream::abort() {
  detach();
  if (id_ > 0 && !closed_) nghttp2_submit_rst_stream(conn_.session(), NGHTTP2_FLAG_NONE, id_, NGHTTP2_CANCEL);
  conn_.flush();
}

void H2AppStream::conn_ready(int status) {
  if (owner_ == nullptr) return;
  UpstreamSink* o = owner_;
  if (status < 0) {
    detach();
    done_ = true;
    o->upstream_connected(this, status);
    return;
  }
  ready_ = true;
  o->upstream_connected(this, 0);
}

void H2AppStream::begin_headers() {
  in_trailers_ = final_head_;  // HEADERS after the final head: the trailers
  if (in_trailers_) {
    trailers_.clear();
  } else {
    head_.clear();
    status_ = 0;
  }
}

bool H2AppStream::header(std::string_view name, std::string_view value) {
  if (name == ":status") {
    int s = 0;
    for (char c : value) s = s * 10 + (c - '0');  // nghttp2 checked it: three digits
    status_ = s;
    return true;
  }
  if (!name.empty() && name[0] == ':') return true;
  http::MessageHead& h = in_trailers_ ? trailers_ : head_;
  h.add_name(name.data(), name.size());
  if (h.add_value(value.data(), value.size()) <= conn_.worker().cfg().limits.max_header_bytes) return true;
  LOG_WARN("bad response from upstream", {"upstream_conn", conn_.id()}, {"stream", id_},
           {"reason", "response head too large"});
  fail(UpstreamError::kBadResponse, UV_EPROTO, false);
  return false;  // nghttp2 resets the stream
}

void H2AppStream::headers_end(bool end_stream) {
  if (owner_ == nullptr || done_) return;
  if (in_trailers_) {
    has_trailers_ = true;
    if (end_stream) report_done();
    return;
  }
  if (status_ >= 100 && status_ < 200) {
    owner_->upstream_informational(this);
    return;
  }
  final_head_ = true;
  head_only_ = end_stream;
  timer_.stop();
  UpstreamSink* o = owner_;
  o->upstream_head(this);
  if (end_stream && owner_ == o && !done_) report_done();
}

void H2AppStream::data(const char* at, size_t len) {
  if (owner_ == nullptr || done_) {
    nghttp2_session_consume(conn_.session(), id_, len);  // nobody wants it
    return;
  }
  owner_->upstream_body(at, len);
  if (owner_ != nullptr && client_blocked_) unconsumed_ += len;
  else nghttp2_session_consume(conn_.session(), id_, len);
}

void H2AppStream::data_end() {
  if (owner_ != nullptr && !done_) report_done();
}

void H2AppStream::report_done() {
  done_ = true;
  timer_.stop();
  owner_->upstream_done(this);
}

void H2AppStream::closed(std::uint32_t error_code) {
  closed_ = true;
  timer_.stop();
  if (owner_ == nullptr || done_) return;
  // Ended before a whole answer. REFUSED_STREAM (or a stream whose HEADERS never went out):
  // the app did no work on it, so it may go again (RFC 9113 §8.7).
  bool unseen = error_code == NGHTTP2_REFUSED_STREAM || !on_wire_;
  if (unseen) on_wire_ = false;
  LOG_DEBUG("app closed the stream", {"upstream_conn", conn_.id()}, {"stream", id_},
            {"error", nghttp2_http2_strerror(error_code)});
  fail(UpstreamError::kClosedEarly, UV_ECONNRESET, unseen);
}

void H2AppStream::fail(UpstreamError kind, int err, bool unseen) {
  if (owner_ == nullptr || done_) return;
  if (unseen) on_wire_ = false;
  done_ = true;
  UpstreamSink* o = owner_;
  detach();
  o->upstream_failed(this, kind, err);
}

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
  for (;;) {
    // Above one read buffer's worth the socket is the bottleneck: DATA waits in the streams
    // (each within its budget) and on_write_done asks again.
    if (queued() + out_.size() > Worker::kReadBufferSize) break;
    const std::uint8_t* data = nullptr;
    ssize_t n = nghttp2_session_mem_send(session_, &data);
    if (n < 0) {
      in_session_ = false;
      LOG_WARN("HTTP/2 send to the app failed", {"upstream_conn", id_}, {"error", nghttp2_strerror(static_cast<int>(n))});
      fail_all(UpstreamError::kClosedEarly, UV_EPROTO);
      return;
    }
    if (n == 0) break;
    out_.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
  }
  in_session_ = false;
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
