// HTTP/1 requests, one after another, from a byte stream: the head scanner, strict llhttp and
// ebb's limits. No sockets: the connection feeds what it read and hears of each request through
// a RequestSink; a request's end pauses the reader until the connection is ready for the next.
#pragma once

#include <llhttp.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "http/head_scan.hpp"
#include "http/message.hpp"

namespace ebb::http {

struct RequestLimits {
  std::uint64_t max_header_bytes = 65536;
  std::uint64_t max_uri_bytes = 8192;
  std::uint64_t max_body_bytes = 0;  // 0 = unlimited
  // The header rules of a request that is forwarded (Host, Connection, Transfer-Encoding, ...);
  // off for a request ebb answers itself (admin), which needs only its framing.
  bool forwarding_rules = true;
};

// What one request's head said, as the exchange needs it (an HTTP/2 stream fills the same).
struct Request {
  MessageHead head;
  RequestInfo info;
  llhttp_method_t method = HTTP_GET;
  bool http10 = false;
  bool http2 = false;       // came on an HTTP/2 stream
  bool head_method = false;
  bool chunked = false;     // the body arrives chunked (and is forwarded chunked)
  bool upgrade = false;     // asks to switch protocols (HTTP/1.1 with Connection: upgrade)
  bool close = false;       // the client asked to close after the answer (Connection: close, 1.0)
  bool replayable = false;  // idempotent and without a body: safe to send again
  bool head_done = false;
  bool complete = false;    // the whole request, body included, was read
  std::uint64_t head_bytes = 0;
  std::uint64_t body_bytes = 0;
  std::string_view method_name() const { return llhttp_method_name(method); }
  const char* protocol() const { return http2 ? "HTTP/2" : http10 ? "HTTP/1.0" : "HTTP/1.1"; }
};

class RequestSink {
 public:
  virtual void on_request_begin() = 0;
  // The head is read and passed the limits. 0 to go on, or RequestReader::reject's value.
  virtual int on_request_head() = 0;
  virtual int on_request_body(const char* at, size_t len) = 0;  // 0, or an llhttp error
  virtual int on_request_complete() = 0;                        // 0, or an llhttp error

 protected:
  ~RequestSink() = default;
};

class RequestReader {
 public:
  struct Result {
    enum class Kind { kMore, kPaused, kError };
    Kind kind = Kind::kMore;
    size_t used = 0;                   // kPaused: bytes taken up to the request's end
    int status = 0;                    // kError: the answer's status and why
    const char* reason = nullptr;
    const char* error_name = nullptr;  // kError from llhttp: its error name
    llhttp_errno_t error = HPE_OK;     // kError from llhttp: its error; `used` is where it stopped
  };

  explicit RequestReader(RequestSink& sink);
  RequestReader(const RequestReader&) = delete;
  RequestReader& operator=(const RequestReader&) = delete;

  // Reads `len` more bytes (the head scanner may rewrite a version in place). kMore: all taken;
  // kPaused: a request ended after `used` bytes (the rest is the next one's, or for an upgrade
  // the new protocol's); kError: the request breaks a rule and gets `status`.
  Result feed(char* data, size_t len, const RequestLimits& limits);
  // The connection is ready for the next request.
  void next();
  // From a sink callback: fail the request with this status.
  int reject(int status, const char* reason);
  bool in_callback() const { return in_callback_; }
  const Request& request() const { return req_; }
  Request& request() { return req_; }

 private:
  static const llhttp_settings_t* settings();
  int on_message_begin();
  int on_url(const char* at, size_t len);
  int on_header_field(const char* at, size_t len);
  int on_header_value(const char* at, size_t len);
  int on_headers_complete();
  int on_body(const char* at, size_t len);
  int on_message_complete();

  RequestSink& sink_;
  llhttp_t parser_;
  HeadScanner scan_;
  Request req_;
  const RequestLimits* limits_ = nullptr;
  const char* reject_reason_ = nullptr;
  int reject_status_ = 0;
  bool in_callback_ = false;
};

}  // namespace ebb::http
