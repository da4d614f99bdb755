// The libuv helpers every socket user shares: writes that try the kernel first and copy only
// what it could not take, socket options, addresses.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "config.hpp"

namespace ebb::net {

// Called when a queued write finished (status 0), failed, or was cancelled by a close
// (UV_ECANCELED, a normal ending).
using WriteDone = void (*)(uv_stream_t* stream, int status);

// Writes `bufs` in order after whatever is already queued. The kernel gets them at once when
// nothing is queued (uv_try_write); the remainder is copied into one block that the write
// request owns until its callback, so callers may reuse their buffers on return.
// Returns 0, or a negative errno when the stream is broken. `done` fires only for queued bytes.
// `account`, if given, counts the bytes copied while they are held (limits.max_memory); it must
// outlive the write request.
int write(uv_stream_t* stream, const uv_buf_t* bufs, unsigned nbufs, WriteDone done,
          std::uint64_t* account = nullptr);

inline size_t queued(const uv_stream_t* s) { return uv_stream_get_write_queue_size(s); }

// TCP_NODELAY (libuv does not set it): without it a response that arrives in two pieces
// stalls on Nagle and delayed ACK.
void set_nodelay(uv_tcp_t* tcp);

// Resolves host:port once (blocking; at start and on reload only).
int resolve(const HostPort& hp, sockaddr_storage& out, std::string& error);

// "1.2.3.4" / "::1" for the peer of `tcp`; empty on failure.
std::string peer_ip(const uv_tcp_t* tcp);
// "1.2.3.4:80" / "[::1]:80" for the local address of `tcp`.
std::string sock_name(const uv_tcp_t* tcp);
bool is_loopback(const sockaddr_storage& ss);

#if defined(__SANITIZE_THREAD__)
extern "C" void __sanitizer_syscall_pre_impl_close(long fd);
extern "C" void __tsan_ignore_thread_begin();
extern "C" void __tsan_ignore_thread_end();
#endif

// uv_close, telling ThreadSanitizer (make tsan) what libuv does to a socket's descriptor. libuv
// removes it from epoll and closes it with a raw close syscall (src/unix/core.c,
// uv__close_nocancel) that TSan cannot see unless libuv itself was built for it. Told nothing,
// TSan keeps that epoll_ctl (or the socket's creation) as the last access to a number the kernel
// hands out again, and a dup(2) of the new holder on another thread is reported as a race. So the
// close is announced first (the hook libuv built for TSan calls) and libuv's own steps inside
// uv_close are left out of the record. Other builds: a plain uv_close.
inline void close_handle(uv_handle_t* h, uv_close_cb cb) {
#if defined(__SANITIZE_THREAD__)
  uv_os_fd_t fd = -1;
  if ((h->type == UV_TCP || h->type == UV_NAMED_PIPE) && uv_fileno(h, &fd) == 0 && fd > 2)
    __sanitizer_syscall_pre_impl_close(fd);
  __tsan_ignore_thread_begin();
  uv_close(h, cb);
  __tsan_ignore_thread_end();
#else
  uv_close(h, cb);
#endif
}

// The two-phase close of an object that owns two handles whose data points at it: both are
// closed, and Last runs after the second close callback, the only place the object may be freed.
template <typename T, int T::*Pending, void (*Last)(T*)>
void close_pair(T* self, uv_handle_t* a, uv_handle_t* b) {
  self->*Pending = 2;
  uv_close_cb cb = [](uv_handle_t* h) {
    T* t = static_cast<T*>(h->data);
    if (--(t->*Pending) == 0) Last(t);
  };
  close_handle(a, cb);
  close_handle(b, cb);
}

// Binds and listens; returns 0 or a negative errno.
int listen_tcp(uv_tcp_t* tcp, const sockaddr_storage& addr, uv_connection_cb cb, int backlog = 4096);

}  // namespace ebb::net
