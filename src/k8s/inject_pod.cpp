// The pieces of a pod that `ebb inject` writes or edits (see inject_pod.hpp).
#include "k8s/inject_pod.hpp"

#include <cctype>
#include <cstdio>

#include "http/writer.hpp"
#include "k8s/manifest_io.hpp"
#include "k8s/rules.hpp"
#include "k8s/yaml_out.hpp"

namespace ebb::k8s::pod {

std::string percent_encode(const std::string& s) {
  return http::percent_encode(s, [](unsigned char c) {
    return std::isalnum(c) != 0 || c == '-' || c == '_' || c == '.' || c == '~';
  });
}

std::optional<int> env_port(const YAML::Node& container, const char* name) {
  for (const auto& e : seq_at(container, "env")) {
    if (str_at(e, "name") != name) continue;
    HostPort hp;
    if (parse_host_port(str_at(e, "value").value_or(""), hp)) return hp.port;
  }
  return std::nullopt;
}

std::optional<std::string> env_value(const YAML::Node& container, const char* name) {
  for (const auto& e : seq_at(container, "env")) {
    if (str_at(e, "name") == name) return str_at(e, "value");
  }
  return std::nullopt;
}

YAML::Node env_item(const char* name, const std::string& value) {
  YAML::Node e = flow_map();
  e["name"] = name;
  e["value"] = str_node(value);
  return e;
}

YAML::Node probe(const char* path, int period, int threshold) {
  YAML::Node p;
  YAML::Node get = flow_map();
  get["path"] = path;
  get["port"] = kAdminName;
  p["httpGet"] = get;
  p["periodSeconds"] = period;
  p["failureThreshold"] = threshold;
  return p;
}

YAML::Node ebb_container(const InjectOptions& opts, const Config& c, int listen,
                         const std::string& listen_name, int admin, int app_port,
                         const std::string& token) {
  YAML::Node e;
  e["name"] = "ebb";
  e["image"] = opts.image;
  if (opts.native) e["restartPolicy"] = "Always";  // a sidecar, not a run-once init step
  YAML::Node env(YAML::NodeType::Sequence);
  env.push_back(env_item("EBB_LISTEN", "0.0.0.0:" + std::to_string(listen)));
  env.push_back(env_item("EBB_UPSTREAM", "127.0.0.1:" + std::to_string(app_port)));
  env.push_back(env_item("EBB_ADMIN_LISTEN", "0.0.0.0:" + std::to_string(admin)));
  env.push_back(env_item("EBB_ADMIN_DRAIN_TOKEN", token));
  env.push_back(env_item("EBB_SHUTDOWN_PROPAGATION_DELAY", format_duration(c.shutdown.propagation_delay)));
  env.push_back(env_item("EBB_SHUTDOWN_PROPAGATION_MAX", format_duration(c.shutdown.propagation_max)));
  env.push_back(env_item("EBB_SHUTDOWN_DRAIN_TIMEOUT", format_duration(c.shutdown.drain_timeout)));
  e["env"] = env;
  YAML::Node ports(YAML::NodeType::Sequence);
  for (auto [name, port] : {std::pair{listen_name.c_str(), listen}, std::pair{kAdminName, admin}}) {
    YAML::Node p = flow_map();
    p["name"] = name;
    p["containerPort"] = port;
    ports.push_back(p);
  }
  e["ports"] = ports;
  // 1s x 1 notices the drain's 503 well within any propagation delay of a second or more.
  e["readinessProbe"] = probe("/readyz", 1, 1);
  e["livenessProbe"] = probe("/healthz", 10, 3);
  YAML::Node res;
  YAML::Node req = flow_map();
  req["cpu"] = "50m";
  req["memory"] = "16Mi";
  res["requests"] = req;
  YAML::Node lim = flow_map();
  lim["memory"] = "128Mi";
  res["limits"] = lim;
  e["resources"] = res;
  YAML::Node sc;  // fits a `restricted` Pod Security namespace
  sc["runAsNonRoot"] = true;
  sc["runAsUser"] = 65532;
  sc["allowPrivilegeEscalation"] = false;
  sc["readOnlyRootFilesystem"] = true;
  YAML::Node caps = flow_map();
  YAML::Node drop(YAML::NodeType::Sequence);
  drop.SetStyle(YAML::EmitterStyle::Flow);
  drop.push_back("ALL");
  caps["drop"] = drop;
  sc["capabilities"] = caps;
  YAML::Node seccomp = flow_map();
  seccomp["type"] = "RuntimeDefault";
  sc["seccompProfile"] = seccomp;
  e["securityContext"] = sc;
  return e;
}

// "http" -> "app-http": the app's port keeps a name of its own (at most 15 characters, the
// limit of a port name) once ebb has taken over its old one.
std::string app_name_for(const std::string& name) {
  std::string out = ("app-" + name).substr(0, 15);
  while (!out.empty() && out.back() == '-') out.pop_back();
  return out;
}

// The app's probes and hooks that named the port now use its number, since the name moves to
// ebb (a probe port name resolves against the probed container's own ports).
void renumber_port_refs(YAML::Node app, const std::string& name, int port) {
  for (const char* probe : {"readinessProbe", "livenessProbe", "startupProbe"}) {
    for (const char* how : {"httpGet", "tcpSocket"}) {
      YAML::Node h = child(child(app, probe), how);
      if (str_at(h, "port") == name) app[probe][how]["port"] = port;
    }
  }
  for (const char* hook : {"postStart", "preStop"}) {
    for (const char* how : {"httpGet", "tcpSocket"}) {
      YAML::Node h = child(child(child(app, "lifecycle"), hook), how);
      if (str_at(h, "port") == name) app["lifecycle"][hook][how]["port"] = port;
    }
  }
}

bool path_only_is_drain(const YAML::Node& pre) {
  return k8s::path_only(str_at(child(pre, "httpGet"), "path").value_or("")) == "/drain";
}

bool is_sleep_hook(const YAML::Node& pre) {
  if (child(pre, "sleep").IsDefined()) return true;
  for (const auto& w : seq_at(child(pre, "exec"), "command")) {
    if (w.IsScalar() && (w.Scalar() == "sleep" || w.Scalar().find("sleep ") != std::string::npos)) {
      return true;
    }
  }
  return false;
}

// The rollout strategy that never takes a pod away before its replacement is ready.
void set_strategy(const std::string& kind, YAML::Node spec, const std::string& where,
                  std::vector<std::string>& notes) {
  auto no_unavailable = [](YAML::Node ru) {
    if (k8s::int_of(child(ru, "maxUnavailable")) != 0) ru["maxUnavailable"] = 0;
    YAML::Node surge = child(ru, "maxSurge");
    if (!surge.IsDefined() || k8s::int_of(surge) == 0) ru["maxSurge"] = 1;
  };
  if (kind == "Deployment") {
    YAML::Node strategy = spec["strategy"];
    if (str_at(strategy, "type") == "Recreate") {
      strategy["type"] = "RollingUpdate";
      notes.push_back(where + ": Recreate strategy replaced by RollingUpdate");
    }
    no_unavailable(strategy["rollingUpdate"]);
  } else if (kind == "Rollout") {
    YAML::Node canary = child(child(spec, "strategy"), "canary");
    if (canary.IsMap()) no_unavailable(spec["strategy"]["canary"]);
  } else if (kind == "StatefulSet") {
    notes.push_back(where + ": StatefulSet strategy left as is (it replaces one pod at a time, "
                            "and the API rejects maxUnavailable 0); ebb drains each pod");
  }
}

}  // namespace ebb::k8s::pod
