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

bool runs_sleep(const std::string& line) {
  static const std::regex re(R"((^|[\s;&|/(])sleep(\s|$))");
  return std::regex_search(line, re);
}

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

bool declares_port(const YAML::Node& c, int port) {
  for (const auto& p : seq_at(c, "ports")) {
    if (int_at(p, "containerPort") == port) return true;
  }
  return false;
}

// A port name declared by ebb and by an app container: a Service's `targetPort: <name>` and the
// endpoints controller take the first container that declares it, which may be the app's.
void check_port_names(const PodContext& pod, const EbbContainer& ebb, Emitter& e) {
  std::map<std::string, std::size_t> ebb_names;
  auto ebb_ports = seq_at(ebb.node, "ports");
  for (std::size_t j = 0; j < ebb_ports.size(); ++j) {
    if (auto n = str_at(ebb_ports[j], "name")) ebb_names[*n] = j;
  }
  auto apps = seq_at(pod.spec, "containers");
  for (std::size_t i = 0; i < apps.size(); ++i) {
    if (ebb.list == "containers" && i == ebb.index) continue;
    auto ports = seq_at(apps[i], "ports");
    for (std::size_t j = 0; j < ports.size(); ++j) {
      auto n = str_at(ports[j], "name");
      if (!n || !ebb_names.count(*n)) continue;
      e.add(str_at(apps[i], "name").value_or(""),
            item_path(pod.spec_path, "containers", i) + ".ports[" + std::to_string(j) + "].name",
            "port-name-shared", "error",
            "port name \"" + *n + "\" is also one of ebb's ports: a Service's targetPort: " + *n +
                " can resolve to this container's port " +
                std::to_string(int_at(ports[j], "containerPort").value_or(0)) +
                ", around ebb; give ebb's and the app's ports different names");
    }
  }
}

}  // namespace

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

std::string path_only(const std::string& p) {
  // Every kubelet puts one "/" before a path that lacks it (old ones always add one, so
  // "/drain" arrives as "//drain", which ebb takes as "/drain").
  std::string path = p.substr(0, p.find('?'));
  return "/" + path.substr(std::min(path.find_first_not_of('/'), path.size()));
}

std::string item_path(const std::string& base, const std::string& list, std::size_t i) {
  return base + "." + list + "[" + std::to_string(i) + "]";
}

EbbSettings settings_from(const Config& c) {
  EbbSettings s;
  s.listen_port = c.listen.port;
  s.admin_port = c.admin.listen.port;
  s.upstream_port = c.upstream.port;
  const std::string& h = c.upstream.host;
  s.upstream_in_pod = h == "localhost" || h == "::1" || h.rfind("127.", 0) == 0;
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

bool is_batch(const std::string& kind) { return kind == "Job" || kind == "CronJob"; }

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
  if (is_batch(pod.kind) && !ebb.native) {
    e.add(ebb.name, ebb_path, "job-sidecar", "error",
          "ebb as a classic sidecar in a " + pod.kind + " never exits, so the Job never "
          "completes; run it as a native sidecar (initContainers with restartPolicy: Always, "
          "Kubernetes 1.28+ with the SidecarContainers gate, on by default from 1.29), which "
          "the kubelet stops once the app has finished");
  }
  check_grace(pod, ebb, s, e);
  check_readiness(ebb, ebb_path, s, e);
  check_liveness(ebb.node, ebb.name, ebb_path, true, s, e);
  check_prestop_sleep(ebb.node, ebb.name, ebb_path, s, e);
  check_port_names(pod, ebb, e);
  auto apps = seq_at(pod.spec, "containers");
  // The app is the container that ebb forwards to. Other containers (a log shipper, a metrics
  // exporter) get no traffic through ebb and need no drain hook.
  bool upstream_declared = false, any_app_port = false;
  for (std::size_t i = 0; i < apps.size(); ++i) {
    if (ebb.list == "containers" && i == ebb.index) continue;
    upstream_declared = upstream_declared || declares_port(apps[i], s.upstream_port);
    any_app_port = any_app_port || !seq_at(apps[i], "ports").empty();
  }
  if (any_app_port && !upstream_declared && s.upstream_in_pod) {
    e.add(ebb.name, pod.spec_path + ".containers", "upstream-port", "error",
          "no app container declares ebb's upstream port " + std::to_string(s.upstream_port) +
              ": ebb's readiness check connects to 127.0.0.1:" +
              std::to_string(s.upstream_port) + " and the pod never becomes ready; set upstream "
              "(EBB_UPSTREAM) to the app's port");
  }
  for (std::size_t i = 0; i < apps.size(); ++i) {
    if (ebb.list == "containers" && i == ebb.index) continue;
    std::string cname = str_at(apps[i], "name").value_or("");
    std::string cpath = item_path(pod.spec_path, "containers", i);
    check_liveness(apps[i], cname, cpath, false, s, e);
    check_prestop_sleep(apps[i], cname, cpath, s, e);
    bool serves = !upstream_declared || declares_port(apps[i], s.upstream_port);
    if (serves) {
      require_app_drain(apps[i], cname, cpath, s, e);
    } else {
      check_app_drain(apps[i], cname, cpath, s, e);  // a hook it has must still be right
    }
  }
}

}  // namespace ebb::k8s
