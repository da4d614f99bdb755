// The workers: one Worker on the accepting loop at `workers: 1` (no thread, no lock), or N
// Workers each on its own loop and thread. The accepting loop keeps the one listener and hands
// each connection to the worker holding the fewest; the lifecycle reaches every worker through
// calls that run on the worker's own thread and return once it has run them.
#pragma once

#include <uv.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "config.hpp"
#include "metrics.hpp"
#include "net/listener.hpp"
#include "proxy/worker.hpp"

namespace ebb {

class WorkerGroup {
 public:
  // `observer` is called on the accepting loop's thread only: a worker on a thread of its own
  // passes connection closes over by a uv_async; probe() must be safe from any thread.
  WorkerGroup(uv_loop_t* main, const Config* cfg, WorkerObserver* observer, unsigned count);
  ~WorkerGroup();
  WorkerGroup(const WorkerGroup&) = delete;
  WorkerGroup& operator=(const WorkerGroup&) = delete;

  unsigned size() const { return static_cast<unsigned>(workers_.size()); }
  // The listener's connection callback, and a connection taken from its backlog at the close.
  void on_accept(net::Listener& listener);
  void adopt(int fd);
  // limits.max_connections for the whole process.
  void set_connection_cap(size_t cap);
  size_t connection_cap() const { return cap_; }
  // Client connections of all workers, those handed over but not yet taken included.
  size_t connections() const;

  // Runs fn on every worker, each on its own thread, and returns once all have run it.
  void for_each(const std::function<void(Worker&)>& fn);
  // Every worker's counters, copied on its own thread; [i] is worker i's.
  std::vector<Metrics> shards();
  // Their sum, with the connections this loop refused over the cap.
  Metrics sum() { return sum_of(shards()); }
  Metrics sum_of(const std::vector<Metrics>& shards) const;

  // Exit: every worker closes its connections and pool, its loop ends and its thread is joined.
  void stop();

 private:
  struct Thread;
  void dispatch(int fd);
  void on_closed_async();

  uv_loop_t* main_;
  WorkerObserver* observer_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::unique_ptr<Thread>> threads_;  // empty at workers: 1
  uv_async_t closed_async_;  // a worker thread's connection closed
  size_t cap_ = 0;
  size_t next_ = 0;             // where the next search for the least loaded starts
  std::uint64_t rejected_ = 0;  // over the cap, refused by this loop (workers > 1)
  bool stopped_ = false;
};

}  // namespace ebb
