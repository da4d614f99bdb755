// Unit tests for src/config.*: defaults, file and env layering, every kind of refusal with the
// exact file:line and key it must name, and the dump -> load round trip.
#include <stdlib.h>  // mkdtemp, setenv
#include <catch2/catch.hpp>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "config.hpp"

namespace {

using ebb::Config;
using ebb::load_config;
using Env = std::map<std::string, std::string>;

// A private directory for config files, removed with everything in it.
struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/ebb-config-test-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string write(const std::string& name, const std::string& text) const {
    std::string file = path + "/" + name;
    std::ofstream(file) << text;
    return file;
  }
};

// The loaded config, or a test failure that shows the loader's message.
Config load_ok(const std::string& path, const Env& env = {}) {
  auto r = load_config(path, env);
  INFO(r.error);
  REQUIRE(r.config.has_value());
  CHECK(r.error.empty());
  return *r.config;
}

std::string load_error(const std::string& path, const Env& env = {}) {
  auto r = load_config(path, env);
  CHECK_FALSE(r.config.has_value());
  return r.error;
}

// The dump without its first (source) comment line: equal bodies mean equal configs.
std::string body(const Config& c) {
  std::string d = ebb::dump_config(c);
  return d.substr(d.find('\n') + 1);
}

}  // namespace

TEST_CASE("config: no file and no environment gives the SPEC defaults", "[config]") {
  Config c = load_ok("");
  CHECK(c.source == "(defaults)");
  CHECK(c.listen == ebb::HostPort{"0.0.0.0", 8080});
  CHECK(c.upstream == ebb::HostPort{"127.0.0.1", 3000});
  CHECK(c.admin.listen == ebb::HostPort{"0.0.0.0", 9901});
  CHECK(c.admin.drain_token.empty());
  CHECK(c.shutdown.propagation_delay == 5000);
  CHECK(c.shutdown.quiet_period == 1000);
  CHECK(c.shutdown.propagation_max == 15000);
  CHECK(c.shutdown.drain_timeout == 25000);
  CHECK(c.readiness.upstream_check == ebb::UpstreamCheck::kTcp);
  CHECK(c.readiness.http_path == "/healthz");
  CHECK(c.timeouts.upstream_idle == 4000);
  CHECK(c.limits.max_header_bytes == 65536);
  CHECK(c.upstream_pool.max_idle == 64);
  CHECK(c.upstream_retry.connect_retry_budget == 2000);
  CHECK(c.log.format == ebb::LogFormat::kJson);
  CHECK(c.workers == ebb::WorkerCount{false, 1});
  CHECK(body(c) == body(Config{}));
}

TEST_CASE("config: an empty or comment-only file is the defaults", "[config]") {
  TempDir dir;
  std::string empty = dir.write("empty.yaml", "");
  Config c = load_ok(empty);
  CHECK(c.source == empty);
  CHECK(body(c) == body(Config{}));
  CHECK(body(load_ok(dir.write("comments.yaml", "# nothing set\n\n"))) == body(Config{}));
  CHECK(body(load_ok(dir.write("sections.yaml", "admin:\nlog:\n"))) == body(Config{}));
}

TEST_CASE("config: the SPEC's flow-style example loads as the defaults", "[config]") {
  TempDir dir;
  std::string path = dir.write("spec.yaml", R"(listen: 0.0.0.0:8080
upstream: 127.0.0.1:3000
admin: {listen: 0.0.0.0:9901, drain_token: ""}
shutdown: {propagation_delay: 5s, quiet_period: 1s, propagation_max: 15s, drain_timeout: 25s}
readiness: {upstream_check: tcp, http_path: /healthz, interval: 1s, failure_threshold: 3}
timeouts: {client_header: 15s, client_idle: 60s, client_send: 30s, upstream_connect: 5s, upstream_response: 60s, upstream_idle: 4s}
limits: {max_header_bytes: 65536, max_uri_bytes: 8192, max_body_bytes: 0, max_connections: 10000}
upstream_pool: {max_idle: 64}
upstream_retry: {connect_retry_budget: 2s}
upstream_limits: {max_concurrency: 0, queue_size: 100, queue_timeout: 10s}   # 0 = unlimited; auto = adaptive
probes: {on_proxy_listener: false}
log: {format: json, level: info, access: false}
workers: 1            # event-loop threads
)");
  CHECK(body(load_ok(path)) == body(Config{}));
}

