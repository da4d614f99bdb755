// The pieces of a pod that `ebb inject` writes or edits: ebb's container (ports, probes on the
// admin port, the drain hook's target), the app container's renamed port and the references to
// it, and the rollout strategy that never takes a pod away before its replacement is ready.
#pragma once

#include <yaml-cpp/yaml.h>

#include <optional>
#include <string>
#include <vector>

#include "config.hpp"
#include "k8s/inject.hpp"

namespace ebb::k8s::pod {

inline constexpr const char* kListenName = "ebb-http";
inline constexpr const char* kAdminName = "ebb-admin";

std::string percent_encode(const std::string& s);
// The value of env variable `name` in a container: the port of a host:port value, or the text.
std::optional<int> env_port(const YAML::Node& container, const char* name);
std::optional<std::string> env_value(const YAML::Node& container, const char* name);
YAML::Node env_item(const char* name, const std::string& value);
// An httpGet probe on ebb's admin port.
YAML::Node probe(const char* path, int period, int threshold);
// ebb's container: its ports, its EBB_* env from ebb's config, probes on the admin port.
YAML::Node ebb_container(const InjectOptions& opts, const Config& c, int listen,
                         const std::string& listen_name, int admin, int app_port,
                         const std::string& token);

// "http" -> "app-http": the app's port keeps a name of its own (at most 15 characters, the
// limit of a port name) once ebb has taken over its old one.
std::string app_name_for(const std::string& name);

// The app's probes and hooks that named the port now use its number, since the name moves to
// ebb (a probe port name resolves against the probed container's own ports).
void renumber_port_refs(YAML::Node app, const std::string& name, int port);

// What an existing preStop hook already does: ebb's drain (by path), or a plain sleep.
bool path_only_is_drain(const YAML::Node& pre);
bool is_sleep_hook(const YAML::Node& pre);

// The rollout strategy that never takes a pod away before its replacement is ready.
void set_strategy(const std::string& kind, YAML::Node spec, const std::string& where,
                  std::vector<std::string>& notes);

}  // namespace ebb::k8s::pod
