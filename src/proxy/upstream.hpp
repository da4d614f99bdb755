// The app side of the data path: one connection to the app (connect, send, parse the
// response, idle in the pool) and the pool of idle keep-alive connections.
#pragma once

#include <llhttp.h>
#include <uv.h>

#include <cstdint>

#include "http/message.hpp"
#include "metrics.hpp"

namespace ebb {

class ClientConn;
class Worker;
class Pool;

class UpstreamConn {
 public:
  explicit UpstreamConn(Worker& w);
  UpstreamConn(const UpstreamConn&) = delete;
  UpstreamConn& operator=(const UpstreamConn&) = delete;

  // Starts connecting for `owner`, who hears of it through ClientConn::upstream_connected.
  int connect(ClientConn* owner, bool head_request);
  void attach(ClientConn* owner, bool head_request);  // lend a pooled one to an exchange
  void detach();                                     // the exchange is done with it
  void close();                                      // idempotent; freed in the close callback

  // Writes to the app; returns 0 or a negative errno.
  int send(const uv_buf_t* bufs, unsigned n);
  size_t queued() const;
  // The exchange decides whether the app is read (backpressure) and when to start timing the
  // response; the pool reads idle connections to notice the app closing them.
  void update_read();
  void set_client_blocked(bool blocked);
  void retry_read();  // budget: a refused read (no room, or limits.max_memory) may try again
  void arm_response_timer();
  void begin_tunnel();  // after a 101: raw bytes from here on
  void shutdown_write();

  const http::MessageHead& head() const { return head_; }
  int status() const { return parser_.status_code; }
  bool response_keep_alive() const { return keep_alive_; }
  bool got_bytes() const { return got_bytes_; }
  bool reused() const { return reused_; }
  bool connected() const { return state_ == State::kBusy || state_ == State::kIdle; }
  std::uint64_t id() const { return id_; }

  UpstreamConn* pool_prev_ = nullptr;
  UpstreamConn* pool_next_ = nullptr;

 private:
  friend class Pool;
  enum class State { kNew, kConnecting, kBusy, kIdle, kClosing };
  enum class TimerFor { kNone, kConnect, kResponse, kIdle };

  void arm(TimerFor t, std::uint64_t ms);
  void on_connect(int status);
  void on_read(ssize_t nread, const uv_buf_t* buf);
  void process(ClientConn* owner, const char* data, size_t len);
  void on_timer();
  void fail(UpstreamError kind, int err);
  void begin_exchange(ClientConn* owner, bool head_request);
  void enter_pool();
  size_t read_allowance() const;  // budget.hpp: room left in the client's write queue
  static void on_closed(UpstreamConn* self);  // after the last close callback

  int on_message_begin();
  int on_status(const char* at, size_t len);
  int on_header_field(const char* at, size_t len);
  int on_header_value(const char* at, size_t len);
  int on_headers_complete();
  int on_body(const char* at, size_t len);
  int on_message_complete();
  static const llhttp_settings_t* settings();

  Worker& w_;
  std::uint64_t id_;
  uv_tcp_t tcp_;
  uv_connect_t connect_req_;
  uv_timer_t timer_;
  uv_shutdown_t shutdown_req_;
  llhttp_t parser_;
  http::MessageHead head_;
  ClientConn* owner_ = nullptr;
  State state_ = State::kNew;
  TimerFor timer_for_ = TimerFor::kNone;
  int pending_closes_ = 0;
  bool reading_ = false;
  bool client_blocked_ = false;
  bool read_refused_ = false;  // a read found no room (budget or limits.max_memory)
  bool tunnel_ = false;
  bool keep_alive_ = false;
  bool got_bytes_ = false;
  bool reused_ = false;
  bool final_seen_ = false;
  bool head_request_ = false;
};

// Idle connections to the app, most recently used first (it is the least likely to have hit
// the app's keep-alive timeout).
class Pool {
 public:
  explicit Pool(Worker& w) : w_(w) {}
  UpstreamConn* take();
  void put(UpstreamConn* c);  // closes it instead when the pool is full
  void remove(UpstreamConn* c);
  void close_all();
  size_t size() const { return size_; }

 private:
  Worker& w_;
  UpstreamConn* head_ = nullptr;
  size_t size_ = 0;
};

}  // namespace ebb
