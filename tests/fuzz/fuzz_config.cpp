// Fuzz target: the config loader from text (ebb::parse_config, as a ConfigMap's data is read).
// The input is YAML, optionally followed by a NUL byte and EBB_* overrides, one NAME=VALUE a line.
// Invariants: it never throws, a load either gives a config or an error, and a loaded config's
// dump (--check-config) loads again to the same config and the same dump.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include "config.hpp"

namespace {

[[noreturn]] void fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "fuzz invariant broken: %s\n--- %s\n---\n", what, detail.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string input(reinterpret_cast<const char*>(data), size);
  std::string text = input;
  std::map<std::string, std::string> env;
  if (size_t nul = input.find('\0'); nul != std::string::npos) {
    text = input.substr(0, nul);
    size_t at = nul + 1;
    while (at < input.size()) {
      size_t end = input.find('\n', at);
      if (end == std::string::npos) end = input.size();
      std::string line = input.substr(at, end - at);
      if (size_t eq = line.find('='); eq != std::string::npos) env[line.substr(0, eq)] = line.substr(eq + 1);
      at = end + 1;
    }
  }
  ebb::ConfigResult r = ebb::parse_config("fuzz.yaml", text, env);
  if (r.config.has_value() == !r.error.empty()) fail("neither a config nor an error, or both", r.error);
  if (!r.config) return 0;
  std::string dumped = ebb::dump_config(*r.config);
  ebb::ConfigResult again = ebb::parse_config("fuzz.yaml", dumped, {});
  if (!again.config) fail("the dump does not load again", dumped + "\n--- " + again.error);
  if (!again.warnings.empty()) fail("the dump loads with a warning", dumped + "\n--- " + again.warnings[0]);
  std::string redumped = ebb::dump_config(*again.config);
  if (redumped != dumped) fail("the dump changes when loaded again", dumped + "\n--- again:\n" + redumped);
  return 0;
}
