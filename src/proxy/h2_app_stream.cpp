// The app over HTTP/2, one stream: the request head translated to HTTP/2 fields, the body paced
// by the app's windows and kept for a replay while it is small, the answer and its trailers
// reported to the exchange. The sessions they share are in h2_app.cpp.
#include <cstring>
#include <vector>

#include "http/h2.hpp"
#include "log.hpp"
#include "proxy/h2_app.hpp"
#include "proxy/pool.hpp"
#include "proxy/worker.hpp"

namespace ebb {

using http::nv;

namespace {
// Request body bytes kept after they went out, so that a stream the app never saw (GOAWAY,
// REFUSED_STREAM) can go again whole; a longer body is let go and such a stream fails instead.
constexpr size_t kReplayKeep = 64 * 1024;

ssize_t read_body_cb(nghttp2_session*, std::int32_t, std::uint8_t* buf, size_t length, std::uint32_t* flags,
                     nghttp2_data_source* source, void*) {
  return static_cast<H2AppStream*>(source->ptr)->read_body(buf, length, flags);
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

}  // namespace ebb
