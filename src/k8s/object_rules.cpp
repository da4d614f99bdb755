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

// Resolved as the endpoints controller does: a number is taken as is; a name is the first
// container in the pod (containers in order, then native sidecars) that declares it.
PortOwner find_port(const Workload& w, const YAML::Node& target) {
  auto by_number = int_of(target);
  for (const char* list : {"containers", "initContainers"}) {
    auto items = seq_at(w.pod.spec, list);
    for (std::size_t i = 0; i < items.size(); ++i) {
      bool is_ebb = w.ebb.list == list && i == w.ebb.index;
      if (std::string(list) == "initContainers" && !is_ebb &&
          str_at(items[i], "restartPolicy") != "Always") {
        continue;
      }
      for (const auto& p : seq_at(items[i], "ports")) {
        auto cp = int_at(p, "containerPort");
        bool hit = by_number ? cp == by_number : str_at(p, "name") == target.Scalar();
        if (hit && cp) {
          return PortOwner{static_cast<int>(*cp), str_at(items[i], "name").value_or(""), is_ebb};
        }
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

namespace {

// "25%" of `replicas`, rounded as the controllers round maxUnavailable (down); 2 -> 2.
std::optional<long long> scaled(const YAML::Node& v, long long replicas) {
  auto n = int_or_percent(v);
  if (!n || !v.Scalar().ends_with("%")) return n;
  return *n * replicas / 100;
}

void check_deployment_like(const Workload& w, const YAML::Node& strategy, const std::string& spath,
                           std::vector<Finding>& out) {
  auto add = [&](const std::string& path, const std::string& msg) {
    out.push_back(Finding{w.file, w.kind, w.name, "", path, msg, "warning", "max-unavailable"});
  };
  YAML::Node mu = child(strategy, "maxUnavailable");
  if (!mu.IsDefined()) {
    add(spath + ".maxUnavailable",
        "absent, so it defaults to 25%: the rollout takes pods out of service before their "
        "replacements are ready; set maxUnavailable: 0 with maxSurge: 1");
    return;
  }
  auto n = int_or_percent(mu);
  if (n && *n > 0) {
    add(spath + ".maxUnavailable",
        "maxUnavailable " + mu.Scalar() +
            " takes pods out of service before their replacements are ready; set it to 0 "
            "with maxSurge: 1");
  }
}

}  // namespace

void check_rollout(const Workload& w, std::vector<Finding>& out) {
  YAML::Node spec = child(w.object, "spec");
  auto add = [&](const std::string& path, const std::string& msg) {
    out.push_back(Finding{w.file, w.kind, w.name, "", path, msg, "warning", "max-unavailable"});
  };
  if (w.kind == "Deployment") {
    YAML::Node strategy = child(spec, "strategy");
    if (str_at(strategy, "type") == "Recreate") {
      add("spec.strategy.type", "the Recreate strategy stops every old pod before a new one is "
                                "ready: use RollingUpdate with maxSurge: 1, maxUnavailable: 0");
      return;
    }
    check_deployment_like(w, child(strategy, "rollingUpdate"), "spec.strategy.rollingUpdate", out);
  } else if (w.kind == "Rollout") {
    // Argo Rollouts: canary scales like a Deployment (defaults 25%/25%); blueGreen switches the
    // Service only once the new ReplicaSet is ready, and ebb drains the old pods afterwards.
    YAML::Node canary = child(child(spec, "strategy"), "canary");
    if (canary.IsDefined()) check_deployment_like(w, canary, "spec.strategy.canary", out);
  } else if (w.kind == "StatefulSet") {
    // A StatefulSet replaces pods one at a time, deleting before it creates: the API rejects
    // maxUnavailable 0, and ebb's drain covers the pod that goes. Only more than one at once
    // costs capacity beyond that.
    YAML::Node mu = child(child(child(spec, "updateStrategy"), "rollingUpdate"), "maxUnavailable");
    auto n = scaled(mu, int_at(spec, "replicas").value_or(1));
    if (mu.IsDefined() && n && *n > 1) {
      add("spec.updateStrategy.rollingUpdate.maxUnavailable",
          "maxUnavailable " + mu.Scalar() + " replaces several pods at once; keep 1 (the "
          "default: 0 is rejected by the API) and let ebb drain each pod, use "
          "rollingUpdate.partition for staged rollouts, and a PodDisruptionBudget with "
          "maxUnavailable: 1");
    }
  } else if (w.kind == "DaemonSet") {
    // Each node's pod stops before its replacement is ready unless the update surges; the API
    // accepts maxUnavailable 0 only together with maxSurge > 0 (impossible with a hostPort).
    YAML::Node ru = child(child(spec, "updateStrategy"), "rollingUpdate");
    if (str_at(child(spec, "updateStrategy"), "type") == "OnDelete") return;
    YAML::Node mu = child(ru, "maxUnavailable");
    YAML::Node ms = child(ru, "maxSurge");
    bool surges = ms.IsDefined() && int_or_percent(ms).value_or(0) > 0;
    bool host_port = false;
    for (const auto& c : seq_at(w.pod.spec, "containers")) {
      for (const auto& p : seq_at(c, "ports")) host_port = host_port || child(p, "hostPort").IsDefined();
    }
    if (!surges && !host_port) {
      add("spec.updateStrategy.rollingUpdate",
          std::string("maxUnavailable ") + (mu.IsDefined() ? mu.Scalar() : "1 (the default)") +
              " without maxSurge stops each node's pod before its replacement is ready; set "
              "maxSurge: 1 with maxUnavailable: 0 (the API rejects maxUnavailable 0 while "
              "maxSurge is 0)");
    }
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
      // ebb's own ports are fine (a metrics port may well target the admin listener), and so
      // is any app port other than the one ebb fronts (the app's own metrics, say).
      if (owner.port < 0 || owner.is_ebb || owner.port != w.settings.upstream_port) continue;
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