TEST_CASE("config: a full block-style file sets every key", "[config]") {
  TempDir dir;
  std::string path = dir.write("full.yaml", R"(listen: 127.0.0.1:18080
upstream: app.local:4000
admin:
  listen: "[::1]:19901"
  drain_token: "s3cret-token"
shutdown:
  propagation_delay: 2s
  quiet_period: 250ms
  propagation_max: 1m
  drain_timeout: 1h
readiness:
  upstream_check: http
  http_path: /ready?full=1
  interval: 500ms
  failure_threshold: 5
timeouts:
  client_header: 1s
  client_idle: 2s
  client_send: 3s
  upstream_connect: 4s
  upstream_response: 5s
  upstream_idle: 0
limits:
  max_header_bytes: 1024
  max_uri_bytes: 512
  max_body_bytes: 1048576
  max_connections: 7
upstream_pool:
  max_idle: 0
upstream_retry:
  connect_retry_budget: 0s
upstream_limits:
  max_concurrency: 12
  queue_size: 0
  queue_timeout: 750ms
probes:
  on_proxy_listener: true
log:
  format: text
  level: debug
  access: true
workers: 1
)");
  Config c = load_ok(path);
  CHECK(c.listen == ebb::HostPort{"127.0.0.1", 18080});
  CHECK(c.upstream == ebb::HostPort{"app.local", 4000});
  CHECK(c.admin.listen == ebb::HostPort{"::1", 19901});
  CHECK(c.admin.drain_token == "s3cret-token");
  CHECK(c.shutdown.propagation_delay == 2000);
  CHECK(c.shutdown.quiet_period == 250);
  CHECK(c.shutdown.propagation_max == 60000);
  CHECK(c.shutdown.drain_timeout == 3600000);
  CHECK(c.readiness.upstream_check == ebb::UpstreamCheck::kHttp);
  CHECK(c.readiness.http_path == "/ready?full=1");
  CHECK(c.readiness.interval == 500);
  CHECK(c.readiness.failure_threshold == 5);
  CHECK(c.timeouts.client_header == 1000);
  CHECK(c.timeouts.client_idle == 2000);
  CHECK(c.timeouts.client_send == 3000);
  CHECK(c.timeouts.upstream_connect == 4000);
  CHECK(c.timeouts.upstream_response == 5000);
  CHECK(c.timeouts.upstream_idle == 0);
  CHECK(c.limits.max_header_bytes == 1024);
  CHECK(c.limits.max_uri_bytes == 512);
  CHECK(c.limits.max_body_bytes == 1048576);
  CHECK(c.limits.max_connections == 7);
  CHECK(c.upstream_pool.max_idle == 0);
  CHECK(c.upstream_retry.connect_retry_budget == 0);
  CHECK(c.upstream_limits.max_concurrency == ebb::ConcurrencyLimit{false, 12});
  CHECK(c.upstream_limits.queue_size == 0);
  CHECK(c.upstream_limits.queue_timeout == 750);
  CHECK(c.probes.on_proxy_listener);
  CHECK(c.log.format == ebb::LogFormat::kText);
  CHECK(c.log.level == ebb::LogLevel::kDebug);
  CHECK(c.log.access);
}

TEST_CASE("config: durations in every unit, and their canonical form", "[config]") {
  const std::pair<const char*, ebb::Millis> good[] = {
      {"0", 0},       {"0s", 0},       {"0ms", 0},       {"250ms", 250}, {"5s", 5000},          {"1m", 60000},
      {"90s", 90000}, {"1h", 3600000}, {"1500ms", 1500}, {"007s", 7000}, {"8760h", 31536000000}};
  for (auto [text, ms] : good) {
    INFO(text);
    ebb::Millis out = 12345;
    CHECK(ebb::parse_duration(text, out));
    CHECK(out == ms);
  }
  for (const char* bad : {"", "soon", "5", "-5s", "5 s", " 5s", "s", "1.5s", "5S", "5sec", "+5s", "1m30s",
                          "99999999999999999999ms", "9999999999999999h", "8761h", "31536000001ms"}) {
    INFO(bad);
    ebb::Millis out = 12345;
    CHECK_FALSE(ebb::parse_duration(bad, out));
    CHECK(out == 12345);
  }
  CHECK(ebb::format_duration(0) == "0s");
  CHECK(ebb::format_duration(250) == "250ms");
  CHECK(ebb::format_duration(1500) == "1500ms");
  CHECK(ebb::format_duration(5000) == "5s");
  CHECK(ebb::format_duration(90000) == "90s");
  CHECK(ebb::format_duration(60000) == "1m");
  CHECK(ebb::format_duration(3600000) == "1h");
  for (ebb::Millis ms : {0ull, 1ull, 999ull, 1000ull, 61000ull, 7200000ull, 86400000ull}) {
    ebb::Millis back = 1;
    CHECK(ebb::parse_duration(ebb::format_duration(ms), back));
    CHECK(back == ms);
  }
}

TEST_CASE("config: host:port forms", "[config]") {
  ebb::HostPort hp;
  CHECK(ebb::parse_host_port("127.0.0.1:3000", hp));
  CHECK(hp == ebb::HostPort{"127.0.0.1", 3000});
  CHECK(ebb::parse_host_port(":8080", hp));
  CHECK(hp == ebb::HostPort{"0.0.0.0", 8080});
  CHECK(ebb::parse_host_port("[::1]:9901", hp));
  CHECK(hp == ebb::HostPort{"::1", 9901});
  CHECK(hp.str() == "[::1]:9901");
  CHECK(ebb::parse_host_port("app-svc.default.svc:0", hp));
  CHECK(hp == ebb::HostPort{"app-svc.default.svc", 0});
  CHECK(hp.str() == "app-svc.default.svc:0");
  CHECK(ebb::parse_host_port("localhost:65535", hp));
  CHECK(hp.port == 65535);
  for (const char* bad :
       {"", "8080", "host", "host:", "host:port", "host:65536", "host:-1", "::1:80", "[::1]", "[::1]80",
        "[nope]:80", "[]:80", "300.1.1.1:80", "a b:80", "h:80 ", "h:+80"}) {
    INFO(bad);
    ebb::HostPort out{"keep", 1};
    CHECK_FALSE(ebb::parse_host_port(bad, out));
    CHECK(out == ebb::HostPort{"keep", 1});
  }
}

