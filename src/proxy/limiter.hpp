// upstream_limits: how many requests may be at the app at once, the FIFO queue of requests
// waiting for a slot, and the adaptive (`auto`) limit. Pure logic, no sockets or timers: an
// exchange asks for a slot and gives it back; the queue timeout is its connection's timer.
#pragma once

#include <cstddef>
#include <cstdint>

#include "config.hpp"
#include "metrics.hpp"

namespace ebb {

// One request's claim on the app: nothing, a place in the queue, or a slot. It lives inside its
// owner (a client connection), so queueing allocates nothing and leaving the queue is O(1); the
// state makes every release idempotent, so whatever ends an exchange gives the slot back once.
class SlotWaiter {
 public:
  enum class State : std::uint8_t { kNone, kQueued, kHeld };
  State slot_state() const { return slot_state_; }
  // A queued waiter got its slot. Called from inside ConcurrencyLimiter::release of another
  // waiter; it may release or acquire again, never destroy a waiter.
  virtual void slot_granted() = 0;

 protected:
  SlotWaiter() = default;
  ~SlotWaiter() = default;

 private:
  friend class ConcurrencyLimiter;
  State slot_state_ = State::kNone;
  SlotWaiter* queue_prev_ = nullptr;
  SlotWaiter* queue_next_ = nullptr;
  std::uint64_t slot_since_ns_ = 0;  // when it was queued, then when it got its slot
};

// `max_concurrency: auto`: a latency-gradient limit in the style of Netflix's Gradient2. Each
// window of kWindowSamples finished requests gives a short-term RTT (their mean); the long-term
// RTT is a slow average of those. While the short RTT stays within kTolerance of the long one
// the limit grows by about sqrt(limit) per window (room to find more capacity); when the app
// slows down under load the gradient long*kTolerance/short falls below 1 and the limit shrinks,
// by at most a quarter per window. It never falls below 4: at the gradient's floor the sqrt
// headroom holds it there, so a slow app still gets samples that show it recovering.
// Unlike Gradient2 the long RTT rises ten times slower than it falls: with one average both
// ways, a sustained overload teaches it within ~600 requests that congested latency is normal
// and the limit climbs back (measured: 15 -> 330 over 3000 requests on an app whose latency
// grows with concurrency; with the slow rise it stays under 9). An app that really became
// slower is relearned over ~6000 requests.
class AdaptiveLimit {
 public:
  static constexpr double kInitialLimit = 20;  // Gradient2's default
  static constexpr double kMinLimit = 4;
  static constexpr double kMaxLimit = 1000;
  static constexpr std::size_t kWindowSamples = 10;  // one noisy request moves nothing alone
  static constexpr double kLongWindows = 60;         // the long RTT falls with ~600 requests
  static constexpr double kLongRiseWindows = 600;    // and rises with ~6000
  static constexpr double kTolerance = 1.5;          // latency may grow 50% before the limit shrinks
  static constexpr double kSmoothing = 0.5;          // how far one window moves the limit
  static constexpr double kMinGradient = 0.5;        // one window at most halves the limit

  // One request's time at the app, with the requests at the app when it ended (itself included).
  // True when a window closed and the limit was recomputed.
  bool on_sample(double rtt_ms, std::size_t in_flight);
  std::uint32_t limit() const { return static_cast<std::uint32_t>(limit_); }
  double long_rtt_ms() const { return long_rtt_ms_; }
  double short_rtt_ms() const { return short_rtt_ms_; }

 private:
  double limit_ = kInitialLimit;
  double long_rtt_ms_ = 0;  // 0 until the first window
  double short_rtt_ms_ = 0;
  double window_sum_ms_ = 0;
  std::size_t window_count_ = 0;
  std::size_t window_max_in_flight_ = 0;
};

class ConcurrencyLimiter {
 public:
  enum class Admit { kGranted, kQueued, kQueueFull };

  explicit ConcurrencyLimiter(Metrics& metrics) : metrics_(metrics) {}
  ConcurrencyLimiter(const ConcurrencyLimiter&) = delete;
  ConcurrencyLimiter& operator=(const ConcurrencyLimiter&) = delete;

  // New limits apply to requests that ask from now on. Waiters stay in line: while anyone waits a
  // slot is held, and its release lets in as many as the new limit allows (a reload never runs
  // an exchange from inside the reload).
  void configure(const ConcurrencyLimit& limit, std::uint32_t queue_size);
  // A slot for `w` now, a place at the end of the queue, or neither. A request that finds others
  // waiting queues behind them even if a slot is free (FIFO).
  Admit acquire(SlotWaiter& w, std::uint64_t now_ns);
  // Ends `w`'s claim, whatever it is; idempotent. A freed slot goes to the first waiters in line
  // (their slot_granted runs before this returns). `latency_sample`: the time `w` held its slot
  // was a complete answer from the app, a sample for the auto limit.
  void release(SlotWaiter& w, std::uint64_t now_ns, bool latency_sample);
  // upstream_limits.queue_timeout: `w` leaves the queue, counted as a rejection.
  void time_out(SlotWaiter& w, std::uint64_t now_ns);
  // The drain's deadline: every request is being cut, so a slot freed now goes to no one (it
  // would send a request to the app only to cut it a moment later).
  void close() { closed_ = true; }

  std::size_t in_use() const { return in_use_; }
  std::size_t queued() const { return queued_; }
  std::uint32_t limit() const;  // 0 = unlimited
  bool adaptive() const { return adaptive_; }
  const AdaptiveLimit& adaptive_limit() const { return auto_; }

 private:
  bool has_room() const;
  void take_slot(SlotWaiter& w, std::uint64_t now_ns);
  void unlink(SlotWaiter& w, std::uint64_t now_ns);
  void admit_waiting(std::uint64_t now_ns);
  void publish();

  Metrics& metrics_;
  bool adaptive_ = false;
  std::uint32_t fixed_ = 0;
  std::uint32_t queue_size_ = 100;
  AdaptiveLimit auto_;
  std::size_t in_use_ = 0;
  std::size_t queued_ = 0;
  SlotWaiter* head_ = nullptr;
  SlotWaiter* tail_ = nullptr;
  bool admitting_ = false;
  bool closed_ = false;
};

}  // namespace ebb
