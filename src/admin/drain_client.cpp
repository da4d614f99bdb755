// A blocking HTTP client for /drain: the kubelet runs it as preStop.exec and waits for it,
// so it waits as long as the drain takes (the grace period bounds it).
#include "admin/drain_client.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "config.hpp"
#include "net/io.hpp"

namespace ebb {

namespace {

constexpr const char* kDefaultConfig = "/etc/ebb/ebb.yaml";

// A listener on every address is dialled on loopback, of the same family.
HostPort dial_address(HostPort hp) {
  if (hp.host.empty() || hp.host == "0.0.0.0") hp.host = "127.0.0.1";
  else if (hp.host == "::") hp.host = "::1";
  return hp;
}

}  // namespace

int drain_main(int argc, char** argv) {
  std::string admin_flag, token_flag, config_path;
  bool have_admin = false, have_token = false;
  bool wait = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--wait") {
      wait = true;
    } else if (a == "--admin" && i + 1 < argc) {
      admin_flag = argv[++i];
      have_admin = true;
    } else if (a == "--token" && i + 1 < argc) {
      token_flag = argv[++i];
      have_token = true;
    } else if ((a == "--config" || a == "-c") && i + 1 < argc) {
      config_path = argv[++i];
    } else if (a == "--help" || a == "-h") {
      std::printf("usage: ebb drain [--admin HOST:PORT] [--wait] [--token T] [--config FILE]\n"
                  "Starts ebb's drain through its admin port; with --wait, returns when ebb has drained.\n"
                  "The admin address and the token come from the flags, else from the config as ebb\n"
                  "itself reads it: --config FILE (default %s if present) and the EBB_*\n"
                  "environment (EBB_ADMIN_LISTEN, EBB_ADMIN_DRAIN_TOKEN). A listener on 0.0.0.0 or ::\n"
                  "is dialled on loopback.\n",
                  kDefaultConfig);
      return 0;
    } else {
      std::fprintf(stderr, "ebb drain: unknown argument %s (see ebb drain --help)\n", a.c_str());
      return 2;
    }
  }
  HostPort hp;
  std::string token = token_flag;
  if (have_admin) {
    if (!parse_host_port(admin_flag, hp)) {
      std::fprintf(stderr, "ebb drain: --admin %s: expected HOST:PORT\n", admin_flag.c_str());
      return 2;
    }
  }
  if (!have_admin || !have_token) {
    // The same config ebb runs with, so `ebb drain` in a preStop hook follows EBB_ADMIN_LISTEN.
    struct stat st{};
    if (config_path.empty() && ::stat(kDefaultConfig, &st) == 0) config_path = kDefaultConfig;
    ConfigResult r = load_config(config_path, ebb_environment());
    if (r.config) {
      if (!have_admin) hp = r.config->admin.listen;
      if (!have_token) token = r.config->admin.drain_token;
    } else if (!have_admin) {
      std::fprintf(stderr, "ebb drain: invalid config: %s\n", r.error.c_str());
      return 2;
    } else {
      // The address is known; a hook should not fail on a config problem it can work around.
      std::fprintf(stderr, "ebb drain: warning: invalid config (%s); token from $EBB_ADMIN_DRAIN_TOKEN only\n",
                   r.error.c_str());
      if (const char* t = std::getenv("EBB_ADMIN_DRAIN_TOKEN")) token = t;
    }
  }
  if (hp.port == 0) {
    std::fprintf(stderr, "ebb drain: admin port 0 (any free port) cannot be dialled; give --admin HOST:PORT\n");
    return 2;
  }
  hp = dial_address(hp);
  std::string admin = hp.str();
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
