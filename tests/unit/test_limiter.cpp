// Unit tests for src/proxy/limiter.*: slots, the FIFO queue, idempotent release, queue
// timeouts, grants that end at once, reload, the metrics it keeps, and the auto limit's shape.
#include <catch2/catch.hpp>

#include <cstdint>
#include <functional>
#include <vector>

#include "metrics.hpp"
#include "proxy/limiter.hpp"

namespace {

using ebb::ConcurrencyLimit;
using ebb::ConcurrencyLimiter;
using ebb::Metrics;
using ebb::SlotWaiter;
using Admit = ConcurrencyLimiter::Admit;

constexpr std::uint64_t kMs = 1'000'000;

struct Waiter final : SlotWaiter {
  int id = 0;
  std::vector<int>* granted = nullptr;
  std::function<void()> on_grant;  // what the exchange does once it has its slot
  void slot_granted() override {
    if (granted) granted->push_back(id);
    if (on_grant) on_grant();
  }
};

ConcurrencyLimit fixed(std::uint32_t n) { return ConcurrencyLimit{false, n}; }

// A limiter with `n` waiters numbered from 0 that note, in `order`, when each got its slot.
struct Line {
  Metrics m;
  ConcurrencyLimiter lim{m};
  std::vector<int> order;
  std::vector<Waiter> w;
  Line(std::uint32_t limit, std::uint32_t queue_size, int n) : w(static_cast<size_t>(n)) {
    lim.configure(fixed(limit), queue_size);
    for (int i = 0; i < n; ++i) w[static_cast<size_t>(i)].id = i, w[static_cast<size_t>(i)].granted = &order;
  }
};

}  // namespace

TEST_CASE("limiter: N slots, then a FIFO queue, released in order", "[limiter]") {
  Line line(2, 10, 6);
  auto& [m, lim, order, w] = line;
  CHECK(lim.acquire(w[0], 0) == Admit::kGranted);
  CHECK(lim.acquire(w[1], 0) == Admit::kGranted);
  for (int i = 2; i < 6; ++i) CHECK(lim.acquire(w[i], i * kMs) == Admit::kQueued);
  CHECK(lim.in_use() == 2);
  CHECK(lim.queued() == 4);
  CHECK(m.upstream_active == 2);
  CHECK(m.upstream_queue_depth == 4);
  CHECK(m.upstream_concurrency_limit == 2);
  CHECK(order.empty());

  lim.release(w[1], 10 * kMs, true);
  CHECK(order == std::vector<int>{2});
  lim.release(w[0], 11 * kMs, true);
  CHECK(order == std::vector<int>{2, 3});
  lim.release(w[3], 12 * kMs, true);
  lim.release(w[2], 13 * kMs, true);
  CHECK(order == std::vector<int>{2, 3, 4, 5});
  CHECK(lim.in_use() == 2);
  CHECK(lim.queued() == 0);
  CHECK(m.upstream_queue_wait.count == 4);  // only those that queued are observed
  CHECK(m.upstream_queue_wait.sum == Approx(4 * 8 / 1000.0));
  lim.release(w[4], 14 * kMs, true);
  lim.release(w[5], 14 * kMs, true);
  CHECK(lim.in_use() == 0);
  CHECK(m.upstream_active == 0);
}

TEST_CASE("limiter: a request never jumps the queue, even when a slot is free for a moment", "[limiter]") {
  Metrics m;
  ConcurrencyLimiter lim(m);
  lim.configure(fixed(1), 10);
  std::vector<int> order;
  Waiter a, b, c;
  a.id = 1, b.id = 2, c.id = 3;
  a.granted = b.granted = c.granted = &order;
  REQUIRE(lim.acquire(a, 0) == Admit::kGranted);
  REQUIRE(lim.acquire(b, 0) == Admit::kQueued);
  // b, granted, asks c's question from inside the grant: c must wait behind nobody but b.
  b.on_grant = [&] { CHECK(lim.acquire(c, 0) == Admit::kQueued); };
  lim.release(a, kMs, false);
  CHECK(order == std::vector<int>{2});
  lim.release(b, 2 * kMs, false);
  CHECK(order == std::vector<int>{2, 3});
}

