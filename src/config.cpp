// Config loading: one registry row per SPEC §7 key drives the YAML walk, the EBB_* environment
// overrides and the dump, so adding a key is one row (plus a check in validate() if it has limits).
// Every error names where the value came from (file:line or env VAR) and the dotted key.
#include "config.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <exception>
#include <limits>
#include <string_view>
#include <variant>
#include <vector>

#include "yaml_load.hpp"

extern char** environ;

namespace ebb {
namespace {

// Durations and sizes are both uint64; the wrappers keep them apart in the variant.
struct DurationRef {
  Millis* p;
};
struct SizeRef {
  std::uint64_t* p;
};
using Field = std::variant<HostPort*, std::string*, DurationRef, SizeRef, std::uint32_t*, bool*,
                           UpstreamCheck*, LogFormat*, LogLevel*, ConcurrencyLimit*>;

struct Key {
  std::string_view path;
  Field (*field)(Config&);
};

// Order is the dump's order; a section's keys stay together.
// clang-format off
const Key kKeys[] = {
    {"listen", [](Config& c) -> Field { return &c.listen; }},
    {"upstream", [](Config& c) -> Field { return &c.upstream; }},
    {"admin.listen", [](Config& c) -> Field { return &c.admin.listen; }},
    {"admin.drain_token", [](Config& c) -> Field { return &c.admin.drain_token; }},
    {"shutdown.propagation_delay", [](Config& c) -> Field { return DurationRef{&c.shutdown.propagation_delay}; }},
    {"shutdown.quiet_period", [](Config& c) -> Field { return DurationRef{&c.shutdown.quiet_period}; }},
    {"shutdown.propagation_max", [](Config& c) -> Field { return DurationRef{&c.shutdown.propagation_max}; }},
    {"shutdown.drain_timeout", [](Config& c) -> Field { return DurationRef{&c.shutdown.drain_timeout}; }},
    {"readiness.upstream_check", [](Config& c) -> Field { return &c.readiness.upstream_check; }},
    {"readiness.http_path", [](Config& c) -> Field { return &c.readiness.http_path; }},
    {"readiness.interval", [](Config& c) -> Field { return DurationRef{&c.readiness.interval}; }},
    {"readiness.failure_threshold", [](Config& c) -> Field { return &c.readiness.failure_threshold; }},
    {"timeouts.client_header", [](Config& c) -> Field { return DurationRef{&c.timeouts.client_header}; }},
    {"timeouts.client_idle", [](Config& c) -> Field { return DurationRef{&c.timeouts.client_idle}; }},
    {"timeouts.client_send", [](Config& c) -> Field { return DurationRef{&c.timeouts.client_send}; }},
    {"timeouts.upstream_connect", [](Config& c) -> Field { return DurationRef{&c.timeouts.upstream_connect}; }},
    {"timeouts.upstream_response", [](Config& c) -> Field { return DurationRef{&c.timeouts.upstream_response}; }},
    {"timeouts.upstream_idle", [](Config& c) -> Field { return DurationRef{&c.timeouts.upstream_idle}; }},
    {"limits.max_header_bytes", [](Config& c) -> Field { return SizeRef{&c.limits.max_header_bytes}; }},
    {"limits.max_uri_bytes", [](Config& c) -> Field { return SizeRef{&c.limits.max_uri_bytes}; }},
    {"limits.max_body_bytes", [](Config& c) -> Field { return SizeRef{&c.limits.max_body_bytes}; }},
    {"limits.max_connections", [](Config& c) -> Field { return SizeRef{&c.limits.max_connections}; }},
    {"upstream_pool.max_idle", [](Config& c) -> Field { return &c.upstream_pool.max_idle; }},
    {"upstream_retry.connect_retry_budget", [](Config& c) -> Field { return DurationRef{&c.upstream_retry.connect_retry_budget}; }},
    {"upstream_limits.max_concurrency", [](Config& c) -> Field { return &c.upstream_limits.max_concurrency; }},
    {"upstream_limits.queue_size", [](Config& c) -> Field { return &c.upstream_limits.queue_size; }},
    {"upstream_limits.queue_timeout", [](Config& c) -> Field { return DurationRef{&c.upstream_limits.queue_timeout}; }},
    {"probes.on_proxy_listener", [](Config& c) -> Field { return &c.probes.on_proxy_listener; }},
    {"log.format", [](Config& c) -> Field { return &c.log.format; }},
    {"log.level", [](Config& c) -> Field { return &c.log.level; }},
    {"log.access", [](Config& c) -> Field { return &c.log.access; }},
    {"workers", [](Config& c) -> Field { return &c.workers; }},
};
// clang-format on

template <class E>
struct EnumName {
  std::string_view name;
  E value;
};
constexpr EnumName<UpstreamCheck> kChecks[] = {
    {"tcp", UpstreamCheck::kTcp}, {"http", UpstreamCheck::kHttp}, {"none", UpstreamCheck::kNone}};
constexpr EnumName<LogFormat> kFormats[] = {{"json", LogFormat::kJson}, {"text", LogFormat::kText}};
constexpr EnumName<LogLevel> kLevels[] = {{"debug", LogLevel::kDebug},
                                          {"info", LogLevel::kInfo},
                                          {"warn", LogLevel::kWarn},
                                          {"error", LogLevel::kError}};

template <class... F>
struct Overloaded : F... {
  using F::operator()...;
};
template <class... F>
Overloaded(F...) -> Overloaded<F...>;

constexpr std::string_view kDurationNoun = "a duration like 250ms, 5s or 1m";
// A year is "forever" for any timeout here, and keeps sums and ms->ns conversions far from overflow.
constexpr Millis kMaxDuration = 8760ull * 3'600'000;
// Far above any app's real concurrency, and far below where counters could misbehave.
constexpr std::uint64_t kMaxConcurrency = 1'000'000;
constexpr std::uint32_t kMaxQueueSize = 1'000'000;

const Key* find_key(std::string_view path) {
  for (const Key& k : kKeys)
    if (k.path == path) return &k;
  return nullptr;
}

std::string_view parent_of(std::string_view path) {
  auto dot = path.rfind('.');
  return dot == std::string_view::npos ? std::string_view{} : path.substr(0, dot);
}

std::string_view leaf_of(std::string_view path) {
  auto dot = path.rfind('.');
  return dot == std::string_view::npos ? path : path.substr(dot + 1);
}

bool is_section(std::string_view path) {
  for (const Key& k : kKeys)
    if (parent_of(k.path) == path && !path.empty()) return true;
  return false;
}

std::string env_name(std::string_view path) {
  std::string name = "EBB_";
  for (char ch : path) name += ch == '.' ? '_' : static_cast<char>(ch >= 'a' && ch <= 'z' ? ch - 32 : ch);
  return name;
}

// YAML double-quoted form, so a dump stays loadable and error messages show hidden bytes.
std::string quote(std::string_view s) {
  static const char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (unsigned char ch : s) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += static_cast<char>(ch);
    } else if (ch == '\n') {
      out += "\\n";
    } else if (ch == '\t') {
      out += "\\t";
    } else if (ch < 0x20 || ch == 0x7f) {
      out += "\\x";
      out += kHex[ch >> 4];
      out += kHex[ch & 15];
    } else {
      out += static_cast<char>(ch);
    }
  }
  return out + "\"";
}

