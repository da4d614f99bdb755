// A blocking HTTP client for /drain: the kubelet runs it as preStop.exec and waits for it,
// so it waits as long as the drain takes (the grace period bounds it).
#include "admin/drain_client.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "config.hpp"
#include "net/io.hpp"

namespace ebb {

int drain_main(int argc, char** argv) {
  std::string admin = "127.0.0.1:9901";
  std::string token;
  bool wait = false;
  if (const char* t = std::getenv("EBB_ADMIN_DRAIN_TOKEN")) token = t;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--wait") {
      wait = true;
    } else if (a == "--admin" && i + 1 < argc) {
      admin = argv[++i];
    } else if (a == "--token" && i + 1 < argc) {
      token = argv[++i];
    } else if (a == "--help" || a == "-h") {
      std::printf("usage: ebb drain [--admin HOST:PORT] [--wait] [--token T]\n"
                  "Starts ebb's drain through its admin port (default 127.0.0.1:9901); with --wait,\n"
                  "returns when ebb has drained. The token defaults to $EBB_ADMIN_DRAIN_TOKEN.\n");
      return 0;
    } else {
      std::fprintf(stderr, "ebb drain: unknown argument %s (see ebb drain --help)\n", a.c_str());
      return 2;
    }
  }
  HostPort hp;
  if (!parse_host_port(admin, hp)) {
    std::fprintf(stderr, "ebb drain: --admin %s: expected HOST:PORT\n", admin.c_str());
    return 2;
  }
  if (hp.host == "0.0.0.0" || hp.host.empty()) hp.host = "127.0.0.1";
  sockaddr_storage addr{};
  std::string error;
  if (net::resolve(hp, addr, error) != 0) {
    std::fprintf(stderr, "ebb drain: %s\n", error.c_str());
    return 1;
  }
  int fd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  socklen_t len = addr.ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    std::fprintf(stderr, "ebb drain: cannot connect to %s: %s\n", admin.c_str(), std::strerror(errno));
    if (fd >= 0) ::close(fd);
    return 1;
  }
  std::string req = std::string("POST /drain") + (wait ? "?wait=true" : "") + " HTTP/1.1\r\nHost: " + hp.str() +
                    "\r\nContent-Length: 0\r\nConnection: close\r\n";
  if (!token.empty()) req += "Authorization: Bearer " + token + "\r\n";
  req += "\r\n";
  for (size_t off = 0; off < req.size();) {
    ssize_t n = ::send(fd, req.data() + off, req.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      std::fprintf(stderr, "ebb drain: send failed: %s\n", std::strerror(errno));
      ::close(fd);
      return 1;
    }
    off += static_cast<size_t>(n);
  }
  std::string resp;
  char buf[4096];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    resp.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  int status = 0;
  if (resp.size() < 12 || std::sscanf(resp.c_str(), "HTTP/1.%*d %d", &status) != 1) {
    std::fprintf(stderr, "ebb drain: no valid answer from %s\n", admin.c_str());
    return 1;
  }
  size_t body = resp.find("\r\n\r\n");
  std::string text = body == std::string::npos ? std::string() : resp.substr(body + 4);
  std::fputs(text.c_str(), status < 300 ? stdout : stderr);
  if (status >= 300) {
    std::fprintf(stderr, "ebb drain: refused with status %d\n", status);
    return 1;
  }
  return 0;
}

}  // namespace ebb