TEST_CASE("limiter: a full queue refuses, counted as full", "[limiter]") {
  Metrics m;
  ConcurrencyLimiter lim(m);
  lim.configure(fixed(1), 2);
  Waiter w[5];
  CHECK(lim.acquire(w[0], 0) == Admit::kGranted);
  CHECK(lim.acquire(w[1], 0) == Admit::kQueued);
  CHECK(lim.acquire(w[2], 0) == Admit::kQueued);
  CHECK(lim.acquire(w[3], 0) == Admit::kQueueFull);
  CHECK(w[3].slot_state() == SlotWaiter::State::kNone);
  CHECK(m.upstream_queue_rejected[static_cast<size_t>(ebb::QueueRejection::kFull)] == 1);
  CHECK(m.upstream_queue_rejected[static_cast<size_t>(ebb::QueueRejection::kTimeout)] == 0);
  lim.release(w[3], 0, false);  // a refused request has nothing to give back
  CHECK(lim.in_use() == 1);
  CHECK(lim.queued() == 2);

  SECTION("queue_size 0: no queue at all") {
    lim.configure(fixed(1), 0);
    CHECK(lim.acquire(w[4], 0) == Admit::kQueueFull);
  }
  SECTION("unlimited never queues, and the next release lets in those still in line") {
    lim.configure(fixed(0), 0);
    CHECK(lim.acquire(w[4], 0) == Admit::kGranted);
    CHECK(m.upstream_concurrency_limit == 0);
    lim.release(w[0], 0, false);
    CHECK(lim.queued() == 0);
    CHECK(lim.in_use() == 3);
  }
}

TEST_CASE("limiter: leaving the queue (timeout, client gone) keeps the count and the order right", "[limiter]") {
  Line line(1, 10, 5);
  auto& [m, lim, order, w] = line;
  REQUIRE(lim.acquire(w[0], 0) == Admit::kGranted);
  for (int i = 1; i < 5; ++i) REQUIRE(lim.acquire(w[i], 0) == Admit::kQueued);
  lim.time_out(w[1], 5 * kMs);         // head of the queue
  lim.release(w[3], 6 * kMs, false);   // the middle: its client left
  lim.release(w[4], 7 * kMs, false);   // the tail
  CHECK(lim.queued() == 1);
  CHECK(m.upstream_queue_rejected[static_cast<size_t>(ebb::QueueRejection::kTimeout)] == 1);
  CHECK(m.upstream_queue_wait.count == 3);
  // Idempotent: a second release or timeout of the same waiter changes nothing.
  lim.release(w[3], 8 * kMs, false);
  lim.time_out(w[1], 8 * kMs);
  lim.time_out(w[0], 8 * kMs);  // holds a slot: not queued, nothing to time out
  CHECK(lim.in_use() == 1);
  CHECK(lim.queued() == 1);
  CHECK(m.upstream_queue_rejected[static_cast<size_t>(ebb::QueueRejection::kTimeout)] == 1);

  lim.release(w[0], 9 * kMs, false);
  CHECK(order == std::vector<int>{2});
  lim.release(w[0], 9 * kMs, false);  // twice: still one slot given back
  CHECK(lim.in_use() == 1);
  lim.release(w[2], 10 * kMs, false);
  CHECK(lim.in_use() == 0);
  CHECK(lim.queued() == 0);
  // The queue is empty and whole again: a new request is granted at once.
  Waiter late;
  CHECK(lim.acquire(late, 11 * kMs) == Admit::kGranted);
}

TEST_CASE("limiter: grants that end at once hand the slot on without recursing", "[limiter]") {
  // The app refuses every connection: each granted request fails inside its grant. With a
  // queue of 10000 a recursive hand-over would need 10000 nested frames.
  Metrics m;
  ConcurrencyLimiter lim(m);
  lim.configure(fixed(1), 20000);
  constexpr int kN = 10000;
  std::vector<Waiter> w(kN + 1);
  std::vector<int> order;
  int depth = 0, max_depth = 0;
  for (int i = 0; i <= kN; ++i) {
    w[i].id = i;
    w[i].granted = &order;
    w[i].on_grant = [&, i] {
      max_depth = std::max(max_depth, ++depth);
      lim.release(w[i], 0, false);
      --depth;
    };
  }
  REQUIRE(lim.acquire(w[0], 0) == Admit::kGranted);
  for (int i = 1; i <= kN; ++i) REQUIRE(lim.acquire(w[i], 0) == Admit::kQueued);
  lim.release(w[0], 0, false);
  CHECK(order.size() == static_cast<size_t>(kN));
  CHECK(order.front() == 1);
  CHECK(order.back() == kN);
  CHECK(max_depth == 1);
  CHECK(lim.in_use() == 0);
  CHECK(lim.queued() == 0);
}

