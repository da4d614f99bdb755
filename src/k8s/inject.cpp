// `ebb inject` (see inject.hpp): the changes to one workload and to the Services that select it,
// over the documents of the input; yaml_out.cpp writes back the ones that changed.
#include "k8s/inject.hpp"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <set>

#include "k8s/inject_pod.hpp"
#include "k8s/manifest_io.hpp"
#include "k8s/rules.hpp"
#include "k8s/yaml_out.hpp"
#include "yaml_load.hpp"

namespace ebb {
namespace {

using k8s::child;
using k8s::int_at;
using k8s::seq_at;
using k8s::str_at;
using k8s::Chunk;
using k8s::emit;
using k8s::flow_map;
using k8s::str_node;
using namespace k8s::pod;  // NOLINT: the pieces of a pod that inject writes

struct Injected {
  std::string kind, name, ns;
  std::map<std::string, std::string> labels;
  int app_port = 0;
  std::string app_port_name;  // the app's name for that port, which Services may target
  std::string listen_name;    // the name of ebb's listen port
};

// Adds ebb to the pod template of `obj`; nullopt when it is not a kind inject handles.
std::optional<Injected> inject_workload(YAML::Node obj, const Config& c, const InjectOptions& opts,
                                        std::vector<std::string>& notes) {
  std::string kind = str_at(obj, "kind").value_or("");
  bool rollout = kind == "Rollout" &&
                 str_at(obj, "apiVersion").value_or("").rfind("argoproj.io/", 0) == 0;
  Injected r{kind, k8s::meta(obj, "name"), k8s::meta(obj, "namespace"), {}, 0, "", ""};
  std::string where = kind + "/" + r.name;
  if (kind != "Deployment" && kind != "StatefulSet" && !rollout) {
    static const std::set<std::string> workloads = {"DaemonSet", "CronJob", "Job", "Pod",
                                                    "ReplicaSet"};
    if (workloads.count(kind)) notes.push_back(where + ": not injected (inject handles "
                                                "Deployments, StatefulSets and Argo Rollouts)");
    return std::nullopt;
  }
  YAML::Node tmpl = child(child(obj, "spec"), "template");
  YAML::Node spec = child(tmpl, "spec");
  if (!spec.IsMap() || !child(spec, "containers").IsSequence()) {
    notes.push_back(where + ": no pod template with containers; not injected");
    return std::nullopt;
  }
  r.labels = k8s::string_map(child(child(tmpl, "metadata"), "labels"));
  k8s::EbbContainer ebb = k8s::find_ebb_container(spec);

  // The app and its port: what ebb already forwards to, else a declared port of the config's
  // upstream, else the first port the first container declares.
  auto containers = seq_at(spec, "containers");
  int app_port = ebb.found ? env_port(ebb.node, "EBB_UPSTREAM").value_or(0) : 0;
  for (const auto& ct : containers) {
    for (const auto& p : seq_at(ct, "ports")) {
      if (app_port == 0 && int_at(p, "containerPort") == c.upstream.port) app_port = c.upstream.port;
    }
  }
  for (std::size_t i = 0; i < containers.size() && app_port <= 0; ++i) {
    if (ebb.found && ebb.list == "containers" && i == ebb.index) continue;
    auto ports = seq_at(containers[i], "ports");
    if (!ports.empty()) app_port = static_cast<int>(int_at(ports[0], "containerPort").value_or(0));
  }
  if (app_port <= 0) {
    app_port = c.upstream.port;
    notes.push_back(where + ": no container declares a port; ebb forwards to the config's "
                            "upstream port " + std::to_string(app_port));
  }
  r.app_port = app_port;
  std::optional<std::size_t> app_index;
  for (std::size_t i = 0; i < containers.size() && !app_index; ++i) {
    if (ebb.found && ebb.list == "containers" && i == ebb.index) continue;
    for (const auto& p : seq_at(containers[i], "ports")) {
      if (int_at(p, "containerPort") == r.app_port && !app_index) {
        app_index = i;
        r.app_port_name = str_at(p, "name").value_or("");
      }
    }
  }
  if (!app_index) app_index = (ebb.found && ebb.list == "containers" && ebb.index == 0) ? 1 : 0;
  if (*app_index >= containers.size()) {
    notes.push_back(where + ": no app container beside ebb; not injected");
    return std::nullopt;
  }
  YAML::Node app = spec["containers"][*app_index];

  int listen = c.listen.port, admin = c.admin.listen.port;
  std::string token = c.admin.drain_token.empty() ? opts.generated_token : c.admin.drain_token;
  if (ebb.found) {
    listen = env_port(ebb.node, "EBB_LISTEN").value_or(listen);
    admin = env_port(ebb.node, "EBB_ADMIN_LISTEN").value_or(admin);
    token = env_value(ebb.node, "EBB_ADMIN_DRAIN_TOKEN").value_or(c.admin.drain_token);
    r.listen_name = kListenName;
    for (const auto& p : seq_at(ebb.node, "ports")) {
      if (int_at(p, "containerPort") == listen) r.listen_name = str_at(p, "name").value_or(kListenName);
    }
  } else {
    std::set<int> used;
    for (const char* list : {"containers", "initContainers"}) {
      for (const auto& ct : seq_at(spec, list)) {
        for (const auto& p : seq_at(ct, "ports")) used.insert(static_cast<int>(int_at(p, "containerPort").value_or(0)));
      }
    }
    while (used.count(listen)) ++listen;
    used.insert(listen);
    while (used.count(admin)) ++admin;
    // ebb takes over the name of the app's port: every Service that targets that name, in this
    // input or not, then reaches ebb in the new pods and still the app in the old ones, so the
    // rollout itself moves the traffic.
    r.listen_name = kListenName;
    if (!r.app_port_name.empty()) {
      r.listen_name = r.app_port_name;
      std::string renamed = app_name_for(r.app_port_name);
      for (std::size_t j = 0; j < app["ports"].size(); ++j) {
        if (int_at(app["ports"][j], "containerPort") == r.app_port) app["ports"][j]["name"] = renamed;
      }
      renumber_port_refs(app, r.app_port_name, r.app_port);
      notes.push_back(where + ": ebb's listen port takes the name \"" + r.app_port_name +
                      "\" from the app's port (now \"" + renamed + "\"): Services that target " +
                      r.app_port_name + " reach ebb in the new pods and the app in the old ones");
      r.app_port_name = renamed;
    }
    const char* list = opts.native ? "initContainers" : "containers";
    if (!spec[list].IsSequence()) spec[list] = YAML::Node(YAML::NodeType::Sequence);
    spec[list].push_back(ebb_container(opts, c, listen, r.listen_name, admin, r.app_port, token));
    if (c.admin.drain_token.empty()) {
      notes.push_back(where + ": the config has no admin.drain_token; generated one (pass "
                              "--config with admin.drain_token to choose it)");
    }
  }

  // The app's preStop: ebb's drain, waited for, with the token in the path (every kubelet
  // passes the path; kubelets before 1.26 drop httpHeaders).
  YAML::Node pre = child(child(app, "lifecycle"), "preStop");
  bool ours = path_only_is_drain(pre);
  if (!pre.IsDefined() || ours || is_sleep_hook(pre)) {
    if (pre.IsDefined() && !ours) notes.push_back(where + ": the app's preStop sleep replaced by ebb's drain");
    YAML::Node get = flow_map();
    get["port"] = admin;
    get["path"] = str_node("/drain?wait=true" + (token.empty() ? "" : "&token=" + percent_encode(token)));
    YAML::Node hook;
    hook["httpGet"] = get;
    if (!(child(pre, "httpGet").IsMap() && emit(child(pre, "httpGet")) == emit(get))) {
      app["lifecycle"]["preStop"] = hook;
    }
  } else if (!child(pre, "exec").IsDefined() ||
             emit(child(pre, "exec")).find("drain") == std::string::npos) {
    notes.push_back(where + ": the app keeps its own preStop hook; it must call ebb's "
                            "/drain?wait=true before the app stops");
  }

  Millis need = c.shutdown.propagation_max + c.shutdown.drain_timeout + 5000;
  long long need_s = (need + 999) / 1000;
  if (int_at(spec, "terminationGracePeriodSeconds").value_or(30) < need_s ||
      !child(spec, "terminationGracePeriodSeconds").IsDefined()) {
    spec["terminationGracePeriodSeconds"] = need_s;
  }
  set_strategy(rollout ? "Rollout" : kind, obj["spec"], where, notes);
  return r;
}

// A Service that selects an injected pod and targets the app's port now targets ebb's.
void retarget_service(YAML::Node svc, const std::vector<Injected>& injected,
                      std::vector<std::string>& notes) {
  auto selector = k8s::string_map(child(child(svc, "spec"), "selector"));
  if (selector.empty()) return;
  std::string name = "Service/" + k8s::meta(svc, "name");
  for (const auto& w : injected) {
    if (!k8s::same_namespace(k8s::meta(svc, "namespace"), w.ns)) continue;
    bool selects = true;
    for (const auto& [k, v] : selector) {
      auto it = w.labels.find(k);
      selects = selects && it != w.labels.end() && it->second == v;
    }
    if (!selects) continue;
    YAML::Node ports = svc["spec"]["ports"];
    if (!ports.IsSequence()) continue;
    for (std::size_t j = 0; j < ports.size(); ++j) {
      YAML::Node port = ports[j];
      YAML::Node target = child(port, "targetPort");
      if (!target.IsScalar()) target = child(port, "port");
      if (!target.IsScalar()) continue;
      auto number = k8s::int_of(target);
      bool app = number ? *number == w.app_port
                        : !w.app_port_name.empty() && target.Scalar() == w.app_port_name;
      if (!app) continue;
      std::string was = target.Scalar();
      port["targetPort"] = w.listen_name;
      bool both = w.listen_name != kListenName;  // a name the old pods have too (the app's)
      notes.push_back(name + ": spec.ports[" + std::to_string(j) + "].targetPort " + was +
                      " -> " + w.listen_name + " (ebb in " + w.kind + "/" + w.name + ")" +
                      (both ? "; old pods resolve it to the app, new ones to ebb"
                            : "; on a live cluster apply the workloads first and this Service "
                              "once the rollout is done: pods without ebb have no port " +
                                  w.listen_name));
    }
  }
}

// Calls `fn` on every object of a document: the document itself, or the items of a List.
template <typename Fn>
void for_each_object(YAML::Node node, Fn&& fn) {
  if (!node.IsMap()) return;
  YAML::Node items = child(node, "items");
  if (str_at(node, "kind").value_or("").ends_with("List") && items.IsSequence()) {
    for (std::size_t i = 0; i < items.size(); ++i) for_each_object(node["items"][i], fn);
    return;
  }
  fn(node);
}

std::string random_token() {
  unsigned char bytes[16] = {};
  std::ifstream urandom("/dev/urandom", std::ios::binary);
  urandom.read(reinterpret_cast<char*>(bytes), sizeof bytes);
  std::string out;
  char buf[3];
  for (unsigned char b : bytes) {
    std::snprintf(buf, sizeof buf, "%02x", b);
    out += buf;
  }
  return out;
}

const char* kUsage =
    "usage: ebb inject [FILE|-] [--native] [--config FILE] [--image IMAGE]\n"
    "  Adds ebb to the Deployments, StatefulSets and Argo Rollouts of FILE (default: stdin;\n"
    "  multi-document files and `kind: List` too) and writes the manifests to stdout:\n"
    "    ebb inject app.yaml | kubectl apply -f -\n"
    "  ebb's container (ports, probes on the admin port), the app's preStop drain with the\n"
    "  token, terminationGracePeriodSeconds, maxUnavailable: 0, and Services that targeted the\n"
    "  app's port retargeted to ebb. Documents it does not change are copied byte for byte;\n"
    "  injecting its own output changes nothing.\n"
    "  --native        ebb as a native sidecar (initContainers, restartPolicy: Always;\n"
    "                  Kubernetes 1.28+ with the SidecarContainers gate, on by default in 1.29+)\n"
    "  --config FILE   ebb's config: ports, drain token and shutdown timing (default: built-in\n"
    "                  defaults and EBB_* variables; a drain token is generated when none is set)\n"
    "  --image IMAGE   ebb's image (default ghcr.io/your-org/ebb:" EBB_VERSION ")\n"
    "  Notes on what changed go to stderr. Exit 0, or 2 for unreadable input or a usage error.\n";

}  // namespace

InjectResult inject_manifests(const std::string& text, const std::string& label,
                              const Config& config, const InjectOptions& opts) {
  InjectResult result;
  std::vector<Chunk> chunks = k8s::split_documents(text);
  std::size_t line = 0;
  try {
    for (auto& ch : chunks) {
      line += ch.separator.empty() ? 0 : 1;
      try {
        ch.node = load_yaml(ch.text);
        k8s::expand_merge_keys(ch.node);
      } catch (const YAML::Exception& ex) {
        result.error = label + ":" + std::to_string(line + ex.mark.line + 1) + ":" +
                       std::to_string(ex.mark.column + 1) + ": not valid YAML: " + ex.msg;
        return result;
      }
      ch.before = emit(ch.node);
      line += static_cast<std::size_t>(std::count(ch.text.begin(), ch.text.end(), '\n'));
    }
    std::vector<Injected> injected;
    for (auto& ch : chunks) {
      for_each_object(ch.node, [&](YAML::Node obj) {
        if (auto w = inject_workload(obj, config, opts, result.notes)) injected.push_back(*w);
      });
    }
    for (auto& ch : chunks) {
      for_each_object(ch.node, [&](YAML::Node obj) {
        if (str_at(obj, "kind") == "Service") retarget_service(obj, injected, result.notes);
      });
    }
    result.injected = static_cast<int>(injected.size());
    for (const auto& ch : chunks) {
      std::string after = emit(ch.node);
      result.output += ch.separator;
      if (after == ch.before || !ch.node.IsMap()) {
        result.output += ch.text;
      } else {
        result.output += k8s::leading_comments(ch.text) + after;
      }
    }
  } catch (const std::exception& ex) {
    result.error = label + ": cannot inject: " + ex.what();
  }
  return result;
}

int inject_main(int argc, char** argv) {
  std::string input = "-", config_path;
  InjectOptions opts;
  opts.image = std::string("ghcr.io/your-org/ebb:") + EBB_VERSION;
  bool have_input = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::cout << kUsage;
      return 0;
    } else if (a == "--native") {
      opts.native = true;
    } else if ((a == "--config" || a == "--image") && i + 1 < argc) {
      (a == "--config" ? config_path : opts.image) = argv[++i];
    } else if (a.rfind("--config=", 0) == 0) {
      config_path = a.substr(9);
    } else if (a.rfind("--image=", 0) == 0) {
      opts.image = a.substr(8);
    } else if ((a.size() > 1 && a[0] == '-') || have_input) {
      std::cerr << "inject: unknown, incomplete or extra argument " << a << "\n" << kUsage;
      return 2;
    } else {
      input = a;
      have_input = true;
    }
  }
  if (opts.image.empty()) {
    std::cerr << "inject: --image needs an image reference\n";
    return 2;
  }
  ConfigResult cfg = load_config(config_path, ebb_environment());
  if (!cfg.config) {
    std::cerr << "inject: invalid config: " << cfg.error << "\n";
    return 2;
  }
  std::string text, error;
  if (!k8s::read_source(input, text, error)) {
    std::cerr << "inject: " << error << "\n";
    return 2;
  }
  if (cfg.config->admin.drain_token.empty()) opts.generated_token = random_token();
  InjectResult r = inject_manifests(text, input, *cfg.config, opts);
  if (!r.error.empty()) {
    std::cerr << "inject: " << r.error << "\n";
    return 2;
  }
  std::cout << r.output;
  for (const auto& n : r.notes) std::cerr << "inject: " << n << "\n";
  if (r.injected == 0) std::cerr << "inject: no Deployment, StatefulSet or Rollout in the input\n";
  return 0;
}

}  // namespace ebb
