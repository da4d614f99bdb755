// One HTTP/2 client connection (h2c, prior knowledge): nghttp2 does the framing, flow control
// and the protocol's limits without I/O of its own (mem_recv/mem_send); this connection moves
// the bytes, and each request stream is an H2Stream whose Exchange is the same as HTTP/1's.
// The drain is the two-step GOAWAY of RFC 9113 §6.8, sent as soon as the drain starts.
#pragma once

#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "net/list.hpp"
#include "net/timer.hpp"
#include "proxy/exchange.hpp"
#include "proxy/worker.hpp"

namespace ebb {

class H2Conn;

// One request stream: the Downstream of its Exchange. Its answer waits in `out_` until nghttp2
// asks for DATA (flow control); the request body is acknowledged to the client (WINDOW_UPDATE)
// only once the app's side has taken it, so a slow app never makes ebb buffer without bound.
class H2Stream final : public net::Linked<H2Stream>, private Downstream {
 public:
  H2Stream(H2Conn& conn, std::int32_t id);
  ~H2Stream();
  std::int32_t id() const { return id_; }
  Exchange& exchange() { return ex_; }
  bool answered() const { return answer_done_; }

  // From the connection, as nghttp2 reports the request.
  bool add_header(std::string_view name, std::string_view value);  // false: malformed
  void headers_done(bool end_stream);
  void body(const char* at, size_t len);
  void end_of_request();
  // nghttp2 wants DATA for this stream.
  ssize_t read_answer(std::uint8_t* buf, size_t length, std::uint32_t* flags);
  void closed(std::uint32_t error_code);  // the stream is gone (answered, or reset)
  void cut();                             // the drain deadline
  // The connection is closing: count what it leaves unanswered (in flight, or whole from the
  // app but not yet delivered) and let go.
  void abort_quietly(Unanswered why);
  void release_flow();                    // give back request body the app has taken since

 private:
  // Downstream.
  std::uint64_t conn_id() const override;
  std::string_view peer_ip() const override;
  bool send_informational(const http::MessageHead& head, int status) override;
  bool send_head(const http::MessageHead& head, int status, bool head_only) override;
  bool send_body(const char* at, size_t len) override;
  bool send_end() override;
  bool send_trailers(const http::MessageHead& trailers) override;
  bool send_tunnel(const char* at, size_t len) override;
  void send_probe(int status, std::string_view body) override;
  void send_error(int status, const char* reason) override;
  size_t send_queued() const override { return out_.size() - out_off_; }
  size_t held_bytes() const override { return send_queued() + ex_.app_queued(); }
  void cork() override;
  void uncork() override;
  void answer_complete() override;
  void tunnel_closed() override {}
  void request_flow() override;
  void abort(Unanswered why) override;
  void exchange_timer(std::uint64_t ms) override;

  bool submit(int status, const http::MessageHead* head, bool body, const char* extra_name = nullptr,
              std::string_view extra_value = {});
  bool grpc() const;
  // gRPC's status as a trailer after an answer whose head is out: false when there is no room
  // for one (not gRPC, no head yet, or the answer already ended), and a reset must do.
  bool grpc_trailer(int code, const char* message);
  void local_answer(int status, std::string_view type, std::string_view body, const char* error);
  void count_unanswered(Unanswered why, const char* what);
  void account_out();  // budget: out_ counts in limits.max_memory and in the connection's holding

  H2Conn& conn_;
  std::int32_t id_;
  http::Request req_;
  std::string method_, authority_, cookie_;  // pseudo-headers and cookie crumbs, until the head ends
  Exchange ex_;
  std::string out_;           // answer bytes nghttp2 has not taken yet
  size_t out_off_ = 0;
  size_t accounted_ = 0;       // of out_, what the worker's memory account holds
  std::uint64_t unacked_ = 0;  // request body bytes read but not yet given back to the client
  bool head_sent_ = false;
  bool answer_done_ = false;   // the whole answer is with nghttp2
  bool stream_closed_ = false;
  bool delivering_ = false;    // the exchange finished, but flow control still holds answer bytes in out_
  const char* bad_ = nullptr;  // why a header broke the rules: the request is refused
  int bad_status_ = 400;       // ...and the status that says so
  http::MessageHead trailers_;  // the app's trailers, sent once the body is out
  bool has_trailers_ = false;
  net::HeapTimer timer_;       // the exchange's deadline
  int corked_ = 0;
};

class H2Conn final : public Client {
 public:
  H2Conn(Worker& w, std::uint64_t id);
  void start(std::string_view first_bytes);
  void close(Unanswered why) override;
  void on_phase() override;
  void cut() override;

  Worker& worker() { return w_; }
  nghttp2_session* session() { return session_; }
  std::uint64_t id() const override { return id_; }
  std::string_view peer_ip() const { return client_ip_; }
  // Its socket queue and the answers its streams hold (out_), for limits.max_memory.
  size_t held_bytes() const override { return closing() ? 0 : queued() + streams_held_; }
  void resume_memory() override;
  void shed() override;
  void streams_hold(size_t before, size_t now);  // a stream's out_ changed size
  // Sends what nghttp2 has queued, as far as the socket takes it; then closes if all is said.
  void flush();
  void cork() { ++corked_; }
  void uncork();
  void stream_gone(H2Stream* s);  // freed at the next safe point (never inside its callbacks)

 private:
  void on_read(ssize_t nread, const uv_buf_t* buf) override;
  void on_write_done(int status) override;
  void on_timer() override;
  void on_closed() override;
  void receive(const char* data, size_t len);
  void reap();
  void maybe_finish();
  void refresh_timer();
  void send_final_goaway();
  void send_shutdown_notice();

  static int on_begin_headers(nghttp2_session*, const nghttp2_frame* f, void* self);
  static int on_header(nghttp2_session*, const nghttp2_frame* f, const std::uint8_t* name, size_t namelen,
                       const std::uint8_t* value, size_t valuelen, std::uint8_t flags, void* self);
  static int on_frame_recv(nghttp2_session*, const nghttp2_frame* f, void* self);
  static int on_data_chunk(nghttp2_session*, std::uint8_t flags, std::int32_t stream_id, const std::uint8_t* data,
                           size_t len, void* self);
  static int on_frame_send(nghttp2_session*, const nghttp2_frame* f, void* self);
  static int on_stream_close(nghttp2_session*, std::int32_t stream_id, std::uint32_t error_code, void* self);

  Worker& w_;
  std::uint64_t id_;
  nghttp2_session* session_ = nullptr;
  char client_ip_[46] = {0};
  std::string out_;               // frames gathered for one write
  size_t streams_held_ = 0;       // the streams' out_ together
  net::List<H2Stream> streams_;   // open streams
  net::List<H2Stream> dead_;      // closed, freed at the next safe point
  int corked_ = 0;
  bool in_session_ = false;       // inside mem_recv/mem_send: nghttp2 may not be re-entered
  bool shutdown_notice_ = false;  // first GOAWAY (2^31-1) sent, PING in flight
  bool final_goaway_ = false;     // the real last stream id sent
  bool closing_gracefully_ = false;
  bool error_counted_ = false;    // this connection's protocol error is in the metrics
  std::uint64_t born_ms_ = 0;     // for http2.max_connection_age
};

}  // namespace ebb