// Levenshtein distance, or `limit` when it is `limit` or more. Only the cells within `limit` of
// the diagonal can be below it, so only that band is computed, and the rows stop once their
// minimum reaches the limit (it never drops in the rows below): most candidates are far off.
std::size_t edit_distance(std::string_view a, std::string_view b, std::size_t limit) {
  if (a.size() >= b.size() + limit || b.size() >= a.size() + limit) return limit;
  std::size_t small[64];
  std::vector<std::size_t> large;
  std::size_t* row = small;
  if (b.size() >= std::size(small)) {
    large.resize(b.size() + 1);
    row = large.data();
  }
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = std::min(j, limit);
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t lo = i > limit ? i - limit : 1;
    std::size_t hi = std::min(b.size(), i + limit);
    std::size_t diag = row[lo - 1];
    row[lo - 1] = lo == 1 ? std::min(i, limit) : limit;
    std::size_t least = row[lo - 1];
    for (std::size_t j = lo; j <= hi; ++j) {
      std::size_t up = row[j];
      std::size_t cell = diag + (a[i - 1] == b[j - 1] ? 0 : 1);
      cell = std::min(cell, std::min(up, row[j - 1]) + 1);
      row[j] = std::min(cell, limit);
      least = std::min(least, row[j]);
      diag = up;
    }
    if (hi < b.size()) row[hi + 1] = limit;  // outside this row's band: read as "up" by the next
    if (least >= limit) return limit;
  }
  return row[b.size()];
}

