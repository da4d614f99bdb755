// Internal to check-k8s: the rules about one pod spec. Each rule is written from what the kubelet
// does at shutdown (preStop hooks, then SIGTERM, SIGKILL at the grace period; probes resolved
// against the probed container's ports) and from what ebb does (SPEC §2, §3).
#include "k8s/rules.hpp"

#include <algorithm>
#include <cctype>
#include <regex>

namespace ebb::k8s {
namespace {

std::string secs(Millis ms) { return format_duration(ms); }

bool is_word_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }

// "ebb" as a whole word: "ebb", "ebb-sidecar", "ghcr.io/acme/ebb:1" but not "webb" or "ebbtide".
bool has_word_ebb(const std::string& s) {
  for (std::size_t p = s.find("ebb"); p != std::string::npos; p = s.find("ebb", p + 1)) {
    bool left = p == 0 || !is_word_char(s[p - 1]);
    bool right = p + 3 >= s.size() || !is_word_char(s[p + 3]);
    if (left && right) return true;
  }
  return false;
}

std::string basename_of(const std::string& s) {
  auto slash = s.rfind('/');
  return slash == std::string::npos ? s : s.substr(slash + 1);
}

// "ghcr.io/acme/ebb:0.1@sha256:..." -> "ebb"
std::string image_base(const std::string& image) {
  std::string s = image.substr(0, image.find('@'));
  s = basename_of(s);
  return s.substr(0, s.find(':'));
}

std::string first_word(const YAML::Node& c, const char* key) {
  auto v = seq_at(c, key);
  if (v.empty() || !v[0].IsScalar()) return "";
  return basename_of(v[0].Scalar());
}

// 2: certainly ebb (image, name or command is exactly ebb); 1: probably ("ebb-proxy"); 0: no.
int ebb_score(const YAML::Node& c) {
  std::string name = str_at(c, "name").value_or("");
  std::string image = str_at(c, "image").value_or("");
  if (name == "ebb" || image_base(image) == "ebb" || first_word(c, "command") == "ebb") return 2;
  if (has_word_ebb(name) || has_word_ebb(image_base(image))) return 1;
  return 0;
}

// The words of an exec hook, joined, so "sh -c 'sleep 5'" and ["sleep", "5"] read alike.
std::string exec_line(const YAML::Node& exec) {
  std::string line;
  for (const auto& w : seq_at(exec, "command")) {
    if (!w.IsScalar()) continue;
    if (!line.empty()) line += ' ';
    line += w.Scalar();
  }
  return line;
}

bool runs_sleep(const std::string& line) {
  static const std::regex re(R"((^|[\s;&|/(])sleep(\s|$))");
  return std::regex_search(line, re);
}

bool runs_ebb_drain(const std::string& line) {
  static const std::regex re(R"((^|[\s;&|/(])ebb\s+drain(\s|$))");
  return std::regex_search(line, re);
}

// The value of `--token T` or `--token=T` in an exec line.
std::optional<std::string> exec_token(const std::string& line) {
  static const std::regex re(R"(--token[= ]+([^\s'"]+))");
  std::smatch m;
  if (std::regex_search(line, m, re)) return m[1].str();
  return std::nullopt;
}

struct Emitter {
  const PodContext& pod;
  std::vector<Finding>& out;
  void add(const std::string& container, const std::string& path, const std::string& rule,
           const std::string& severity, const std::string& message) {
    out.push_back(Finding{pod.file, pod.kind, pod.name, container, path, message, severity, rule});
  }
};

void check_grace(const PodContext& pod, const EbbContainer& ebb, const EbbSettings& s,
                 Emitter& e) {
  auto grace = int_at(pod.spec, "terminationGracePeriodSeconds");
  long long have = grace.value_or(30);  // the API server's default
  Millis need = s.propagation_max + s.drain_timeout + 5000;
  if (have >= 0 && static_cast<Millis>(have) * 1000 >= need) return;
  e.add(ebb.name, pod.spec_path + ".terminationGracePeriodSeconds", "grace-period", "error",
        std::to_string(have) + "s" + (grace ? "" : " (absent: the default)") +
            " is shorter than propagation_max " + secs(s.propagation_max) + " + drain_timeout " +
            secs(s.drain_timeout) + " + 5s margin = " +
            std::to_string((need + 999) / 1000) + "s" +
            ": the kubelet sends SIGKILL while requests are still in flight");
}

