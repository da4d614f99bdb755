// Unit tests for src/lifecycle.*: every transition of SPEC §2, driven through the real machine
// with explicit times (ms), no loop and no sockets.
#include <catch2/catch.hpp>

#include <string>

#include "lifecycle.hpp"

using ebb::Lifecycle;
using ebb::LifecycleSettings;
using ebb::Phase;
using ebb::State;
using ebb::Step;
using ebb::Trigger;

namespace {

LifecycleSettings settings() {
  LifecycleSettings s;
  s.propagation_delay = 5000;
  s.quiet_period = 1000;
  s.propagation_max = 15000;
  s.drain_timeout = 25000;
  s.failure_threshold = 3;
  return s;
}

std::string ready_reason(const Lifecycle& lc, int expect_status) {
  const char* why = "";
  CHECK(lc.readiness(why) == expect_status);
  return why;
}

// A machine that is ready, then drained by a signal at t=1000 and past propagation at t=6000.
Lifecycle in_drain_phase(Trigger t = Trigger::kSigterm) {
  Lifecycle lc(settings());
  lc.on_check(true);
  REQUIRE(lc.on_signal(t, 1000).kind == Step::kDrainStarted);
  REQUIRE(lc.on_timer(6000).kind == Step::kPropagationEnd);
  return lc;
}

}  // namespace

TEST_CASE("starting: not ready until the upstream check passes", "[lifecycle]") {
  Lifecycle lc(settings());
  CHECK(lc.state() == State::kStarting);
  CHECK(lc.phase() == Phase::kServing);
  CHECK(ready_reason(lc, 503) == "starting");
  CHECK(lc.on_check(false).kind == Step::kNothing);
  CHECK(lc.state() == State::kStarting);
  CHECK(lc.on_check(true).kind == Step::kReady);
  CHECK(lc.state() == State::kReady);
  CHECK(ready_reason(lc, 200) == "ready");
  CHECK(lc.listener_open());
}

TEST_CASE("ready: failure_threshold failed checks in a row make /readyz 503, one success restores it", "[lifecycle]") {
  Lifecycle lc(settings());
  lc.on_check(true);
  CHECK(lc.on_check(false).kind == Step::kNothing);
  CHECK(lc.on_check(false).kind == Step::kNothing);
  CHECK(lc.on_check(true).kind == Step::kNothing);  // not in a row: the count starts again
  CHECK(lc.on_check(false).kind == Step::kNothing);
  CHECK(lc.on_check(false).kind == Step::kNothing);
  CHECK(ready_reason(lc, 200) == "ready");
  CHECK(lc.on_check(false).kind == Step::kUpstreamDown);
  CHECK(lc.failures() == 3);
  CHECK(ready_reason(lc, 503) == "upstream unavailable");
  CHECK(lc.state() == State::kReady);  // healthz stays 200: still the ready state
  CHECK(lc.on_check(false).kind == Step::kNothing);  // said once
  CHECK(lc.on_check(true).kind == Step::kUpstreamUp);
  CHECK(ready_reason(lc, 200) == "ready");
}

TEST_CASE("SIGTERM starts the drain: readyz 503 at once, listener open for the propagation delay", "[lifecycle]") {
  for (Trigger t : {Trigger::kSigterm, Trigger::kSigint}) {
    Lifecycle lc(settings());
    lc.on_check(true);
    Step s = lc.on_signal(t, 1000);
    CHECK(s.kind == Step::kDrainStarted);
    CHECK(s.timer_ms == 5000);
    CHECK(lc.state() == State::kDraining);
    CHECK(lc.phase() == Phase::kPropagation);
    CHECK(lc.listener_open());
    CHECK(ready_reason(lc, 503) == "draining");
    CHECK(lc.drain_started_ms() == 1000);
    CHECK(lc.on_check(true).kind == Step::kNothing);  // checks no longer matter
    CHECK(ready_reason(lc, 503) == "draining");
  }
}

TEST_CASE("a SIGTERM while starting drains too", "[lifecycle]") {
  Lifecycle lc(settings());
  CHECK(lc.on_signal(Trigger::kSigterm, 10).kind == Step::kDrainStarted);
  CHECK(lc.on_check(true).kind == Step::kNothing);
  CHECK(lc.state() == State::kDraining);
}

