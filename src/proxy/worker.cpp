// The per-loop context: its read buffer, config, upstream address and request ids.
#include "proxy/worker.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <random>

#include "log.hpp"
#include "net/io.hpp"

namespace ebb {

Worker::Worker(uv_loop_t* loop, const Config* cfg, WorkerObserver* observer)
    : loop_(loop), cfg_(cfg), observer_(observer), pool_(*this), read_buf_(new char[kReadBufferSize]) {
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
  limiter_.configure(cfg->upstream_limits.max_concurrency, cfg->upstream_limits.queue_size);
  budget_ = ConnBudget::of(cfg->limits.connection_buffer);
  memory_.configure(cfg->limits.max_memory);
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
