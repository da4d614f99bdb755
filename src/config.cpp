// Config loading: one registry row per SPEC §7 key (config_keys.cpp) drives the YAML walk, the EBB_*
// environment overrides and the dump, so adding a key is one row (plus a check in validate() if it
// has limits).
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

#include "config_keys.hpp"
#include "yaml_load.hpp"

extern char** environ;

namespace ebb {

using namespace config_keys;  // NOLINT: the registry and value forms this loader walks

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
      const Key* key = nullptr;
      for (std::size_t i = 0; i < env_names().size(); ++i)
        if (env_names()[i] == name) key = &keys()[i];
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
    // Below 4 KiB reads get small and costly; above 16 MiB one connection could hold what a whole
    // sidecar should (proxy/budget.hpp keeps the same bounds).
    constexpr std::uint64_t kMinConnectionBuffer = 4 * 1024;
    constexpr std::uint64_t kMaxConnectionBuffer = 16 * 1024 * 1024;
    constexpr std::uint64_t kMinMemory = 1024 * 1024;
    if (c.limits.connection_buffer < kMinConnectionBuffer || c.limits.connection_buffer > kMaxConnectionBuffer)
      return blame("limits.connection_buffer", "must be between " + std::to_string(kMinConnectionBuffer) + " and " +
                                                   std::to_string(kMaxConnectionBuffer) + " bytes");
    if (c.limits.max_memory < kMinMemory)
      return blame("limits.max_memory", "must be at least " + std::to_string(kMinMemory) +
                                            " bytes (1 MiB): below that ordinary traffic would be shed");
    if (c.limits.max_memory < 4 * c.limits.connection_buffer)
      return blame_either("limits.max_memory", "limits.connection_buffer",
                          "limits.max_memory (" + std::to_string(c.limits.max_memory) +
                              ") must be at least 4 x limits.connection_buffer (" +
                              std::to_string(c.limits.connection_buffer) + ")");
    if (c.upstream_pool.max_idle > 100000) return blame("upstream_pool.max_idle", "must be at most 100000");
    if (c.upstream_limits.queue_size > kMaxQueueSize)
      return blame("upstream_limits.queue_size", "must be at most " + std::to_string(kMaxQueueSize));
    if (c.upstream_limits.queue_timeout == 0)
      return blame("upstream_limits.queue_timeout", "must be above 0 (queue_size: 0 turns the queue off)");
    // Each worker holds a share of upstream_limits.max_concurrency (worker_group.hpp): one
    // without a slot could never send a request to the app.
    const auto& mc = c.upstream_limits.max_concurrency;
    if (!c.workers.automatic && !mc.adaptive && mc.fixed != 0 && mc.fixed < c.workers.n)
      return blame_either("workers", "upstream_limits.max_concurrency",
                          "workers (" + std::to_string(c.workers.n) + ") must not exceed upstream_limits.max_concurrency (" +
                              std::to_string(mc.fixed) + "): each worker needs at least one slot at the app");
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
    std::string where = path_;
    if (line0 >= 0) where.append(":").append(std::to_string(line0 + 1));
    return fail(where.append(": ").append(problem));
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
  for (const Key& k : keys()) {
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