// " (did you mean X?)" for the closest candidate within a typo's reach, else "".
std::string did_you_mean(std::string_view name, const std::vector<std::string>& candidates) {
  std::string best;
  std::size_t best_distance = std::max<std::size_t>(2, name.size() / 4) + 1;
  for (const std::string& c : candidates) {
    std::size_t d = edit_distance(name, c, best_distance);
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  return best.empty() ? "" : " (did you mean " + best + "?)";
}

std::string yaml_key_hint(std::string_view path) {
  // A known leaf under the wrong section ("drain_timeout" at the top) is the likeliest slip.
  for (const Key& k : kKeys)
    if (leaf_of(k.path) == leaf_of(path) && k.path != path)
      return " (did you mean " + std::string(k.path) + "?)";
  std::vector<std::string> siblings;
  for (const Key& k : kKeys) {
    std::string_view section = parent_of(k.path);
    if (section == parent_of(path)) siblings.emplace_back(k.path);
    if (!section.empty() && parent_of(section) == parent_of(path)) siblings.emplace_back(section);
  }
  return did_you_mean(path, siblings);
}

// Every key's EBB_* name, in kKeys' order: built once, as every variable is looked up in it.
const std::vector<std::string>& env_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const Key& k : kKeys) v.push_back(env_name(k.path));
    return v;
  }();
  return names;
}

std::string env_key_hint(std::string_view name) { return did_you_mean(name, env_names()); }

