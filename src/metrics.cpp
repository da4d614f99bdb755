// Prometheus text exposition (format 0.0.4) of ebb's counters, and the process_* figures read
// from /proc/self.
#include "metrics.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "config.hpp"  // read_whole_file

namespace ebb {

const char* upstream_error_name(UpstreamError e) {
  switch (e) {
    case UpstreamError::kConnectRefused: return "connect_refused";
    case UpstreamError::kConnectTimeout: return "connect_timeout";
    case UpstreamError::kConnectOther: return "connect_error";
    case UpstreamError::kResponseTimeout: return "response_timeout";
    case UpstreamError::kClosedEarly: return "closed_early";
    case UpstreamError::kBadResponse: return "bad_response";
    case UpstreamError::kStaleRetried: return "stale_retried";
    case UpstreamError::kCount: break;
  }
  return "unknown";
}

const char* unanswered_name(Unanswered u) {
  switch (u) {
    case Unanswered::kClientClosed: return "client_closed";
    case Unanswered::kUpstreamBroken: return "upstream_broken";
    case Unanswered::kRequestError: return "request_error";
    case Unanswered::kDrainTimeout: return "drain_timeout";
    case Unanswered::kClientSendTimeout: return "client_send_timeout";
    case Unanswered::kAfterClose: return "after_close";
    case Unanswered::kExit: return "exit";
    case Unanswered::kMemoryShed: return "memory_shed";
    case Unanswered::kCount: break;
  }
  return "unknown";
}

const char* queue_rejection_name(QueueRejection r) {
  switch (r) {
    case QueueRejection::kFull: return "full";
    case QueueRejection::kTimeout: return "timeout";
    case QueueRejection::kCount: break;
  }
  return "unknown";
}

std::uint64_t Metrics::unanswered_total() const {
  std::uint64_t n = 0;
  for (auto v : requests_unanswered) n += v;
  return n;
}

void Histogram::observe(double seconds) {
  ++count;
  sum += seconds;
  for (size_t i = 0; i < kDurationBuckets.size(); ++i) {
    if (seconds <= kDurationBuckets[i]) {
      ++buckets[i];
      break;
    }
  }
}

void Histogram::add(const Histogram& o) {
  for (size_t i = 0; i < buckets.size(); ++i) buckets[i] += o.buckets[i];
  count += o.count;
  sum += o.sum;
}

void Metrics::count_request(int code, double seconds, bool local) {
  if (code >= 100 && code < 600) {
    ++requests_by_code[static_cast<size_t>(code)];
    if (local) ++local_by_code[static_cast<size_t>(code)];
  }
  duration.observe(seconds);
}

void Metrics::add(const Metrics& o) {
  for (size_t i = 0; i < requests_by_code.size(); ++i) requests_by_code[i] += o.requests_by_code[i];
  for (size_t i = 0; i < local_by_code.size(); ++i) local_by_code[i] += o.local_by_code[i];
  upstream_response.add(o.upstream_response);
  request_bytes += o.request_bytes;
  response_bytes += o.response_bytes;
  requests_in_flight += o.requests_in_flight;
  connections_active += o.connections_active;
  connections_accepted += o.connections_accepted;
  connections_rejected += o.connections_rejected;
  for (size_t i = 0; i < upstream_errors.size(); ++i) upstream_errors[i] += o.upstream_errors[i];
  duration.add(o.duration);
  drain_cut_requests += o.drain_cut_requests;
  for (size_t i = 0; i < requests_unanswered.size(); ++i) requests_unanswered[i] += o.requests_unanswered[i];
  client_send_timeouts += o.client_send_timeouts;
  h2_connections += o.h2_connections;
  h2_protocol_errors += o.h2_protocol_errors;
  h2_goaway_sent += o.h2_goaway_sent;
  for (size_t i = 0; i < grpc_requests.size(); ++i) grpc_requests[i] += o.grpc_requests[i];
  backpressure_pauses_client += o.backpressure_pauses_client;
  backpressure_pauses_upstream += o.backpressure_pauses_upstream;
  buffered_bytes += o.buffered_bytes;
  memory_pauses += o.memory_pauses;
  memory_shed += o.memory_shed;
  upstream_connections_opened += o.upstream_connections_opened;
  upstream_connections_reused += o.upstream_connections_reused;
  upstream_active += o.upstream_active;
  upstream_queue_depth += o.upstream_queue_depth;
  upstream_concurrency_limit += o.upstream_concurrency_limit;
  upstream_queue_wait.add(o.upstream_queue_wait);
  for (size_t i = 0; i < upstream_queue_rejected.size(); ++i) upstream_queue_rejected[i] += o.upstream_queue_rejected[i];
}

namespace {

void line(std::string& out, const char* fmt, auto... args) {
  char buf[256];
  int n = std::snprintf(buf, sizeof buf, fmt, args...);
  if (n > 0) out.append(buf, static_cast<size_t>(n) < sizeof buf ? static_cast<size_t>(n) : sizeof buf - 1);
}

void header(std::string& out, const char* name, const char* type, const char* help) {
  line(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void counter(std::string& out, const char* name, const char* help, std::uint64_t v) {
  header(out, name, "counter", help);
  line(out, "%s %llu\n", name, static_cast<unsigned long long>(v));
}

void gauge(std::string& out, const char* name, const char* help, std::uint64_t v) {
  header(out, name, "gauge", help);
  line(out, "%s %llu\n", name, static_cast<unsigned long long>(v));
}

void histogram(std::string& out, const char* name, const char* help, const Histogram& h) {
  header(out, name, "histogram", help);
  std::uint64_t cumulative = 0;
  for (size_t i = 0; i < kDurationBuckets.size(); ++i) {
    cumulative += h.buckets[i];
    line(out, "%s_bucket{le=\"%g\"} %llu\n", name, kDurationBuckets[i], static_cast<unsigned long long>(cumulative));
  }
  line(out, "%s_bucket{le=\"+Inf\"} %llu\n", name, static_cast<unsigned long long>(h.count));
  line(out, "%s_sum %.6f\n", name, h.sum);
  line(out, "%s_count %llu\n", name, static_cast<unsigned long long>(h.count));
}

}  // namespace

std::string render_prometheus(const Metrics& m, const ProcessFigures& p) {
  std::string out;
  out.reserve(4096);
  header(out, "ebb_requests_total", "counter",
         "Requests answered, by status code and by who answered: the app, or ebb itself (its errors and probes).");
  bool any = false;
  for (size_t code = 100; code < m.requests_by_code.size(); ++code) {
    std::uint64_t local = m.local_by_code[code];
    std::uint64_t app = m.requests_by_code[code] - local;
    if (app > 0) line(out, "ebb_requests_total{code=\"%zu\",source=\"app\"} %llu\n", code, static_cast<unsigned long long>(app));
    if (local > 0) line(out, "ebb_requests_total{code=\"%zu\",source=\"ebb\"} %llu\n", code, static_cast<unsigned long long>(local));
    any = any || app > 0 || local > 0;
  }
  if (!any) out += "ebb_requests_total{code=\"200\",source=\"app\"} 0\n";
  gauge(out, "ebb_requests_in_flight", "Requests and tunnels in progress.", m.requests_in_flight);
  gauge(out, "ebb_connections_active", "Open client connections.", m.connections_active);
  counter(out, "ebb_connections_accepted_total", "Client connections accepted.", m.connections_accepted);
  counter(out, "ebb_connections_rejected_total",
          "Client connections closed at once because limits.max_connections was reached.",
          m.connections_rejected);
  if (!p.worker_connections.empty()) {
    header(out, "ebb_worker_connections_accepted_total", "counter",
           "Client connections accepted, by worker (event-loop thread): how they spread.");
    for (size_t i = 0; i < p.worker_connections.size(); ++i)
      line(out, "ebb_worker_connections_accepted_total{worker=\"%zu\"} %llu\n", i,
           static_cast<unsigned long long>(p.worker_connections[i]));
  }
  header(out, "ebb_upstream_errors_total", "counter", "Failures talking to the app, by kind.");
  for (size_t i = 0; i < m.upstream_errors.size(); ++i) {
    line(out, "ebb_upstream_errors_total{kind=\"%s\"} %llu\n",
         upstream_error_name(static_cast<UpstreamError>(i)),
         static_cast<unsigned long long>(m.upstream_errors[i]));
  }
  histogram(out, "ebb_request_duration_seconds", "Time from a request's first byte to the end of its response.",
            m.duration);
  histogram(out, "ebb_upstream_response_duration_seconds",
            "Time from sending a request to the app to the first byte of its answer.", m.upstream_response);
  counter(out, "ebb_request_bytes_total", "Request bytes read from clients (heads and bodies).", m.request_bytes);
  counter(out, "ebb_response_bytes_total", "Response bytes written to clients (heads and bodies).",
          m.response_bytes);
  header(out, "ebb_lifecycle_state", "gauge", "1 for the current lifecycle state.");
  for (const char* s : {"starting", "ready", "draining", "drained"}) {
    line(out, "ebb_lifecycle_state{state=\"%s\"} %d\n", s, std::string_view(s) == p.state ? 1 : 0);
  }
  counter(out, "ebb_drain_cut_requests_total", "Requests and tunnels cut at the drain timeout.",
          m.drain_cut_requests);
  header(out, "ebb_requests_unanswered_total", "counter",
         "Requests a client sent that got no complete answer, by reason.");
  for (size_t i = 0; i < m.requests_unanswered.size(); ++i) {
    line(out, "ebb_requests_unanswered_total{reason=\"%s\"} %llu\n", unanswered_name(static_cast<Unanswered>(i)),
         static_cast<unsigned long long>(m.requests_unanswered[i]));
  }
  counter(out, "ebb_client_send_timeouts_total",
          "Clients closed because they stopped reading a response.", m.client_send_timeouts);
  counter(out, "ebb_http2_connections_total", "Client connections served as HTTP/2 (h2c, prior knowledge).",
          m.h2_connections);
  counter(out, "ebb_http2_protocol_errors_total",
          "HTTP/2 connections ended for a protocol error or a flood (rapid reset, CONTINUATION, SETTINGS, PING).",
          m.h2_protocol_errors);
  counter(out, "ebb_http2_goaway_total", "HTTP/2 connections sent the drain's GOAWAY.", m.h2_goaway_sent);
  header(out, "ebb_grpc_requests_total", "counter",
         "gRPC requests answered, by grpc-status (the app's, or the one ebb gave its own answer).");
  bool any_grpc = false;
  for (size_t i = 0; i < m.grpc_requests.size(); ++i) {
    if (m.grpc_requests[i] == 0) continue;
    any_grpc = true;
    if (i < 17) line(out, "ebb_grpc_requests_total{grpc_status=\"%zu\"} %llu\n", i, static_cast<unsigned long long>(m.grpc_requests[i]));
    else line(out, "ebb_grpc_requests_total{grpc_status=\"unknown\"} %llu\n", static_cast<unsigned long long>(m.grpc_requests[i]));
  }
  if (!any_grpc) out += "ebb_grpc_requests_total{grpc_status=\"0\"} 0\n";
  header(out, "ebb_backpressure_pauses_total", "counter",
         "Times reading one side stopped because the other side could not take more.");
  line(out, "ebb_backpressure_pauses_total{side=\"client\"} %llu\n",
       static_cast<unsigned long long>(m.backpressure_pauses_client));
  line(out, "ebb_backpressure_pauses_total{side=\"upstream\"} %llu\n",
       static_cast<unsigned long long>(m.backpressure_pauses_upstream));
  gauge(out, "ebb_buffered_bytes",
        "Bytes ebb holds in buffers (write queues and held input of every connection), against limits.max_memory.",
        m.buffered_bytes);
  counter(out, "ebb_memory_pauses_total",
          "Reads held back because the buffered bytes were above 3/4 of limits.max_memory.", m.memory_pauses);
  counter(out, "ebb_memory_shed_connections_total",
          "Connections closed because the buffered bytes reached limits.max_memory (the largest holders first).",
          m.memory_shed);
  counter(out, "ebb_upstream_connections_opened_total", "Connections opened to the app.",
          m.upstream_connections_opened);
  counter(out, "ebb_upstream_connections_reused_total", "Requests sent on a pooled connection.",
          m.upstream_connections_reused);
  gauge(out, "ebb_upstream_concurrency_limit",
        "Requests allowed at the app at once (upstream_limits.max_concurrency, or the auto limit now); 0 = unlimited.",
        m.upstream_concurrency_limit);
  gauge(out, "ebb_upstream_active_requests", "Requests holding one of those slots (tunnels included).",
        m.upstream_active);
  gauge(out, "ebb_upstream_queue_depth", "Requests waiting for a slot at the app.", m.upstream_queue_depth);
  histogram(out, "ebb_upstream_queue_wait_seconds",
            "Time requests that had to queue waited for a slot at the app (served, timed out or gone).",
            m.upstream_queue_wait);
  header(out, "ebb_upstream_queue_rejected_total", "counter",
         "Requests answered 503 because the app was at its concurrency limit, by reason.");
  for (size_t i = 0; i < m.upstream_queue_rejected.size(); ++i) {
    line(out, "ebb_upstream_queue_rejected_total{reason=\"%s\"} %llu\n",
         queue_rejection_name(static_cast<QueueRejection>(i)),
         static_cast<unsigned long long>(m.upstream_queue_rejected[i]));
  }
  counter(out, "ebb_admin_refused_total",
          "Refused /drain and /reload calls (403: missing or wrong token, or not loopback).", p.admin_refused);
  header(out, "ebb_admin_unknown_total", "counter",
         "Admin requests turned away: no such endpoint (404), wrong method (405), not HTTP (400).");
  line(out, "ebb_admin_unknown_total{code=\"400\"} %llu\n", static_cast<unsigned long long>(p.admin_malformed));
  line(out, "ebb_admin_unknown_total{code=\"404\"} %llu\n", static_cast<unsigned long long>(p.admin_not_found));
  line(out, "ebb_admin_unknown_total{code=\"405\"} %llu\n", static_cast<unsigned long long>(p.admin_bad_method));
  gauge(out, "ebb_config_last_reload_success", "1 if the last config (re)load succeeded, else 0.",
        p.reload_success ? 1 : 0);
  header(out, "ebb_config_last_reload_timestamp_seconds", "gauge",
         "When the last config (re)load was attempted, in seconds since the epoch.");
  line(out, "ebb_config_last_reload_timestamp_seconds %.3f\n", p.reload_timestamp);
  header(out, "ebb_config_reloads_total", "counter", "Config reloads (SIGHUP, POST /reload, file watch), by result.");
  line(out, "ebb_config_reloads_total{result=\"success\"} %llu\n", static_cast<unsigned long long>(p.reloads_ok));
  line(out, "ebb_config_reloads_total{result=\"failure\"} %llu\n",
       static_cast<unsigned long long>(p.reloads_failed));
  header(out, "ebb_drain_propagation_seconds", "gauge",
         "Length of the last drain's propagation phase (0 until it ended).");
  line(out, "ebb_drain_propagation_seconds %.3f\n", p.last_propagation_seconds);
  header(out, "ebb_drain_phase_seconds", "gauge",
         "Length of the last drain's drain phase, listener closed to drained (0 until it ended).");
  line(out, "ebb_drain_phase_seconds %.3f\n", p.last_drain_seconds);
  header(out, "ebb_build_info", "gauge", "Build information.");
  line(out, "ebb_build_info{version=\"%s\",commit=\"%s\"} 1\n", p.version.c_str(), p.commit.c_str());
  if (p.have_process) {
    header(out, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
    line(out, "process_cpu_seconds_total %.2f\n", p.cpu_seconds);
    gauge(out, "process_resident_memory_bytes", "Resident memory size in bytes.", p.resident_bytes);
    gauge(out, "process_virtual_memory_bytes", "Virtual memory size in bytes.", p.virtual_bytes);
    gauge(out, "process_open_fds", "Number of open file descriptors.", p.open_fds);
    gauge(out, "process_max_fds", "Maximum number of open file descriptors.", p.max_fds);
    header(out, "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.");
    line(out, "process_start_time_seconds %.2f\n", p.start_time_seconds);
  }
  return out;
}

// The same sources and arithmetic as the Prometheus Go client's process collector
// (procfs: /proc/self/stat, /proc/stat btime, /proc/self/fd, RLIMIT_NOFILE).
void read_process_figures(ProcessFigures& p) {
  std::string stat, sys;
  if (read_whole_file("/proc/self/stat", stat) != 0 || read_whole_file("/proc/stat", sys) != 0) return;
  // Fields after the command name, which is in parentheses and may hold spaces.
  size_t close = stat.rfind(')');
  if (close == std::string::npos) return;
  std::vector<unsigned long long> f;  // f[0] is field 3 (state) as 0; f[k] is field k + 3
  const char* c = stat.c_str() + close + 2;
  while (*c) {
    char* end = nullptr;
    f.push_back(std::strtoull(c, &end, 10));
    if (end == c) {  // the state letter
      f.back() = 0;
      end = const_cast<char*>(c) + 1;
    }
    c = end;
    while (*c == ' ' || *c == '\n') ++c;
  }
  if (f.size() < 22) return;
  size_t btime_at = sys.find("\nbtime ");
  if (btime_at == std::string::npos) return;
  double btime = std::strtod(sys.c_str() + btime_at + 7, nullptr);
  double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  long page = ::sysconf(_SC_PAGESIZE);
  if (ticks <= 0 || page <= 0) return;
  p.cpu_seconds = static_cast<double>(f[11] + f[12]) / ticks;              // utime, stime
  p.start_time_seconds = btime + static_cast<double>(f[19]) / ticks;      // starttime
  p.virtual_bytes = f[20];                                                 // vsize
  p.resident_bytes = f[21] * static_cast<unsigned long long>(page);       // rss (pages)
  p.open_fds = 0;
  // open + fdopendir rather than opendir: ThreadSanitizer sees a descriptor made by open(2), and
  // so knows this number now belongs to this thread (the make tsan build; nothing else differs).
  int dir_fd = ::open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIR* d = dir_fd >= 0 ? ::fdopendir(dir_fd) : nullptr;
  if (d == nullptr && dir_fd >= 0) ::close(dir_fd);
  if (d != nullptr) {
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') ++p.open_fds;
    ::closedir(d);
    --p.open_fds;  // the directory stream's own descriptor
  }
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0) p.max_fds = rl.rlim_cur;
  p.have_process = true;
}

}  // namespace ebb
