// `ebb inject`: adds ebb to the Deployments, StatefulSets and Argo Rollouts of a manifest (as a
// classic or native sidecar, with its probes, the app's preStop drain, the grace period and the
// rollout strategy), retargets the Services that pointed at the app, and prints the result.
// Documents it does not change are copied byte for byte, so injecting twice changes nothing.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "config.hpp"

namespace ebb {

struct InjectOptions {
  bool native = false;  // an initContainers entry with restartPolicy: Always (Kubernetes 1.29+)
  std::string image;    // ebb's image reference
  // Used when the input has no admin.drain_token; empty: inject_manifests draws a random one.
  std::string generated_token;
};

struct InjectResult {
  std::string output;
  std::vector<std::string> notes;  // what was changed or left alone, and why (stderr)
  std::string error;               // non-empty: the input could not be read (exit 2)
  int injected = 0;                // workloads that run ebb in the output
};

// `label` names the input in messages ("-" for stdin). Never throws.
InjectResult inject_manifests(const std::string& text, const std::string& label,
                              const Config& config, const InjectOptions& opts);

// Entry from main: argv[0] is "inject". Writes the manifests to stdout, notes to stderr;
// returns 0, or 2 for a usage error or unreadable input.
int inject_main(int argc, char** argv);

}  // namespace ebb
