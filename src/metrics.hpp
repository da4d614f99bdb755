// Counters of one event loop, and their rendering as Prometheus text. Each loop owns a
// Metrics and touches it without locks; a scrape sums the loops' copies.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace ebb {

enum class UpstreamError : std::uint8_t {
  kConnectRefused,
  kConnectTimeout,
  kConnectOther,
  kResponseTimeout,
  kClosedEarly,   // closed or reset before a complete response
  kBadResponse,   // unparsable response
  kStaleRetried,  // pooled connection found closed, request replayed
  kCount
};
const char* upstream_error_name(UpstreamError e);

// Why a request that a client sent got no (complete) answer. SPEC §2: such a request is never
// silent; each one is logged and counted under its reason.
enum class Unanswered : std::uint8_t {
  kClientClosed,       // the client closed or reset its connection before the answer was complete
  kUpstreamBroken,     // the app failed after the response head went out: the answer is truncated
  kRequestError,       // the request failed (body too large, stalled) after the app's head went out
  kDrainTimeout,       // cut at shutdown.drain_timeout
  kClientSendTimeout,  // the client stopped reading the answer (timeouts.client_send)
  kAfterClose,         // request bytes that arrived after ebb closed the connection, dropped
  kExit,               // the process exited with the request in flight (a second SIGINT)
  kMemoryShed,         // shed: ebb's buffers reached limits.max_memory and it held the most
  kCount
};
const char* unanswered_name(Unanswered u);

// Why a request waiting for a slot at the app (upstream_limits) got ebb's 503 instead.
enum class QueueRejection : std::uint8_t {
  kFull,     // the queue held upstream_limits.queue_size requests already
  kTimeout,  // it waited upstream_limits.queue_timeout
  kCount
};
const char* queue_rejection_name(QueueRejection r);

inline constexpr std::array<double, 12> kDurationBuckets = {
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

// One latency histogram (non-cumulative buckets; rendered cumulative).
struct Histogram {
  std::array<std::uint64_t, kDurationBuckets.size()> buckets{};
  std::uint64_t count = 0;
  double sum = 0;
  void observe(double seconds);
  void add(const Histogram& o);
};

struct Metrics {
  std::array<std::uint64_t, 600> requests_by_code{};  // every answer, the app's and ebb's
  std::array<std::uint64_t, 600> local_by_code{};     // of which ebb made these itself
  std::uint64_t requests_in_flight = 0;
  std::uint64_t connections_active = 0;
  std::uint64_t connections_accepted = 0;
  std::uint64_t connections_rejected = 0;  // over limits.max_connections
  std::array<std::uint64_t, static_cast<size_t>(UpstreamError::kCount)> upstream_errors{};
  Histogram duration;           // a request's first byte -> the end of its answer
  Histogram upstream_response;  // request sent to the app -> first byte of its answer
  std::uint64_t request_bytes = 0;   // request heads and bodies read from clients
  std::uint64_t response_bytes = 0;  // answers written to clients, heads included
  std::uint64_t drain_cut_requests = 0;
  std::array<std::uint64_t, static_cast<size_t>(Unanswered::kCount)> requests_unanswered{};
  std::uint64_t client_send_timeouts = 0;
  std::uint64_t h2_connections = 0;      // client connections served as HTTP/2
  std::uint64_t h2_protocol_errors = 0;  // HTTP/2 connections ended by a protocol error or attack
  std::uint64_t h2_goaway_sent = 0;      // HTTP/2 connections told of the drain
  std::uint64_t backpressure_pauses_client = 0;    // stopped reading the client
  std::uint64_t backpressure_pauses_upstream = 0;  // stopped reading the app
  // limits.max_memory (proxy/budget.hpp): the gauge is the MemoryAccount's own count.
  std::uint64_t buffered_bytes = 0;    // bytes held in write queues and held input
  std::uint64_t memory_pauses = 0;     // reads refused because of the total
  std::uint64_t memory_shed = 0;       // connections closed to bring the total down
  std::uint64_t upstream_connections_opened = 0;
  std::uint64_t upstream_connections_reused = 0;
  // upstream_limits (proxy/limiter.hpp): gauges kept current by the limiter.
  std::uint64_t upstream_active = 0;              // requests holding a slot at the app
  std::uint64_t upstream_queue_depth = 0;         // requests waiting for one
  std::uint64_t upstream_concurrency_limit = 0;   // 0 = unlimited
  Histogram upstream_queue_wait;                  // time in the queue, of requests that queued
  std::array<std::uint64_t, static_cast<size_t>(QueueRejection::kCount)> upstream_queue_rejected{};

  // gRPC exchanges answered, by grpc-status (0..16; the last: none, or not a code).
  std::array<std::uint64_t, 18> grpc_requests{};

  // `local`: ebb answered itself (an error or a probe), not the app.
  void count_request(int code, double seconds, bool local = false);
  void count_upstream_error(UpstreamError e) { ++upstream_errors[static_cast<size_t>(e)]; }
  void count_unanswered(Unanswered u) { ++requests_unanswered[static_cast<size_t>(u)]; }
  void count_grpc(int status) { ++grpc_requests[status >= 0 && status < 17 ? status : 17]; }
  std::uint64_t unanswered_total() const;
  void add(const Metrics& other);
};

// Figures that belong to the process, not to a loop.
struct ProcessFigures {
  const char* state = "starting";
  std::uint64_t admin_refused = 0;
  std::string version;
  std::string commit = "unknown";
  // Admin requests for no endpoint, with a wrong method, or not parsable.
  std::uint64_t admin_not_found = 0;
  std::uint64_t admin_bad_method = 0;
  std::uint64_t admin_malformed = 0;
  // Config reloads (SIGHUP, POST /reload, the file watch); the start-up load sets the first.
  bool reload_success = true;
  double reload_timestamp = 0;  // seconds since the epoch
  std::uint64_t reloads_ok = 0;
  std::uint64_t reloads_failed = 0;
  // The last drain's phases, 0 until the phase ended.
  double last_propagation_seconds = 0;
  double last_drain_seconds = 0;
  // process_* from /proc/self, as the Prometheus client libraries export them.
  bool have_process = false;
  double cpu_seconds = 0;
  std::uint64_t resident_bytes = 0;
  std::uint64_t virtual_bytes = 0;
  std::uint64_t open_fds = 0;
  std::uint64_t max_fds = 0;
  double start_time_seconds = 0;
  // Client connections each worker took ([i] is worker i's), to show how they spread.
  std::vector<std::uint64_t> worker_connections;
};

std::string render_prometheus(const Metrics& m, const ProcessFigures& p);

// Fills the process_* figures of `p` from /proc/self; leaves have_process false where /proc
// cannot be read (then no process_* family is rendered).
void read_process_figures(ProcessFigures& p);

}  // namespace ebb