TEST_CASE("config: the environment overrides the file", "[config]") {
  TempDir dir;
  std::string path =
      dir.write("ebb.yaml", "listen: 127.0.0.1:1000\nshutdown: {drain_timeout: 10s}\nlog: {level: warn}\n");
  Config c = load_ok(path, {{"EBB_LISTEN", ":2000"},
                            {"EBB_UPSTREAM", "10.0.0.7:3001"},
                            {"EBB_ADMIN_LISTEN", "127.0.0.1:2001"},
                            {"EBB_ADMIN_DRAIN_TOKEN", "tok"},
                            {"EBB_SHUTDOWN_DRAIN_TIMEOUT", "3s"},
                            {"EBB_READINESS_UPSTREAM_CHECK", "none"},
                            {"EBB_TIMEOUTS_CLIENT_HEADER", "750ms"},
                            {"EBB_LIMITS_MAX_BODY_BYTES", "4096"},
                            {"EBB_UPSTREAM_POOL_MAX_IDLE", "8"},
                            {"EBB_UPSTREAM_RETRY_CONNECT_RETRY_BUDGET", "0"},
                            {"EBB_PROBES_ON_PROXY_LISTENER", "true"},
                            {"EBB_LOG_FORMAT", "text"},
                            {"EBB_LOG_ACCESS", "true"},
                            {"EBB_WORKERS", "1"}});
  CHECK(c.source == path);
  CHECK(c.listen == ebb::HostPort{"0.0.0.0", 2000});
  CHECK(c.upstream == ebb::HostPort{"10.0.0.7", 3001});
  CHECK(c.admin.listen == ebb::HostPort{"127.0.0.1", 2001});
  CHECK(c.admin.drain_token == "tok");
  CHECK(c.shutdown.drain_timeout == 3000);
  CHECK(c.readiness.upstream_check == ebb::UpstreamCheck::kNone);
  CHECK(c.timeouts.client_header == 750);
  CHECK(c.limits.max_body_bytes == 4096);
  CHECK(c.upstream_pool.max_idle == 8);
  CHECK(c.upstream_retry.connect_retry_budget == 0);
  CHECK(c.probes.on_proxy_listener);
  CHECK(c.log.format == ebb::LogFormat::kText);
  CHECK(c.log.level == ebb::LogLevel::kWarn);  // from the file: not overridden
  CHECK(c.log.access);
}

TEST_CASE("config: environment only; an EBB_ variable that is no key is a warning, whatever its name",
          "[config]") {
  // ebb knows nothing of its test harness: the harness keeps its own variables from ebb.
  auto r = load_config("", {{"EBB_LOG_LEVEL", "error"},
                            {"EBB_SHUTDOWN_PROPAGATION_DELAY", "0s"},
                            {"EBB_BIN", "build/ebb"},
                            {"EBB_TEST_ANYTHING", "x"},
                            {"PATH", "/usr/bin"}});
  REQUIRE(r.config.has_value());
  CHECK(r.config->source == "(defaults)");
  CHECK(r.config->log.level == ebb::LogLevel::kError);
  CHECK(r.config->shutdown.propagation_delay == 0);
  REQUIRE(r.warnings.size() == 2);
  CHECK(r.warnings[0].find("env EBB_BIN: unknown key") == 0);
  CHECK(r.warnings[1].find("env EBB_TEST_ANYTHING: unknown key") == 0);
}

TEST_CASE("config: ebb_environment reads the process's EBB_ variables", "[config]") {
  REQUIRE(setenv("EBB_TEST_UNIT_PROBE", "a=b", 1) == 0);
  auto env = ebb::ebb_environment();
  unsetenv("EBB_TEST_UNIT_PROBE");
  CHECK(env["EBB_TEST_UNIT_PROBE"] == "a=b");
  for (const auto& [name, value] : env) CHECK(name.rfind("EBB_", 0) == 0);
}

