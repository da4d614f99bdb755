// An HTTP/1 response from a byte stream: strict llhttp, the head limit, the status rules, and
// the body rules of RFC 9110 §6.4.1 (none after HEAD, 204, 304). No sockets: the connection to
// the app feeds it, the readiness check too, and events go to a ResponseSink.
#pragma once

#include <llhttp.h>

#include <cstddef>
#include <cstdint>

#include "http/message.hpp"

namespace ebb::http {

class ResponseSink {
 public:
  virtual int on_informational() = 0;  // a 1xx other than 101; 0 or an llhttp error
  virtual int on_response_head() = 0;  // the final head (or a 101); 0 or an llhttp error
  virtual int on_response_body(const char* at, size_t len) = 0;

 protected:
  ~ResponseSink() = default;
};

class ResponseReader {
 public:
  struct Result {
    enum class Kind { kMore, kComplete, kUpgrade, kError };
    Kind kind = Kind::kMore;
    size_t used = 0;              // kComplete/kUpgrade: bytes that belonged to the response
    const char* reason = nullptr; // kError
    const char* error_name = nullptr;
  };

  explicit ResponseReader(ResponseSink& sink);
  ResponseReader(const ResponseReader&) = delete;
  ResponseReader& operator=(const ResponseReader&) = delete;

  // A new response is expected; `head_request`: it answers a HEAD (no body whatever it says).
  void begin(bool head_request, std::uint64_t max_header_bytes);
  Result feed(const char* data, size_t len);
  // The app closed the connection: true when that ended a close-delimited response.
  bool finish_at_eof();

  const MessageHead& head() const { return head_; }
  int status() const { return parser_.status_code; }
  bool got_bytes() const { return got_bytes_; }
  bool complete() const { return complete_; }
  bool keep_alive() const { return keep_alive_; }

 private:
  static const llhttp_settings_t* settings();
  int on_message_begin();
  int on_status(const char* at, size_t len);
  int on_header_field(const char* at, size_t len);
  int on_header_value(const char* at, size_t len);
  int on_headers_complete();
  int on_body(const char* at, size_t len);
  int on_message_complete();
  int check(size_t n);
  int refuse(const char* reason);

  ResponseSink& sink_;
  llhttp_t parser_;
  MessageHead head_;
  std::uint64_t max_header_bytes_ = 65536;
  const char* refused_ = nullptr;  // our own reason for failing the parse
  bool head_request_ = false;
  bool got_bytes_ = false;
  bool complete_ = false;
  bool keep_alive_ = false;
};

}  // namespace ebb::http
