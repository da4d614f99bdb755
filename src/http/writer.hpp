// Every HTTP/1 head and response ebb writes: the request head it forwards to the app, the
// response head it forwards to the client, the answers it makes itself, and chunk framing.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "http/message.hpp"

namespace ebb::http {

// Per-request values ebb adds to the forwarded head.
struct ForwardContext {
  std::string_view method;
  std::string_view client_ip;
  std::string_view request_id;      // used when the request has none
  std::string_view default_host;    // for HTTP/1.0 requests without Host
  bool body_chunked = false;        // ebb re-frames the body as chunked
  bool upgrade = false;             // keep Upgrade and say Connection: upgrade
};
// Appends the head sent to the app: HTTP/1.1, hop-by-hop fields dropped, X-Forwarded-* added.
void write_request_head(std::string& out, const MessageHead& head, const RequestInfo& info,
                        const ForwardContext& ctx);

struct ResponseFraming {
  int status = 200;
  bool chunked = false;          // ebb frames the body as chunked for the client
  bool close = false;            // Connection: close, and the connection closes after
  bool keep_alive_10 = false;    // Connection: keep-alive for an HTTP/1.0 client
  bool upgrade = false;          // 101: keep Upgrade, say Connection: upgrade
};
// Appends the head sent to the client.
void write_response_head(std::string& out, const MessageHead& head, const ResponseInfo& info,
                         const ResponseFraming& f);

// A complete response that ebb makes itself (an error, a probe, an admin answer).
struct LocalResponse {
  int status = 200;
  std::string_view content_type = "text/plain; charset=utf-8";
  std::string_view body;
  std::string_view error;         // X-Ebb-Error: why ebb answered itself (errors only)
  std::string_view extra_fields;  // more header lines, each ending in CRLF ("Retry-After: 1\r\n")
  bool close = false;             // Connection: close
  bool head_only = false;         // an answer to HEAD: Content-Length of the body, no body
};
void write_local_response(std::string& out, const LocalResponse& r);

// An error that ebb answers itself: the reason in X-Ebb-Error and as the text body.
void write_error_response(std::string& out, int status, std::string_view reason, bool close,
                          std::string_view extra_fields = {});

// "<hex>\r\n" for a chunk of `len` bytes into `buf` (at least 18 bytes); returns its length.
size_t chunk_line(char* buf, size_t len);

const char* status_text(int status);

// `s` with every byte that `keep` refuses written as %XX (RFC 3986 §2.1). A URL query value keeps
// only the unreserved characters; gRPC's grpc-message keeps printable ASCII but '%'.
std::string percent_encode(std::string_view s, bool (*keep)(unsigned char));

}  // namespace ebb::http
