// Implementation of the shared libuv helpers.
#include "net/io.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/tcp.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace ebb::net {

namespace {

struct WriteReq {
  uv_write_t req;
  WriteDone done;
  std::uint64_t* account;
  size_t len;
  char data[1];
};

void on_write(uv_write_t* req, int status) {
  auto* w = reinterpret_cast<WriteReq*>(req);
  WriteDone done = w->done;
  uv_stream_t* stream = req->handle;
  if (w->account != nullptr) *w->account -= w->len;
  std::free(w);
  if (done) done(stream, status);
}

}  // namespace

int write(uv_stream_t* stream, const uv_buf_t* bufs, unsigned nbufs, WriteDone done, std::uint64_t* account) {
  size_t total = 0;
  for (unsigned i = 0; i < nbufs; ++i) total += bufs[i].len;
  if (total == 0) return 0;
  size_t written = 0;
  int r = uv_try_write(stream, bufs, nbufs);
  if (r >= 0) {
    written = static_cast<size_t>(r);
    if (written == total) return 0;
  } else if (r != UV_EAGAIN && r != UV_ENOSYS) {
    return r;
  }
  size_t left = total - written;
  auto* w = static_cast<WriteReq*>(std::malloc(offsetof(WriteReq, data) + left));
  if (w == nullptr) return UV_ENOMEM;
  w->done = done;
  w->account = nullptr;
  w->len = left;
  size_t skip = written;
  char* p = w->data;
  for (unsigned i = 0; i < nbufs; ++i) {
    size_t len = bufs[i].len;
    if (skip >= len) {
      skip -= len;
      continue;
    }
    std::memcpy(p, bufs[i].base + skip, len - skip);
    p += len - skip;
    skip = 0;
  }
  uv_buf_t b = uv_buf_init(w->data, static_cast<unsigned>(left));
  r = uv_write(&w->req, stream, &b, 1, on_write);
  if (r < 0) {
    std::free(w);
    return r;
  }
  if (account != nullptr) {
    w->account = account;
    *account += left;
  }
  return 0;
}

void set_nodelay(uv_tcp_t* tcp) { uv_tcp_nodelay(tcp, 1); }

int resolve(const HostPort& hp, sockaddr_storage& out, std::string& error) {
  std::memset(&out, 0, sizeof out);
  std::string host = hp.host;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty()) host = "0.0.0.0";
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (rc != 0 || res == nullptr) {
    error = "cannot resolve " + host + ": " + gai_strerror(rc);
    return UV_EINVAL;
  }
  // Prefer IPv4: "localhost" then means 127.0.0.1, where most apps listen.
  addrinfo* pick = res;
  for (addrinfo* a = res; a; a = a->ai_next) {
    if (a->ai_family == AF_INET) {
      pick = a;
      break;
    }
  }
  std::memcpy(&out, pick->ai_addr, pick->ai_addrlen);
  if (out.ss_family == AF_INET) {
    reinterpret_cast<sockaddr_in*>(&out)->sin_port = htons(hp.port);
  } else {
    reinterpret_cast<sockaddr_in6*>(&out)->sin6_port = htons(hp.port);
  }
  freeaddrinfo(res);
  return 0;
}

namespace {

std::string format(const sockaddr_storage& ss, bool with_port) {
  char ip[INET6_ADDRSTRLEN] = {0};
  bool v6 = ss.ss_family == AF_INET6;
  if (!v6 && ss.ss_family != AF_INET) return {};
  const auto* in4 = reinterpret_cast<const sockaddr_in*>(&ss);
  const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&ss);
  inet_ntop(ss.ss_family, v6 ? static_cast<const void*>(&in6->sin6_addr) : &in4->sin_addr, ip, sizeof ip);
  if (!with_port) return ip;
  char out[80];
  std::snprintf(out, sizeof out, v6 ? "[%s]:%d" : "%s:%d", ip, ntohs(v6 ? in6->sin6_port : in4->sin_port));
  return out;
}

}  // namespace

std::string peer_ip(const uv_tcp_t* tcp) {
  sockaddr_storage ss{};
  int len = sizeof ss;
  if (uv_tcp_getpeername(tcp, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return {};
  return format(ss, false);
}

std::string sock_name(const uv_tcp_t* tcp) {
  sockaddr_storage ss{};
  int len = sizeof ss;
  if (uv_tcp_getsockname(tcp, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return {};
  return format(ss, true);
}

bool is_loopback(const sockaddr_storage& ss) {
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
  }
  if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    if (IN6_IS_ADDR_LOOPBACK(&a->sin6_addr)) return true;
    if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) return a->sin6_addr.s6_addr[12] == 127;
  }
  return false;
}

int listen_tcp(uv_tcp_t* tcp, const sockaddr_storage& addr, uv_connection_cb cb, int backlog) {
  int r = uv_tcp_bind(tcp, reinterpret_cast<const sockaddr*>(&addr), 0);
  if (r < 0) return r;
  return uv_listen(reinterpret_cast<uv_stream_t*>(tcp), backlog, cb);
}

}  // namespace ebb::net
