// The per-event-loop context of the data path: the loop, the shared read buffer, the current
// config, the upstream pool and the client connections. Nothing here is global, so a second
// loop on a second thread is a second Worker.
#pragma once

#include <uv.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "config.hpp"
#include "lifecycle.hpp"
#include "metrics.hpp"
#include "proxy/budget.hpp"
#include "proxy/limiter.hpp"
#include "proxy/upstream.hpp"

namespace ebb {

class ClientConn;

// Writes to one client gathered while a read from its app is parsed, so a response head and
// its body (and chunk framing) leave in one writev. One per loop: only one read is parsed at
// a time, and the pieces point into the loop's read buffer until the flush.
struct OutBatch {
  static constexpr unsigned kMax = 16;
  ClientConn* owner = nullptr;
  uv_buf_t bufs[kMax];
  unsigned n = 0;
  char lines[kMax][24];
  unsigned lines_used = 0;
};

// What the data path asks of the lifecycle (implemented by the Server).
class WorkerObserver {
 public:
  virtual ~WorkerObserver() = default;
  virtual void on_connection_closed() = 0;
  // probes.on_proxy_listener: answer /healthz and /readyz on the proxy port.
  virtual bool probe(std::string_view path, int& status, std::string& body) = 0;
};

class Worker {
 public:
  // The loop's one read buffer; the watermarks on bytes queued to one side come from the
  // per-connection budget (budget().high / budget().low, proxy/budget.hpp).
  static constexpr size_t kReadBufferSize = ConnBudget::kReadBuffer;

  Worker(uv_loop_t* loop, const Config* cfg, WorkerObserver* observer);
  ~Worker();

  // A reload: new upstream_limits apply to requests that ask for a slot from now on.
  void set_config(const Config* cfg);
  // limits.max_connections, lowered by the process's descriptor budget (Server::connection_cap).
  void set_connection_cap(size_t cap) { connection_cap_ = cap; }
  size_t connection_cap() const { return connection_cap_; }
  void set_upstream(const sockaddr_storage& addr, std::string host_header);
  void on_accept(uv_stream_t* listener);  // from the listener's connection callback
  void adopt(int fd);                     // a connection accepted by hand (backlog drain)
  void set_phase(Phase p);
  void cut_all();    // drain timeout: close what remains, counting it
  void close_all();  // exit: close every connection and the pool

  uv_loop_t* loop() const { return loop_; }
  const Config& cfg() const { return *cfg_; }
  Metrics& metrics() { return metrics_; }
  Pool& pool() { return pool_; }
  ConcurrencyLimiter& limiter() { return limiter_; }
  OutBatch& batch() { return batch_; }
  // Buffer budgets (proxy/budget.hpp): per connection, and the worker's total.
  const ConnBudget& budget() const { return budget_; }
  MemoryAccount& memory() { return memory_; }
  // A read was refused for memory: `over_cap` asks for a shed pass (run from a timer, never
  // inside the read path). Paused connections are resumed once the total falls far enough.
  void memory_paused(bool over_cap);
  void memory_released();  // a write finished: resume paused connections if the total allows
  Phase phase() const { return phase_; }
  WorkerObserver* observer() const { return observer_; }
  char* read_buffer() { return read_buf_; }
  const sockaddr_storage& upstream_addr() const { return upstream_addr_; }
  const std::string& upstream_host() const { return upstream_host_; }
  size_t connections() const { return conn_count_; }
  size_t in_flight() const { return metrics_.requests_in_flight; }
  // "<16 hex of random>-<counter>": unique without a syscall per request.
  std::string_view next_request_id();
  std::uint64_t now_ms() const { return uv_now(loop_); }

  // Registry of client connections (intrusive, so removal is O(1) with no allocation).
  void link(ClientConn* c);
  void unlink(ClientConn* c);

  // A read into the loop's buffer of at most `allowance` bytes (0: libuv reports UV_ENOBUFS).
  static void give_read_buffer(uv_handle_t* h, size_t allowance, uv_buf_t* buf);

 private:
  uv_loop_t* loop_;
  const Config* cfg_;
  WorkerObserver* observer_;
  Metrics metrics_;
  ConcurrencyLimiter limiter_{metrics_};  // upstream_limits: slots at the app and their queue
  Pool pool_;
  OutBatch batch_;
  ConnBudget budget_;
  MemoryAccount memory_{&metrics_.buffered_bytes};
  uv_timer_t shed_timer_;
  bool memory_pause_seen_ = false;  // some connection is paused for memory
  void shed();
  Phase phase_ = Phase::kServing;
  sockaddr_storage upstream_addr_{};
  std::string upstream_host_;
  ClientConn* head_ = nullptr;
  size_t conn_count_ = 0;
  size_t connection_cap_ = 0;
  std::uint64_t next_conn_id_ = 1;
  std::uint64_t request_counter_ = 0;
  char request_id_[40] = {0};
  char request_prefix_[17] = {0};
  char* read_buf_;
};

}  // namespace ebb
