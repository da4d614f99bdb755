// The per-event-loop context of the data path: the loop, the shared read buffer, the current
// config, the upstream pool and the client connections. Nothing here is global, so a second
// loop on a second thread is a second Worker (proxy/worker_group.hpp runs them).
#pragma once

#include <uv.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "config.hpp"
#include "lifecycle.hpp"
#include "metrics.hpp"
#include "net/conn.hpp"
#include "net/list.hpp"
#include "proxy/budget.hpp"
#include "proxy/limiter.hpp"
#include "proxy/out_batch.hpp"
#include "proxy/pool.hpp"

namespace ebb {

// A client connection of either protocol (ClientConn for HTTP/1, H2Conn for HTTP/2), as the
// Worker's registry and the lifecycle see it.
class Client : public net::Conn, public net::Linked<Client> {
 public:
  using net::Conn::Conn;
  virtual void on_phase() = 0;           // the worker's lifecycle phase changed
  virtual void cut() = 0;                // the drain deadline: close, counting what is open
  virtual void close(Unanswered why) = 0;  // abortive and idempotent
  virtual std::uint64_t id() const = 0;
  // Buffer budgets (proxy/budget.hpp): the bytes it holds (0 once closing), and what the worker
  // asks of it when the total falls under the pause mark, or must come down (limits.max_memory).
  virtual size_t held_bytes() const = 0;
  virtual void resume_memory() {}
  virtual void shed() { close(Unanswered::kMemoryShed); }
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

  // Worker `index` of `count`: it takes that share of the pod's upstream_limits and
  // limits.max_memory, and numbers its connections index+1, index+1+count, ... so ids stay unique.
  Worker(uv_loop_t* loop, const Config* cfg, WorkerObserver* observer, unsigned index = 0, unsigned count = 1);
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
  void memory_released();  // bytes were freed: resume paused connections if the total allows
  Phase phase() const { return phase_; }
  WorkerObserver* observer() const { return observer_; }
  char* read_buffer() { return read_buf_; }
  const sockaddr_storage& upstream_addr() const { return upstream_addr_; }
  const std::string& upstream_host() const { return upstream_host_; }
  size_t connections() const { return conns_.size(); }
  // Readable from any thread: the connections linked here plus those handed over by the
  // accepting thread and not yet adopted (workers > 1). Exact at every moment, never a
  // connection counted twice or not at all, so the accepting thread can cap and balance on it
  // and the drain can end on it.
  size_t load() const { return load_.load(std::memory_order_relaxed); }
  void count_handed() { load_.fetch_add(1, std::memory_order_relaxed); }  // accepting thread
  void adopt_handed(int fd) {  // this worker's thread: a connection counted by count_handed
    adopting_handed_ = true;
    adopt(fd);
  }
  unsigned index() const { return index_; }
  size_t in_flight() const { return metrics_.requests_in_flight; }
  // "<16 hex of random>-<counter>": unique without a syscall per request.
  std::string_view next_request_id();
  std::uint64_t now_ms() const { return uv_now(loop_); }

  // Registry of client connections.
  void link(Client* c);
  void unlink(Client* c);
  // A connection whose first bytes were the HTTP/2 preface, handed over with what was read.
  void adopt_h2(int fd, std::string_view first_bytes);
  std::uint64_t next_upstream_id() { return next_upstream_id_++; }

  // A read into the loop's buffer of at most `allowance` bytes (0: libuv reports UV_ENOBUFS).
  static void give_read_buffer(uv_handle_t* h, size_t allowance, uv_buf_t* buf);
  static void alloc_cb(uv_handle_t* h, size_t suggested, uv_buf_t* buf);  // the whole buffer

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
  // This worker's part of a per-pod figure: n split over the workers, the first n % count one more.
  std::uint64_t share(std::uint64_t n) const { return n / count_ + (index_ < n % count_ ? 1 : 0); }
  std::uint64_t take_conn_id() { return std::exchange(next_conn_id_, next_conn_id_ + count_); }
  unsigned index_;
  unsigned count_;
  void add_load(long n);
  std::atomic<size_t> load_{0};
  bool adopting_handed_ = false;  // the next link() is a handed-over connection, counted already
  Phase phase_ = Phase::kServing;
  sockaddr_storage upstream_addr_{};
  std::string upstream_host_;
  net::List<Client> conns_;
  size_t connection_cap_ = 0;
  std::uint64_t next_conn_id_ = 1;
  std::uint64_t next_upstream_id_ = 1;
  std::uint64_t request_counter_ = 0;
  char request_id_[40] = {0};
  char request_prefix_[17] = {0};
  char* read_buf_;
};

}  // namespace ebb
