// The Exchange's side toward the app, as two small interfaces (the mirror image of Downstream):
// AppLeg, what an exchange asks of its way to the app (an HTTP/1 UpstreamConn, or one stream of
// a shared HTTP/2 connection, proxy/h2_app.hpp), and UpstreamSink, what that way reports back.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "http/message.hpp"
#include "http/request_reader.hpp"
#include "http/writer.hpp"
#include "metrics.hpp"

namespace ebb {

class AppLeg;

// What the app side tells the exchange that borrows it. `up` names the leg, so an exchange that
// moved on (retried elsewhere) can tell a late report from a current one.
class UpstreamSink {
 public:
  virtual void upstream_connected(AppLeg* up, int status) = 0;
  virtual int upstream_informational(AppLeg* up) = 0;     // a 1xx other than 101
  virtual int upstream_head(AppLeg* up) = 0;              // 0, or an llhttp error
  virtual int upstream_body(const char* at, size_t len) = 0;
  virtual void upstream_done(AppLeg* up) = 0;             // the final response is complete
  virtual void upstream_failed(AppLeg* up, UpstreamError kind, int err) = 0;
  virtual void upstream_tunnel(const char* at, size_t len) = 0; // after a 101: raw bytes
  virtual void upstream_eof() = 0;                              // the tunnel closed
  virtual void upstream_writable() = 0;  // the queue to the app fell to the low watermark
  // One read from the app is being handled: what it makes for the client may be gathered.
  virtual void upstream_read_begin() = 0;
  virtual void upstream_read_end() = 0;
  // Buffer budgets: what the client side holds, so that a read never overfills it.
  virtual size_t client_queued() const = 0;
  virtual size_t client_held() const = 0;
  // How long the app may take to answer (timeouts.upstream_response, or a shorter grpc-timeout).
  virtual std::uint64_t response_timeout() const = 0;

 protected:
  ~UpstreamSink() = default;
};

class AppLeg {
 public:
  // The request head in the leg's protocol, with the body bytes read before the app could take
  // them (`early`), and `end` when the request ended with them. 0, or a negative errno.
  virtual int send_head(const http::Request& r, const http::ForwardContext& ctx, std::string_view early,
                        bool end) = 0;
  virtual int send_body(const char* at, size_t len) = 0;  // framed as the leg's protocol wants
  virtual int end_body() = 0;                             // the request is complete
  virtual int send_raw(const char* at, size_t len) = 0;   // a tunnel's bytes (HTTP/1 only)
  virtual void begin_tunnel() = 0;                        // after a 101
  virtual void shutdown_write() = 0;                      // the tunnel's client finished sending
  virtual bool connected() const = 0;
  virtual size_t queued() const = 0;  // request bytes the app has not taken yet
  // The exchange decides when the answer is timed and whether the app is read (backpressure).
  virtual void arm_response_timer() = 0;
  virtual void set_client_blocked(bool blocked) = 0;

  // The answer.
  virtual const http::MessageHead& head() const = 0;
  virtual int status() const = 0;
  virtual bool head_only() const = 0;                    // the head ended it (gRPC trailers-only)
  virtual const http::MessageHead* trailers() const = 0; // null when none came

  // After a failure: may the request go again on another leg (the app cannot have acted on it)?
  // If so, the request body bytes the leg kept are appended to `body` for the next one.
  virtual bool may_replay(const http::Request& r, std::string& body) = 0;
  // The exchange is done with it: `complete` the request was whole (a pooled HTTP/1 connection
  // may serve the next one).
  virtual void release(bool complete) = 0;
  virtual void abort() = 0;  // of no more use: closed (HTTP/1) or reset (HTTP/2)

 protected:
  ~AppLeg() = default;
};

}  // namespace ebb
