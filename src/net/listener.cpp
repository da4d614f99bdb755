// The listening socket.
#include "net/listener.hpp"

#include <cerrno>

#include "log.hpp"
#include "net/io.hpp"

namespace ebb::net {

Listener::Listener(uv_loop_t* loop, std::function<void()> on_connection)
    : loop_(loop), on_connection_(std::move(on_connection)) {
  uv_tcp_init(loop_, &tcp_);
  tcp_.data = this;
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

std::uint64_t Listener::close_taking_backlog(const std::function<void(int fd)>& adopt) {
  if (closed_) return 0;
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
      adopt(c);
    }
  }
  close();
  return taken;
}

void Listener::close() {
  if (closed_) return;
  closed_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), nullptr);
}

}  // namespace ebb::net