TEST_CASE("config: refusals name the file, the line and the key", "[config]") {
  TempDir dir;
  auto error_for = [&](const std::string& text) {
    std::string path = dir.write("ebb.yaml", text);
    std::string e = load_error(path);
    REQUIRE(e.rfind(path + ":", 0) == 0);
    return e.substr(path.size());  // ":LINE: key: problem"
  };

  // Unknown keys, top-level and nested, with a hint.
  CHECK(error_for("listen: :8080\nupstream: :3000\nlisen: :1\n") ==
        ":3: lisen: unknown key (did you mean listen?)");
  CHECK(error_for("admin:\n  listen: :9901\n  drain_tokn: x\n") ==
        ":3: admin.drain_tokn: unknown key (did you mean admin.drain_token?)");
  CHECK(error_for("drain_timeout: 5s\n") ==
        ":1: drain_timeout: unknown key (did you mean shutdown.drain_timeout?)");
  CHECK(error_for("log: {format: json, colour: true}\n") == ":1: log.colour: unknown key");
  CHECK(error_for("admin.listen: :1\n") ==
        ":1: admin.listen: unknown key (sections nest, keys are not dotted)");
  CHECK(error_for("listen: :1\nlisten: :2\n") == ":2: listen: duplicate key (first at line 1)");

  // Wrong types.
  CHECK(error_for("admin: 0.0.0.0:9901\n") ==
        ":1: admin: expected a map of admin.* keys, got \"0.0.0.0:9901\"");
  CHECK(error_for("\nlisten:\n  host: x\n") == ":2: listen: expected host:port, got a map");
  CHECK(error_for("shutdown:\n  drain_timeout: [1, 2]\n") ==
        ":2: shutdown.drain_timeout: expected a duration like 250ms, 5s or 1m, got a list");
  CHECK(error_for("workers:\n") == ":1: workers: expected a positive integer or auto, got nothing");
  CHECK(error_for("- listen\n") == ":1: expected a map of keys at the top level, got a list");

  // Bad values.
  CHECK(error_for("# c\n\nshutdown:\n  propagation_delay: 1s\n  drain_timeout: soon\n") ==
        ":5: shutdown.drain_timeout: expected a duration like 250ms, 5s or 1m, got \"soon\"");
  CHECK(error_for("upstream_limits:\n  max_concurrency: lots\n") ==
        ":2: upstream_limits.max_concurrency: expected a non-negative integer (0 = unlimited) or auto, got \"lots\"");
  CHECK(error_for("upstream_limits: {max_concurrency: -2}\n") ==
        ":1: upstream_limits.max_concurrency: expected a non-negative integer (0 = unlimited) or auto, got \"-2\"");
  CHECK(error_for("upstream_limits: {max_concurrency: 2000000}\n") ==
        ":1: upstream_limits.max_concurrency: must be at most 1000000, got \"2000000\"");
  CHECK(error_for("upstream_limits:\n  max_concurrency: [auto]\n") ==
        ":2: upstream_limits.max_concurrency: expected a non-negative integer (0 = unlimited) or auto, got a list");
  CHECK(error_for("\nupstream_limits: {queue_timeout: 0s}\n") ==
        ":2: upstream_limits.queue_timeout: must be above 0 (queue_size: 0 turns the queue off)");
  CHECK(error_for("upstream_limits: {queue_size: 5000000}\n") ==
        ":1: upstream_limits.queue_size: must be at most 1000000");
  CHECK(error_for("upstream_limits: {queue_sise: 5}\n") ==
        ":1: upstream_limits.queue_sise: unknown key (did you mean upstream_limits.queue_size?)");
  CHECK(error_for("shutdown: {drain_timeout: 9000h}\n") ==
        ":1: shutdown.drain_timeout: must be at most 8760h (a year), got \"9000h\"");
  CHECK(error_for("shutdown: {drain_timeout: -5s}\n") ==
        ":1: shutdown.drain_timeout: must not be negative, got \"-5s\"");
  CHECK(error_for("readiness:\n  interval: 5\n") ==
        ":2: readiness.interval: expected a duration like 250ms, 5s or 1m, got \"5\" (add a unit)");
  CHECK(error_for("limits: {max_body_bytes: -1}\n") ==
        ":1: limits.max_body_bytes: must not be negative, got \"-1\"");
  CHECK(error_for("limits: {max_body_bytes: 1e6}\n") ==
        ":1: limits.max_body_bytes: expected a non-negative integer, got \"1e6\"");
  CHECK(error_for("listen: 0.0.0.0:70000\n") ==
        ":1: listen: port out of range (0-65535) in \"0.0.0.0:70000\"");
  CHECK(error_for("upstream: localhost\n") ==
        ":1: upstream: expected host:port like 127.0.0.1:3000, got \"localhost\"");
  CHECK(error_for("readiness: {upstream_check: udp}\n") ==
        ":1: readiness.upstream_check: expected one of tcp, http, none, got \"udp\"");
  CHECK(error_for("upstream_protocol: h2\n") == ":1: upstream_protocol: expected one of http1, h2c, got \"h2\"");
  CHECK(error_for("log:\n  format: xml\n") == ":2: log.format: expected one of json, text, got \"xml\"");
  CHECK(error_for("log:\n  level: loud\n") ==
        ":2: log.level: expected one of debug, info, warn, error, got \"loud\"");
  CHECK(error_for("probes: {on_proxy_listener: yes}\n") ==
        ":1: probes.on_proxy_listener: expected true or false, got \"yes\"");

  // Impossible combinations and limits.
  CHECK(error_for("listen: :8080\nadmin:\n  listen: 127.0.0.1:8080\n") ==
        ":3: admin.listen: port 8080 is used by both listen and admin.listen");
  CHECK(load_config(dir.write("zero.yaml", "listen: :0\nadmin: {listen: :0}\n"), {}).config.has_value());
  CHECK(error_for("upstream: 127.0.0.1:8080\n") ==
        ":1: upstream: 127.0.0.1:8080 is ebb's own listener, not the app");
  CHECK(error_for("shutdown:\n  propagation_delay: 20s\n") ==
        ":2: shutdown.propagation_delay: shutdown.propagation_max (15s) is below shutdown.propagation_delay "
        "(20s)");
  CHECK(
      error_for("shutdown:\n  propagation_delay: 2s\n  propagation_max: 1s\n") ==
      ":3: shutdown.propagation_max: shutdown.propagation_max (1s) is below shutdown.propagation_delay (2s)");
  CHECK(error_for("readiness: {failure_threshold: 0}\n") ==
        ":1: readiness.failure_threshold: must be at least 1");
  CHECK(error_for("readiness: {interval: 0s}\n") == ":1: readiness.interval: must be above 0");
  CHECK(error_for("readiness: {http_path: healthz}\n") ==
        ":1: readiness.http_path: must start with /, got \"healthz\"");
  CHECK(error_for("workers: 0\n") == ":1: workers: 0 workers would serve nothing; use 1 or more, or auto");
  CHECK(error_for("workers: 65\n") == ":1: workers: must be at most 64, got \"65\"");
  CHECK(error_for("workers: many\n") == ":1: workers: expected a positive integer or auto, got \"many\"");
  CHECK(error_for("workers: 4\nupstream_limits: {max_concurrency: 3}\n") ==
        ":2: upstream_limits.max_concurrency: workers (4) must not exceed upstream_limits.max_concurrency (3): each worker needs at "
        "least one slot at the app");
  CHECK(error_for("limits: {max_header_bytes: 0}\n") == ":1: limits.max_header_bytes: must be above 0");
  CHECK(error_for("limits: {max_uri_bytes: 0}\n") == ":1: limits.max_uri_bytes: must be above 0");
  CHECK(error_for("limits: {max_connections: 0}\n") == ":1: limits.max_connections: must be above 0");
  CHECK(error_for("\nlimits: {connection_buffer: 4095}\n") ==
        ":2: limits.connection_buffer: must be between 4096 and 16777216 bytes");
  CHECK(error_for("limits: {connection_buffer: 16777217}\n") ==
        ":1: limits.connection_buffer: must be between 4096 and 16777216 bytes");
  CHECK(error_for("limits:\n  max_memory: 1048575\n") ==
        ":2: limits.max_memory: must be at least 1048576 bytes (1 MiB): below that ordinary traffic would be shed");
  CHECK(error_for("limits:\n  connection_buffer: 1048576\n  max_memory: 2097152\n").find(
            "limits.max_memory (2097152) must be at least 4 x limits.connection_buffer (1048576)") !=
        std::string::npos);
  CHECK(load_config(dir.write("mem.yaml", "limits: {connection_buffer: 4096, max_memory: 1048576}\n"), {})
            .config.has_value());
  CHECK(error_for("upstream_pool: {max_idle: 100001}\n") ==
        ":1: upstream_pool.max_idle: must be at most 100000");
  CHECK(load_config(dir.write("idle.yaml", "upstream_pool: {max_idle: 100000}\n"), {}).config.has_value());

  // YAML syntax errors keep file:line too.
  CHECK(error_for("log: {format: json\nworkers: 1\n") == ":2: YAML syntax error: end of map flow not found");
  // Aliases: the walk enters known sections only, so an alias cycle ends at an unknown key, and
  // a merge key is one too (the config has no use for either).
  CHECK(error_for("admin: &a\n  listen: :9901\n  admin: *a\n") == ":3: admin.admin: unknown key");
  CHECK(error_for("admin: &a\n  <<: *a\n") == ":2: admin.<<: unknown key");
  // yaml-cpp's nesting limit says "bad file"; the error says what it is.
  CHECK(error_for("\nlog: " + std::string(600, '[') + std::string(600, ']') + "\n") ==
        ":2: YAML syntax error: nested more than 499 levels deep");
  CHECK(error_for("listen: [::1]:8080\n") ==
        ":1: YAML syntax error: end of map not found (quote IPv6 addresses: \"[::1]:8080\")");
}

