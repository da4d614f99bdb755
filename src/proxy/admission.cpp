// The exchange's side of upstream_limits: a request with its head read asks the Worker's
// limiter for a slot at the app; it is forwarded at once, waits in the FIFO queue (bounded by
// queue_size and, through the downstream's timer, queue_timeout), or is answered 503.
#include "log.hpp"
#include "proxy/exchange.hpp"
#include "proxy/worker.hpp"

namespace ebb {

namespace {
constexpr const char* kQueueFull = "app at its concurrency limit and the queue is full";
constexpr const char* kQueueTimeout = "app at its concurrency limit; queued too long";
}  // namespace

Exchange::Refusal Exchange::ask_for_slot() {
  switch (w_.limiter().acquire(*this, uv_hrtime())) {
    case ConcurrencyLimiter::Admit::kGranted:
      begin_forward();
      return {};
    case ConcurrencyLimiter::Admit::kQueued:
      // The downstream's timer is the exchange's while the request waits: no header or body
      // deadline applies to a request ebb itself holds back.
      waiting_ = Waiting::kQueue;
      down_.exchange_timer(w_.cfg().upstream_limits.queue_timeout);
      LOG_DEBUG("request queued for a slot at the app", {"conn", down_.conn_id()}, {"queued", w_.limiter().queued()});
      return {};
    case ConcurrencyLimiter::Admit::kQueueFull:
      break;
  }
  shed_ = true;
  LOG_WARN("request turned away: queue full", {"conn", down_.conn_id()}, {"limit", w_.limiter().limit()},
           {"queued", w_.limiter().queued()});
  return {503, kQueueFull};  // the reader stops here and the downstream answers
}

void Exchange::slot_granted() {
  if (waiting_ == Waiting::kQueue) {
    waiting_ = Waiting::kNone;
    down_.exchange_timer(0);
  }
  begin_forward();
  if (active_) down_.request_flow();  // a body held back while queued may flow now
}

void Exchange::queue_timed_out() {
  w_.limiter().time_out(*this, uv_hrtime());
  shed_ = true;
  LOG_WARN("request turned away: queued too long", {"conn", down_.conn_id()},
           {"queue_timeout_ms", w_.cfg().upstream_limits.queue_timeout});
  down_.send_error(503, kQueueTimeout);
}

// The one release of the exchange's claim (idempotent): from finish and abandon.
void Exchange::release_slot(bool latency_sample) {
  if (slot_state() == SlotWaiter::State::kNone) return;
  w_.limiter().release(*this, uv_hrtime(), latency_sample);
}

}  // namespace ebb
