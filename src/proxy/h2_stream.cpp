// One HTTP/2 request stream as the Downstream of its Exchange: the request head built from the
// HEADERS frame (pseudo-headers to a request line and Host, cookies joined), the body passed on
// with flow control, and the answer framed as HEADERS + DATA (+ gRPC's trailers-only errors).
#include <cstring>

#include "http/grpc.hpp"
#include "http/h2.hpp"
#include "http/writer.hpp"
#include "log.hpp"
#include "proxy/h2_conn.hpp"

namespace ebb {

using http::nv;

namespace {
bool iequal_any(std::string_view n, std::initializer_list<std::string_view> names) {
  for (std::string_view x : names)
    if (http::iequals(n, x)) return true;
  return false;
}

// Fields that mean something for one HTTP/1 connection only (RFC 9113 §8.2.2).
bool connection_specific(std::string_view n) {
  return iequal_any(n, {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te"});
}

bool find_method(std::string_view name, llhttp_method_t& out) {
  for (int m = 0; m <= HTTP_FLUSH; ++m) {
    if (name == llhttp_method_name(static_cast<llhttp_method_t>(m))) {
      out = static_cast<llhttp_method_t>(m);
      return true;
    }
  }
  return false;
}

ssize_t read_answer_cb(nghttp2_session*, std::int32_t, std::uint8_t* buf, size_t length, std::uint32_t* flags,
                       nghttp2_data_source* source, void*) {
  return static_cast<H2Stream*>(source->ptr)->read_answer(buf, length, flags);
}
}  // namespace

H2Stream::H2Stream(H2Conn& conn, std::int32_t id) : conn_(conn), id_(id), ex_(conn.worker(), *this) {
  req_.http2 = true;
}

H2Stream::~H2Stream() {
  ex_.abandon();
  out_.clear();
  out_off_ = 0;
  account_out();
}

void H2Stream::account_out() {
  size_t now = send_queued();
  if (now == accounted_) return;
  conn_.streams_hold(accounted_, now);
  accounted_ = now;
}

std::uint64_t H2Stream::conn_id() const { return conn_.id(); }
std::string_view H2Stream::peer_ip() const { return conn_.peer_ip(); }

// ---- the request --------------------------------------------------------------------------

bool H2Stream::add_header(std::string_view name, std::string_view value) {
  http::MessageHead& h = req_.head;
  std::uint64_t limit = conn_.worker().cfg().limits.max_header_bytes;
  if (!name.empty() && name[0] == ':') {
    if (name == ":method") method_.assign(value);
    else if (name == ":path") h.add_target(value.data(), value.size());
    else if (name == ":authority") authority_.assign(value);
    else if (name != ":scheme") bad_ = "unsupported pseudo-header";
    return true;
  }
  if (name == "cookie") {  // crumbs are joined into one field for HTTP/1 (RFC 9113 §8.2.3)
    if (!cookie_.empty()) cookie_ += "; ";
    cookie_.append(value);
    return true;
  }
  if (connection_specific(name) && !(name == "te" && value == "trailers")) {
    bad_ = "connection-specific header field";
    return true;
  }
  h.add_name(name.data(), name.size());
  if (h.add_value(value.data(), value.size()) > limit) {
    bad_ = "request head too large";
    bad_status_ = 431;
  }
  return true;
}

void H2Stream::headers_done(bool end_stream) {
  http::MessageHead& h = req_.head;
  if (!cookie_.empty()) {
    h.add_name("cookie", 6);
    h.add_value(cookie_.data(), cookie_.size());
  }
  if (!authority_.empty() && h.find("host").empty()) {
    h.add_name("host", 4);
    h.add_value(authority_.data(), authority_.size());
  }
  req_.head_done = true;
  req_.head_bytes = h.bytes();
  req_.complete = false;
  ex_.begin(&req_);
  if (bad_ == nullptr && (!find_method(method_, req_.method) || h.target().empty())) bad_ = "malformed request line";
  if (bad_ == nullptr && req_.method == HTTP_CONNECT) {
    bad_ = "CONNECT is not supported";
    bad_status_ = 405;
  }
  if (bad_ == nullptr && h.target().size() > conn_.worker().cfg().limits.max_uri_bytes) {
    bad_ = "request target too long";
    bad_status_ = 414;
  }
  if (bad_ == nullptr) {
    req_.info = http::analyse_request(h, true);
    if (req_.info.error != nullptr) bad_ = req_.info.error;
  }
  if (bad_ != nullptr) {
    int status = bad_status_;
    LOG_INFO("bad request", {"conn", conn_.id()}, {"stream", id_}, {"status", status}, {"reason", bad_});
    send_error(status, bad_);
    return;
  }
  req_.head_method = req_.method == HTTP_HEAD;
  // A body of unknown length is forwarded chunked; one with Content-Length as it is.
  bool has_cl = !h.find("content-length").empty();
  req_.chunked = !end_stream && !has_cl;
  req_.replayable = end_stream && (req_.method == HTTP_GET || req_.method == HTTP_HEAD ||
                                   req_.method == HTTP_OPTIONS || req_.method == HTTP_PUT ||
                                   req_.method == HTTP_DELETE || req_.method == HTTP_TRACE);
  Exchange::Refusal no = ex_.start();
  if (no.status != 0) {
    send_error(no.status, no.reason);
    return;
  }
  if (end_stream) end_of_request();
}

void H2Stream::body(const char* at, size_t len) {
  req_.body_bytes += len;
  unacked_ += len;
  std::uint64_t max = conn_.worker().cfg().limits.max_body_bytes;
  if (ex_.active() && !ex_.local() && max > 0 && req_.body_bytes > max) {
    send_error(413, "request body too large");
  } else if (ex_.active() && !ex_.local()) {
    ex_.forward_body(at, len);
  }
  release_flow();
}

void H2Stream::end_of_request() {
  req_.complete = true;
  if (ex_.active()) ex_.request_complete();
}

// Request body bytes are given back to the client's window once the app's side has taken them
// (or when nobody wants them), so a slow app holds at most one window per stream.
void H2Stream::release_flow() {
  if (unacked_ == 0 || stream_closed_) return;
  if (ex_.active() && !ex_.local() && !ex_.app_can_take()) return;
  nghttp2_session_consume(conn_.session(), id_, unacked_);
  unacked_ = 0;
}

void H2Stream::request_flow() {
  release_flow();
  conn_.flush();
}

// ---- the answer ---------------------------------------------------------------------------

bool H2Stream::grpc() const { return http::is_grpc_content_type(req_.head.find("content-type")); }

bool H2Stream::submit(int status, const http::MessageHead* head, bool body, const char* extra_name,
                      std::string_view extra_value) {
  if (stream_closed_) return false;
  std::vector<nghttp2_nv> nva;
  std::vector<std::string> names;  // lower-cased copies; nghttp2 copies the values it is given
  char code[8];
  std::snprintf(code, sizeof code, "%d", status);
  nva.push_back(nv(":status", code));
  if (head != nullptr) {
    names.reserve(head->count());
    for (size_t i = 0; i < head->count(); ++i) {
      std::string_view n = head->name(i);
      if (connection_specific(n)) continue;
      std::string& lower = names.emplace_back(n);
      for (char& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      nva.push_back(nv(lower, head->value(i)));
    }
  }
  if (extra_name != nullptr) nva.push_back(nv(extra_name, extra_value));
  nghttp2_data_provider prd;
  prd.source.ptr = this;
  prd.read_callback = read_answer_cb;
  int rv = nghttp2_submit_response(conn_.session(), id_, nva.data(), nva.size(), body ? &prd : nullptr);
  head_sent_ = rv == 0;
  if (!body) answer_done_ = true;
  return rv == 0;
}

bool H2Stream::send_informational(const http::MessageHead&, int) { return true; }  // not relayed

bool H2Stream::send_head(const http::MessageHead& head, int status, bool head_only) {
  bool body = !(head_only || req_.head_method || status == 204 || status == 304);
  if (!submit(status, &head, body)) return false;
  // A head without a body ends the stream once sent: answer_complete sends it, after the
  // exchange is finished, so the stream's close is never mistaken for the client's reset.
  if (body) conn_.flush();
  return true;
}

bool H2Stream::send_body(const char* at, size_t len) {
  if (stream_closed_) return false;
  ex_.count_response_bytes(len);
  out_.append(at, len);
  account_out();
  nghttp2_session_resume_data(conn_.session(), id_);
  if (corked_ == 0) conn_.flush();
  return true;
}

bool H2Stream::send_end() {
  if (stream_closed_) return false;
  answer_done_ = true;
  nghttp2_session_resume_data(conn_.session(), id_);
  return true;
}

bool H2Stream::send_trailers(const http::MessageHead& trailers) {
  if (stream_closed_) return false;
  trailers_.clear();
  for (size_t i = 0; i < trailers.count(); ++i) {
    std::string_view n = trailers.name(i), v = trailers.value(i);
    if (connection_specific(n)) continue;
    trailers_.add_name(n.data(), n.size());
    trailers_.add_value(v.data(), v.size());
  }
  has_trailers_ = trailers_.count() > 0;
  return send_end();
}

bool H2Stream::grpc_trailer(int code, const char* message) {
  if (stream_closed_ || !head_sent_ || answer_done_ || !grpc()) return false;
  std::string c = std::to_string(code);
  std::string msg = http::percent_encode(message, [](unsigned char ch) { return ch >= 0x20 && ch <= 0x7e && ch != '%'; });
  trailers_.clear();
  trailers_.add_name("grpc-status", 11);
  trailers_.add_value(c.data(), c.size());
  trailers_.add_name("grpc-message", 12);
  trailers_.add_value(msg.data(), msg.size());
  has_trailers_ = true;
  answer_done_ = true;
  nghttp2_session_resume_data(conn_.session(), id_);
  return true;
}

bool H2Stream::send_tunnel(const char*, size_t) { return false; }  // no upgrade over HTTP/2

ssize_t H2Stream::read_answer(std::uint8_t* buf, size_t length, std::uint32_t* flags) {
  size_t n = std::min(length, out_.size() - out_off_);
  std::memcpy(buf, out_.data() + out_off_, n);
  out_off_ += n;
  if (out_off_ == out_.size()) {
    out_.clear();
    out_off_ = 0;
  }
  account_out();
  if (send_queued() == 0) delivering_ = false;  // the rest is nghttp2's to send
  if (n > 0 && send_queued() <= conn_.worker().budget().low && ex_.active()) ex_.client_drained();
  if (send_queued() == 0 && answer_done_) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (has_trailers_) {
      // The END_STREAM goes on the trailers' HEADERS frame instead (nghttp2 allows this here).
      std::vector<nghttp2_nv> nva;
      nva.reserve(trailers_.count());
      for (size_t i = 0; i < trailers_.count(); ++i) nva.push_back(nv(trailers_.name(i), trailers_.value(i)));
      has_trailers_ = false;
      if (nghttp2_submit_trailer(conn_.session(), id_, nva.data(), nva.size()) == 0) *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    }
    return static_cast<ssize_t>(n);
  }
  return n > 0 ? static_cast<ssize_t>(n) : static_cast<ssize_t>(NGHTTP2_ERR_DEFERRED);
}

void H2Stream::local_answer(int status, std::string_view type, std::string_view body, const char* error) {
  out_.assign(body);
  out_off_ = 0;
  account_out();
  ex_.count_response_bytes(body.size());
  http::MessageHead head;
  head.add_name("content-type", 12);
  head.add_value(type.data(), type.size());
  std::string len = std::to_string(body.size());
  head.add_name("content-length", 14);
  head.add_value(len.data(), len.size());
  answer_done_ = true;
  submit(status, &head, !req_.head_method && !body.empty(), error != nullptr ? "x-ebb-error" : nullptr,
         error != nullptr ? std::string_view(error) : std::string_view{});
}

void H2Stream::send_probe(int status, std::string_view body) {
  local_answer(status, "text/plain; charset=utf-8", body, nullptr);
  conn_.flush();
}

void H2Stream::send_error(int status, const char* reason) {
  if (stream_closed_) return;
  if (ex_.response_started()) {  // the head is out: a reset is the only honest signal left
    if (ex_.status() == 0) ex_.set_status(status);
    abort(Unanswered::kRequestError);
    return;
  }
  ex_.answered_locally(status, reason);
  if (grpc()) {
    // Trailers-only (gRPC over HTTP/2): HTTP 200 with the status a gRPC client acts on.
    http::MessageHead head;
    std::string code = std::to_string(http::grpc_status_for(status));
    std::string msg = http::percent_encode(reason, [](unsigned char c) { return c >= 0x20 && c <= 0x7e && c != '%'; });
    head.add_name("content-type", 12);
    head.add_value("application/grpc", 16);
    head.add_name("grpc-status", 11);
    head.add_value(code.data(), code.size());
    head.add_name("grpc-message", 12);
    head.add_value(msg.data(), msg.size());
    submit(200, &head, false, "x-ebb-error", reason);
  } else {
    std::string body = std::string(reason) + "\n";
    local_answer(status, "text/plain; charset=utf-8", body, reason);
  }
  ex_.finish();
  delivering_ = !stream_closed_ && send_queued() > 0;
  // The rest of the request, if any, is read and dropped (release_flow keeps its window open):
  // a RST_STREAM(NO_ERROR) after the answer, which RFC 9113 §8.1 allows, makes some clients
  // (curl 7.88) discard the answer they already have.
  release_flow();
  conn_.flush();
}

void H2Stream::cork() {
  ++corked_;
  conn_.cork();
}

void H2Stream::uncork() {
  if (corked_ > 0) --corked_;
  conn_.uncork();
}

void H2Stream::answer_complete() {
  ex_.finish();
  delivering_ = !stream_closed_ && send_queued() > 0;
  conn_.flush();
}

void H2Stream::count_unanswered(Unanswered why, const char* what) {
  conn_.worker().metrics().count_unanswered(why);
  LogLevel level = why == Unanswered::kClientClosed ? LogLevel::kInfo : LogLevel::kWarn;
  EBB_LOG(level, what, {"conn", conn_.id()}, {"stream", id_}, {"client", conn_.peer_ip()},
          {"reason", unanswered_name(why)}, {"method", req_.method_name()}, {"target", req_.head.target()});
}

// The app failed after the head went out: a gRPC client gets UNAVAILABLE as the trailer (a
// reset would read as INTERNAL), anyone else a reset.
void H2Stream::abort(Unanswered why) {
  if (ex_.active()) count_unanswered(why, "request unanswered");
  ex_.abandon();
  if (!grpc_trailer(14, "upstream failed") && !stream_closed_)
    nghttp2_submit_rst_stream(conn_.session(), NGHTTP2_FLAG_NONE, id_, NGHTTP2_INTERNAL_ERROR);
  conn_.flush();
}

void H2Stream::abort_quietly(Unanswered why) {
  if (ex_.active() && req_.head_done) {
    count_unanswered(why, "request unanswered");
  } else if (delivering_) {
    count_unanswered(why, why == Unanswered::kClientClosed ? "client left before its whole answer arrived"
                                                           : "answer cut before it was delivered");
  }
  delivering_ = false;
  ex_.abandon();
}

void H2Stream::closed(std::uint32_t error_code) {
  stream_closed_ = true;
  delivering_ = false;
  if (ex_.active() && answer_done_ && error_code == NGHTTP2_NO_ERROR && out_.size() == out_off_) {
    ex_.finish();  // the whole answer went out before the exchange heard of its end
    return;
  }
  if (ex_.active()) {
    // Reset by the client (it gave up), or closed by a connection error.
    count_unanswered(Unanswered::kClientClosed, "client reset the stream before its answer");
    ex_.abandon();
  }
}

void H2Stream::cut() {
  if (!ex_.active() && !delivering_) return;
  ++conn_.worker().metrics().drain_cut_requests;
  LOG_WARN("request cut at drain timeout", {"conn", conn_.id()}, {"stream", id_}, {"undelivered_bytes", send_queued()});
  if (!ex_.active()) {  // whole from the app, but the client's flow control holds the rest
    abort_quietly(Unanswered::kDrainTimeout);
    return;
  }
  count_unanswered(Unanswered::kDrainTimeout, "request unanswered");
  ex_.abandon();
  if (stream_closed_) return;
  // gRPC: UNAVAILABLE (the client may retry elsewhere), as a trailer when the head is out, else
  // as a trailers-only answer; the stream ends with it (a reset queued behind would overtake
  // it). Anything else: RST_STREAM(CANCEL).
  if (grpc() && grpc_trailer(14, "ebb is shutting down")) return;
  if (grpc() && !head_sent_) {
    http::MessageHead head;
    head.add_name("content-type", 12);
    head.add_value("application/grpc", 16);
    head.add_name("grpc-status", 11);
    head.add_value("14", 2);
    head.add_name("grpc-message", 12);
    head.add_value("ebb is shutting down", 20);
    if (submit(200, &head, false)) return;
  }
  nghttp2_submit_rst_stream(conn_.session(), NGHTTP2_FLAG_NONE, id_, NGHTTP2_CANCEL);
}

void H2Stream::exchange_timer(std::uint64_t ms) {
  if (ms == 0) {
    timer_.stop();
    return;
  }
  timer_.start(conn_.worker().loop(), ms, [](void* arg) {
    auto* s = static_cast<H2Stream*>(arg);
    s->ex_.on_timer();
    s->conn_.flush();
  }, this);
}

}  // namespace ebb
