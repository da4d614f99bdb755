// Fuzz target: the HTTP/2 glue (src/proxy/h2_conn.cpp, h2_stream.cpp) through a real H2Conn on a
// real event loop. The input, after the connection preface, is what a client sends, cut into
// reads at points its first byte picks; the app's port refuses connections, so every stream that
// passes ebb's checks is answered 502 (or gRPC's 14) by ebb itself. Invariants: no crash, leak or
// undefined behaviour (ASan+UBSan), and every stream, exchange and connection is freed when the
// connection closes (no handle outlives it, nothing stays in flight).
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "config.hpp"
#include "log.hpp"
#include "proxy/worker.hpp"

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz invariant broken: %s\n", what);
  std::abort();
}

const ebb::Config& config() {
  static const ebb::Config c = [] {
    ebb::Config k;
    k.upstream_retry.connect_retry_budget = 0;
    k.limits.max_header_bytes = 4096;
    k.limits.max_body_bytes = 1 << 16;
    return k;
  }();
  return c;
}

// Lets the loop handle what is ready now: the client's bytes, ebb's answers, the app's refusals
// (on loopback a refused connect is reported at once).
void settle(uv_loop_t* loop) {
  for (int i = 0; i < 8 && uv_run(loop, UV_RUN_NOWAIT) != 0; ++i) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Each request ebb refuses is logged at info; errors only, or the run is spent writing logs.
  static const bool quiet = (ebb::logger().configure(ebb::LogFormat::kJson, ebb::LogLevel::kError), true);
  (void)quiet;
  if (size < 1) return 0;
  unsigned seed = data[0] * 2654435761u + 1;
  std::string input = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  input.append(reinterpret_cast<const char*>(data + 1), size - 1);

  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0) return 0;
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    ebb::Worker w(&loop, &config(), nullptr);
    sockaddr_storage app{};
    auto* sin = reinterpret_cast<sockaddr_in*>(&app);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(1);  // refused: nothing listens on port 1
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    w.set_upstream(app, "app");
    w.set_connection_cap(16);
    w.adopt_h2(fds[0], std::string_view(input.data(), std::min<size_t>(input.size(), 24)));
    size_t at = 24;
    char sink[65536];
    while (at < input.size()) {
      seed = seed * 1103515245u + 12345u;
      size_t n = std::min<size_t>(input.size() - at, 1 + (seed >> 16) % 4096);
      ssize_t wrote = write(fds[1], input.data() + at, n);
      if (wrote > 0) at += static_cast<size_t>(wrote);
      settle(&loop);
      while (read(fds[1], sink, sizeof sink) > 0) {
      }
      if (wrote <= 0 && w.connections() == 0) break;  // ebb closed the connection
    }
    shutdown(fds[1], SHUT_WR);  // the client is done
    settle(&loop);
    while (read(fds[1], sink, sizeof sink) > 0) {
    }
    w.close_all();
    settle(&loop);
    while (uv_run(&loop, UV_RUN_NOWAIT) != 0) {
    }
    if (w.connections() != 0) fail("a connection outlived close_all");
    if (w.in_flight() != 0) fail("an exchange outlived its connection");
  }
  close(fds[1]);
  if (uv_loop_close(&loop) != 0) fail("a handle outlived its connection");
  return 0;
}
