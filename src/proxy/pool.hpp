// The idle keep-alive connections to the app, most recently used first.
#pragma once

#include <cstddef>

#include "net/list.hpp"

namespace ebb {

class UpstreamConn;
class Worker;

// Most recently used first: it is the least likely to have hit the app's keep-alive timeout.
class Pool {
 public:
  explicit Pool(Worker& w) : w_(w) {}
  UpstreamConn* take();
  void put(UpstreamConn* c);  // closes it instead when the pool is full
  void remove(UpstreamConn* c);  // does nothing for one not in the pool
  void close_all();
  size_t size() const;

 private:
  Worker& w_;
  net::List<UpstreamConn> idle_;
};

}  // namespace ebb
