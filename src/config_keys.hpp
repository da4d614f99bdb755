// The config's key registry and value forms, shared by the loader (config.cpp): one row per
// SPEC §7 key (its dotted path and where it lives in Config), how each kind of value is parsed,
// described and written back, and the "did you mean" hints. Internal to the config files.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "config.hpp"

namespace ebb::config_keys {

// Durations and sizes are both uint64; the wrappers keep them apart in the variant.
struct DurationRef {
  Millis* p;
};
struct SizeRef {
  std::uint64_t* p;
};
using Field = std::variant<HostPort*, std::string*, DurationRef, SizeRef, std::uint32_t*, bool*,
                           UpstreamCheck*, UpstreamProtocol*, LogFormat*, LogLevel*, ConcurrencyLimit*,
                           WorkerCount*>;

struct Key {
  std::string_view path;
  Field (*field)(Config&);
};

// Every key, in the dump's order (a section's keys stay together).
std::span<const Key> keys();
const Key* find_key(std::string_view path);
std::string_view parent_of(std::string_view path);
std::string_view leaf_of(std::string_view path);
bool is_section(std::string_view path);
std::string env_name(std::string_view path);  // "shutdown.drain_timeout" -> EBB_SHUTDOWN_DRAIN_TIMEOUT
const std::vector<std::string>& env_names();  // every key's, in keys() order

// YAML double-quoted form, so a dump stays loadable and error messages show hidden bytes.
std::string quote(std::string_view s);
// " (did you mean X?)" for a mistyped YAML key path or EBB_* name, else "".
std::string yaml_key_hint(std::string_view path);
std::string env_key_hint(std::string_view name);

// Sets one field from its text form (YAML scalar or env value); empty on success, else why not.
std::string set_field(Field f, std::string_view s);
std::string field_noun(Field f);    // what a value of this field looks like, for errors
std::string format_field(Field f);  // the field's value as the dump writes it
std::string node_kind(const YAML::Node& n);

constexpr std::uint32_t kMaxQueueSize = 1'000'000;
// More event loops than this only add threads fighting over the proxy's one listener.
constexpr std::uint32_t kMaxWorkers = 64;

}  // namespace ebb::config_keys
