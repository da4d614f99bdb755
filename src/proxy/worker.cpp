// Accepting client connections into a Worker, the connection registry, and the lifecycle
// phase as the data path sees it.
#include "proxy/worker.hpp"

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
  set_config(cfg);
}

void Worker::set_config(const Config* cfg) {
  cfg_ = cfg;
  limiter_.configure(cfg->upstream_limits.max_concurrency, cfg->upstream_limits.queue_size);
}

Worker::~Worker() { delete[] read_buf_; }

void Worker::alloc_cb(uv_handle_t* h, size_t, uv_buf_t* buf) {
  // One buffer per loop: data is forwarded straight from it, and only bytes a blocked write
  // could not take are copied out, so idle connections hold no buffer at all.
  auto* w = static_cast<Worker*>(h->loop->data);
  *buf = uv_buf_init(w->read_buf_, kReadBufferSize);
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

void Worker::link(ClientConn* c) { conns_.push_front(c); }

void Worker::unlink(ClientConn* c) { conns_.remove(c); }

void Worker::on_accept(uv_stream_t* listener) {
  if (conns_.size() >= connection_cap_) {
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
  conns_.for_each([](ClientConn* c) { c->on_phase(); });  // may start closing c, never frees it here
}

void Worker::cut_all() {
  conns_.for_each([](ClientConn* c) { c->cut(); });
}

void Worker::close_all() {
  conns_.for_each([](ClientConn* c) { c->close(Unanswered::kExit); });
  pool_.close_all();
}

}  // namespace ebb