// Digits only: no sign, no hex, no exponent, so "-1" and "1e6" are refused rather than guessed.
bool parse_uint(std::string_view s, std::uint64_t& out) {
  if (s.empty() || !std::all_of(s.begin(), s.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
    return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc{} && end == s.data() + s.size();
}

// Empty on success, else the problem ("expected ..., got ...").
std::string duration_error(std::string_view s, Millis& out) {
  std::string_view body = s.substr(!s.empty() && s[0] == '-' ? 1 : 0);
  std::size_t digits = 0;
  while (digits < body.size() && body[digits] >= '0' && body[digits] <= '9') ++digits;
  std::uint64_t n = 0;
  if (digits == 0 || !parse_uint(body.substr(0, digits), n))
    return "expected " + std::string(kDurationNoun) + ", got " + quote(s);
  std::string_view unit = body.substr(digits);
  std::uint64_t scale = 0;
  if (unit == "ms")
    scale = 1;
  else if (unit == "s")
    scale = 1000;
  else if (unit == "m")
    scale = 60'000;
  else if (unit == "h")
    scale = 3'600'000;
  else if (unit.empty() && n == 0)
    scale = 1;  // a bare 0 needs no unit
  else if (unit.empty())
    return "expected " + std::string(kDurationNoun) + ", got " + quote(s) + " (add a unit)";
  else
    return "expected " + std::string(kDurationNoun) + ", got " + quote(s);
  if (s[0] == '-' && n != 0) return "must not be negative, got " + quote(s);
  if (n > kMaxDuration / scale) return "must be at most 8760h (a year), got " + quote(s);
  out = n * scale;
  return {};
}

bool is_name_char(char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
         ch == '-' || ch == '_';
}

std::string host_port_error(std::string_view s, HostPort& out) {
  const std::string expected = "expected host:port like 127.0.0.1:3000, got " + quote(s);
  std::string host;
  std::string_view port_text;
  if (!s.empty() && s[0] == '[') {
    auto close = s.find(']');
    if (close == std::string_view::npos || close + 1 >= s.size() || s[close + 1] != ':') return expected;
    host = std::string(s.substr(1, close - 1));
    port_text = s.substr(close + 2);
    in6_addr a6;
    if (inet_pton(AF_INET6, host.substr(0, host.find('%')).c_str(), &a6) != 1)
      return "not an IPv6 address: " + quote(host) + " in " + quote(s);
  } else {
    auto colon = s.rfind(':');
    if (colon == std::string_view::npos) return expected;
    host = std::string(s.substr(0, colon));
    port_text = s.substr(colon + 1);
    if (host.find(':') != std::string::npos)
      return "IPv6 addresses go in brackets, like [::1]:8080, got " + quote(s);
    if (host.empty()) host = "0.0.0.0";  // ":8080" means every interface
    if (!std::all_of(host.begin(), host.end(), is_name_char)) return expected;
    in_addr a4;
    bool numeric =
        std::all_of(host.begin(), host.end(), [](char ch) { return ch == '.' || (ch >= '0' && ch <= '9'); });
    if (numeric && inet_pton(AF_INET, host.c_str(), &a4) != 1)
      return "not an IPv4 address: " + quote(host) + " in " + quote(s);
  }
  std::uint64_t port = 0;
  if (!parse_uint(port_text, port)) return expected;
  if (port > 65535) return "port out of range (0-65535) in " + quote(s);
  out.host = std::move(host);
  out.port = static_cast<std::uint16_t>(port);
  return {};
}

template <class E, std::size_t N>
std::string enum_error(const EnumName<E> (&names)[N], std::string_view s, E& out) {
  std::string list;
  for (const auto& n : names) {
    if (n.name == s) {
      out = n.value;
      return {};
    }
    list += (list.empty() ? "" : ", ") + std::string(n.name);
  }
  return "expected one of " + list + ", got " + quote(s);
}

template <class E, std::size_t N>
std::string_view enum_name(const EnumName<E> (&names)[N], E value) {
  for (const auto& n : names)
    if (n.value == value) return n.name;
  return "?";
}

// Sets one field from its text form (YAML scalar or env value); empty on success.
std::string set_field(Field f, std::string_view s) {
  return std::visit(Overloaded{
                        [&](HostPort* p) { return host_port_error(s, *p); },
                        [&](std::string* p) {
                          *p = std::string(s);
                          return std::string();
                        },
                        [&](DurationRef d) { return duration_error(s, *d.p); },
                        [&](SizeRef z) {
                          if (!s.empty() && s[0] == '-') return "must not be negative, got " + quote(s);
                          return parse_uint(s, *z.p) ? std::string()
                                                     : "expected a non-negative integer, got " + quote(s);
                        },
                        [&](std::uint32_t* p) {
                          std::uint64_t n = 0;
                          if (!s.empty() && s[0] == '-') return "must not be negative, got " + quote(s);
                          if (!parse_uint(s, n)) return "expected a non-negative integer, got " + quote(s);
                          if (n > std::numeric_limits<std::uint32_t>::max())
                            return "must be at most 4294967295, got " + quote(s);
                          *p = static_cast<std::uint32_t>(n);
                          return std::string();
                        },
                        [&](bool* p) {
                          if (s != "true" && s != "false") return "expected true or false, got " + quote(s);
                          *p = s == "true";
                          return std::string();
                        },
                        [&](UpstreamCheck* p) { return enum_error(kChecks, s, *p); },
                        [&](LogFormat* p) { return enum_error(kFormats, s, *p); },
                        [&](LogLevel* p) { return enum_error(kLevels, s, *p); },
                        [&](ConcurrencyLimit* p) {
                          if (s == "auto") {
                            *p = ConcurrencyLimit{true, 0};
                            return std::string();
                          }
                          std::uint64_t n = 0;
                          if (!parse_uint(s, n))
                            return "expected a non-negative integer (0 = unlimited) or auto, got " + quote(s);
                          if (n > kMaxConcurrency)
                            return "must be at most " + std::to_string(kMaxConcurrency) + ", got " + quote(s);
                          *p = ConcurrencyLimit{false, static_cast<std::uint32_t>(n)};
                          return std::string();
                        },
                    },
                    f);
}

std::string field_noun(Field f) {
  return std::visit(Overloaded{
                        [](HostPort*) { return std::string("host:port"); },
                        [](std::string*) { return std::string("a string"); },
                        [](DurationRef) { return std::string(kDurationNoun); },
                        [](SizeRef) { return std::string("a non-negative integer"); },
                        [](std::uint32_t*) { return std::string("a non-negative integer"); },
                        [](bool*) { return std::string("true or false"); },
                        [](UpstreamCheck*) { return std::string("one of tcp, http, none"); },
                        [](LogFormat*) { return std::string("one of json, text"); },
                        [](LogLevel*) { return std::string("one of debug, info, warn, error"); },
                        [](ConcurrencyLimit*) { return std::string("a non-negative integer (0 = unlimited) or auto"); },
                    },
                    f);
}

std::string format_field(Field f) {
  return std::visit(
      Overloaded{
          [](HostPort* p) { return p->host.find(':') != std::string::npos ? quote(p->str()) : p->str(); },
          [](std::string* p) { return quote(*p); },
          [](DurationRef d) { return format_duration(*d.p); },
          [](SizeRef z) { return std::to_string(*z.p); },
          [](std::uint32_t* p) { return std::to_string(*p); },
          [](bool* p) { return std::string(*p ? "true" : "false"); },
          [](UpstreamCheck* p) { return std::string(enum_name(kChecks, *p)); },
          [](LogFormat* p) { return std::string(enum_name(kFormats, *p)); },
          [](LogLevel* p) { return std::string(enum_name(kLevels, *p)); },
          [](ConcurrencyLimit* p) { return p->adaptive ? std::string("auto") : std::to_string(p->fixed); },
      },
      f);
}

std::string node_kind(const YAML::Node& n) {
  if (n.IsMap()) return "a map";
  if (n.IsSequence()) return "a list";
  if (n.IsScalar()) return quote(n.Scalar());
  return "nothing";
}

}  // namespace

// POSIX calls, so a directory or an unreadable file gives errno's words.
int read_whole_file(const std::string& path, std::string& out) {
  out.clear();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) {
      out.append(buf, static_cast<std::size_t>(n));
    } else if (n == 0) {
      break;
    } else if (errno != EINTR) {
      int e = errno;
      ::close(fd);
      return e;
    }
  }
  ::close(fd);
  return 0;
}

