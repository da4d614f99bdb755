// The admin listener: /healthz, /readyz, /metrics, /drain and /reload for the kubelet, Prometheus,
// preStop hooks and config rollouts. It stays up until the process exits, so probes answer during a drain.
#pragma once

#include <llhttp.h>
#include <uv.h>

#include <cstdint>
#include <string>

#include "config.hpp"
#include "http/message.hpp"
#include "net/list.hpp"

namespace ebb {

// The answer to a reload request, whatever triggered it: 200 and what changed, or the refusal.
struct ReloadOutcome {
  int status = 200;  // 200 reloaded, 422 invalid config, 409 refused change, 503 upstream unresolvable
  std::string message;
};

// What the admin endpoints ask of the lifecycle (implemented by the Server).
class AdminBackend {
 public:
  virtual ~AdminBackend() = default;
  virtual int readiness(std::string& reason) const = 0;  // 200 or 503
  virtual std::string metrics_text() = 0;
  virtual bool drained() const = 0;
  virtual void start_drain(const char* trigger) = 0;
  virtual std::string drain_summary() const = 0;  // JSON
  virtual ReloadOutcome reload(const char* trigger) = 0;
  virtual const Config& cfg() const = 0;
};

class AdminConn;

// Admin requests turned away, for /metrics (SPEC §3: a refused /drain is counted).
struct AdminStats {
  std::uint64_t refused = 0;       // 403: /drain or /reload without the token, or not from loopback
  std::uint64_t not_found = 0;     // 404: no such endpoint
  std::uint64_t bad_method = 0;    // 405
  std::uint64_t malformed = 0;     // 400: not parsable as HTTP
};

class AdminServer {
 public:
  AdminServer(uv_loop_t* loop, AdminBackend& backend);
  int listen(const sockaddr_storage& addr);
  std::string bound_address() const;
  void answer_drain_waiters();  // the drain finished
  void close_all();             // exit: the listener and every connection (after flushing)
  bool idle() const { return conns_.empty(); }
  const AdminStats& stats() const { return stats_; }

 private:
  friend class AdminConn;
  uv_loop_t* loop_;
  AdminBackend& backend_;
  uv_tcp_t listener_;
  bool listening_ = false;
  bool closing_ = false;
  net::List<AdminConn> conns_;
  char read_buf_[4096];  // one read at a time on this loop; each request is parsed from it at once
  AdminStats stats_;
};

}  // namespace ebb
