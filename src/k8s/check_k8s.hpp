// `ebb check-k8s`: reads Kubernetes manifests and reports the pod timing and wiring that would
// drop requests during a rollout with ebb as a sidecar (SPEC §8). This header is the public face:
// the CLI entry, the finding type, and the library calls the unit tests drive without a process.
#pragma once

#include <iosfwd>
#include <map>
#include <string>
#include <vector>

namespace ebb {

// One problem in one object. `path` is the field path inside the object, e.g.
// "spec.template.spec.containers[1].readinessProbe.httpGet.path"; `container` may be empty when
// the finding is about the object as a whole (the rollout strategy).
struct Finding {
  std::string file;
  std::string kind;  // the object's kind: Deployment, StatefulSet, Rollout, CronJob, Service...
  std::string name;
  std::string container;
  std::string path;
  std::string message;
  std::string severity;  // "error": drops requests; "warning": wastes the grace period or capacity
  std::string rule;      // stable identifier, e.g. "grace-period", for scripts and tests
};

struct CheckOptions {
  // Read together (a Service is matched against every workload): files, directories (their
  // *.yaml, *.yml and *.json, sorted) and "-" for stdin.
  std::vector<std::string> files;
  std::string config_path;         // --config; empty: the ConfigMap ebb mounts, else defaults
  std::map<std::string, std::string> env;  // EBB_* overrides the caller knows (process env)
};

struct CheckResult {
  std::vector<Finding> findings;
  std::vector<std::string> notes;  // what was skipped and why; never changes the exit code
  std::string error;               // non-empty: a file or the config could not be read (exit 2)
  int workloads = 0;               // workloads that run ebb and were checked
};

// Reads and lints. Never throws: YAML errors become `error`.
CheckResult check_k8s_files(const CheckOptions& opts);

// "<file>: <Kind>/<name> container <c>: <path>: <message>", one per line.
std::string format_findings_text(const std::vector<Finding>& findings);
// A JSON array of {file, kind, name, container, path, message, severity, rule}.
std::string format_findings_json(const std::vector<Finding>& findings);
// --json: {"findings": [...], "notes": [...], "workloads": N}.
std::string format_result_json(const CheckResult& r);

// `args` are what follows "check-k8s". Writes the report to `out`, returns the exit code:
// 0 clean, 1 findings, 2 unreadable file or config, or a usage error.
int run_check_k8s(const std::vector<std::string>& args,
                  const std::map<std::string, std::string>& env, std::ostream& out);

// Entry from main: argv[0] is "check-k8s". Prints to stdout, returns the exit code.
int check_k8s_main(int argc, char** argv);

}  // namespace ebb