namespace {

class Loader {
 public:
  explicit Loader(std::string path) : path_(std::move(path)) {
    config_.source = path_.empty() ? "(defaults)" : path_;
  }

  bool load_file() {
    std::string text;
    if (int e = read_whole_file(path_, text); e != 0)
      return fail(path_ + ": cannot read config file: " + std::strerror(e));
    return load_text(text);
  }

  // `path_` names the text in messages (a file, or e.g. a ConfigMap's key).
  bool load_text(const std::string& text) {
    std::vector<YAML::Node> docs;
    try {
      docs = load_all_yaml(text);
    } catch (const YAML::Exception& e) {
      return fail_at(e.mark.line, "YAML syntax error: " + e.msg + ipv6_hint(text, e.mark.line));
    }
    if (docs.size() > 1) return fail_at(docs[1].Mark().line, "expected one YAML document, found a second");
    if (docs.empty() || docs[0].IsNull()) return true;  // an empty file is the defaults
    if (!docs[0].IsMap())
      return fail_at(docs[0].Mark().line,
                     "expected a map of keys at the top level, got " + node_kind(docs[0]));
    return walk(docs[0], "");
  }

  bool apply_env(const std::map<std::string, std::string>& env) {
    for (const auto& [name, value] : env) {
      if (name.rfind("EBB_", 0) != 0) continue;
      // Harness variables share the prefix; they are not config.
      if (name == "EBB_BIN" || name.rfind("EBB_TEST_", 0) == 0 || name.rfind("EBB_ZD_", 0) == 0) continue;
      const Key* key = nullptr;
      for (std::size_t i = 0; i < env_names().size(); ++i)
        if (env_names()[i] == name) key = &kKeys[i];
      if (!key) {
        // Never fatal: a Service named ebb or ebb-* puts its links into every pod's environment.
        if (is_service_link(name, value)) notes_.push_back("env " + name + ": a Kubernetes service link, not a config key");
        else warnings_.push_back("env " + name + ": unknown key" + env_key_hint(name) + "; ignored");
        continue;
      }
      origins_[std::string(key->path)] = {"env " + name, true};
      if (std::string why = set_field(key->field(config_), value); !why.empty()) return blame(key->path, why);
    }
    return true;
  }

