// The listening socket.
#include "net/listener.hpp"

#include <linux/filter.h>
#include <netinet/tcp.h>

#include <cerrno>

#include "log.hpp"
#include "net/io.hpp"

namespace ebb::net {

namespace {
// Classic BPF on a TCP socket sees the packet from the TCP header on: byte 13 holds the flags.
// A segment with SYN and without ACK (a new handshake) is dropped; everything else, including
// the ACK that completes a handshake already under way, passes.
int refuse_new_handshakes(int fd) {
  static sock_filter code[] = {
      {BPF_LD | BPF_B | BPF_ABS, 0, 0, 13},
      {BPF_JMP | BPF_JSET | BPF_K, 2, 0, 0x10},  // ACK: pass
      {BPF_JMP | BPF_JSET | BPF_K, 0, 1, 0x02},  // SYN: drop, else pass
      {BPF_RET | BPF_K, 0, 0, 0},
      {BPF_RET | BPF_K, 0, 0, 0xffffffff},
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof code / sizeof code[0]), code};
  return setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog);
}
}  // namespace

Listener::Listener(uv_loop_t* loop, std::function<void()> on_connection)
    : loop_(loop), on_connection_(std::move(on_connection)) {
  uv_tcp_init(loop_, &tcp_);
  tcp_.data = this;
  uv_timer_init(loop_, &grace_);
  grace_.data = this;
}

int Listener::listen(const sockaddr_storage& addr) {
  return listen_tcp(&tcp_, addr, [](uv_stream_t* l, int status) { static_cast<Listener*>(l->data)->on_connection(status); });
}

std::string Listener::address() const { return sock_name(&tcp_); }

void Listener::on_connection(int status) {
  if (status >= 0) {
    on_connection_();
    return;
  }
  ++errors_;
  std::uint64_t now = uv_now(loop_);
  if (error_logged_ms_ == 0 || now - error_logged_ms_ >= 1000) {
    LOG_WARN("accept failed", {"error", uv_err_name(status)}, {"count", errors_});
    error_logged_ms_ = now;
    errors_ = 0;
  }
}

// libuv 1.44 (src/unix/stream.c) keeps the descriptor it accepted in accepted_fd until
// uv_accept opens it into a handle; emptying the field is all uv_accept does to the listener, and
// the accept loop goes on as after a uv_accept.
int Listener::take_accepted() {
  int fd = tcp_.accepted_fd;
  tcp_.accepted_fd = -1;
  return fd;
}

void Listener::close_gracefully(std::function<void(int fd)> adopt, std::function<void(std::uint64_t)> closed) {
  if (closing_ || closed_) return;
  closing_ = true;
  adopt_ = std::move(adopt);
  on_closed_ = std::move(closed);
  uv_os_fd_t fd = -1;
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(&tcp_), &fd) != 0 || refuse_new_handshakes(fd) != 0) {
    LOG_WARN("cannot refuse new handshakes before closing the listener; closing at once",
             {"error", uv_strerror(uv_translate_sys_error(errno))});
    finish_close();
    return;
  }
  // Meanwhile the loop goes on accepting the handshakes that complete.
  uv_timer_start(&grace_, [](uv_timer_t* t) { static_cast<Listener*>(t->data)->finish_close(); },
                 kHandshakeGraceMs, 0);
}

void Listener::finish_close() {
  if (closed_) return;
  std::uint64_t taken = 0;
  uv_os_fd_t fd = -1;
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(&tcp_), &fd) == 0) {
    for (;;) {
      int c = accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (c < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        break;
      }
      ++taken;
      if (adopt_) adopt_(c);
    }
  }
  close();
  if (on_closed_) on_closed_(taken);
}

void Listener::close() {
  if (closed_) return;
  closed_ = true;
  uv_timer_stop(&grace_);
  uv_close(reinterpret_cast<uv_handle_t*>(&grace_), nullptr);
  close_handle(reinterpret_cast<uv_handle_t*>(&tcp_), nullptr);
}

}  // namespace ebb::net