TEST_CASE("propagation ends at the delay when no connection came for quiet_period", "[lifecycle]") {
  Lifecycle lc(settings());
  lc.on_check(true);
  lc.on_signal(Trigger::kSigterm, 1000);
  CHECK(lc.on_idle(1500).kind == Step::kNothing);  // no connection, but propagation holds the listener
  Step s = lc.on_timer(6000);
  CHECK(s.kind == Step::kPropagationEnd);
  CHECK(s.timer_ms == 25000);  // the drain deadline
  CHECK(lc.phase() == Phase::kDrain);
  CHECK(!lc.listener_open());
  CHECK(lc.listener_closed_ms() == 6000);
  CHECK(lc.state() == State::kDraining);
}

TEST_CASE("propagation waits until quiet_period without a new connection", "[lifecycle]") {
  Lifecycle lc(settings());
  lc.on_check(true);
  lc.on_accept(500);  // before the drain: not counted
  lc.on_signal(Trigger::kSigterm, 1000);
  lc.on_accept(5500);
  Step s = lc.on_timer(6000);
  CHECK(s.kind == Step::kPropagationWait);
  CHECK(s.timer_ms == 500);
  lc.on_accept(6200);
  s = lc.on_timer(6500);
  CHECK(s.kind == Step::kPropagationWait);
  CHECK(s.timer_ms == 700);
  CHECK(lc.on_timer(7200).kind == Step::kPropagationEnd);
  CHECK(lc.accepted_in_propagation() == 2);
}

TEST_CASE("propagation ends at propagation_max however busy the listener stays", "[lifecycle]") {
  Lifecycle lc(settings());
  lc.on_check(true);
  lc.on_signal(Trigger::kSigterm, 0);
  lc.on_accept(4999);
  std::uint64_t now = 5000;
  Step s = lc.on_timer(now);
  int rounds = 0;
  while (s.kind == Step::kPropagationWait && rounds++ < 100) {
    lc.on_accept(now + s.timer_ms - 1);  // a new connection always just before the quiet end
    now += s.timer_ms;
    s = lc.on_timer(now);
  }
  CHECK(s.kind == Step::kPropagationEnd);
  CHECK(now == 15000);
}

TEST_CASE("drain phase: drained when no connection is left; a signal's drain then exits 0", "[lifecycle]") {
  Lifecycle lc = in_drain_phase();
  Step s = lc.on_idle(7000);
  CHECK(s.kind == Step::kDrained);
  CHECK(s.then_exit);
  CHECK(lc.state() == State::kDrained);
  CHECK(lc.exited());
  CHECK(lc.exit_code() == 0);
  CHECK(lc.drained_ms() == 7000);
  CHECK(ready_reason(lc, 503) == "drained");
  CHECK(lc.on_idle(8000).kind == Step::kNothing);
}

TEST_CASE("drain timeout: what remains is cut, counted, and the exit code is 1", "[lifecycle]") {
  Lifecycle lc = in_drain_phase();
  CHECK(lc.on_timer(31000).kind == Step::kDrainDeadline);
  lc.on_cut(2);
  CHECK(lc.cut() == 2);
  Step s = lc.on_idle(31000);
  CHECK(s.kind == Step::kDrained);
  CHECK(s.then_exit);
  CHECK(lc.exit_code() == 1);
}

TEST_CASE("/drain: drained, stays up, and the following SIGTERM exits at once", "[lifecycle]") {
  Lifecycle lc(settings());
  lc.on_check(true);
  CHECK(lc.on_drain_request(1000).kind == Step::kDrainStarted);
  CHECK(lc.on_drain_request(1100).kind == Step::kNothing);  // once
  CHECK(lc.on_timer(6000).kind == Step::kPropagationEnd);
  Step s = lc.on_idle(6000);
  CHECK(s.kind == Step::kDrained);
  CHECK(!s.then_exit);
  CHECK(!lc.exited());
  CHECK(lc.on_drain_request(7000).kind == Step::kNothing);
  CHECK(lc.on_signal(Trigger::kSigterm, 9000).kind == Step::kExit);
  CHECK(lc.exited());
  CHECK(lc.exit_code() == 0);
}