void check_readiness(const EbbContainer& ebb, const std::string& cpath, const EbbSettings& s,
                     Emitter& e) {
  YAML::Node probe = child(ebb.node, "readinessProbe");
  std::string ppath = cpath + ".readinessProbe";
  std::string want = "an httpGet of /readyz on the admin port " + std::to_string(s.admin_port);
  if (!probe.IsMap()) {
    e.add(ebb.name, ppath, "readiness-probe", "error",
          "no readiness probe on ebb: the pod stays in the endpoints while ebb drains; want " +
              want);
    return;
  }
  YAML::Node get = child(probe, "httpGet");
  if (!get.IsMap()) {
    e.add(ebb.name, ppath, "readiness-probe", "error",
          "the readiness probe is not an httpGet, so it cannot see ebb's /readyz turn 503 "
          "when the drain starts; want " + want);
    return;
  }
  std::string path = str_at(get, "path").value_or("/");
  if (path_only(path) != "/readyz") {
    e.add(ebb.name, ppath + ".httpGet.path", "readiness-probe", "error",
          "the readiness probe asks \"" + path + "\", not /readyz: it does not follow ebb's "
          "drain; want " + want);
  }
  auto port = resolve_port(child(get, "port"), ebb.node);
  if (!port || *port != s.admin_port) {
    std::string got = child(get, "port").IsScalar() ? child(get, "port").Scalar() : "(none)";
    e.add(ebb.name, ppath + ".httpGet.port", "readiness-probe", "error",
          "the readiness probe port " + got + (port ? "" : " (not a declared port of ebb)") +
              " is not ebb's admin port " + std::to_string(s.admin_port));
  }
  long long period = int_at(probe, "periodSeconds").value_or(10);
  long long threshold = int_at(probe, "failureThreshold").value_or(3);
  if (period > 0 && threshold > 0 &&
      static_cast<Millis>(period * threshold) * 1000 > s.propagation_delay) {
    std::string which = int_at(probe, "periodSeconds") ? "periodSeconds" : "failureThreshold";
    e.add(ebb.name, ppath + "." + which, "readiness-slow", "error",
          "periodSeconds " + std::to_string(period) + " x failureThreshold " +
              std::to_string(threshold) + " = " + std::to_string(period * threshold) +
              "s to notice a drain, longer than propagation_delay " +
              secs(s.propagation_delay) + ": the pod stays routable after ebb closes its listener"
              " (e.g. periodSeconds: 1, failureThreshold: 1)");
  }
}

void check_liveness(const YAML::Node& c, const std::string& cname, const std::string& cpath,
                    bool is_ebb, const EbbSettings& s, Emitter& e) {
  YAML::Node get = child(child(c, "livenessProbe"), "httpGet");
  if (!get.IsMap()) return;
  if (path_only(str_at(get, "path").value_or("/")) != "/readyz") return;
  auto port = resolve_port(child(get, "port"), c);
  // An app's own /readyz on its own port is the app's business; ebb's is not a liveness signal.
  if (!is_ebb && (!port || *port != s.admin_port)) return;
  e.add(cname, cpath + ".livenessProbe.httpGet.path", "liveness-readyz", "error",
        "the liveness probe asks ebb's /readyz, which answers 503 while starting and draining: "
        "the kubelet restarts the container mid-drain and cuts what is in flight; use /healthz");
}