TEST_CASE("config: a missing or unreadable file is named", "[config]") {
  TempDir dir;
  CHECK(load_error(dir.path + "/nope.yaml") ==
        dir.path + "/nope.yaml: cannot read config file: No such file or directory");
  CHECK(load_error(dir.path) == dir.path + ": cannot read config file: Is a directory");
}

TEST_CASE("config: environment refusals name the variable", "[config]") {
  CHECK(load_error("", {{"EBB_SHUTDOWN_DRAIN_TIMEOUT", "soon"}}) ==
        "env EBB_SHUTDOWN_DRAIN_TIMEOUT: expected a duration like 250ms, 5s or 1m, got \"soon\"");
  CHECK(load_error("", {{"EBB_UPSTREAM_PROTOCOL", "grpc"}}) ==
        "env EBB_UPSTREAM_PROTOCOL: expected one of http1, h2c, got \"grpc\"");
  CHECK(load_ok("", {{"EBB_UPSTREAM_PROTOCOL", "h2c"}}).upstream_protocol == ebb::UpstreamProtocol::kH2c);
  CHECK(load_ok("").upstream_protocol == ebb::UpstreamProtocol::kHttp1);
  CHECK(load_error("", {{"EBB_LOG_ACCESS", "1"}}) == "env EBB_LOG_ACCESS: expected true or false, got \"1\"");
  CHECK(load_error("", {{"EBB_ADMIN_LISTEN", ":8080"}}) ==
        "env EBB_ADMIN_LISTEN: port 8080 is used by both listen and admin.listen");
  CHECK(load_error("", {{"EBB_UPSTREAM_LIMITS_MAX_CONCURRENCY", "Auto"}}) ==
        "env EBB_UPSTREAM_LIMITS_MAX_CONCURRENCY: expected a non-negative integer (0 = unlimited) or auto, got \"Auto\"");
  CHECK(load_ok("", {{"EBB_UPSTREAM_LIMITS_MAX_CONCURRENCY", "auto"}}).upstream_limits.max_concurrency.adaptive);
  CHECK(load_ok("", {{"EBB_LIMITS_MAX_MEMORY", "8388608"}}).limits.max_memory == 8388608);
  CHECK(load_error("", {{"EBB_LIMITS_MAX_MEMORY", "64MiB"}}) ==
        "env EBB_LIMITS_MAX_MEMORY: expected a non-negative integer, got \"64MiB\"");
  CHECK(load_error("", {{"EBB_LIMITS_MAX_MEMORY", "1000"}}) ==
        "env EBB_LIMITS_MAX_MEMORY: must be at least 1048576 bytes (1 MiB): below that ordinary traffic would be shed");

  // A file value that only the environment makes impossible is blamed on the environment.
  TempDir dir;
  std::string path = dir.write("ebb.yaml", "shutdown:\n  propagation_max: 6s\n");
  CHECK(load_error(path, {{"EBB_SHUTDOWN_PROPAGATION_DELAY", "10s"}}) ==
        "env EBB_SHUTDOWN_PROPAGATION_DELAY: shutdown.propagation_max (6s) is below "
        "shutdown.propagation_delay (10s)");
}

