// The per-loop context: its read buffer, config, upstream address and request ids.
#include "proxy/worker.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <random>

#include "log.hpp"
#include "net/io.hpp"

namespace ebb {

Worker::Worker(uv_loop_t* loop, const Config* cfg, WorkerObserver* observer, unsigned index, unsigned count)
    : loop_(loop),
      cfg_(cfg),
      observer_(observer),
      pool_(*this),
      index_(index),
      count_(count),
      next_conn_id_(index + 1),
      read_buf_(new char[kReadBufferSize]) {
  loop_->data = this;
  std::random_device rd;
  std::uint64_t r = (std::uint64_t{rd()} << 32) | rd();
  auto res = std::to_chars(request_prefix_, request_prefix_ + 16, r, 16);
  while (res.ptr < request_prefix_ + 16) *res.ptr++ = '0';
  request_prefix_[16] = '\0';
  uv_timer_init(loop_, &shed_timer_);
  shed_timer_.data = this;
  set_config(cfg);
}

void Worker::set_config(const Config* cfg) {
  cfg_ = cfg;
  // upstream_limits and limits.max_memory are per pod: each worker keeps its share (all of it at
  // workers: 1). A fixed limit is never below the worker count (config.cpp), so every share is a
  // slot or more; `auto` is learned by each worker from its own requests.
  ConcurrencyLimit limit = cfg->upstream_limits.max_concurrency;
  if (!limit.adaptive) limit.fixed = static_cast<std::uint32_t>(share(limit.fixed));
  limiter_.configure(limit, static_cast<std::uint32_t>(share(cfg->upstream_limits.queue_size)));
  budget_ = ConnBudget::of(cfg->limits.connection_buffer);
  memory_.configure(std::max(cfg->limits.max_memory / count_, 4 * cfg->limits.connection_buffer));
}

Worker::~Worker() { delete[] read_buf_; }

void Worker::give_read_buffer(uv_handle_t* h, size_t allowance, uv_buf_t* buf) {
  // One buffer per loop: data is forwarded straight from it, and only bytes a blocked write
  // could not take are copied out, so idle connections hold no buffer at all. The caller sizes
  // the read so that what it feeds stays within its budget.
  auto* w = static_cast<Worker*>(h->loop->data);
  *buf = uv_buf_init(w->read_buf_, static_cast<unsigned>(std::min(allowance, kReadBufferSize)));
}

void Worker::alloc_cb(uv_handle_t* h, size_t, uv_buf_t* buf) { give_read_buffer(h, kReadBufferSize, buf); }

// ---- limits.max_memory ------------------------------------------------------------------

void Worker::memory_paused(bool over_cap) {
  ++metrics_.memory_pauses;
  memory_pause_seen_ = true;
  if (over_cap && !uv_is_active(reinterpret_cast<uv_handle_t*>(&shed_timer_)) &&
      !uv_is_closing(reinterpret_cast<uv_handle_t*>(&shed_timer_))) {
    uv_timer_start(&shed_timer_, [](uv_timer_t* t) { static_cast<Worker*>(t->data)->shed(); }, 0, 0);
  }
}

void Worker::set_upstream(const sockaddr_storage& addr, std::string host_header) {
  upstream_addr_ = addr;
  upstream_host_ = std::move(host_header);
}

std::string_view Worker::next_request_id() {
  std::memcpy(request_id_, request_prefix_, 16);
  request_id_[16] = '-';
  auto r = std::to_chars(request_id_ + 17, request_id_ + sizeof request_id_, ++request_counter_);
  return {request_id_, static_cast<size_t>(r.ptr - request_id_)};
}

}  // namespace ebb
