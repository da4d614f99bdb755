// The app over HTTP/2 (upstream_protocol: h2c, prior knowledge): a few connections, each an
// nghttp2 client session on a net::Conn, multiplexing exchanges as streams; each stream is the
// AppLeg of one Exchange. Flow control both ways: a request body goes as the app's windows
// allow, and the app's answer is acknowledged (WINDOW_UPDATE) only while the client keeps up.
// The app's GOAWAY closes a connection to new streams; streams it never saw go again elsewhere.
#pragma once

#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "net/conn.hpp"
#include "net/list.hpp"
#include "net/timer.hpp"
#include "proxy/app_leg.hpp"

namespace ebb {

class Worker;
class H2AppConn;

class H2AppStream final : public AppLeg, public net::Linked<H2AppStream> {
 public:
  H2AppStream(H2AppConn& conn, UpstreamSink* owner);

  // AppLeg.
  int send_head(const http::Request& r, const http::ForwardContext& ctx, std::string_view early, bool end) override;
  int send_body(const char* at, size_t len) override;
  int end_body() override;
  int send_raw(const char*, size_t) override { return UV_EPROTO; }  // no tunnels over HTTP/2
  void begin_tunnel() override {}
  void shutdown_write() override {}
  bool connected() const override { return ready_; }
  size_t queued() const override { return body_.size() - body_off_; }
  void arm_response_timer() override;
  void set_client_blocked(bool blocked) override;
  const http::MessageHead& head() const override { return head_; }
  int status() const override { return status_; }
  bool head_only() const override { return head_only_; }
  const http::MessageHead* trailers() const override { return has_trailers_ ? &trailers_ : nullptr; }
  bool may_replay(const http::Request& r, std::string& body) override;
  void release(bool complete) override;
  void abort() override;

  // From the connection.
  std::int32_t id() const { return id_; }
  bool detached() const { return owner_ == nullptr; }
  void conn_ready(int status);  // the connection is up (0), or its connect failed
  void begin_headers();
  bool header(std::string_view name, std::string_view value);  // false: over limits.max_header_bytes
  void headers_end(bool end_stream);
  void data(const char* at, size_t len);
  void data_end();
  void closed(std::uint32_t error_code);  // nghttp2 closed the stream
  // The connection failed or was refused: `unseen`, the app cannot have seen this stream.
  void fail(UpstreamError kind, int err, bool unseen);
  void headers_sent() { on_wire_ = true; }
  void mark_ready() { ready_ = true; }  // lent on a connection that is up: the exchange sends at once
  bool closed_by_session() const { return closed_; }
  void owner_writable() {
    if (owner_ != nullptr) owner_->upstream_writable();
  }
  ssize_t read_body(std::uint8_t* buf, size_t length, std::uint32_t* flags);
  bool take_writable();  // the body queue fell to the low watermark since last asked

 private:
  void report_done();
  void detach();

  H2AppConn& conn_;
  UpstreamSink* owner_;
  std::int32_t id_ = -1;  // until the head is submitted
  http::MessageHead head_;
  http::MessageHead trailers_;
  int status_ = 0;
  std::string body_;       // request body: from body_off_ not yet sent; before it, kept for a replay
  size_t body_off_ = 0;
  size_t unconsumed_ = 0;  // answer bytes not yet acknowledged to the app (the client is behind)
  net::HeapTimer timer_;   // the response deadline
  bool ready_ = false;
  bool body_end_ = false;
  bool replay_lost_ = false;   // sent bytes were let go: this request cannot be sent again
  bool on_wire_ = false;       // its HEADERS went out: the app may have seen it
  bool final_head_ = false;
  bool in_trailers_ = false;
  bool head_only_ = false;
  bool has_trailers_ = false;
  bool client_blocked_ = false;
  bool writable_ = false;
  bool done_ = false;     // the answer is complete (or failed): nothing more is reported
  bool closed_ = false;   // nghttp2 is done with it
};

class H2AppConn final : public net::Conn, public net::Linked<H2AppConn> {
 public:
  explicit H2AppConn(Worker& w);
  int connect();
  // May it take one more stream: not told to go away, below the app's concurrency limit.
  bool usable() const;
  bool ready() const { return state_ == State::kReady; }
  H2AppStream* open(UpstreamSink* owner);  // nghttp2 knows a HEAD answer has no body
  void close();  // idempotent; every stream still attached hears of it as a failure
  void flush();  // sends what nghttp2 has queued (never from inside nghttp2)
  void stream_released(H2AppStream* s);  // detached and never submitted, or closed by nghttp2

  Worker& worker() { return w_; }
  nghttp2_session* session() { return session_; }
  std::uint64_t id() const { return id_; }

 private:
  // kHandshake: connected, the preface sent, waiting for the app's SETTINGS (its stream limit).
  enum class State { kConnecting, kHandshake, kReady, kClosing };

  void on_connect(int status) override;
  void on_read(ssize_t nread, const uv_buf_t* buf) override;
  void on_write_done(int status) override;
  void on_timer() override;
  void on_closed() override;
  void fail_all(UpstreamError kind, int err);
  void reap();
  void become_ready();

  static int on_begin_headers(nghttp2_session*, const nghttp2_frame* f, void* self);
  static int on_header(nghttp2_session*, const nghttp2_frame* f, const std::uint8_t* name, size_t namelen,
                       const std::uint8_t* value, size_t valuelen, std::uint8_t flags, void* self);
  static int on_frame_recv(nghttp2_session*, const nghttp2_frame* f, void* self);
  static int on_data_chunk(nghttp2_session*, std::uint8_t flags, std::int32_t stream_id, const std::uint8_t* data,
                           size_t len, void* self);
  static int on_frame_send(nghttp2_session*, const nghttp2_frame* f, void* self);
  static int on_frame_not_send(nghttp2_session*, const nghttp2_frame* f, int error, void* self);
  static int on_stream_close(nghttp2_session*, std::int32_t stream_id, std::uint32_t error_code, void* self);

  Worker& w_;
  std::uint64_t id_;
  nghttp2_session* session_ = nullptr;
  State state_ = State::kConnecting;
  net::List<H2AppStream> streams_;  // lent to exchanges, or still open at the app
  net::List<H2AppStream> dead_;     // freed at the next safe point
  std::string out_;
  std::int32_t goaway_last_ = -1;   // the app's GOAWAY: streams above it were never seen
  bool in_session_ = false;
  bool settings_seen_ = false;
  bool protocol_error_ = false;   // nghttp2 ended the session for something the app sent
  bool reap_due_ = false;         // a stream closed since the last reap
  std::uint64_t idle_since_ = 0;  // when its last stream was freed (0: busy)
};

}  // namespace ebb
