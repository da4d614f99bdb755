// The top of the data path: accepting client connections into a Worker (within its connection
// cap), the registry of them, and the lifecycle's phase and deadline passed on to each.
#include <unistd.h>

#include <algorithm>
#include <vector>

#include "log.hpp"
#include "net/io.hpp"
#include "proxy/client.hpp"
#include "proxy/h2_conn.hpp"
#include "proxy/worker.hpp"

namespace ebb {

// load_ is written by the accepting thread too when workers > 1 (count_handed): an atomic add
// then; alone (workers: 1) this thread is its only writer, and a plain store does, no lock prefix.
void Worker::add_load(long n) {
  if (count_ == 1) load_.store(load_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  else load_.fetch_add(n, std::memory_order_relaxed);
}

void Worker::link(Client* c) {
  conns_.push_front(c);
  if (adopting_handed_) adopting_handed_ = false;
  else add_load(1);
}

void Worker::unlink(Client* c) {
  conns_.remove(c);
  add_load(-1);
}

void Worker::on_accept(uv_stream_t* listener) {
  if (conns_.size() >= connection_cap_) {
    // Over the limit: take the connection off the backlog and close it, so the listener
    // keeps accepting (and a client sees a clean close rather than a SYN timeout).
    auto* t = new uv_tcp_t;
    uv_tcp_init(loop_, t);
    if (uv_accept(listener, reinterpret_cast<uv_stream_t*>(t)) == 0) ++metrics_.connections_rejected;
    net::close_handle(reinterpret_cast<uv_handle_t*>(t), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
    LOG_DEBUG("connection limit reached", {"limit", connection_cap_});
    return;
  }
  auto* c = new ClientConn(*this, take_conn_id());
  if (uv_accept(listener, reinterpret_cast<uv_stream_t*>(c->tcp())) != 0) {
    c->close(Unanswered::kClientClosed);
    return;
  }
  c->start();
}

void Worker::adopt(int fd) {
  auto* c = new ClientConn(*this, take_conn_id());
  if (uv_tcp_open(c->tcp(), fd) != 0) {
    c->close(Unanswered::kClientClosed);
    return;
  }
  c->start();
}

void Worker::adopt_h2(int fd, std::string_view first_bytes) {
  auto* c = new H2Conn(*this, take_conn_id());
  if (uv_tcp_open(c->tcp(), fd) != 0) {
    ::close(fd);
    c->close(Unanswered::kClientClosed);
    return;
  }
  c->start(first_bytes);
}

void Worker::set_phase(Phase p) {
  phase_ = p;
  conns_.for_each([](Client* c) { c->on_phase(); });  // may start closing c, never frees it here
}

void Worker::cut_all() {
  limiter_.close();
  conns_.for_each([](Client* c) { c->cut(); });
}

void Worker::memory_released() {
  if (!memory_pause_seen_ || memory_.held() >= memory_.pause_mark()) return;
  memory_pause_seen_ = false;
  conns_.for_each([](Client* c) { c->resume_memory(); });
}

// The total reached limits.max_memory: close the connections holding the most until it is back
// under the pause mark. Their queued bytes are freed as their writes are cancelled.
void Worker::shed() {
  if (!memory_.over_cap()) return;
  std::vector<MemoryAccount::Holder> holders;
  holders.reserve(conns_.size());
  conns_.for_each([&](Client* c) { holders.push_back({c->id(), c->held_bytes()}); });
  std::vector<std::uint64_t> ids = memory_.pick_shed(std::move(holders));
  std::sort(ids.begin(), ids.end());
  conns_.for_each([&](Client* c) {  // shed() starts closing c, never frees it here
    if (std::binary_search(ids.begin(), ids.end(), c->id())) {
      ++metrics_.memory_shed;
      c->shed();
    }
  });
}

void Worker::close_all() {
  if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&shed_timer_))) {
    uv_close(reinterpret_cast<uv_handle_t*>(&shed_timer_), nullptr);
  }
  conns_.for_each([](Client* c) { c->close(Unanswered::kExit); });
  pool_.close_all();
}

}  // namespace ebb