  bool validate() {
    const Config& c = config_;
    if (c.listen.port != 0 && c.listen.port == c.admin.listen.port)
      return blame_either(
          "listen", "admin.listen",
          "port " + std::to_string(c.listen.port) + " is used by both listen and admin.listen");
    if (c.upstream.port == 0) return blame("upstream", "port 0 cannot be connected to");
    if (loops_back(c.upstream, c.listen) || loops_back(c.upstream, c.admin.listen))
      return blame("upstream", c.upstream.str() + " is ebb's own listener, not the app");
    for (unsigned char ch : c.admin.drain_token)
      if (ch <= ' ' || ch >= 0x7f)
        return blame("admin.drain_token",
                     "must be printable ASCII without spaces (it travels in an Authorization header)");
    if (c.shutdown.propagation_max < c.shutdown.propagation_delay)
      return blame_either("shutdown.propagation_delay", "shutdown.propagation_max",
                          "shutdown.propagation_max (" + format_duration(c.shutdown.propagation_max) +
                              ") is below shutdown.propagation_delay (" +
                              format_duration(c.shutdown.propagation_delay) + ")");
    if (c.readiness.interval == 0) return blame("readiness.interval", "must be above 0");
    if (c.readiness.failure_threshold == 0) return blame("readiness.failure_threshold", "must be at least 1");
    if (c.readiness.http_path.empty() || c.readiness.http_path[0] != '/')
      return blame("readiness.http_path", "must start with /, got " + quote(c.readiness.http_path));
    for (unsigned char ch : c.readiness.http_path)
      if (ch <= ' ' || ch >= 0x7f)
        return blame("readiness.http_path",
                     "must not contain spaces or control characters, got " + quote(c.readiness.http_path));
    if (c.limits.max_header_bytes == 0) return blame("limits.max_header_bytes", "must be above 0");
    if (c.limits.max_uri_bytes == 0) return blame("limits.max_uri_bytes", "must be above 0");
    if (c.limits.max_connections == 0) return blame("limits.max_connections", "must be above 0");
    if (c.upstream_pool.max_idle > 100000) return blame("upstream_pool.max_idle", "must be at most 100000");
    if (c.upstream_limits.queue_size > kMaxQueueSize)
      return blame("upstream_limits.queue_size", "must be at most " + std::to_string(kMaxQueueSize));
    if (c.upstream_limits.queue_timeout == 0)
      return blame("upstream_limits.queue_timeout", "must be above 0 (queue_size: 0 turns the queue off)");
    if (c.workers == 0) return blame("workers", "0 workers would serve nothing; only 1 is supported");
    if (c.workers > 1)
      return blame("workers", "workers above 1 come with the multi-core work; only 1 is supported");
    return true;
  }

  Config config_;
  std::string error_;
  std::vector<std::string> warnings_;
  std::vector<std::string> notes_;

 private:
  struct Origin {
    std::string where;  // "file:line" or "env EBB_X"
    bool env = false;
  };

  bool fail(std::string message) {
    error_ = std::move(message);
    return false;
  }

  bool fail_at(int line0, const std::string& problem) {
    return fail(path_ + (line0 >= 0 ? ":" + std::to_string(line0 + 1) : "") + ": " + problem);
  }

  // Env errors name the variable, which already spells the key; file errors name both.
  bool blame(std::string_view path, const std::string& problem) {
    auto it = origins_.find(std::string(path));
    if (it == origins_.end()) return fail(config_.source + ": " + std::string(path) + ": " + problem);
    if (it->second.env) return fail(it->second.where + ": " + problem);
    return fail(it->second.where + ": " + std::string(path) + ": " + problem);
  }

  // Two keys conflict: blame the one the user set last (env over file), else the other.
  bool blame_either(std::string_view a, std::string_view b, const std::string& problem) {
    auto ia = origins_.find(std::string(a));
    auto ib = origins_.find(std::string(b));
    if (ib == origins_.end()) return blame(a, problem);
    if (ia == origins_.end() || ib->second.env || !ia->second.env) return blame(b, problem);
    return blame(a, problem);
  }

  static bool loops_back(const HostPort& upstream, const HostPort& listener) {
    if (listener.port == 0 || upstream.port != listener.port) return false;
    const std::string& h = upstream.host;
    return h == listener.host || h == "localhost" || h == "::1" || h == "0.0.0.0" || h == "::" ||
           h.rfind("127.", 0) == 0;
  }

  static std::string ipv6_hint(const std::string& text, int line0) {
    std::size_t pos = 0;
    for (int i = 0; i < line0; ++i) {
      pos = text.find('\n', pos);
      if (pos == std::string::npos) return {};
      ++pos;
    }
    std::string_view line = std::string_view(text).substr(pos, text.find('\n', pos) - pos);
    return line.find("]:") != std::string_view::npos && line.find('[') != std::string_view::npos
               ? " (quote IPv6 addresses: \"[::1]:8080\")"
               : "";
  }

