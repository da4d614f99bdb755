// The config's key registry and value forms (see config_keys.hpp).
#include "config_keys.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <limits>
#include <vector>

namespace ebb {
namespace config_keys {



// Order is the dump's order; a section's keys stay together.
// clang-format off
const Key kKeys[] = {
    {"listen", [](Config& c) -> Field { return &c.listen; }},
    {"upstream", [](Config& c) -> Field { return &c.upstream; }},
    {"upstream_protocol", [](Config& c) -> Field { return &c.upstream_protocol; }},
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
    {"limits.connection_buffer", [](Config& c) -> Field { return SizeRef{&c.limits.connection_buffer}; }},
    {"limits.max_memory", [](Config& c) -> Field { return SizeRef{&c.limits.max_memory}; }},
    {"upstream_pool.max_idle", [](Config& c) -> Field { return &c.upstream_pool.max_idle; }},
    {"upstream_retry.connect_retry_budget", [](Config& c) -> Field { return DurationRef{&c.upstream_retry.connect_retry_budget}; }},
    {"upstream_limits.max_concurrency", [](Config& c) -> Field { return &c.upstream_limits.max_concurrency; }},
    {"upstream_limits.queue_size", [](Config& c) -> Field { return &c.upstream_limits.queue_size; }},
    {"upstream_limits.queue_timeout", [](Config& c) -> Field { return DurationRef{&c.upstream_limits.queue_timeout}; }},
    {"probes.on_proxy_listener", [](Config& c) -> Field { return &c.probes.on_proxy_listener; }},
    {"http2.max_connection_age", [](Config& c) -> Field { return DurationRef{&c.http2.max_connection_age}; }},
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
constexpr EnumName<UpstreamProtocol> kProtocols[] = {{"http1", UpstreamProtocol::kHttp1},
                                                     {"h2c", UpstreamProtocol::kH2c}};
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

// Every key's EBB_* name, in keys() order: built once, as every variable is looked up in it.
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
                        [&](UpstreamProtocol* p) { return enum_error(kProtocols, s, *p); },
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
                        [&](WorkerCount* p) {
                          if (s == "auto") {
                            *p = WorkerCount{true, 0};
                            return std::string();
                          }
                          std::uint64_t n = 0;
                          if (!parse_uint(s, n)) return "expected a positive integer or auto, got " + quote(s);
                          if (n == 0) return std::string("0 workers would serve nothing; use 1 or more, or auto");
                          if (n > kMaxWorkers)
                            return "must be at most " + std::to_string(kMaxWorkers) + ", got " + quote(s);
                          *p = WorkerCount{false, static_cast<std::uint32_t>(n)};
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
                        [](UpstreamProtocol*) { return std::string("one of http1, h2c"); },
                        [](LogFormat*) { return std::string("one of json, text"); },
                        [](LogLevel*) { return std::string("one of debug, info, warn, error"); },
                        [](ConcurrencyLimit*) { return std::string("a non-negative integer (0 = unlimited) or auto"); },
                        [](WorkerCount*) { return std::string("a positive integer or auto"); },
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
          [](UpstreamProtocol* p) { return std::string(enum_name(kProtocols, *p)); },
          [](LogFormat* p) { return std::string(enum_name(kFormats, *p)); },
          [](LogLevel* p) { return std::string(enum_name(kLevels, *p)); },
          [](ConcurrencyLimit* p) { return p->adaptive ? std::string("auto") : std::to_string(p->fixed); },
          [](WorkerCount* p) { return p->automatic ? std::string("auto") : std::to_string(p->n); },
      },
      f);
}

std::string node_kind(const YAML::Node& n) {
  if (n.IsMap()) return "a map";
  if (n.IsSequence()) return "a list";
  if (n.IsScalar()) return quote(n.Scalar());
  return "nothing";
}


std::span<const Key> keys() { return kKeys; }

}  // namespace config_keys

using config_keys::duration_error;
using config_keys::host_port_error;

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

}  // namespace ebb
