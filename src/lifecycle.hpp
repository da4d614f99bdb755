// The lifecycle of SPEC §2 as a pure state machine: starting -> ready -> draining (propagation,
// then drain) -> drained -> exit. The Server feeds it events stamped with the loop's time and
// carries out the step each one returns; every lifecycle decision is made here, and nothing
// here touches a handle, a socket or a clock, so each transition is unit-tested alone.
#pragma once

#include <cstdint>

#include "config.hpp"

namespace ebb {

enum class State { kStarting, kReady, kDraining, kDrained };
const char* state_name(State s);

// How the data path behaves at this point of the lifecycle.
enum class Phase {
  kServing,      // keep-alive as usual
  kPropagation,  // answers announce Connection: close; the listener keeps accepting
  kDrain,        // the listener is closed; idle connections go
};

struct LifecycleSettings {
  std::uint64_t propagation_delay = 5000;  // ms
  std::uint64_t quiet_period = 1000;
  std::uint64_t propagation_max = 15000;
  std::uint64_t drain_timeout = 25000;
  std::uint32_t failure_threshold = 3;
  static LifecycleSettings from(const Config& c);
};

// What the owner of the handles does after an event.
struct Step {
  enum Kind : std::uint8_t {
    kNothing,
    kReady,            // log `ready`
    kUpstreamDown,     // log: failure_threshold checks failed in a row
    kUpstreamUp,       // log: the upstream is back
    kDrainStarted,     // stop readiness checks, phase = propagation, log, arm the timer
    kSignalIgnored,    // a signal during the drain: logged and ignored
    kPropagationWait,  // still receiving connections: arm the timer again
    kPropagationEnd,   // accept the backlog, close the listener, phase = drain, arm the deadline
    kDrainDeadline,    // cut what remains (then report the cut and check for drained)
    kDrained,          // log `drained`, answer /drain?wait=true callers
    kExit,             // exit now with exit_code(); the step before it, if any, is done first
    kCutAndExit,       // a second SIGINT: cut what remains, then exit with exit_code()
  };
  Kind kind = kNothing;
  std::uint64_t timer_ms = 0;  // for kDrainStarted, kPropagationWait, kPropagationEnd: arm in this many ms
  bool then_exit = false;      // for kDrained: the drain came from a signal, so exit after it
};

enum class Trigger : std::uint8_t { kSigterm, kSigint, kAdmin };

class Lifecycle {
 public:
  explicit Lifecycle(const LifecycleSettings& s) : s_(s) {}
  void configure(const LifecycleSettings& s) { s_ = s; }  // a reload: applies to decisions from now on

  // Events. `now` is the loop's time in ms.
  Step on_check(bool ok);                          // a readiness check's result
  Step on_signal(Trigger t, std::uint64_t now);    // SIGTERM or SIGINT
  Step on_drain_request(std::uint64_t now);        // POST/GET /drain
  void on_accept(std::uint64_t now);               // a connection on the proxy listener
  Step on_timer(std::uint64_t now);                // the phase timer fired
  Step on_idle(std::uint64_t now);                 // the data path holds no connection
  void on_cut(std::uint64_t n) { cut_ += n; }      // requests cut at the deadline or by a second SIGINT
  Step fail();                                     // could not start (bind, resolve): exit 1

  State state() const { return state_; }
  Phase phase() const { return phase_; }
  bool listener_open() const { return phase_ != Phase::kDrain && !exited_; }
  bool exited() const { return exited_; }
  int exit_code() const { return failed_ || cut_ > 0 ? 1 : 0; }  // 1 if it could not start or cut anything
  // /readyz: 200 or 503, with the reason.
  int readiness(const char*& reason) const;
  std::uint32_t failures() const { return failures_; }
  std::uint64_t accepted_in_propagation() const { return accepted_in_propagation_; }
  std::uint64_t cut() const { return cut_; }
  std::uint64_t drain_started_ms() const { return drain_started_ms_; }
  std::uint64_t listener_closed_ms() const { return listener_closed_ms_; }
  std::uint64_t drained_ms() const { return drained_ms_; }

 private:
  Step begin_drain(std::uint64_t now);
  Step exit_step() {
    exited_ = true;
    return {Step::kExit};
  }

  LifecycleSettings s_;
  State state_ = State::kStarting;
  Phase phase_ = Phase::kServing;
  bool upstream_ok_ = true;  // in ready: false after failure_threshold failed checks in a row
  std::uint32_t failures_ = 0;
  bool exit_when_drained_ = false;  // a signal asked for the drain (or came during it)
  bool exited_ = false;
  bool failed_ = false;
  std::uint64_t cut_ = 0;
  std::uint64_t drain_started_ms_ = 0;
  std::uint64_t last_accept_ms_ = 0;
  std::uint64_t accepted_in_propagation_ = 0;
  std::uint64_t listener_closed_ms_ = 0;
  std::uint64_t drained_ms_ = 0;
};

}  // namespace ebb