void check_prestop_sleep(const YAML::Node& c, const std::string& cname, const std::string& cpath,
                         const EbbSettings& s, Emitter& e) {
  YAML::Node pre = child(child(c, "lifecycle"), "preStop");
  std::string why = " stacked on ebb's own propagation delay (" + secs(s.propagation_delay) +
                    ", up to " + secs(s.propagation_max) +
                    "): ebb already keeps serving while the endpoints propagate, so the sleep "
                    "only eats the grace period; drop it";
  if (child(pre, "sleep").IsDefined()) {
    e.add(cname, cpath + ".lifecycle.preStop.sleep.seconds", "prestop-sleep", "warning",
          "a preStop sleep" + why);
  } else if (runs_sleep(exec_line(child(pre, "exec")))) {
    e.add(cname, cpath + ".lifecycle.preStop.exec.command", "prestop-sleep", "warning",
          "a preStop exec sleep" + why);
  }
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

void check_drain_token_http(const YAML::Node& get, const std::string& cname,
                            const std::string& hpath, const EbbSettings& s, Emitter& e) {
  using Token = EbbSettings::Token;
  std::size_t hi = 0;
  auto value = bearer_header(get, hi);
  if (s.token_state == Token::kNone) {
    e.add(cname, hpath, "drain-token", "error",
          "ebb has no admin.drain_token, so it accepts /drain only from loopback, and the "
          "kubelet calls from the node's address: the hook gets 403 and the app is signalled at "
          "once (set admin.drain_token, or pass the config that sets it with --config)");
    return;
  }
  if (!value) {
    e.add(cname, hpath + ".httpHeaders", "drain-token", "error",
          "no \"Authorization: Bearer <token>\" header while ebb has admin.drain_token set: "
          "ebb answers 403 and the kubelet signals the app at once");
    return;
  }
  std::string vpath = hpath + ".httpHeaders[" + std::to_string(hi) + "].value";
  if (value->rfind("Bearer ", 0) != 0) {
    e.add(cname, vpath, "drain-token", "error",
          "the Authorization header is not \"Bearer <token>\": ebb answers 403");
  } else if (s.token_state == Token::kKnown && value->substr(7) != s.token) {
    e.add(cname, vpath, "drain-token", "error",
          "the bearer token does not match ebb's admin.drain_token: ebb answers 403 and the "
          "kubelet signals the app at once");
  }
}

void check_app_drain(const YAML::Node& c, const std::string& cname, const std::string& cpath,
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
      return;
    }
    check_drain_token_http(get, cname, ppath + ".httpGet", s, e);
    return;
  }
  std::string line = exec_line(child(pre, "exec"));
  if (runs_ebb_drain(line)) {
    auto tok = exec_token(line);
    if (s.token_state != EbbSettings::Token::kNone && !tok) {
      e.add(cname, ppath + ".exec.command", "drain-token", "error",
            "`ebb drain` without --token while ebb has admin.drain_token set: ebb answers 403");
    } else if (s.token_state == EbbSettings::Token::kKnown && tok && *tok != s.token) {
      e.add(cname, ppath + ".exec.command", "drain-token", "error",
            "`ebb drain --token` does not match ebb's admin.drain_token: ebb answers 403");
    }
    return;
  }
  e.add(cname, ppath, "prestop-drain", "error",
        "no preStop drain: the kubelet signals this app while ebb still forwards to it; add "
        "preStop.httpGet {port: " + std::to_string(s.admin_port) +
            ", path: /drain?wait=true} so the app is signalled only once ebb has drained");
}

}  // namespace

