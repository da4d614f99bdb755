// The concurrency limit at the app, its FIFO queue and the Gradient2-style auto limit.
#include "proxy/limiter.hpp"

#include <algorithm>
#include <cmath>

namespace ebb {

bool AdaptiveLimit::on_sample(double rtt_ms, std::size_t in_flight) {
  window_sum_ms_ += rtt_ms;
  window_max_in_flight_ = std::max(window_max_in_flight_, in_flight);
  if (++window_count_ < kWindowSamples) return false;
  short_rtt_ms_ = std::max(window_sum_ms_ / static_cast<double>(window_count_), 0.001);
  std::size_t max_in_flight = window_max_in_flight_;
  window_sum_ms_ = 0;
  window_count_ = 0;
  window_max_in_flight_ = 0;
  if (long_rtt_ms_ == 0) long_rtt_ms_ = short_rtt_ms_;
  else long_rtt_ms_ += (short_rtt_ms_ - long_rtt_ms_) / (short_rtt_ms_ < long_rtt_ms_ ? kLongWindows : kLongRiseWindows);
  // The app got much faster again after a long overload: let the long RTT catch up quickly
  // instead of holding the limit down for hundreds of requests.
  if (long_rtt_ms_ > 2 * short_rtt_ms_) long_rtt_ms_ *= 0.95;
  // Too few requests to use the limit: their latency says nothing about a higher one.
  if (static_cast<double>(max_in_flight) * 2 < limit_) return true;
  double gradient = std::clamp(kTolerance * long_rtt_ms_ / short_rtt_ms_, kMinGradient, 1.0);
  double next = limit_ * gradient + std::sqrt(limit_);
  limit_ = std::clamp(limit_ * (1 - kSmoothing) + next * kSmoothing, kMinLimit, kMaxLimit);
  return true;
}

std::uint32_t ConcurrencyLimiter::limit() const { return adaptive_ ? auto_.limit() : fixed_; }

bool ConcurrencyLimiter::has_room() const {
  std::uint32_t l = limit();
  return l == 0 || in_use_ < l;
}

void ConcurrencyLimiter::publish() {
  metrics_.upstream_active = in_use_;
  metrics_.upstream_queue_depth = queued_;
  metrics_.upstream_concurrency_limit = limit();
}

void ConcurrencyLimiter::configure(const ConcurrencyLimit& limit, std::uint32_t queue_size) {
  if (limit.adaptive && !adaptive_) auto_ = AdaptiveLimit{};  // a fresh start, not an old estimate
  adaptive_ = limit.adaptive;
  fixed_ = limit.fixed;
  queue_size_ = queue_size;
  publish();
}

void ConcurrencyLimiter::take_slot(SlotWaiter& w, std::uint64_t now_ns) {
  w.slot_state_ = SlotWaiter::State::kHeld;
  w.slot_since_ns_ = now_ns;
  ++in_use_;
}

ConcurrencyLimiter::Admit ConcurrencyLimiter::acquire(SlotWaiter& w, std::uint64_t now_ns) {
  if (w.slot_state_ == SlotWaiter::State::kHeld) return Admit::kGranted;
  if (w.slot_state_ == SlotWaiter::State::kQueued) return Admit::kQueued;
  // Unlimited (after a reload to 0 with requests still in line): no reason to wait behind them.
  if ((head_ == nullptr && has_room()) || limit() == 0) {
    take_slot(w, now_ns);
    publish();
    return Admit::kGranted;
  }
  if (queued_ >= queue_size_) {
    ++metrics_.upstream_queue_rejected[static_cast<std::size_t>(QueueRejection::kFull)];
    return Admit::kQueueFull;
  }
  w.slot_state_ = SlotWaiter::State::kQueued;
  w.slot_since_ns_ = now_ns;
  w.queue_prev_ = tail_;
  w.queue_next_ = nullptr;
  if (tail_ != nullptr) tail_->queue_next_ = &w;
  else head_ = &w;
  tail_ = &w;
  ++queued_;
  publish();
  return Admit::kQueued;
}

// Out of the queue, however it left (a slot, a timeout, its client gone): its wait is observed.
void ConcurrencyLimiter::unlink(SlotWaiter& w, std::uint64_t now_ns) {
  if (w.queue_prev_ != nullptr) w.queue_prev_->queue_next_ = w.queue_next_;
  else head_ = w.queue_next_;
  if (w.queue_next_ != nullptr) w.queue_next_->queue_prev_ = w.queue_prev_;
  else tail_ = w.queue_prev_;
  w.queue_prev_ = w.queue_next_ = nullptr;
  w.slot_state_ = SlotWaiter::State::kNone;
  --queued_;
  std::uint64_t waited = now_ns > w.slot_since_ns_ ? now_ns - w.slot_since_ns_ : 0;
  metrics_.upstream_queue_wait.observe(static_cast<double>(waited) / 1e9);
}

void ConcurrencyLimiter::release(SlotWaiter& w, std::uint64_t now_ns, bool latency_sample) {
  switch (w.slot_state_) {
    case SlotWaiter::State::kNone:
      return;
    case SlotWaiter::State::kQueued:
      unlink(w, now_ns);
      publish();
      return;
    case SlotWaiter::State::kHeld:
      break;
  }
  if (adaptive_ && latency_sample) {
    std::uint64_t held = now_ns > w.slot_since_ns_ ? now_ns - w.slot_since_ns_ : 0;
    auto_.on_sample(static_cast<double>(held) / 1e6, in_use_);
  }
  w.slot_state_ = SlotWaiter::State::kNone;
  --in_use_;
  publish();
  admit_waiting(now_ns);
}

void ConcurrencyLimiter::time_out(SlotWaiter& w, std::uint64_t now_ns) {
  if (w.slot_state_ != SlotWaiter::State::kQueued) return;
  unlink(w, now_ns);
  ++metrics_.upstream_queue_rejected[static_cast<std::size_t>(QueueRejection::kTimeout)];
  publish();
}

void ConcurrencyLimiter::admit_waiting(std::uint64_t now_ns) {
  // A grant may end at once (the app refused the connection) and release again: that nested
  // release only counts, and this loop hands the slot on, so the stack never grows with the queue.
  if (admitting_ || closed_) return;
  admitting_ = true;
  while (head_ != nullptr && has_room()) {
    SlotWaiter& w = *head_;
    unlink(w, now_ns);
    take_slot(w, now_ns);
    publish();
    w.slot_granted();
  }
  admitting_ = false;
}

}  // namespace ebb
