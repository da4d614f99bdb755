// The app side of the data path: one connection to the app (connect, send, read the response,
// idle in the pool). It reports to whichever exchange borrows it through UpstreamSink, and
// knows nothing of clients.
#pragma once

#include <uv.h>

#include <cstdint>

#include "http/response_reader.hpp"
#include "metrics.hpp"
#include "net/conn.hpp"
#include "net/list.hpp"

namespace ebb {

class Worker;
class UpstreamConn;

// What an app connection tells the exchange that borrows it. `up` names the connection, so an
// exchange that moved on (retried elsewhere) can tell a late report from a current one.
class UpstreamSink {
 public:
  virtual void upstream_connected(UpstreamConn* up, int status) = 0;
  virtual int upstream_informational(UpstreamConn* up) = 0;     // a 1xx other than 101
  virtual int upstream_head(UpstreamConn* up) = 0;              // 0, or an llhttp error
  virtual int upstream_body(const char* at, size_t len) = 0;
  virtual void upstream_done(UpstreamConn* up) = 0;             // the final response is complete
  virtual void upstream_failed(UpstreamConn* up, UpstreamError kind, int err) = 0;
  virtual void upstream_tunnel(const char* at, size_t len) = 0; // after a 101: raw bytes
  virtual void upstream_eof() = 0;                              // the tunnel closed
  virtual void upstream_writable() = 0;  // the queue to the app fell to the low watermark
  // One read from the app is being handled: what it makes for the client may be gathered.
  virtual void upstream_read_begin() = 0;
  virtual void upstream_read_end() = 0;
  // Buffer budgets: what the client side holds, so that a read never overfills it.
  virtual size_t client_queued() const = 0;
  virtual size_t client_held() const = 0;

 protected:
  ~UpstreamSink() = default;
};

class UpstreamConn final : public net::Conn, public net::Linked<UpstreamConn>, private http::ResponseSink {
 public:
  explicit UpstreamConn(Worker& w);

  // Starts connecting for `owner`, who hears of it through upstream_connected.
  int connect(UpstreamSink* owner, bool head_request);
  void attach(UpstreamSink* owner, bool head_request);  // lend a pooled one to an exchange
  void detach();                                       // the exchange is done with it
  void close();                                        // idempotent; freed after the close callbacks

  int send(const uv_buf_t* bufs, unsigned n);  // what the kernel does not take counts in the total
  // The exchange decides whether the app is read (backpressure) and when the response is
  // timed; the pool reads idle connections to notice the app closing them.
  void set_client_blocked(bool blocked);
  void retry_read();  // budget: a refused read (no room, or limits.max_memory) may try again
  void arm_response_timer();
  void begin_tunnel();  // after a 101: raw bytes from here on
  void shutdown_write();

  const http::MessageHead& head() const { return reader_.head(); }
  int status() const { return reader_.status(); }
  bool response_keep_alive() const { return reader_.keep_alive() && !trailing_bytes_; }
  bool got_bytes() const { return reader_.got_bytes(); }
  bool reused() const { return reused_; }
  bool connected() const { return state_ == State::kBusy || state_ == State::kIdle; }
  bool idle() const { return state_ == State::kIdle; }
  std::uint64_t id() const { return id_; }
  void enter_pool();  // from Pool::put

 private:
  enum class State { kNew, kConnecting, kBusy, kIdle, kClosing };
  enum class TimerFor { kNone, kConnect, kResponse, kIdle };

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
};

}  // namespace ebb
