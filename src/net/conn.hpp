// The skeleton every connection shares (client, app, admin, readiness probe): a TCP handle and
// one lazy deadline timer whose data point at the object, reading as a state, writes that copy
// only what the kernel did not take, and an idempotent close that frees the object once both
// handles closed.
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>

namespace ebb::net {

class Conn {
 public:
  Conn(uv_loop_t* loop, uv_alloc_cb alloc);
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  uv_tcp_t* tcp() { return &tcp_; }
  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&tcp_); }
  const uv_stream_t* stream() const { return reinterpret_cast<const uv_stream_t*>(&tcp_); }
  uv_loop_t* loop() const { return tcp_.loop; }
  bool closing() const { return closing_; }
  bool reading() const { return reading_; }
  // Starts or stops reading; a call that changes nothing costs nothing.
  void set_reading(bool want);
  // Writes after whatever is queued (net::write). 0, or a negative errno when broken;
  // on_write_done hears of bytes that had to be queued, even once closing (a cancelled write
  // frees its copy then). `account` counts the copied bytes while they are held.
  int write(const uv_buf_t* bufs, unsigned n, std::uint64_t* account = nullptr);
  size_t queued() const;
  // One deadline, `ms` from now (replacing any other), or none. Lazy: a connection moves its
  // deadline several times per request (idle, head, waiting for the app, idle again), and every
  // move of a libuv timer is a heap operation among all the loop's timers. So the libuv timer
  // is only moved when the deadline comes sooner than it is set for; when it fires before the
  // deadline (the deadline moved later, or was stopped) it is set again, or not at all.
  // on_timer runs once the deadline is reached, never for a deadline that was replaced.
  void start_timer(std::uint64_t ms);
  void stop_timer() { deadline_ = 0; }
  // The FIN, after the queued bytes; on_shutdown hears how it went. Once only.
  int shutdown();
  bool shutdown_sent() const { return shutdown_sent_; }
  // Stops everything at once; on_closed runs after both handles closed, then the object is freed.
  void close_handles();
  // Connects to `addr`; on_connect hears the result.
  int connect(const sockaddr* addr);

 protected:
  virtual ~Conn() = default;
  virtual void on_read(ssize_t nread, const uv_buf_t* buf) = 0;
  virtual void on_timer() {}
  virtual void on_write_done(int) {}  // also while closing: check closing()
  virtual void on_shutdown(int) {}
  virtual void on_connect(int) {}
  virtual void on_closed() {}

 private:
  uv_tcp_t tcp_;
  uv_timer_t timer_;
  uv_shutdown_t shutdown_req_;
  uv_connect_t connect_req_;
  uv_alloc_cb alloc_;
  std::uint64_t deadline_ = 0;  // loop time (uv_now) on_timer is due at; 0: none
  std::uint64_t armed_ = 0;     // loop time the libuv timer fires at; 0: not set
  static void timer_fired(uv_timer_t* t);
  int pending_closes_ = 0;
  bool reading_ = false;
  bool closing_ = false;
  bool shutdown_sent_ = false;
};

}  // namespace ebb::net