TEST_CASE("config: dump -> load gives the same config back", "[config]") {
  TempDir dir;
  std::string path = dir.write("in.yaml", R"(listen: "[::]:18080"
upstream: app:4000
admin: {listen: 127.0.0.1:0}
shutdown: {propagation_delay: 1500ms, quiet_period: 0s, propagation_max: 2m, drain_timeout: 1h}
readiness: {upstream_check: http, http_path: "/h?x=\"1\"#frag", interval: 250ms, failure_threshold: 9}
timeouts: {client_idle: 90s, upstream_idle: 0}
limits: {max_body_bytes: 123456789012}
upstream_pool: {max_idle: 100000}
probes: {on_proxy_listener: true}
log: {format: text, level: debug, access: true}
)");
  Config first = load_ok(path);
  std::string dumped = ebb::dump_config(first);
  CHECK(dumped.find("{") == std::string::npos);  // block style
  CHECK(dumped.find("propagation_delay: 1500ms") != std::string::npos);
  CHECK(dumped.find("propagation_max: 2m") != std::string::npos);
  CHECK(dumped.find("client_idle: 90s") != std::string::npos);
  Config second = load_ok(dir.write("out.yaml", dumped));
  CHECK(body(second) == body(first));
  CHECK(second.readiness.http_path == "/h?x=\"1\"#frag");
  CHECK(second.listen == ebb::HostPort{"::", 18080});
  CHECK(body(load_ok(dir.write("defaults.yaml", ebb::dump_config(Config{})))) == body(Config{}));
}

TEST_CASE("config: the dump hides the drain token", "[config]") {
  Config c;
  c.admin.drain_token = "hunter2";
  std::string dumped = ebb::dump_config(c);
  CHECK(dumped.find("hunter2") == std::string::npos);
  CHECK(dumped.find("drain_token: \"***\"") != std::string::npos);
  CHECK(dumped.find("# drain_token is set and hidden") != std::string::npos);
  CHECK(ebb::dump_config(Config{}).find("drain_token: \"\"") != std::string::npos);
}

TEST_CASE("config: the shipped config files load, and ebb.yaml documents the defaults", "[config]") {
  // __FILE__ is absolute under CMake; a relative one works from the repository root.
  std::filesystem::path dir = std::filesystem::path(__FILE__).parent_path() / ".." / ".." / "config";
  REQUIRE(std::filesystem::exists(dir / "ebb.yaml"));
  CHECK(body(load_ok((dir / "ebb.yaml").string())) == body(Config{}));
  Config demo = load_ok((dir / "ebb.demo.yaml").string());
  CHECK(demo.listen == ebb::HostPort{"127.0.0.1", 8080});
  CHECK(demo.upstream == ebb::HostPort{"127.0.0.1", 3000});
  CHECK(demo.admin.listen == ebb::HostPort{"127.0.0.1", 9901});
  CHECK(demo.log.format == ebb::LogFormat::kText);
  CHECK(demo.log.access);
  CHECK(demo.shutdown.propagation_delay == 1000);
  CHECK(demo.shutdown.quiet_period == 500);
  CHECK(demo.shutdown.propagation_max == 3000);
  CHECK(demo.shutdown.drain_timeout == 5000);
}

