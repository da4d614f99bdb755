// Internal to check-k8s: the app container's drain hook, in either form (preStop httpGet of
// /drain, or exec `ebb drain`): waited for, aimed at ebb's admin port, with a token that matches
// and that reaches ebb on the kubelet versions that run it.
#include <algorithm>
#include <cctype>
#include <regex>

#include "k8s/rules.hpp"

namespace ebb::k8s {
namespace {

bool runs_ebb_drain(const std::string& line) {
  static const std::regex re(R"((^|[\s;&|/(])ebb\s+drain(\s|$))");
  return std::regex_search(line, re);
}

// The value of `--NAME V` or `--NAME=V` in an exec line.
std::optional<std::string> exec_option(const std::string& line, const std::string& name) {
  const std::regex re("--" + name + R"([= ]+([^\s'"]+))");
  std::smatch m;
  if (std::regex_search(line, m, re)) return m[1].str();
  return std::nullopt;
}

bool exec_has_flag(const std::string& line, const char* flag) {
  const std::regex re(std::string(R"((^|\s)--)") + flag + R"((\s|$|=))");
  return std::regex_search(line, re);
}

// "%2B" -> "+": a token in a query string may be percent-encoded.
std::string percent_decode(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += s[i];  // '+' stays '+': not every query parser reads it as a space
    }
  }
  return out;
}

std::optional<std::string> bearer_header(const YAML::Node& get, std::size_t& index) {
  auto headers = seq_at(get, "httpHeaders");
  for (std::size_t i = 0; i < headers.size(); ++i) {
    std::string name = str_at(headers[i], "name").value_or("");
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char ch) { return std::tolower(ch); });
    if (name == "authorization") {
      index = i;
      return str_at(headers[i], "value").value_or("");
    }
  }
  return std::nullopt;
}

// kubelets before 1.26 build the hook's request without httpHeaders (kubernetes#86139, the
// ConsistentHTTPGetHandlers behaviour, GA in 1.26): a token in the header never arrives there.
const char* kHeaderVersions =
    "kubelets before 1.26 drop preStop httpGet.httpHeaders (kubernetes#86139, "
    "ConsistentHTTPGetHandlers), so there the token never arrives, ebb answers 403 and the app "
    "is signalled at once; the header works on kubelet 1.26+ only, a token in the path "
    "(/drain?wait=true&token=<token>) works on every kubelet";

std::map<std::string, std::string> query_params(const std::string& path) {
  std::map<std::string, std::string> out;
  auto q = path.find('?');
  if (q == std::string::npos) return out;
  std::string rest = path.substr(q + 1);
  std::size_t at = 0;
  while (at <= rest.size()) {
    std::size_t amp = rest.find('&', at);
    std::string kv = rest.substr(at, amp == std::string::npos ? std::string::npos : amp - at);
    auto eq = kv.find('=');
    if (!kv.empty()) {
      out[percent_decode(kv.substr(0, eq))] =
          eq == std::string::npos ? "" : percent_decode(kv.substr(eq + 1));
    }
    if (amp == std::string::npos) break;
    at = amp + 1;
  }
  return out;
}

void check_drain_token_http(const YAML::Node& get, const std::string& cname,
                            const std::string& hpath, const EbbSettings& s, Emitter& e) {
  using Token = EbbSettings::Token;
  std::size_t hi = 0;
  auto header = bearer_header(get, hi);
  auto query = query_params(str_at(get, "path").value_or("/"));
  auto qtok = query.count("token") ? std::optional<std::string>(query["token"]) : std::nullopt;
  if (s.token_state == Token::kNone) {
    e.add(cname, hpath, "drain-token", "error",
          "ebb has no admin.drain_token, so it accepts /drain only from loopback, and the "
          "kubelet calls from the node's address: the hook gets 403 and the app is signalled at "
          "once (set admin.drain_token and put it in the hook's path as &token=<token>, or pass "
          "the config that sets it with --config)");
    return;
  }
  if (!header && !qtok) {
    e.add(cname, hpath + ".path", "drain-token", "error",
          "no token while ebb has admin.drain_token set: ebb answers 403 and the kubelet "
          "signals the app at once; use /drain?wait=true&token=<token> (every kubelet)");
    return;
  }
  bool bad = false;
  if (qtok && s.token_state == Token::kKnown && *qtok != s.token) {
    bad = true;
    e.add(cname, hpath + ".path", "drain-token", "error",
          "the token in the path does not match ebb's admin.drain_token: ebb answers 403 and "
          "the kubelet signals the app at once");
  }
  if (!header) return;
  std::string vpath = hpath + ".httpHeaders[" + std::to_string(hi) + "].value";
  if (header->rfind("Bearer ", 0) != 0) {
    e.add(cname, vpath, "drain-token", "error",
          "the Authorization header is not \"Bearer <token>\": ebb answers 403");
    bad = true;
  } else if (s.token_state == Token::kKnown && header->substr(7) != s.token) {
    e.add(cname, vpath, "drain-token", "error",
          "the bearer token does not match ebb's admin.drain_token: ebb answers 403 and the "
          "kubelet signals the app at once");
    bad = true;
  }
  if (!bad && !qtok) {
    e.add(cname, vpath, "drain-token-header", "warning",
          std::string("the token is only in the Authorization header: ") + kHeaderVersions);
  }
}

