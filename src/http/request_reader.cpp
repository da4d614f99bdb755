// The request reader: framing rules (HeadScanner), llhttp's parse, and the limits and head
// checks that decide a 4xx/5xx before anything reaches the app.
#include "http/request_reader.hpp"

#include "http/parser.hpp"

namespace ebb::http {

const llhttp_settings_t* RequestReader::settings() {
  static const llhttp_settings_t s = [] {
    llhttp_settings_t t;
    llhttp_settings_init(&t);
    using B = Bind<RequestReader>;
    t.on_message_begin = B::cb<&RequestReader::on_message_begin>;
    t.on_url = B::data<&RequestReader::on_url>;
    t.on_header_field = B::data<&RequestReader::on_header_field>;
    t.on_header_value = B::data<&RequestReader::on_header_value>;
    t.on_headers_complete = B::cb<&RequestReader::on_headers_complete>;
    t.on_body = B::data<&RequestReader::on_body>;
    t.on_message_complete = B::cb<&RequestReader::on_message_complete>;
    return t;
  }();
  return &s;
}

RequestReader::RequestReader(RequestSink& sink) : sink_(sink) {
  llhttp_init(&parser_, HTTP_REQUEST, settings());
  parser_.data = this;
}

RequestReader::Result RequestReader::feed(char* data, size_t len, const RequestLimits& limits) {
  Result res;
  if (!scan_.done()) {
    if (const char* bad = scan_.feed(data, len)) {
      res.kind = Result::Kind::kError;
      res.status = 400;
      res.reason = bad;
      return res;
    }
  }
  limits_ = &limits;
  in_callback_ = true;
  llhttp_errno_t err = llhttp_execute(&parser_, data, len);
  in_callback_ = false;
  if (err == HPE_OK) {
    res.used = len;
    return res;
  }
  if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
    res.kind = Result::Kind::kPaused;
    res.used = static_cast<size_t>(llhttp_get_error_pos(&parser_) - data);
    return res;
  }
  res.kind = Result::Kind::kError;
  res.status = 400;
  res.error = err;
  res.used = static_cast<size_t>(llhttp_get_error_pos(&parser_) - data);
  res.error_name = llhttp_errno_name(err);
  res.reason = llhttp_get_error_reason(&parser_);
  if (reject_reason_ != nullptr) {  // from our own callback (llhttp may report it as HPE_CB_*)
    res.status = reject_status_;
    res.reason = reject_reason_;
  } else if (err == HPE_INVALID_VERSION) {
    res.status = 505;
  }
  if (res.reason == nullptr || *res.reason == '\0') res.reason = res.error_name;
  return res;
}

void RequestReader::next() {
  llhttp_resume(&parser_);
  scan_.reset();
  req_.head.shrink_if_large();
}

int RequestReader::reject(int status, const char* reason) {
  reject_status_ = status;
  reject_reason_ = reason;
  return fail(&parser_, reason);
}

int RequestReader::on_message_begin() {
  // Field by field: the head keeps its storage, and `info` is written whole by analyse_request.
  Request& r = req_;
  r.head.clear();
  r.method = HTTP_GET;
  r.http10 = r.http2 = r.head_method = r.chunked = r.upgrade = r.close = r.replayable = false;
  r.head_done = r.complete = false;
  r.head_bytes = r.body_bytes = 0;
  reject_reason_ = nullptr;
  sink_.on_request_begin();
  return 0;
}

int RequestReader::on_url(const char* at, size_t len) {
  size_t n = req_.head.add_target(at, len);
  if (req_.head.target().size() > limits_->max_uri_bytes) return reject(414, "request target too long");
  if (n > limits_->max_header_bytes) return reject(431, "request head too large");
  return 0;
}

int RequestReader::on_header_field(const char* at, size_t len) {
  if (req_.head.add_name(at, len) > limits_->max_header_bytes) return reject(431, "request head too large");
  return 0;
}

int RequestReader::on_header_value(const char* at, size_t len) {
  if (req_.head.add_value(at, len) > limits_->max_header_bytes) return reject(431, "request head too large");
  return 0;
}

int RequestReader::on_headers_complete() {
  Request& r = req_;
  r.head_done = true;
  r.head_bytes = scan_.size();
  if (parser_.http_major != 1 || parser_.http_minor > 1) return reject(505, "only HTTP/1.0 and HTTP/1.1 are supported");
  r.http10 = parser_.http_minor == 0;
  r.method = static_cast<llhttp_method_t>(parser_.method);
  if (r.method == HTTP_CONNECT) return reject(405, "CONNECT is not supported");
  r.info = analyse_request(r.head, !r.http10);
  if (r.info.error != nullptr && limits_->forwarding_rules) return reject(400, r.info.error);
  bool has_cl = (parser_.flags & F_CONTENT_LENGTH) != 0;
  if (limits_->max_body_bytes > 0 && has_cl && parser_.content_length > limits_->max_body_bytes) {
    return reject(413, "request body too large");
  }
  r.head_method = r.method == HTTP_HEAD;
  r.chunked = r.info.chunked;
  r.upgrade = r.info.has_upgrade && r.info.connection.upgrade && !r.http10;
  r.close = !llhttp_should_keep_alive(&parser_);
  bool has_body = r.chunked || (has_cl && parser_.content_length > 0);
  bool idempotent = r.method == HTTP_GET || r.method == HTTP_HEAD || r.method == HTTP_OPTIONS ||
                    r.method == HTTP_PUT || r.method == HTTP_DELETE || r.method == HTTP_TRACE;
  r.replayable = idempotent && !has_body;
  return sink_.on_request_head();
}

int RequestReader::on_body(const char* at, size_t len) {
  req_.body_bytes += len;
  if (limits_->max_body_bytes > 0 && req_.body_bytes > limits_->max_body_bytes) {
    return reject(413, "request body too large");
  }
  return sink_.on_request_body(at, len);
}

int RequestReader::on_message_complete() {
  int r = sink_.on_request_complete();
  if (r != 0) return r;
  req_.complete = true;
  return HPE_PAUSED;
}

}  // namespace ebb::http
