// The proxy's listening socket: binding, failed accepts (warned about once a second, since
// running out of descriptors repeats for every pending connection), and a close that first
// takes every connection still in the backlog, because closing a listening socket resets them.
#pragma once

#include <sys/socket.h>
#include <uv.h>

#include <cstdint>
#include <functional>
#include <string>

namespace ebb::net {

class Listener {
 public:
  // `on_connection`: a connection is ready to be taken with uv_accept(stream(), ...).
  Listener(uv_loop_t* loop, std::function<void()> on_connection);
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  int listen(const sockaddr_storage& addr);  // 0 or a negative errno
  std::string address() const;
  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&tcp_); }
  // Hands each connection still in the backlog to `adopt` as a descriptor, then closes; returns
  // how many there were. Idempotent.
  std::uint64_t close_taking_backlog(const std::function<void(int fd)>& adopt);
  void close();  // at exit: no backlog to serve any more

 private:
  void on_connection(int status);

  uv_loop_t* loop_;
  std::function<void()> on_connection_;
  uv_tcp_t tcp_;
  bool closed_ = false;
  std::uint64_t errors_ = 0;        // failed accepts since the last warning about them
  std::uint64_t error_logged_ms_ = 0;
};

}  // namespace ebb::net
