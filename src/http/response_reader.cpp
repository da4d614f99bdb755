// The response reader.
#include "http/response_reader.hpp"

#include "http/parser.hpp"

namespace ebb::http {

const llhttp_settings_t* ResponseReader::settings() {
  static const llhttp_settings_t s = [] {
    llhttp_settings_t t;
    llhttp_settings_init(&t);
    using B = Bind<ResponseReader>;
    t.on_message_begin = B::cb<&ResponseReader::on_message_begin>;
    t.on_status = B::data<&ResponseReader::on_status>;
    t.on_header_field = B::data<&ResponseReader::on_header_field>;
    t.on_header_value = B::data<&ResponseReader::on_header_value>;
    t.on_headers_complete = B::cb<&ResponseReader::on_headers_complete>;
    t.on_body = B::data<&ResponseReader::on_body>;
    t.on_message_complete = B::cb<&ResponseReader::on_message_complete>;
    return t;
  }();
  return &s;
}

ResponseReader::ResponseReader(ResponseSink& sink) : sink_(sink) { begin(false, max_header_bytes_); }

void ResponseReader::begin(bool head_request, std::uint64_t max_header_bytes) {
  llhttp_init(&parser_, HTTP_RESPONSE, settings());
  parser_.data = this;
  head_request_ = head_request;
  max_header_bytes_ = max_header_bytes;
  refused_ = nullptr;
  got_bytes_ = false;
  complete_ = false;
  keep_alive_ = false;
}

ResponseReader::Result ResponseReader::feed(const char* data, size_t len) {
  Result res;
  if (len > 0) got_bytes_ = true;
  llhttp_errno_t err = llhttp_execute(&parser_, data, len);
  if (err == HPE_OK) {
    res.used = len;
    return res;
  }
  const char* pos = llhttp_get_error_pos(&parser_);
  if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
    res.kind = err == HPE_PAUSED ? Result::Kind::kComplete : Result::Kind::kUpgrade;
    res.used = static_cast<size_t>(pos - data);
    return res;
  }
  res.kind = Result::Kind::kError;
  res.error_name = llhttp_errno_name(err);
  res.reason = refused_ != nullptr ? refused_ : llhttp_get_error_reason(&parser_);
  if (res.reason == nullptr || *res.reason == '\0') res.reason = res.error_name;
  return res;
}

bool ResponseReader::finish_at_eof() {
  if (!got_bytes_ || !llhttp_message_needs_eof(&parser_)) return false;
  llhttp_errno_t e = llhttp_finish(&parser_);
  if ((e != HPE_OK && e != HPE_PAUSED) || !complete_) return false;
  keep_alive_ = false;
  return true;
}

int ResponseReader::refuse(const char* reason) {
  refused_ = reason;
  return fail(&parser_, reason);
}

int ResponseReader::check(size_t n) { return n > max_header_bytes_ ? refuse("response head too large") : 0; }

int ResponseReader::on_message_begin() {
  head_.clear();
  return 0;
}

int ResponseReader::on_status(const char* at, size_t len) {
  head_.add_target(at, len);
  return 0;
}

int ResponseReader::on_header_field(const char* at, size_t len) { return check(head_.add_name(at, len)); }

int ResponseReader::on_header_value(const char* at, size_t len) { return check(head_.add_value(at, len)); }

int ResponseReader::on_headers_complete() {
  int status = llhttp_get_status_code(&parser_);
  // Not an HTTP status (RFC 9110 §15): the answer is not forwarded.
  if (status < 100 || status > 599) return refuse("status code outside 100-599");
  if (status < 200 && status != 101) return sink_.on_informational();
  int r = sink_.on_response_head();
  // No body after HEAD, 204 or 304, whatever Content-Length says; llhttp would wait for one.
  if (r == 0 && (head_request_ || status == 204 || status == 304)) return 1;
  return r;
}

int ResponseReader::on_body(const char* at, size_t len) { return sink_.on_response_body(at, len); }

int ResponseReader::on_message_complete() {
  int status = llhttp_get_status_code(&parser_);
  if (status >= 100 && status < 200) return 0;  // informational, or 101 (llhttp pauses for upgrade)
  complete_ = true;
  keep_alive_ = llhttp_should_keep_alive(&parser_) != 0;
  return HPE_PAUSED;
}

}  // namespace ebb::http