TEST_CASE("config: every key of the dump can be set from the environment alone", "[config]") {
  TempDir dir;
  Config from_file = load_ok(dir.write("ebb.yaml", R"(listen: 127.0.0.1:1
upstream: "[::1]:2"
upstream_protocol: h2c
admin: {listen: 127.0.0.1:3}
shutdown: {propagation_delay: 1s, quiet_period: 2s, propagation_max: 3s, drain_timeout: 4s}
readiness: {upstream_check: none, http_path: /r, interval: 5s, failure_threshold: 6}
timeouts: {client_header: 7s, client_idle: 8s, client_send: 9s, upstream_connect: 10s,
           upstream_response: 11s, upstream_idle: 12s}
limits: {max_header_bytes: 13, max_uri_bytes: 14, max_body_bytes: 15, max_connections: 16,
         connection_buffer: 65536, max_memory: 33554432}
upstream_pool: {max_idle: 17}
upstream_retry: {connect_retry_budget: 18s}
upstream_limits: {max_concurrency: auto, queue_size: 19, queue_timeout: 20s}
probes: {on_proxy_listener: true}
http2: {max_connection_age: 21s}
log: {format: text, level: error, access: true}
workers: auto
)"));
  // Turn each "key: value" line of the dump into EBB_SECTION_KEY=value.
  Env env;
  std::string section;
  std::istringstream lines(ebb::dump_config(from_file));
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] == '#') continue;
    auto colon = line.find(':');
    std::string key = line.substr(0, colon), value = line.substr(colon + 1);
    if (value.empty()) {
      section = key;
      continue;
    }
    bool nested = key.rfind("  ", 0) == 0;
    if (!nested) section.clear();
    std::string path = nested ? section + "_" + key.substr(2) : key;
    value = value.substr(1);
    if (value.size() >= 2 && value.front() == '"') value = value.substr(1, value.size() - 2);
    std::string name = "EBB_";
    for (char ch : path) name += static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    env[name] = value;
  }
  CHECK(env.size() == 36);
  CHECK(env["EBB_UPSTREAM_PROTOCOL"] == "h2c");
  CHECK(env["EBB_HTTP2_MAX_CONNECTION_AGE"] == "21s");
  CHECK(env["EBB_LIMITS_MAX_MEMORY"] == "33554432");
  CHECK(env["EBB_UPSTREAM_LIMITS_MAX_CONCURRENCY"] == "auto");
  CHECK(env["EBB_UPSTREAM_RETRY_CONNECT_RETRY_BUDGET"] == "18s");
  CHECK(env["EBB_WORKERS"] == "auto");
  CHECK(body(load_ok("", env)) == body(from_file));
}

namespace {
// The warnings of a load that must succeed.
std::vector<std::string> warnings_of(const Env& env) {
  auto r = load_config("", env);
  INFO(r.error);
  REQUIRE(r.config.has_value());
  return r.warnings;
}
}  // namespace

TEST_CASE("config: an unknown EBB_ variable is a warning naming the closest key, never an error", "[config]") {
  using V = std::vector<std::string>;
  CHECK(warnings_of({{"EBB_FOO", "1"}}) == V{"env EBB_FOO: unknown key; ignored"});
  CHECK(warnings_of({{"EBB_LISTN", ":1"}}) == V{"env EBB_LISTN: unknown key (did you mean EBB_LISTEN?); ignored"});
  CHECK(warnings_of({{"EBB_SHUTDOWN_DRAIN_TIMOUT", "5s"}}) ==
        V{"env EBB_SHUTDOWN_DRAIN_TIMOUT: unknown key (did you mean EBB_SHUTDOWN_DRAIN_TIMEOUT?); ignored"});
  CHECK(warnings_of({{"EBB_ADMIN", ":1"}}) == V{"env EBB_ADMIN: unknown key; ignored"});
  // Two edits from EBB_LISTEN but three from EBB_UPSTREAM: the closest wins, not the first in reach.
  CHECK(warnings_of({{"EBB_LISTXN_", ":1"}}) == V{"env EBB_LISTXN_: unknown key (did you mean EBB_LISTEN?); ignored"});
  // A name far longer than any key gets no hint, and costs no key-by-key comparison.
  std::string huge = "EBB_" + std::string(200000, 'X');
  CHECK(warnings_of({{huge, "1"}}) == V{"env " + huge + ": unknown key; ignored"});
  // A port-looking key that is not a service link's shape is still a typo to report.
  CHECK(warnings_of({{"EBB_ADMIN_PORT", "9902"}}) == V{"env EBB_ADMIN_PORT: unknown key; ignored"});
  // The misspelt key leaves the real one at its default; real keys beside it still apply.
  auto r = load_config("", {{"EBB_SHUTDOWN_DRAIN_TIMOUT", "5s"}, {"EBB_SHUTDOWN_QUIET_PERIOD", "2s"}});
  REQUIRE(r.config.has_value());
  CHECK(r.config->shutdown.drain_timeout == 25000);
  CHECK(r.config->shutdown.quiet_period == 2000);
  // Wrong values of real keys stay fatal, with the key named, even beside ignored variables.
  CHECK(load_error("", {{"EBB_PORT", "tcp://10.96.0.12:80"}, {"EBB_UPSTREAM", "nope"}}) ==
        "env EBB_UPSTREAM: expected host:port like 127.0.0.1:3000, got \"nope\"");
  CHECK(load_error("", {{"EBB_FOO", "1"}, {"EBB_LOG_LEVEL", "loud"}}) ==
        "env EBB_LOG_LEVEL: expected one of debug, info, warn, error, got \"loud\"");
}