TEST_CASE("/drain that cut something: the following SIGTERM exits 1", "[lifecycle]") {
  Lifecycle lc(settings());
  lc.on_drain_request(0);
  lc.on_timer(5000);
  CHECK(lc.on_timer(30000).kind == Step::kDrainDeadline);
  lc.on_cut(1);
  CHECK(!lc.on_idle(30000).then_exit);
  CHECK(lc.on_signal(Trigger::kSigint, 31000).kind == Step::kExit);
  CHECK(lc.exit_code() == 1);
}

TEST_CASE("a second SIGTERM during the drain is ignored, and makes a /drain exit when drained", "[lifecycle]") {
  Lifecycle lc(settings());
  lc.on_drain_request(0);
  CHECK(lc.on_signal(Trigger::kSigterm, 100).kind == Step::kSignalIgnored);
  CHECK(lc.state() == State::kDraining);
  lc.on_timer(5000);
  CHECK(lc.on_signal(Trigger::kSigterm, 5100).kind == Step::kSignalIgnored);
  CHECK(lc.on_idle(5200).then_exit);
}

TEST_CASE("a second SIGINT during the drain exits now, cutting what remains", "[lifecycle]") {
  Lifecycle lc(settings());
  lc.on_signal(Trigger::kSigint, 0);
  CHECK(lc.on_signal(Trigger::kSigint, 100).kind == Step::kCutAndExit);
  CHECK(lc.exited());
  lc.on_cut(1);
  CHECK(lc.exit_code() == 1);
  CHECK(lc.on_idle(200).kind == Step::kNothing);
  CHECK(lc.on_timer(5000).kind == Step::kNothing);
  CHECK(lc.on_signal(Trigger::kSigterm, 300).kind == Step::kNothing);
}

TEST_CASE("a second SIGINT with nothing in flight exits 0", "[lifecycle]") {
  Lifecycle lc = in_drain_phase(Trigger::kSigint);
  CHECK(lc.on_signal(Trigger::kSigint, 6500).kind == Step::kCutAndExit);
  lc.on_cut(0);
  CHECK(lc.exit_code() == 0);
}

TEST_CASE("could not start: exit 1 and nothing after", "[lifecycle]") {
  Lifecycle lc(settings());
  CHECK(lc.fail().kind == Step::kExit);
  CHECK(lc.exit_code() == 1);
  CHECK(!lc.listener_open());
  CHECK(lc.on_signal(Trigger::kSigterm, 1).kind == Step::kNothing);
  CHECK(lc.on_drain_request(1).kind == Step::kNothing);
  CHECK(lc.on_check(true).kind == Step::kNothing);
  CHECK(lc.fail().kind == Step::kNothing);
}

TEST_CASE("timers and idle reports outside the drain change nothing", "[lifecycle]") {
  Lifecycle lc(settings());
  CHECK(lc.on_timer(1).kind == Step::kNothing);
  CHECK(lc.on_idle(1).kind == Step::kNothing);
  lc.on_check(true);
  CHECK(lc.on_timer(2).kind == Step::kNothing);
  CHECK(lc.on_idle(2).kind == Step::kNothing);
  CHECK(lc.state() == State::kReady);
}

TEST_CASE("a reload's settings apply to the decisions that follow", "[lifecycle]") {
  Lifecycle lc(settings());
  lc.on_check(true);
  LifecycleSettings s = settings();
  s.failure_threshold = 1;
  s.propagation_delay = 200;
  s.quiet_period = 100;
  s.drain_timeout = 700;
  lc.configure(s);
  CHECK(lc.on_check(false).kind == Step::kUpstreamDown);
  lc.on_check(true);
  CHECK(lc.on_signal(Trigger::kSigterm, 0).timer_ms == 200);
  Step end = lc.on_timer(200);
  CHECK(end.kind == Step::kPropagationEnd);
  CHECK(end.timer_ms == 700);
}

TEST_CASE("settings come from the config's shutdown and readiness keys", "[lifecycle]") {
  ebb::Config c;
  c.shutdown.propagation_delay = 1;
  c.shutdown.quiet_period = 2;
  c.shutdown.propagation_max = 3;
  c.shutdown.drain_timeout = 4;
  c.readiness.failure_threshold = 5;
  LifecycleSettings s = LifecycleSettings::from(c);
  CHECK(s.propagation_delay == 1);
  CHECK(s.quiet_period == 2);
  CHECK(s.propagation_max == 3);
  CHECK(s.drain_timeout == 4);
  CHECK(s.failure_threshold == 5);
}
