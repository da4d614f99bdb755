// The proxy's listening socket: binding, failed accepts (warned about once a second, since
// running out of descriptors repeats for every pending connection), and a close that loses no
// connection. Closing a listening socket resets the connections in its queue, and a handshake
// still in flight at that moment becomes a reset too; so the close first stops new handshakes
// (a socket filter drops bare SYNs, whose clients retry and then find the port closed), keeps
// accepting for a moment while the handshakes in flight complete, then takes what is queued and
// closes.
#pragma once

#include <sys/socket.h>
#include <uv.h>

#include <cstdint>
#include <functional>
#include <string>

namespace ebb::net {

class Listener {
 public:
  // How long handshakes already in flight get to complete once new ones are refused.
  static constexpr std::uint64_t kHandshakeGraceMs = 100;

  // `on_connection`: a connection is ready to be taken with uv_accept(stream(), ...).
  Listener(uv_loop_t* loop, std::function<void()> on_connection);
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  int listen(const sockaddr_storage& addr);  // 0 or a negative errno
  std::string address() const;
  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&tcp_); }
  // In `on_connection`: the connection libuv accepted, as a descriptor for another loop's handle
  // (what uv_accept does, without opening it into a handle of this loop). -1 if none.
  int take_accepted();
  // Stops new handshakes at once; after kHandshakeGraceMs hands each connection still queued to
  // `adopt` as a descriptor, closes, and calls `closed` with how many it took. Once only.
  void close_gracefully(std::function<void(int fd)> adopt, std::function<void(std::uint64_t)> closed);
  bool closed() const { return closed_; }
  void close();  // at exit, at once

 private:
  void on_connection(int status);
  void finish_close();

  uv_loop_t* loop_;
  std::function<void()> on_connection_;
  uv_tcp_t tcp_;
  uv_timer_t grace_;
  std::function<void(int)> adopt_;
  std::function<void(std::uint64_t)> on_closed_;
  bool closing_ = false;
  bool closed_ = false;
  std::uint64_t errors_ = 0;        // failed accepts since the last warning about them
  std::uint64_t error_logged_ms_ = 0;
};

}  // namespace ebb::net
