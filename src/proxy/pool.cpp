// The idle pool.
#include "proxy/pool.hpp"

#include "proxy/upstream.hpp"
#include "proxy/worker.hpp"

namespace ebb {

UpstreamConn* Pool::take() {
  UpstreamConn* c = idle_.front();
  if (c != nullptr) idle_.remove(c);
  return c;
}

void Pool::put(UpstreamConn* c) {
  if (idle_.size() >= w_.cfg().upstream_pool.max_idle) {
    c->close();
    return;
  }
  idle_.push_front(c);
  c->enter_pool();
}

void Pool::close_all() {
  while (UpstreamConn* c = idle_.front()) c->close();  // close() removes it
}

void Pool::remove(UpstreamConn* c) { idle_.remove(c); }

size_t Pool::size() const { return idle_.size(); }

}  // namespace ebb
