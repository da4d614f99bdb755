// The lifecycle's decisions (SPEC §2); the Server carries them out.
#include "lifecycle.hpp"

#include <algorithm>

namespace ebb {

const char* state_name(State s) {
  switch (s) {
    case State::kStarting: return "starting";
    case State::kReady: return "ready";
    case State::kDraining: return "draining";
    case State::kDrained: return "drained";
  }
  return "starting";
}

LifecycleSettings LifecycleSettings::from(const Config& c) {
  LifecycleSettings s;
  s.propagation_delay = c.shutdown.propagation_delay;
  s.quiet_period = c.shutdown.quiet_period;
  s.propagation_max = c.shutdown.propagation_max;
  s.drain_timeout = c.shutdown.drain_timeout;
  s.failure_threshold = c.readiness.failure_threshold;
  return s;
}

Step Lifecycle::on_check(bool ok) {
  if (exited_ || state_ == State::kDraining || state_ == State::kDrained) return {};
  if (state_ == State::kStarting) {
    if (!ok) return {};
    state_ = State::kReady;
    upstream_ok_ = true;
    failures_ = 0;
    return {Step::kReady};
  }
  if (ok) {
    failures_ = 0;
    if (upstream_ok_) return {};
    upstream_ok_ = true;
    return {Step::kUpstreamUp};
  }
  if (++failures_ >= s_.failure_threshold && upstream_ok_) {
    upstream_ok_ = false;
    return {Step::kUpstreamDown};
  }
  return {};
}

Step Lifecycle::on_signal(Trigger t, std::uint64_t now) {
  if (exited_) return {};
  if (state_ == State::kDrained) return exit_step();  // after /drain the kubelet's SIGTERM follows
  if (state_ == State::kDraining) {
    if (t == Trigger::kSigint) {  // interactive use: a second Ctrl-C means now
      exited_ = true;
      return {Step::kCutAndExit};
    }
    exit_when_drained_ = true;
    return {Step::kSignalIgnored};
  }
  exit_when_drained_ = true;
  return begin_drain(now);
}

Step Lifecycle::on_drain_request(std::uint64_t now) {
  if (exited_ || state_ == State::kDraining || state_ == State::kDrained) return {};
  return begin_drain(now);
}

Step Lifecycle::begin_drain(std::uint64_t now) {
  state_ = State::kDraining;
  phase_ = Phase::kPropagation;
  drain_started_ms_ = now;
  last_accept_ms_ = now;
  return {Step::kDrainStarted, s_.propagation_delay};
}

void Lifecycle::on_accept(std::uint64_t now) {
  last_accept_ms_ = now;
  if (state_ == State::kDraining) ++accepted_in_propagation_;
}

Step Lifecycle::on_timer(std::uint64_t now) {
  if (exited_ || state_ != State::kDraining) return {};
  if (phase_ == Phase::kDrain) return {Step::kDrainDeadline};
  // Past the delay, propagation lasts until no new connection came for quiet_period, and at
  // most propagation_max: a cluster still routing here keeps being served, not refused.
  std::uint64_t elapsed = now - drain_started_ms_;
  std::uint64_t quiet_end = last_accept_ms_ + s_.quiet_period;
  if (elapsed < s_.propagation_max && now < quiet_end) {
    return {Step::kPropagationWait, std::min(quiet_end - now, s_.propagation_max - elapsed)};
  }
  phase_ = Phase::kDrain;
  listener_closed_ms_ = now;
  return {Step::kPropagationEnd, s_.drain_timeout};
}

Step Lifecycle::on_idle(std::uint64_t now) {
  if (exited_ || state_ != State::kDraining || phase_ != Phase::kDrain) return {};
  state_ = State::kDrained;
  drained_ms_ = now;
  Step step{Step::kDrained};
  if (exit_when_drained_) {
    step.then_exit = true;
    exit_step();
  }
  return step;
}

Step Lifecycle::fail() {
  if (exited_) return {};
  failed_ = true;
  return exit_step();
}

int Lifecycle::readiness(const char*& reason) const {
  switch (state_) {
    case State::kStarting: reason = "starting"; return 503;
    case State::kDraining: reason = "draining"; return 503;
    case State::kDrained: reason = "drained"; return 503;
    case State::kReady:
      if (!upstream_ok_) {
        reason = "upstream unavailable";
        return 503;
      }
      reason = "ready";
      return 200;
  }
  return 503;
}

}  // namespace ebb
