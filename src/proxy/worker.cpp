// Accepting client connections into a Worker, the connection registry, and the lifecycle
// phase as the data path sees it.
#include "proxy/worker.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <random>

#include "log.hpp"
#include "net/io.hpp"
#include "proxy/client.hpp"

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

// ---- limits.max_memory ------------------------------------------------------------------

void Worker::memory_paused(bool over_cap) {
  ++metrics_.memory_pauses;
  memory_pause_seen_ = true;
  if (over_cap && !uv_is_active(reinterpret_cast<uv_handle_t*>(&shed_timer_)) &&
      !uv_is_closing(reinterpret_cast<uv_handle_t*>(&shed_timer_))) {
    uv_timer_start(&shed_timer_, [](uv_timer_t* t) { static_cast<Worker*>(t->data)->shed(); }, 0, 0);
  }
}

void Worker::memory_released() {
  if (!memory_pause_seen_ || memory_.held() >= memory_.pause_mark()) return;
  memory_pause_seen_ = false;
  for (ClientConn* c = head_; c != nullptr;) {
    ClientConn* next = c->next_;
    c->resume_memory();
    c = next;
  }
}

// The total reached limits.max_memory: close the connections holding the most until it is back
// under the pause mark. Their queued bytes are freed as their writes are cancelled.
void Worker::shed() {
  if (!memory_.over_cap()) return;
  std::vector<MemoryAccount::Holder> holders;
  holders.reserve(conn_count_);
  for (ClientConn* c = head_; c != nullptr; c = c->next_) holders.push_back({c->id(), c->held_bytes()});
  std::vector<std::uint64_t> ids = memory_.pick_shed(std::move(holders));
  std::sort(ids.begin(), ids.end());
  for (ClientConn* c = head_; c != nullptr;) {
    ClientConn* next = c->next_;  // shed() starts closing c, never frees it here
    if (std::binary_search(ids.begin(), ids.end(), c->id())) {
      ++metrics_.memory_shed;
      c->shed();
    }
    c = next;
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

void Worker::link(ClientConn* c) {
  c->prev_ = nullptr;
  c->next_ = head_;
  if (head_) head_->prev_ = c;
  head_ = c;
  ++conn_count_;
}

void Worker::unlink(ClientConn* c) {
  if (c->prev_) c->prev_->next_ = c->next_;
  else head_ = c->next_;
  if (c->next_) c->next_->prev_ = c->prev_;
  c->prev_ = c->next_ = nullptr;
  --conn_count_;
}

void Worker::on_accept(uv_stream_t* listener) {
  if (conn_count_ >= connection_cap_) {
    // Over the limit: take the connection off the backlog and close it, so the listener
    // keeps accepting (and a client sees a clean close rather than a SYN timeout).
    auto* t = new uv_tcp_t;
    uv_tcp_init(loop_, t);
    if (uv_accept(listener, reinterpret_cast<uv_stream_t*>(t)) == 0) ++metrics_.connections_rejected;
    uv_close(reinterpret_cast<uv_handle_t*>(t), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
    LOG_DEBUG("connection limit reached", {"limit", connection_cap_});
    return;
  }
  auto* c = new ClientConn(*this, next_conn_id_++);
  if (uv_accept(listener, reinterpret_cast<uv_stream_t*>(c->tcp())) != 0) {
    c->close(Unanswered::kClientClosed);
    return;
  }
  c->start();
}

void Worker::adopt(int fd) {
  auto* c = new ClientConn(*this, next_conn_id_++);
  if (uv_tcp_open(c->tcp(), fd) != 0) {
    c->close(Unanswered::kClientClosed);
    return;
  }
  c->start();
}

void Worker::set_phase(Phase p) {
  phase_ = p;
  for (ClientConn* c = head_; c != nullptr;) {
    ClientConn* next = c->next_;  // on_phase may start closing c, never frees it here
    c->on_phase();
    c = next;
  }
}

void Worker::cut_all() {
  for (ClientConn* c = head_; c != nullptr;) {
    ClientConn* next = c->next_;
    c->cut();
    c = next;
  }
}

void Worker::close_all() {
  if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&shed_timer_))) {
    uv_close(reinterpret_cast<uv_handle_t*>(&shed_timer_), nullptr);
  }
  for (ClientConn* c = head_; c != nullptr;) {
    ClientConn* next = c->next_;
    c->close(Unanswered::kExit);
    c = next;
  }
  pool_.close_all();
}

}  // namespace ebb