// The port of "HOST:PORT", "[::1]:PORT" or ":PORT"; nullopt when there is none.
std::optional<int> port_of(const std::string& hostport) {
  auto colon = hostport.rfind(':');
  if (colon == std::string::npos) return std::nullopt;
  YAML::Node digits(hostport.substr(colon + 1));
  auto n = int_of(digits);
  if (!n) return std::nullopt;
  return static_cast<int>(*n);
}

void check_exec_drain(const YAML::Node& c, const std::string& line, const std::string& cname,
                      const std::string& epath, const EbbSettings& s, Emitter& e) {
  if (!exec_has_flag(line, "wait")) {
    e.add(cname, epath, "drain-wait", "error",
          "`ebb drain` without --wait returns as soon as the drain has started: the kubelet then "
          "signals the app while ebb still forwards to it; add --wait");
  }
  std::string want = "127.0.0.1:" + std::to_string(s.admin_port);
  if (auto admin = exec_option(line, "admin")) {
    auto port = port_of(*admin);
    if (!port || *port != s.admin_port) {
      e.add(cname, epath, "prestop-drain", "error",
            "`ebb drain --admin " + *admin + "` is not ebb's admin port " +
                std::to_string(s.admin_port) + ": the drain never starts; use --admin " + want);
    }
  } else if (s.admin_port != 9901) {
    // `ebb drain` in this container reads this container's EBB_ADMIN_LISTEN, not ebb's config.
    std::optional<int> own;
    for (const auto& env : seq_at(c, "env")) {
      if (str_at(env, "name") == "EBB_ADMIN_LISTEN") own = port_of(str_at(env, "value").value_or(""));
    }
    if (own != s.admin_port) {
      e.add(cname, epath, "prestop-drain", "error",
            "`ebb drain` without --admin dials 127.0.0.1:" +
                std::to_string(own.value_or(9901)) + " (this container's EBB_ADMIN_LISTEN or the "
                "default), but ebb's admin listens on " + std::to_string(s.admin_port) +
                ": add --admin " + want);
    }
  }
  auto tok = exec_option(line, "token");
  if (s.token_state != EbbSettings::Token::kNone && !tok) {
    e.add(cname, epath, "drain-token", "error",
          "`ebb drain` without --token while ebb has admin.drain_token set: ebb answers 403");
  } else if (s.token_state == EbbSettings::Token::kKnown && tok && *tok != s.token) {
    e.add(cname, epath, "drain-token", "error",
          "`ebb drain --token` does not match ebb's admin.drain_token: ebb answers 403");
  }
}

}  // namespace

bool check_app_drain(const YAML::Node& c, const std::string& cname, const std::string& cpath,
                     const EbbSettings& s, Emitter& e) {
  YAML::Node pre = child(child(c, "lifecycle"), "preStop");
  YAML::Node get = child(pre, "httpGet");
  std::string ppath = cpath + ".lifecycle.preStop";
  if (get.IsMap() && path_only(str_at(get, "path").value_or("/")) == "/drain") {
    auto port = resolve_port(child(get, "port"), c);
    if (!port || *port != s.admin_port) {
      e.add(cname, ppath + ".httpGet.port", "prestop-drain", "error",
            "the /drain hook does not reach ebb's admin port " + std::to_string(s.admin_port) +
                (port ? "" : " (a port name resolves against this container's own ports)"));
      return true;
    }
    std::string path = str_at(get, "path").value_or("/");
    if (query_params(path)["wait"] != "true") {
      e.add(cname, ppath + ".httpGet.path", "drain-wait", "error",
            "\"" + path + "\" has no ?wait=true: ebb answers 202 as soon as the drain has "
            "started, and the kubelet then signals the app while ebb still forwards to it; use "
            "/drain?wait=true");
    }
    check_drain_token_http(get, cname, ppath + ".httpGet", s, e);
    return true;
  }
  std::string line = exec_line(child(pre, "exec"));
  if (runs_ebb_drain(line)) {
    check_exec_drain(c, line, cname, ppath + ".exec.command", s, e);
    return true;
  }
  return false;
}

void require_app_drain(const YAML::Node& c, const std::string& cname, const std::string& cpath,
                       const EbbSettings& s, Emitter& e) {
  if (check_app_drain(c, cname, cpath, s, e)) return;
  e.add(cname, cpath + ".lifecycle.preStop", "prestop-drain", "error",
        "no preStop drain: the kubelet signals this app while ebb still forwards to it; add "
        "preStop.httpGet {port: " + std::to_string(s.admin_port) +
            ", path: /drain?wait=true&token=<token>} so the app is signalled only once ebb has "
            "drained");
}

}  // namespace ebb::k8s
