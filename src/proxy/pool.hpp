// The ways to the app an exchange borrows: idle HTTP/1 keep-alive connections, most recently
// used first, or streams of the shared HTTP/2 connections (upstream_protocol: h2c).
#pragma once

#include <cstddef>

#include "net/list.hpp"
#include "proxy/h2_app.hpp"

namespace ebb {

class AppLeg;
class H2AppConn;
class UpstreamConn;
class UpstreamSink;
class Worker;

// Most recently used first: it is the least likely to have hit the app's keep-alive timeout.
class Pool {
 public:
  explicit Pool(Worker& w) : w_(w) {}
  // A leg for one exchange: HTTP/1, a pooled connection (unless `fresh`) or a new one; h2c, a
  // stream on a connection with room, or on a new one. 0 with `ready`: send at once; 0 without:
  // upstream_connected follows; negative: the connect failed at once.
  int lend(UpstreamSink* owner, bool head_method, bool fresh, AppLeg*& leg, bool& ready);
  void remove_h2(H2AppConn* c);  // closing: no more streams on it
  UpstreamConn* take();
  void put(UpstreamConn* c);  // closes it instead when the pool is full
  void remove(UpstreamConn* c);  // does nothing for one not in the pool
  void close_all();
  size_t size() const;

 private:
  Worker& w_;
  net::List<UpstreamConn> idle_;
  net::List<H2AppConn> h2_;  // open HTTP/2 connections to the app, each with room or busy
};

}  // namespace ebb