TEST_CASE("limiter: a reload applies to requests that ask from then on", "[limiter]") {
  Line line(1, 10, 5);
  auto& [m, lim, order, w] = line;
  REQUIRE(lim.acquire(w[0], 0) == Admit::kGranted);
  REQUIRE(lim.acquire(w[1], 0) == Admit::kQueued);
  REQUIRE(lim.acquire(w[2], 0) == Admit::kQueued);
  lim.configure(fixed(3), 10);
  CHECK(m.upstream_concurrency_limit == 3);
  CHECK(order.empty());  // nothing runs from inside a reload
  // The next release lets in as many as the new limit allows.
  lim.release(w[0], kMs, false);
  CHECK(order == std::vector<int>{1, 2});
  CHECK(lim.acquire(w[3], kMs) == Admit::kGranted);
  CHECK(lim.acquire(w[4], kMs) == Admit::kQueued);
  lim.configure(fixed(1), 10);  // lowered: those holding slots keep them
  CHECK(lim.in_use() == 3);
  lim.release(w[1], 2 * kMs, false);
  CHECK(order == std::vector<int>{1, 2});  // 2 still at the app: over the new limit
  lim.release(w[2], 2 * kMs, false);
  lim.release(w[3], 2 * kMs, false);
  CHECK(order == std::vector<int>{1, 2, 4});
}

TEST_CASE("auto limit: steady latency grows the limit, latency rising with load shrinks it", "[limiter]") {
  using ebb::AdaptiveLimit;
  AdaptiveLimit a;
  CHECK(a.limit() == 20);
  // The app answers in 10 ms whatever the load, and the limit is in use: it grows.
  for (int i = 0; i < 200; ++i) a.on_sample(10, a.limit());
  CHECK(a.limit() > 40);
  CHECK(a.long_rtt_ms() == Approx(10));

  // Nobody uses the limit (2 in flight): latency says nothing about more, so it stays.
  std::uint32_t before = a.limit();
  for (int i = 0; i < 200; ++i) a.on_sample(10, 2);
  CHECK(a.limit() == before);

  // An app whose latency is 10 ms + 10 ms per request at it: the limit comes down to where
  // latency is within the tolerance of its long-term value, far below what it was.
  REQUIRE(a.limit() > 40);
  auto overload = [&](int n) {
    for (int i = 0; i < n; ++i) a.on_sample(10 + 10.0 * a.limit(), a.limit());
  };
  overload(300);
  CHECK(a.limit() <= 8);
  CHECK(a.short_rtt_ms() < 100);
  // A sustained overload: the long RTT rises slowly, so the limit stays down.
  overload(2700);
  CHECK(a.limit() <= 12);
  CHECK(a.short_rtt_ms() < 150);
  // The app recovers (5 ms whatever the load): the limit grows again.
  std::uint32_t low = a.limit();
  for (int i = 0; i < 300; ++i) a.on_sample(5, a.limit());
  CHECK(a.limit() > low + 20);
}

TEST_CASE("auto limit: bounded by its minimum and maximum", "[limiter]") {
  using ebb::AdaptiveLimit;
  AdaptiveLimit fast;
  for (int i = 0; i < 100000; ++i) fast.on_sample(1, fast.limit());
  CHECK(fast.limit() == static_cast<std::uint32_t>(AdaptiveLimit::kMaxLimit));
  AdaptiveLimit slow;
  for (int i = 0; i < 10; ++i) slow.on_sample(1, slow.limit());  // the long-term RTT: 1 ms
  for (int i = 0; i < 1000; ++i) slow.on_sample(1000, slow.limit());
  CHECK(slow.long_rtt_ms() < 200);
  CHECK(slow.limit() == static_cast<std::uint32_t>(AdaptiveLimit::kMinLimit));
}

TEST_CASE("limiter: auto mode takes latency samples and exports its limit", "[limiter]") {
  Metrics m;
  ConcurrencyLimiter lim(m);
  lim.configure(ConcurrencyLimit{true, 0}, 100);
  CHECK(lim.adaptive());
  CHECK(m.upstream_concurrency_limit == 20);
  // Warm: 10 ms at the app, at full use.
  std::uint64_t now = 0;
  std::vector<Waiter> w(20);
  auto round = [&](std::uint64_t rtt_ms, bool sample) {
    size_t n = lim.limit();
    for (size_t i = 0; i < n && i < w.size(); ++i) REQUIRE(lim.acquire(w[i], now) == Admit::kGranted);
    now += rtt_ms * kMs;
    for (size_t i = 0; i < n && i < w.size(); ++i) lim.release(w[i], now, sample);
  };
  round(10, true);
  // Then the app slows down tenfold: the limit comes down and the gauge follows.
  for (int i = 0; i < 30; ++i) round(100, true);
  CHECK(lim.limit() < 20);
  CHECK(m.upstream_concurrency_limit == lim.limit());
  // Failures and tunnels are no samples: the limit does not move on them.
  std::uint32_t before = lim.limit();
  for (int i = 0; i < 30; ++i) round(1000, false);
  CHECK(lim.limit() == before);
  // Back to a fixed limit and to auto again: auto starts afresh.
  lim.configure(fixed(5), 100);
  CHECK(m.upstream_concurrency_limit == 5);
  lim.configure(ConcurrencyLimit{true, 0}, 100);
  CHECK(lim.limit() == 20);
}