  bool walk(const YAML::Node& map, const std::string& prefix) {
    std::map<std::string, int> seen;  // key -> first line, to refuse duplicates
    for (auto it = map.begin(); it != map.end(); ++it) {
      // Copies, not references: yaml-cpp's operator-> hands out a temporary pair.
      const YAML::Node key = it->first;
      const YAML::Node value = it->second;
      int line0 = key.Mark().line;
      if (!key.IsScalar())
        return fail_at(line0,
                       (prefix.empty() ? "" : prefix + ": ") + "expected a key name, got " + node_kind(key));
      std::string path = prefix.empty() ? key.Scalar() : prefix + "." + key.Scalar();
      // Dotted keys would be a second spelling that duplicate detection cannot see.
      if (key.Scalar().find('.') != std::string::npos)
        return fail_at(line0, path + ": unknown key (sections nest, keys are not dotted)");
      if (auto [first, fresh] = seen.emplace(path, line0 + 1); !fresh)
        return fail_at(line0, path + ": duplicate key (first at line " + std::to_string(first->second) + ")");
      if (const Key* k = find_key(path)) {
        origins_[path] = {path_ + ":" + std::to_string(line0 + 1), false};
        Field f = k->field(config_);
        if (value.IsNull() && std::holds_alternative<std::string*>(f)) {
          std::get<std::string*>(f)->clear();  // "drain_token:" with nothing means no token
          continue;
        }
        if (!value.IsScalar()) {
          // Unquoted "[::1]:8080" is YAML flow-list syntax, hence the hint.
          bool v6 = value.IsSequence() && std::holds_alternative<HostPort*>(f);
          return fail_at(line0, path + ": expected " + field_noun(f) + ", got " + node_kind(value) +
                                    (v6 ? " (quote IPv6 addresses: \"[::1]:8080\")" : ""));
        }
        if (std::string why = set_field(f, value.Scalar()); !why.empty())
          return fail_at(line0, path + ": " + why);
      } else if (is_section(path)) {
        if (value.IsNull()) continue;  // a section whose keys are all commented out
        if (!value.IsMap())
          return fail_at(line0, path + ": expected a map of " + path + ".* keys, got " + node_kind(value));
        if (!walk(value, path)) return false;
      } else {
        return fail_at(line0, path + ": unknown key" + yaml_key_hint(path));
      }
    }
    return true;
  }

  std::string path_;
  std::map<std::string, Origin> origins_;
};

}  // namespace

std::string HostPort::str() const {
  std::string p = std::to_string(port);
  return host.find(':') != std::string::npos ? "[" + host + "]:" + p : host + ":" + p;
}

bool parse_duration(const std::string& s, Millis& out) { return duration_error(s, out).empty(); }

bool parse_host_port(const std::string& s, HostPort& out) { return host_port_error(s, out).empty(); }

std::string format_duration(Millis ms) {
  if (ms == 0) return "0s";
  if (ms % 3'600'000 == 0) return std::to_string(ms / 3'600'000) + "h";
  if (ms % 60'000 == 0) return std::to_string(ms / 60'000) + "m";
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

namespace {
// `text` null: read the file at `label` (none when empty).
ConfigResult load(const std::string& label, const std::string* text, const std::map<std::string, std::string>& env) {
  const std::string& path = label;
  try {
    Loader loader(label);
    bool read = text != nullptr ? loader.load_text(*text) : (label.empty() || loader.load_file());
    bool ok = read && loader.apply_env(env) && loader.validate();
    ConfigResult r;
    if (ok) r.config = std::move(loader.config_);
    else r.error = std::move(loader.error_);
    r.warnings = std::move(loader.warnings_);
    r.notes = std::move(loader.notes_);
    return r;
  } catch (const std::exception& e) {  // YAML::Exception included: none may escape
    return {std::nullopt, (path.empty() ? "(defaults)" : path) + ": " + e.what()};
  } catch (...) {
    return {std::nullopt, (path.empty() ? "(defaults)" : path) + ": unexpected error while loading"};
  }
}
}  // namespace

ConfigResult load_config(const std::string& path, const std::map<std::string, std::string>& env) {
  return load(path, nullptr, env);
}

ConfigResult parse_config(const std::string& label, const std::string& text,
                          const std::map<std::string, std::string>& env) {
  return load(label, &text, env);
}

namespace {

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
}

bool is_ip(std::string_view s) {
  std::string text(s);
  in_addr a4;
  in6_addr a6;
  return inet_pton(AF_INET, text.c_str(), &a4) == 1 || inet_pton(AF_INET6, text.c_str(), &a6) == 1;
}

bool is_proto(std::string_view s, bool upper) {
  for (std::string_view p : {"tcp", "udp", "sctp"}) {
    if (s.size() != p.size()) continue;
    bool same = true;
    for (size_t i = 0; i < s.size(); ++i) same &= s[i] == (upper ? static_cast<char>(p[i] - 32) : p[i]);
    if (same) return true;
  }
  return false;
}

// "tcp://10.96.0.12:80" or "tcp://[fd00::1]:80"
bool is_link_url(std::string_view v) {
  auto sep = v.find("://");
  if (sep == std::string_view::npos || !is_proto(v.substr(0, sep), false)) return false;
  std::string_view rest = v.substr(sep + 3);
  auto colon = rest.rfind(':');
  if (colon == std::string_view::npos || !all_digits(rest.substr(colon + 1))) return false;
  std::string_view host = rest.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return is_ip(host);
}

}  // namespace

