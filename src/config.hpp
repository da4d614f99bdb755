// The effective configuration: defaults, the YAML file, then EBB_* environment overrides.
// Parsing and validation live here and nowhere else; runtime code only reads a Config.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ebb {

using Millis = std::uint64_t;  // durations are kept in milliseconds

// "host:port"; host may be a name (resolved at start and on reload), an IPv4 address or
// a bracketed IPv6 address. Port 0 means "pick a free port" (tests use it).
struct HostPort {
  std::string host;
  std::uint16_t port = 0;
  std::string str() const;  // back to "host:port"
  bool operator==(const HostPort&) const = default;
};

enum class UpstreamCheck { kTcp, kHttp, kNone };
// How ebb talks to the app: HTTP/1.1, or HTTP/2 in cleartext with prior knowledge (gRPC apps).
enum class UpstreamProtocol { kHttp1, kH2c };
enum class LogFormat { kJson, kText };
enum class LogLevel { kDebug, kInfo, kWarn, kError };

// upstream_limits.max_concurrency: a fixed number of requests at the app (0 = unlimited), or
// `auto`, a limit that follows the app's latency (proxy/limiter.hpp).
struct ConcurrencyLimit {
  bool adaptive = false;
  std::uint32_t fixed = 0;
  bool operator==(const ConcurrencyLimit&) const = default;
};

// workers: a number of event-loop threads, or `auto` (one per CPU the container may use, see
// cpu_count.hpp), resolved once at start.
struct WorkerCount {
  bool automatic = false;
  std::uint32_t n = 1;
  bool operator==(const WorkerCount&) const = default;
};

struct Config {
  HostPort listen{"0.0.0.0", 8080};
  HostPort upstream{"127.0.0.1", 3000};
  UpstreamProtocol upstream_protocol = UpstreamProtocol::kHttp1;
  struct {
    HostPort listen{"0.0.0.0", 9901};
    std::string drain_token;
  } admin;
  struct {
    Millis propagation_delay = 5000;
    Millis quiet_period = 1000;
    Millis propagation_max = 15000;
    Millis drain_timeout = 25000;
  } shutdown;
  struct {
    UpstreamCheck upstream_check = UpstreamCheck::kTcp;
    std::string http_path = "/healthz";
    Millis interval = 1000;
    std::uint32_t failure_threshold = 3;
  } readiness;
  struct {
    Millis client_header = 15000;
    Millis client_idle = 60000;
    Millis client_send = 30000;
    Millis upstream_connect = 5000;
    Millis upstream_response = 60000;
    Millis upstream_idle = 4000;
  } timeouts;
  struct {
    std::uint64_t max_header_bytes = 65536;
    std::uint64_t max_uri_bytes = 8192;
    std::uint64_t max_body_bytes = 0;  // 0 = unlimited
    std::uint64_t max_connections = 10000;
    // Bytes one connection may hold in each buffer: its write queue to the client, its write
    // queue to the app, its held input (proxy/budget.hpp, ConnBudget).
    std::uint64_t connection_buffer = 32 * 1024;
    // Bytes all connections together may hold in buffers: above 3/4 of it connections that
    // hold bytes stop reading; at it, nothing reads and the largest holders are shed.
    std::uint64_t max_memory = 64 * 1024 * 1024;
  } limits;
  struct {
    std::uint32_t max_idle = 64;
  } upstream_pool;
  struct {
    Millis connect_retry_budget = 2000;
  } upstream_retry;
  struct {
    ConcurrencyLimit max_concurrency;
    std::uint32_t queue_size = 100;  // 0: no queue, a request over the limit gets 503 at once
    Millis queue_timeout = 10000;
  } upstream_limits;
  struct {
    bool on_proxy_listener = false;
  } probes;
  struct {
    Millis max_connection_age = 0;  // 0 = off: HTTP/2 connections live as long as the client likes
  } http2;
  struct {
    LogFormat format = LogFormat::kJson;
    LogLevel level = LogLevel::kInfo;
    bool access = false;
  } log;
  WorkerCount workers;

  std::string source;  // the file it came from, or "(defaults)"
};

// Result of loading: either a config or a message naming file, line and key, e.g.
// "ebb.yaml:12: shutdown.drain_timeout: expected a duration like 250ms, 5s or 1m, got \"soon\"".
// An EBB_* variable that is not a key never fails a load (Kubernetes puts service links such as
// EBB_PORT=tcp://... into pods): a service link is a note (logged at debug), anything else a
// warning that names the closest key. The caller logs them; `--check-config` fails on warnings.
struct ConfigResult {
  ConfigResult() = default;
  ConfigResult(std::optional<Config> c, std::string e) : config(std::move(c)), error(std::move(e)) {}
  std::optional<Config> config;
  std::string error;
  std::vector<std::string> warnings;  // "env EBB_SHUTDOWN_DRAIN_TIMOUT: unknown key (did you mean ...?)"
  std::vector<std::string> notes;     // "env EBB_PORT: a Kubernetes service link, not a config key"
};

// Loads `path` (empty: built-in defaults only), then applies `env` overrides (EBB_UPSTREAM,
// EBB_SHUTDOWN_DRAIN_TIMEOUT, ...), then validates. `env` is passed in so tests need no setenv.
ConfigResult load_config(const std::string& path, const std::map<std::string, std::string>& env);
// The same from text already in memory (a ConfigMap's data); `label` names it in messages.
ConfigResult parse_config(const std::string& label, const std::string& text,
                          const std::map<std::string, std::string>& env);

// True when NAME=VALUE has the shape of a Kubernetes service-link variable (docker links
// convention) for a Service whose name starts with "ebb": EBB_SERVICE_HOST=10.0.0.1,
// EBB_METRICS_SERVICE_PORT=9901, EBB_PORT=tcp://10.0.0.1:80, EBB_PORT_80_TCP_ADDR=10.0.0.1 ...
bool is_service_link(std::string_view name, std::string_view value);

// How the config's source reads in messages: the file, or "built-in defaults".
std::string describe_source(const Config& c);

// The process environment's EBB_* variables.
std::map<std::string, std::string> ebb_environment();

// Reads a whole file with POSIX calls (config files, /proc/self files): 0, or the errno.
int read_whole_file(const std::string& path, std::string& out);

// The effective config as YAML, every key present (for --check-config).
std::string dump_config(const Config& c);

// Parsers shared with the CLI and check-k8s; false on bad input.
bool parse_duration(const std::string& s, Millis& out);
bool parse_host_port(const std::string& s, HostPort& out);
std::string format_duration(Millis ms);

}  // namespace ebb
