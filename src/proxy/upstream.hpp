// The app side of the data path over HTTP/1: one connection to the app (connect, send, read the
// response, idle in the pool). It is the AppLeg of whichever exchange borrows it, reports to it
// through UpstreamSink, frames the request (chunked bodies) and knows nothing of clients.
#pragma once

#include <uv.h>

#include <cstdint>

#include "http/response_reader.hpp"
#include "metrics.hpp"
#include "proxy/app_leg.hpp"
#include "net/conn.hpp"
#include "net/list.hpp"

namespace ebb {

class Worker;

// AppLeg first: the exchange's calls through it need no this-adjusting thunk.
class UpstreamConn final : public AppLeg, public net::Conn, public net::Linked<UpstreamConn>, private http::ResponseSink {
 public:
  explicit UpstreamConn(Worker& w);

  // Starts connecting for `owner`, who hears of it through upstream_connected.
  int connect(UpstreamSink* owner, bool head_request);
  void attach(UpstreamSink* owner, bool head_request);  // lend a pooled one to an exchange
  void detach();                                       // the exchange is done with it
  void close();                                        // idempotent; freed after the close callbacks

  int send(const uv_buf_t* bufs, unsigned n);  // what the kernel does not take counts in the total
  void retry_read();  // budget: a refused read (no room, or limits.max_memory) may try again

  // AppLeg.
  int send_head(const http::Request& r, const http::ForwardContext& ctx, std::string_view early, bool end) override;
  int send_body(const char* at, size_t len) override;
  int end_body() override;
  int send_raw(const char* at, size_t len) override;
  // The exchange decides whether the app is read (backpressure) and when the response is
  // timed; the pool reads idle connections to notice the app closing them.
  void set_client_blocked(bool blocked) override;
  void arm_response_timer() override;
  void begin_tunnel() override;  // after a 101: raw bytes from here on
  void shutdown_write() override;
  size_t queued() const override { return net::Conn::queued(); }
  const http::MessageHead& head() const override { return reader_.head(); }
  int status() const override { return reader_.status(); }
  bool head_only() const override { return false; }
  const http::MessageHead* trailers() const override { return nullptr; }
  bool may_replay(const http::Request& r, std::string& body) override;
  void release(bool complete) override;
  void abort() override { close(); }

  bool response_keep_alive() const { return reader_.keep_alive() && !trailing_bytes_; }
  bool got_bytes() const { return reader_.got_bytes(); }
  bool reused() const { return reused_; }
  bool connected() const override { return state_ == State::kBusy || state_ == State::kIdle; }
  bool idle() const { return state_ == State::kIdle; }
  std::uint64_t id() const { return id_; }
  void enter_pool();  // from Pool::put

 private:
  enum class State { kNew, kConnecting, kBusy, kIdle, kClosing };
  // kSend: the request's bytes wait in the queue (the app stopped reading its body).
  enum class TimerFor { kNone, kConnect, kSend, kResponse, kIdle };

  void update_read();
  size_t read_allowance() const;  // budget.hpp: room left in the client's write queue
  static void alloc(uv_handle_t* h, size_t, uv_buf_t* buf);
  void arm(TimerFor t, std::uint64_t ms);
  void fail(UpstreamError kind, int err);
  void begin_exchange(UpstreamSink* owner, bool head_request);
  void handle(UpstreamSink* owner, const char* data, size_t len);
  void on_read(ssize_t nread, const uv_buf_t* buf) override;
  void on_timer() override;
  void on_write_done(int status) override;
  void on_connect(int status) override;
  int on_informational() override;
  int on_response_head() override;
  int on_response_body(const char* at, size_t len) override;

  Worker& w_;
  std::uint64_t id_;
  http::ResponseReader reader_{*this};
  UpstreamSink* owner_ = nullptr;
  State state_ = State::kNew;
  TimerFor timer_for_ = TimerFor::kNone;
  bool client_blocked_ = false;
  bool read_refused_ = false;  // a read found no room (budget or limits.max_memory)
  bool tunnel_ = false;
  bool reused_ = false;
  bool trailing_bytes_ = false;
  bool head_request_ = false;
  bool chunked_ = false;  // the request body goes chunked
  // The whole request is written (or queued): from here the app's answer is what is waited for.
  // Before, a 1xx or an early answer starts no response deadline; the app taking the body
  // (kSend) and the client sending it (ClientConn) are the deadlines.
  bool request_done_ = false;
  std::uint64_t response_ms_ = 0;  // the exchange's response timeout, taken with the head
  std::string out_;       // the request head, written in place (reused: no allocation per request)
};

}  // namespace ebb
