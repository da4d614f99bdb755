// The idle pool.
#include "proxy/pool.hpp"

#include "proxy/h2_app.hpp"
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

int Pool::lend(UpstreamSink* owner, bool head_method, bool fresh, AppLeg*& leg, bool& ready) {
  if (w_.cfg().upstream_protocol == UpstreamProtocol::kH2c) {
    // The first connection with room; another only when all are full (or told to go away).
    H2AppConn* c = nullptr;
    h2_.for_each([&c](H2AppConn* x) {
      if (c == nullptr && x->usable()) c = x;
    });
    if (c == nullptr) {
      c = new H2AppConn(w_);
      int r = c->connect();
      if (r < 0) {
        c->close();
        return r;
      }
      h2_.push_front(c);
    }
    leg = c->open(owner);
    ready = c->ready();
    return 0;
  }
  if (!fresh) {
    if (UpstreamConn* u = take()) {
      u->attach(owner, head_method);
      leg = u;
      ready = true;
      return 0;
    }
  }
  auto* u = new UpstreamConn(w_);
  int r = u->connect(owner, head_method);
  if (r < 0) {
    u->close();
    return r;
  }
  leg = u;
  ready = false;
  return 0;
}

void Pool::remove_h2(H2AppConn* c) { h2_.remove(c); }

void Pool::close_all() {
  while (UpstreamConn* c = idle_.front()) c->close();  // close() removes it
  while (H2AppConn* c = h2_.front()) c->close();
}

void Pool::remove(UpstreamConn* c) { idle_.remove(c); }

size_t Pool::size() const { return idle_.size(); }

}  // namespace ebb