YAML::Node child(const YAML::Node& n, const char* key) {
  // yaml-cpp hands back an "invalid" node for a missing key, whose Type() throws; callers get
  // a plain undefined node instead, so `child(child(a, "b"), "c")` is always safe.
  if (!n.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
  YAML::Node v = n[key];
  if (!v.IsDefined()) return YAML::Node(YAML::NodeType::Undefined);
  return v;
}

std::optional<std::string> str_at(const YAML::Node& n, const char* key) {
  YAML::Node v = child(n, key);
  if (!v.IsScalar()) return std::nullopt;
  return v.Scalar();
}

std::optional<long long> int_of(const YAML::Node& v) {
  if (!v.IsScalar()) return std::nullopt;
  const std::string& s = v.Scalar();
  if (s.empty() || s.size() > 18) return std::nullopt;
  std::size_t i = s[0] == '-' ? 1 : 0;
  if (i == s.size()) return std::nullopt;
  for (std::size_t j = i; j < s.size(); ++j) {
    if (!std::isdigit(static_cast<unsigned char>(s[j]))) return std::nullopt;
  }
  return std::stoll(s);
}

std::optional<long long> int_at(const YAML::Node& n, const char* key) {
  return int_of(child(n, key));
}

std::vector<YAML::Node> seq_at(const YAML::Node& n, const char* key) {
  std::vector<YAML::Node> out;
  YAML::Node v = child(n, key);
  if (!v.IsSequence()) return out;
  for (const auto& item : v) out.push_back(item);
  return out;
}

std::optional<int> resolve_port(const YAML::Node& port, const YAML::Node& container) {
  if (auto n = int_of(port)) return static_cast<int>(*n);
  if (!port.IsScalar()) return std::nullopt;
  for (const auto& p : seq_at(container, "ports")) {
    if (str_at(p, "name") == port.Scalar()) {
      if (auto n = int_at(p, "containerPort")) return static_cast<int>(*n);
    }
  }
  return std::nullopt;
}

std::string path_only(const std::string& p) { return p.substr(0, p.find('?')); }

std::string item_path(const std::string& base, const std::string& list, std::size_t i) {
  return base + "." + list + "[" + std::to_string(i) + "]";
}

EbbSettings settings_from(const Config& c) {
  EbbSettings s;
  s.listen_port = c.listen.port;
  s.admin_port = c.admin.listen.port;
  s.upstream_port = c.upstream.port;
  s.propagation_delay = c.shutdown.propagation_delay;
  s.propagation_max = c.shutdown.propagation_max;
  s.drain_timeout = c.shutdown.drain_timeout;
  s.token = c.admin.drain_token;
  s.token_state = s.token.empty() ? EbbSettings::Token::kNone : EbbSettings::Token::kKnown;
  return s;
}

EbbContainer find_ebb_container(const YAML::Node& pod_spec) {
  EbbContainer best;
  int best_score = 0;
  // Native sidecars first: at equal score the init container is the one that serves traffic.
  for (const char* list : {"initContainers", "containers"}) {
    auto items = seq_at(pod_spec, list);
    for (std::size_t i = 0; i < items.size(); ++i) {
      int score = ebb_score(items[i]);
      if (score <= best_score) continue;
      best_score = score;
      best.found = true;
      best.list = list;
      best.index = i;
      best.node = items[i];
      best.name = str_at(items[i], "name").value_or("");
      bool init = best.list == "initContainers";
      best.native = init && str_at(items[i], "restartPolicy") == "Always";
      best.bad_init = init && !best.native;
    }
  }
  return best;
}

void check_pod(const PodContext& pod, const EbbContainer& ebb, const EbbSettings& s,
               std::vector<Finding>& out) {
  Emitter e{pod, out};
  std::string ebb_path = item_path(pod.spec_path, ebb.list, ebb.index);
  if (ebb.bad_init) {
    e.add(ebb.name, ebb_path + ".restartPolicy", "native-sidecar", "error",
          "ebb is an init container without restartPolicy: Always: it never completes, so the "
          "app never starts; make it a native sidecar or move it to containers");
    return;
  }
  check_grace(pod, ebb, s, e);
  check_readiness(ebb, ebb_path, s, e);
  check_liveness(ebb.node, ebb.name, ebb_path, true, s, e);
  check_prestop_sleep(ebb.node, ebb.name, ebb_path, s, e);
  auto apps = seq_at(pod.spec, "containers");
  for (std::size_t i = 0; i < apps.size(); ++i) {
    if (ebb.list == "containers" && i == ebb.index) continue;
    std::string cname = str_at(apps[i], "name").value_or("");
    std::string cpath = item_path(pod.spec_path, "containers", i);
    check_liveness(apps[i], cname, cpath, false, s, e);
    check_prestop_sleep(apps[i], cname, cpath, s, e);
    check_app_drain(apps[i], cname, cpath, s, e);
  }
}

}  // namespace ebb::k8s