bool is_service_link(std::string_view name, std::string_view value) {
  // Kubernetes (pkg/kubelet/envvars): for a Service "ebb-metrics" with port 9901/TCP named "http":
  // EBB_METRICS_SERVICE_HOST, EBB_METRICS_SERVICE_PORT, EBB_METRICS_SERVICE_PORT_HTTP,
  // EBB_METRICS_PORT, EBB_METRICS_PORT_9901_TCP, and that plus _PROTO, _PORT, _ADDR.
  // The value is checked too, so a misspelt key such as EBB_ADMIN_PORT=9902 is still reported.
  if (name.rfind("EBB", 0) != 0) return false;
  auto ends = [&](std::string_view suffix) {
    return name.size() >= suffix.size() && name.substr(name.size() - suffix.size()) == suffix;
  };
  if (ends("_SERVICE_HOST")) return is_ip(value);
  if (ends("_SERVICE_PORT")) return all_digits(value);
  if (auto at = name.find("_SERVICE_PORT_"); at != std::string_view::npos) return all_digits(value);
  if (ends("_PORT") && name.find("_PORT_") == std::string_view::npos) return is_link_url(value);
  // ..._PORT_<n>_<PROTO>[_PROTO|_PORT|_ADDR]: the last "_PORT_<digits>_" of the name.
  for (auto at = name.rfind("_PORT_"); at != std::string_view::npos && at > 0; at = name.rfind("_PORT_", at - 1)) {
    std::string_view rest = name.substr(at + 6);
    auto us = rest.find('_');
    if (us == std::string_view::npos || !all_digits(rest.substr(0, us))) continue;
    std::string_view tail = rest.substr(us + 1);
    auto us2 = tail.find('_');
    std::string_view proto = tail.substr(0, us2);
    if (!is_proto(proto, true)) continue;
    std::string_view field = us2 == std::string_view::npos ? std::string_view{} : tail.substr(us2 + 1);
    if (field.empty()) return is_link_url(value);
    if (field == "PROTO") return is_proto(value, false);
    if (field == "PORT") return all_digits(value);
    if (field == "ADDR") return is_ip(value);
    return false;
  }
  return false;
}

std::string describe_source(const Config& c) {
  return c.source.empty() || c.source == "(defaults)" ? std::string("built-in defaults") : c.source;
}

std::map<std::string, std::string> ebb_environment() {
  std::map<std::string, std::string> env;
  for (char** e = environ; e && *e; ++e) {
    std::string_view entry(*e);
    auto eq = entry.find('=');
    if (entry.rfind("EBB_", 0) == 0 && eq != std::string_view::npos)
      env.emplace(entry.substr(0, eq), entry.substr(eq + 1));
  }
  return env;
}

std::string dump_config(const Config& c) {
  Config copy = c;  // the registry hands out mutable fields
  std::string out = "# ebb effective config: " + describe_source(c) + " with EBB_* overrides applied\n";
  std::string_view section;
  for (const Key& k : kKeys) {
    std::string_view parent = parent_of(k.path);
    if (parent != section && !parent.empty()) out += std::string(parent) + ":\n";
    section = parent;
    std::string indent = parent.empty() ? "" : "  ";
    std::string value = format_field(k.field(copy));
    if (k.path == "admin.drain_token" && !c.admin.drain_token.empty()) {
      out += indent + "# drain_token is set and hidden: put the real token here to reuse this file\n";
      value = quote("***");
    }
    out += indent + std::string(leaf_of(k.path)) + ": " + value + "\n";
  }
  return out;
}

}  // namespace ebb
