// The exchange's side of upstream_limits: a request with its head read asks the Worker's
// limiter for a slot at the app; it is forwarded at once, waits in the FIFO queue (bounded by
// queue_size and, through the connection's timer, queue_timeout), or is answered 503.
#include "log.hpp"
#include "proxy/client.hpp"
#include "proxy/worker.hpp"

namespace ebb {

namespace {
constexpr const char* kQueueFull = "app at its concurrency limit and the queue is full";
constexpr const char* kQueueTimeout = "app at its concurrency limit; queued too long";
}  // namespace

// From on_headers_complete: 0 to go on (forwarded or queued), or the parser error of the 503.
int ClientConn::ask_for_slot() {
  switch (w_.limiter().acquire(*this, uv_hrtime())) {
    case ConcurrencyLimiter::Admit::kGranted:
      begin_forward();
      return 0;
    case ConcurrencyLimiter::Admit::kQueued:
      // The connection's timer is free while the request waits: no header or body deadline
      // applies to a request ebb itself holds back.
      arm(TimerFor::kQueue, w_.cfg().upstream_limits.queue_timeout);
      LOG_DEBUG("request queued for a slot at the app", {"conn", id_}, {"queued", w_.limiter().queued()});
      return 0;
    case ConcurrencyLimiter::Admit::kQueueFull:
      break;
  }
  ex_.shed = true;
  LOG_WARN("request turned away: queue full", {"conn", id_}, {"limit", w_.limiter().limit()},
           {"queued", w_.limiter().queued()});
  return reject(503, kQueueFull);  // the parser stops here; parse() sends the answer
}

void ClientConn::slot_granted() {
  if (timer_for_ == TimerFor::kQueue) arm(TimerFor::kNone, 0);
  begin_forward();
  if (!closing_) update_read();  // a body held back while queued may flow now
}

void ClientConn::queue_timed_out() {
  w_.limiter().time_out(*this, uv_hrtime());
  ex_.shed = true;
  LOG_WARN("request turned away: queued too long", {"conn", id_},
           {"queue_timeout_ms", w_.cfg().upstream_limits.queue_timeout});
  send_error(503, kQueueTimeout);
}

// The one release of the exchange's claim (idempotent): from finish_exchange and close.
void ClientConn::release_slot(bool latency_sample) {
  if (slot_state() == SlotWaiter::State::kNone) return;
  w_.limiter().release(*this, uv_hrtime(), latency_sample);
}

}  // namespace ebb
