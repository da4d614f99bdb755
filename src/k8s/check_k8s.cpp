// `ebb check-k8s`: the command line, reading (multi-document) files, finding each workload's ebb
// config, and the report. The rules themselves live in pod_rules.cpp and object_rules.cpp.
#include "k8s/check_k8s.hpp"

#include <cstdio>
#include <iostream>
#include <set>

#include "k8s/manifest_io.hpp"
#include "k8s/rules.hpp"
#include "yaml_load.hpp"

namespace ebb {
namespace {

using k8s::child;
using k8s::meta;
using k8s::same_namespace;
using k8s::seq_at;
using k8s::str_at;
using k8s::string_map;
using k8s::Workload;

struct Doc {
  std::string file;
  YAML::Node node;
};

// `kubectl get -o yaml` prints several objects as one `kind: List` (or `<Kind>List`) with
// `items`; the items are the objects.
void add_objects(const std::string& file, const YAML::Node& node, std::vector<Doc>& docs) {
  if (!node.IsMap()) return;
  YAML::Node items = k8s::child(node, "items");
  if (k8s::str_at(node, "kind").value_or("").ends_with("List") && items.IsSequence()) {
    for (const auto& item : items) add_objects(file, item, docs);
    return;
  }
  docs.push_back(Doc{file, node});
}

bool load_file(const std::string& path, std::vector<Doc>& docs, std::string& error) {
  std::string text;
  if (!k8s::read_source(path, text, error)) return false;
  try {
    for (const auto& node : load_all_yaml(text)) {
      k8s::expand_merge_keys(node);
      add_objects(path, node, docs);
    }
  } catch (const YAML::Exception& ex) {
    error = path + ":" + std::to_string(ex.mark.line + 1) + ":" +
            std::to_string(ex.mark.column + 1) + ": not valid YAML: " + ex.msg;
    return false;
  }
  return true;
}

// The ebb.yaml of the ConfigMap that the ebb container mounts, when that ConfigMap is among the
// files read; lets `check-k8s deployment.yaml configmap.yaml` check the token without --config.
std::optional<std::pair<std::string, std::string>> mounted_config(
    const Workload& w, const std::vector<Doc>& docs) {
  std::map<std::string, std::string> volume_to_cm;
  for (const auto& v : seq_at(w.pod.spec, "volumes")) {
    auto cm = str_at(child(v, "configMap"), "name");
    if (cm) volume_to_cm[str_at(v, "name").value_or("")] = *cm;
  }
  for (const auto& mount : seq_at(w.ebb.node, "volumeMounts")) {
    auto it = volume_to_cm.find(str_at(mount, "name").value_or(""));
    if (it == volume_to_cm.end()) continue;
    for (const auto& d : docs) {
      if (str_at(d.node, "kind") != "ConfigMap" || meta(d.node, "name") != it->second) continue;
      if (!same_namespace(meta(d.node, "namespace"), w.ns)) continue;
      auto data = string_map(child(d.node, "data"));
      for (const auto& [key, text] : data) {
        bool yaml = key.ends_with(".yaml") || key.ends_with(".yml");
        if (key == "ebb.yaml" || (yaml && !data.count("ebb.yaml"))) {
          return std::make_pair("ConfigMap/" + it->second + " key " + key, text);
        }
      }
    }
  }
  return std::nullopt;
}

// The config ebb runs with in this pod: --config, else the mounted ConfigMap, else defaults;
// then the container's literal EBB_* env, then the caller's EBB_* env (the runtime's order).
bool resolve_settings(Workload& w, const CheckOptions& opts, const std::vector<Doc>& docs,
                      CheckResult& result) {
  std::map<std::string, std::string> env;
  bool token_from_secret = false;
  for (const auto& e : seq_at(w.ebb.node, "env")) {
    std::string name = str_at(e, "name").value_or("");
    if (name.rfind("EBB_", 0) != 0) continue;
    if (auto v = str_at(e, "value")) {
      env[name] = *v;
    } else if (name == "EBB_ADMIN_DRAIN_TOKEN" && child(e, "valueFrom").IsDefined()) {
      token_from_secret = true;
    }
  }
  for (const auto& [k, v] : opts.env) env[k] = v;

  ConfigResult cfg;
  std::string where = w.kind + "/" + w.name;
  if (!opts.config_path.empty()) {
    cfg = load_config(opts.config_path, env);
  } else if (auto mounted = mounted_config(w, docs)) {
    cfg = parse_config(mounted->first, mounted->second, env);
  } else {
    cfg = load_config("", env);
    result.notes.push_back(where + ": ebb's config is not among the files; checked against the "
                           "built-in defaults (pass --config FILE)");
  }
  if (!cfg.config) {
    result.error = "ebb config for " + where + ": " + cfg.error;
    return false;
  }
  w.settings = k8s::settings_from(*cfg.config);
  if (token_from_secret && w.settings.token_state == k8s::EbbSettings::Token::kNone) {
    w.settings.token_state = k8s::EbbSettings::Token::kUnknown;
    result.notes.push_back(where + ": EBB_ADMIN_DRAIN_TOKEN comes from a Secret; the hook's "
                           "token is not compared (pass --config or EBB_ADMIN_DRAIN_TOKEN)");
  }
  return true;
}


bool workload_spec(const YAML::Node& obj, const std::string& kind, YAML::Node& spec,
                   std::string& path, YAML::Node& labels) {
  if (kind == "Pod") {
    spec = child(obj, "spec");
    path = "spec";
    labels = child(child(obj, "metadata"), "labels");
    return true;
  }
  if (kind == "CronJob") {
    YAML::Node tmpl = child(child(child(child(obj, "spec"), "jobTemplate"), "spec"), "template");
    spec = child(tmpl, "spec");
    path = "spec.jobTemplate.spec.template.spec";
    labels = child(child(tmpl, "metadata"), "labels");
    return true;
  }
  if (kind == "Deployment" || kind == "StatefulSet" || kind == "DaemonSet" ||
      kind == "ReplicaSet" || kind == "Job" ||
      (kind == "Rollout" && str_at(obj, "apiVersion").value_or("").rfind("argoproj.io/", 0) == 0)) {
    YAML::Node tmpl = child(child(obj, "spec"), "template");
    spec = child(tmpl, "spec");
    path = "spec.template.spec";
    labels = child(child(tmpl, "metadata"), "labels");
    return true;
  }
  return false;
}

// "ReplicaSet/web-7d9f8c6b5" for an object a controller owns (metadata.ownerReferences with
// controller: true), else "".
std::string controller_of(const YAML::Node& obj) {
  for (const auto& ref : seq_at(child(obj, "metadata"), "ownerReferences")) {
    if (str_at(ref, "controller") == "true") {
      return str_at(ref, "kind").value_or("") + "/" + str_at(ref, "name").value_or("");
    }
  }
  return "";
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

const char* kUsage =
    "usage: ebb check-k8s FILE.yaml|DIR|- [...] [--config FILE] [--json]\n"
    "  Reads Deployments, StatefulSets, DaemonSets, Argo Rollouts, Jobs, CronJobs, Pods, Services,\n"
    "  ConfigMaps and `kind: List` (multi-document files, every *.yaml/*.yml/*.json of a\n"
    "  directory, - for stdin) and reports what would drop requests during a rollout with ebb.\n"
    "  --config FILE  ebb's config (default: the ConfigMap ebb mounts, if among the files, else\n"
    "                 the built-in defaults); EBB_* environment variables apply on top\n"
    "  --json         {\"findings\": [...], \"notes\": [...], \"workloads\": N} instead of lines\n"
    "  Exit 0 clean, 1 findings, 2 unreadable file or config.\n";

}  // namespace

CheckResult check_k8s_files(const CheckOptions& opts) {
  CheckResult result;
  try {
    std::vector<Doc> docs;
    std::vector<std::string> files;
    if (!k8s::expand_inputs(opts.files, files, result.error)) return result;
    for (const auto& f : files) {
      if (!load_file(f, docs, result.error)) return result;
    }
    // `kubectl get all -o yaml` lists a Deployment, its ReplicaSets and their Pods: each is
    // checked once, through the owner that is among the objects read.
    std::set<std::string> present;
    for (const auto& d : docs) {
      present.insert(meta(d.node, "namespace") + "|" + str_at(d.node, "kind").value_or("") + "/" +
                     meta(d.node, "name"));
    }
    std::vector<Workload> workloads;
    for (const auto& d : docs) {
      Workload w;
      w.kind = str_at(d.node, "kind").value_or("");
      YAML::Node labels;
      if (!workload_spec(d.node, w.kind, w.pod.spec, w.pod.spec_path, labels)) continue;
      std::string owner = controller_of(d.node);
      if (!owner.empty() && present.count(meta(d.node, "namespace") + "|" + owner)) {
        result.notes.push_back(w.kind + "/" + meta(d.node, "name") + ": checked through its owner " +
                               owner);
        continue;
      }
      if (!w.pod.spec.IsMap()) {
        result.notes.push_back(w.kind + "/" + meta(d.node, "name") +
                               ": no pod template (e.g. a Rollout's workloadRef); not checked");
        continue;
      }
      w.file = d.file;
      w.name = meta(d.node, "name");
      w.ns = meta(d.node, "namespace");
      w.object = d.node;
      w.labels = string_map(labels);
      w.pod.file = d.file;
      w.pod.kind = w.kind;
      w.pod.name = w.name;
      w.ebb = k8s::find_ebb_container(w.pod.spec);
      if (!w.ebb.found) {
        result.notes.push_back(w.kind + "/" + w.name + ": no ebb container; not checked");
        continue;
      }
      if (!resolve_settings(w, opts, docs, result)) return result;
      k8s::check_pod(w.pod, w.ebb, w.settings, result.findings);
      // Jobs and CronJobs have no rolling update: only the pod's rules apply.
      if (!w.ebb.bad_init && w.kind != "Job" && w.kind != "CronJob") {
        k8s::check_rollout(w, result.findings);
      }
      ++result.workloads;
      workloads.push_back(std::move(w));
    }
    for (const auto& d : docs) {
      if (str_at(d.node, "kind") == "Service") k8s::check_service(d.file, d.node, workloads, result.findings);
    }
  } catch (const std::exception& ex) {
    // yaml-cpp throws on shapes the accessors did not foresee; report, never crash.
    result.error = std::string("cannot check: ") + ex.what();
  }
  return result;
}

std::string format_findings_text(const std::vector<Finding>& findings) {
  std::string out;
  for (const auto& f : findings) {
    out += f.file + ": " + f.kind + "/" + f.name;
    if (!f.container.empty()) out += " container " + f.container;
    out += ": " + f.path + ": " + f.message + "\n";
  }
  return out;
}

std::string format_findings_json(const std::vector<Finding>& findings) {
  std::string out = "[";
  for (std::size_t i = 0; i < findings.size(); ++i) {
    const auto& f = findings[i];
    out += i ? ",\n " : "\n ";
    out += "{\"file\":" + json_string(f.file) + ",\"kind\":" + json_string(f.kind) +
           ",\"name\":" + json_string(f.name) + ",\"container\":" + json_string(f.container) +
           ",\"path\":" + json_string(f.path) + ",\"message\":" + json_string(f.message) +
           ",\"severity\":" + json_string(f.severity) + ",\"rule\":" + json_string(f.rule) + "}";
  }
  return out + (findings.empty() ? "]" : "\n]");
}

std::string format_result_json(const CheckResult& r) {
  std::string out = "{\"findings\": " + format_findings_json(r.findings) + ",\n\"notes\": [";
  for (std::size_t i = 0; i < r.notes.size(); ++i) {
    out += (i ? ",\n " : "\n ") + json_string(r.notes[i]);
  }
  out += r.notes.empty() ? "]" : "\n]";
  return out + ",\n\"workloads\": " + std::to_string(r.workloads) + "}\n";
}

int run_check_k8s(const std::vector<std::string>& args,
                  const std::map<std::string, std::string>& env, std::ostream& out) {
  CheckOptions opts;
  opts.env = env;
  bool json = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "-h" || a == "--help") {
      out << kUsage;
      return 0;
    } else if (a == "--json") {
      json = true;
    } else if (a == "--config" && i + 1 < args.size()) {
      opts.config_path = args[++i];
    } else if (a.rfind("--config=", 0) == 0) {
      opts.config_path = a.substr(9);
    } else if (a.size() > 1 && a[0] == '-') {
      out << "check-k8s: unknown or incomplete option " << a << "\n" << kUsage;
      return 2;
    } else {
      opts.files.push_back(a);
    }
  }
  if (opts.files.empty()) {
    out << "check-k8s: no file given\n" << kUsage;
    return 2;
  }
  CheckResult r = check_k8s_files(opts);
  if (!r.error.empty()) {
    out << "check-k8s: " << r.error << "\n";
    return 2;
  }
  if (json) {
    out << format_result_json(r);
  } else {
    for (const auto& n : r.notes) out << "note: " << n << "\n";
    out << format_findings_text(r.findings);
    if (r.findings.empty()) {
      out << "ok: " << r.workloads << " workload(s) with ebb checked, no findings\n";
    } else {
      out << r.findings.size() << " finding(s) in " << r.workloads << " workload(s) with ebb\n";
    }
  }
  return r.findings.empty() ? 0 : 1;
}

int check_k8s_main(int argc, char** argv) {
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  return run_check_k8s(args, ebb_environment(), std::cout);
}

}  // namespace ebb