TEST_CASE("config: Kubernetes service links for Services named ebb and ebb-metrics are ignored quietly", "[config]") {
  // What the kubelet injects for `Service ebb` (port 80, named http) and `Service ebb-metrics`
  // (port 9901/TCP), IPv4 and IPv6 clusters.
  const Env links = {
      {"EBB_SERVICE_HOST", "10.96.0.12"},
      {"EBB_SERVICE_PORT", "80"},
      {"EBB_SERVICE_PORT_HTTP", "80"},
      {"EBB_PORT", "tcp://10.96.0.12:80"},
      {"EBB_PORT_80_TCP", "tcp://10.96.0.12:80"},
      {"EBB_PORT_80_TCP_PROTO", "tcp"},
      {"EBB_PORT_80_TCP_PORT", "80"},
      {"EBB_PORT_80_TCP_ADDR", "10.96.0.12"},
      {"EBB_METRICS_SERVICE_HOST", "fd00:10:96::c"},
      {"EBB_METRICS_SERVICE_PORT", "9901"},
      {"EBB_METRICS_PORT", "tcp://[fd00:10:96::c]:9901"},
      {"EBB_METRICS_PORT_9901_TCP", "tcp://[fd00:10:96::c]:9901"},
      {"EBB_METRICS_PORT_9901_TCP_PROTO", "tcp"},
      {"EBB_METRICS_PORT_9901_TCP_PORT", "9901"},
      {"EBB_METRICS_PORT_9901_TCP_ADDR", "fd00:10:96::c"},
      {"EBB_DNS_PORT_53_UDP", "udp://10.96.0.10:53"},
  };
  auto r = load_config("", links);
  INFO(r.error);
  REQUIRE(r.config.has_value());
  CHECK(r.warnings.empty());
  CHECK(r.notes.size() == links.size());
  CHECK(r.notes[0].find("service link") != std::string::npos);
  CHECK(body(*r.config) == body(Config{}));
  for (const auto& [name, value] : links) {
    INFO(name << "=" << value);
    CHECK(ebb::is_service_link(name, value));
  }
  // Negative controls: the same names with values of the wrong shape, and real keys.
  for (auto [name, value] : {std::pair<const char*, const char*>{"EBB_PORT", "8080"},
                             {"EBB_SERVICE_HOST", "ebb.default.svc"},
                             {"EBB_SERVICE_PORT", "http"},
                             {"EBB_PORT_80_TCP", "10.96.0.12:80"},
                             {"EBB_PORT_80_TCP_PROTO", "http"},
                             {"EBB_PORT_80_TCP_ADDR", "host"},
                             {"EBB_PORT_80_HTTP", "tcp://10.96.0.12:80"},
                             {"EBB_PORT_X_TCP_PORT", "80"},
                             {"EBB_PORT", "ftp://10.96.0.12:80"},
                             {"EBB_LISTEN", "tcp://10.96.0.12:80"},
                             {"EBB_ADMIN_LISTEN", "0.0.0.0:9901"}}) {
    INFO(name << "=" << value);
    CHECK_FALSE(ebb::is_service_link(name, value));
  }
}

TEST_CASE("config: describe_source says built-in defaults without a file", "[config]") {
  CHECK(ebb::describe_source(load_ok("")) == "built-in defaults");
  TempDir dir;
  std::string path = dir.write("ebb.yaml", "");
  CHECK(ebb::describe_source(load_ok(path)) == path);
}

TEST_CASE("config: text in memory loads as the same text in a file would, messages naming its label", "[config]") {
  TempDir dir;
  const std::string good = "listen: 0.0.0.0:8081\nshutdown:\n  drain_timeout: 7s\n";
  auto from_text = ebb::parse_config("configmap ebb/ebb.yaml", good, {{"EBB_UPSTREAM", "127.0.0.1:3001"}});
  REQUIRE(from_text.config.has_value());
  CHECK(body(*from_text.config) == body(load_ok(dir.write("good.yaml", good), {{"EBB_UPSTREAM", "127.0.0.1:3001"}})));
  CHECK(from_text.config->source == "configmap ebb/ebb.yaml");
  const std::string bad = "listen: 0.0.0.0:8081\nshutdown:\n  drain_timout: 7s\n";
  auto r = ebb::parse_config("configmap ebb/ebb.yaml", bad, {});
  CHECK_FALSE(r.config.has_value());
  std::string file_error = load_error(dir.write("bad.yaml", bad));
  CHECK(r.error == file_error.replace(file_error.find(dir.path + "/bad.yaml"), dir.path.size() + 9,
                                      "configmap ebb/ebb.yaml"));
  CHECK(r.error.find(":3:") != std::string::npos);
  CHECK_FALSE(ebb::parse_config("x", "[not, a, map]\n", {}).config.has_value());
  CHECK(ebb::parse_config("x", "", {}).config.has_value());  // empty text: the defaults
}
