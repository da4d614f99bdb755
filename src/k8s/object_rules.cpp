// Internal to check-k8s: the rules about whole objects rather than one pod spec: the rollout
// strategy of a workload that runs ebb, and Services that select such a workload but send traffic
// to the app's port, around ebb.
#include "k8s/rules.hpp"

namespace ebb::k8s {
namespace {

// "25%" -> 25, 2 -> 2; nullopt when it is neither.
std::optional<long long> int_or_percent(const YAML::Node& v) {
  if (auto n = int_of(v)) return n;
  if (!v.IsScalar() || !v.Scalar().ends_with("%")) return std::nullopt;
  YAML::Node digits(v.Scalar().substr(0, v.Scalar().size() - 1));
  return int_of(digits);
}

// The container (app or ebb) that declares `port` by number or name; port -1 when none does.
struct PortOwner {
  int port = -1;
  std::string container;
  bool is_ebb = false;
};

PortOwner find_port(const Workload& w, const YAML::Node& target) {
  std::vector<std::pair<YAML::Node, bool>> all;
  all.emplace_back(w.ebb.node, true);
  auto apps = seq_at(w.pod.spec, "containers");
  for (std::size_t i = 0; i < apps.size(); ++i) {
    if (!(w.ebb.list == "containers" && i == w.ebb.index)) all.emplace_back(apps[i], false);
  }
  auto by_number = int_of(target);
  for (const auto& [c, is_ebb] : all) {
    for (const auto& p : seq_at(c, "ports")) {
      auto cp = int_at(p, "containerPort");
      bool hit = by_number ? cp == by_number : str_at(p, "name") == target.Scalar();
      if (hit && cp) {
        return PortOwner{static_cast<int>(*cp), str_at(c, "name").value_or(""), is_ebb};
      }
    }
  }
  return PortOwner{by_number ? static_cast<int>(*by_number) : -1, "", false};
}

bool selects(const std::map<std::string, std::string>& selector, const Workload& w) {
  for (const auto& [k, v] : selector) {
    auto it = w.labels.find(k);
    if (it == w.labels.end() || it->second != v) return false;
  }
  return true;
}

}  // namespace

std::map<std::string, std::string> string_map(const YAML::Node& n) {
  std::map<std::string, std::string> out;
  if (!n.IsMap()) return out;
  for (const auto& kv : n) {
    if (kv.first.IsScalar() && kv.second.IsScalar()) out[kv.first.Scalar()] = kv.second.Scalar();
  }
  return out;
}

std::string meta(const YAML::Node& obj, const char* key) {
  return str_at(child(obj, "metadata"), key).value_or("");
}

bool same_namespace(const std::string& a, const std::string& b) {
  return a.empty() || b.empty() || a == b;
}

void check_rollout(const Workload& w, std::vector<Finding>& out) {
  bool deployment = w.kind == "Deployment";
  const char* strategy_key = deployment ? "strategy" : "updateStrategy";
  YAML::Node strategy = child(child(w.object, "spec"), strategy_key);
  std::string spath = std::string("spec.") + strategy_key;
  auto add = [&](const std::string& path, const std::string& msg) {
    out.push_back(Finding{w.file, w.kind, w.name, "", path, msg, "warning", "max-unavailable"});
  };
  if (deployment && str_at(strategy, "type") == "Recreate") {
    add(spath + ".type", "the Recreate strategy stops every old pod before a new one is ready: "
                         "use RollingUpdate with maxSurge: 1, maxUnavailable: 0");
    return;
  }
  YAML::Node mu = child(child(strategy, "rollingUpdate"), "maxUnavailable");
  std::string mpath = spath + ".rollingUpdate.maxUnavailable";
  if (!mu.IsDefined()) {
    // Only a Deployment's default (25%) takes pods away before their replacements are ready;
    // StatefulSets and DaemonSets replace pod by pod, which ebb's drain covers.
    if (deployment) {
      add(mpath, "absent, so it defaults to 25%: the rollout takes pods out of service before "
                 "their replacements are ready; set maxUnavailable: 0 with maxSurge: 1");
    }
    return;
  }
  auto n = int_or_percent(mu);
  if (n && *n > 0) {
    add(mpath, "maxUnavailable " + mu.Scalar() +
                   " takes pods out of service before their replacements are ready; set it to 0");
  }
}

void check_service(const std::string& file, const YAML::Node& svc,
                   const std::vector<Workload>& workloads, std::vector<Finding>& out) {
  auto selector = string_map(child(child(svc, "spec"), "selector"));
  if (selector.empty()) return;  // no selector: endpoints are managed by hand
  std::string name = meta(svc, "name");
  auto ports = seq_at(child(svc, "spec"), "ports");
  for (const auto& w : workloads) {
    if (!same_namespace(meta(svc, "namespace"), w.ns) || !selects(selector, w)) continue;
    for (std::size_t j = 0; j < ports.size(); ++j) {
      YAML::Node target = child(ports[j], "targetPort");
      bool absent = !target.IsScalar();
      if (absent) target = child(ports[j], "port");  // the API's default
      if (!target.IsScalar()) continue;
      PortOwner owner = find_port(w, target);
      // ebb's own ports are fine (a metrics port may well target the admin listener).
      if (owner.port < 0 || owner.is_ebb || owner.port == w.settings.listen_port) continue;
      if (owner.container.empty() && owner.port != w.settings.upstream_port) continue;
      std::string shown = target.Scalar() + (absent ? " (absent: the port)" : "");
      out.push_back(Finding{
          file, "Service", name, owner.container,
          "spec.ports[" + std::to_string(j) + "].targetPort",
          "targetPort " + shown + " sends traffic straight to the app in " + w.kind + "/" +
              w.name + ", around ebb, so nothing drains it; target ebb's listen port " +
              std::to_string(w.settings.listen_port),
          "error", "service-target"});
    }
  }
}

}  // namespace ebb::k8s
