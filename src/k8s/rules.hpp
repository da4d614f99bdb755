// Internal to check-k8s: the rules about one pod spec (pod_rules.cpp: which container is ebb, its
// probes, the apps' preStop hooks, the grace period), about whole objects (object_rules.cpp), and
// the YAML accessors they share. Accessors never throw on a wrong shape: they say "absent".
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "config.hpp"
#include "k8s/check_k8s.hpp"

namespace ebb::k8s {

// What the rules need to know of the ebb that runs in this pod.
struct EbbSettings {
  int listen_port = 8080;
  int admin_port = 9901;
  int upstream_port = 3000;
  bool upstream_in_pod = true;  // upstream is on loopback: an app container of this pod
  Millis propagation_delay = 5000;
  Millis propagation_max = 15000;
  Millis drain_timeout = 25000;
  // kUnknown: the pod takes EBB_ADMIN_DRAIN_TOKEN from a Secret and nobody told us its value.
  enum class Token { kNone, kKnown, kUnknown } token_state = Token::kNone;
  std::string token;
};

EbbSettings settings_from(const Config& c);

// Where ebb runs in a pod spec.
struct EbbContainer {
  bool found = false;
  bool native = false;       // an initContainer with restartPolicy: Always
  bool bad_init = false;     // an initContainer that is not a sidecar (never completes)
  std::string list;          // "containers" or "initContainers"
  std::size_t index = 0;
  std::string name;
  YAML::Node node;
};

EbbContainer find_ebb_container(const YAML::Node& pod_spec);

// The object whose pod spec is being checked.
struct PodContext {
  std::string file;
  std::string kind;
  std::string name;
  std::string spec_path;  // "spec.template.spec", or "spec" for a Pod
  YAML::Node spec;
};

void check_pod(const PodContext& pod, const EbbContainer& ebb, const EbbSettings& s,
               std::vector<Finding>& out);

// Adds findings of one pod, in its object's name.
struct Emitter {
  const PodContext& pod;
  std::vector<Finding>& out;
  void add(const std::string& container, const std::string& path, const std::string& rule,
           const std::string& severity, const std::string& message) {
    out.push_back(Finding{pod.file, pod.kind, pod.name, container, path, message, severity, rule});
  }
};

// The drain hooks of an app container (drain_rules.cpp). check_app_drain: true when the
// container has a drain hook of either form (and checks it), false when it has none;
// require_app_drain also reports a missing one.
bool check_app_drain(const YAML::Node& c, const std::string& cname, const std::string& cpath,
                     const EbbSettings& s, Emitter& e);
void require_app_drain(const YAML::Node& c, const std::string& cname, const std::string& cpath,
                       const EbbSettings& s, Emitter& e);

// A workload (Deployment, StatefulSet, DaemonSet, ReplicaSet, Pod) that runs ebb.
struct Workload {
  std::string file, kind, name, ns;
  YAML::Node object;
  std::map<std::string, std::string> labels;  // the pod's labels, which Services select
  PodContext pod;
  EbbContainer ebb;
  EbbSettings settings;
};

// maxUnavailable above 0 (a Deployment's default is 25%), or the Recreate strategy.
void check_rollout(const Workload& w, std::vector<Finding>& out);
// A Service selecting `workloads` whose targetPort is the app's port rather than ebb's.
void check_service(const std::string& file, const YAML::Node& svc,
                   const std::vector<Workload>& workloads, std::vector<Finding>& out);

// --- accessors ---
YAML::Node child(const YAML::Node& n, const char* key);  // undefined node when absent
std::optional<std::string> str_at(const YAML::Node& n, const char* key);
std::optional<long long> int_of(const YAML::Node& n);
std::optional<long long> int_at(const YAML::Node& n, const char* key);
std::vector<YAML::Node> seq_at(const YAML::Node& n, const char* key);
// A probe's or hook's `port` (number or name), resolved against `container`'s declared ports the
// way the kubelet resolves it; nullopt when a name is not declared there.
std::optional<int> resolve_port(const YAML::Node& port, const YAML::Node& container);
std::map<std::string, std::string> string_map(const YAML::Node& n);  // scalar pairs only
std::string meta(const YAML::Node& obj, const char* key);  // metadata.<key>, or ""
// Objects without a namespace land in whatever namespace they are applied to: assume the same.
bool same_namespace(const std::string& a, const std::string& b);
// "/drain?wait=true" -> "/drain"; "drain" and "//drain" -> "/drain", as the kubelet sends them.
std::string path_only(const std::string& p);
// The words of an exec hook's command, joined with spaces.
std::string exec_line(const YAML::Node& exec);
// "spec.template.spec" + "containers" + 1 -> "spec.template.spec.containers[1]"
std::string item_path(const std::string& base, const std::string& list, std::size_t i);

}  // namespace ebb::k8s
