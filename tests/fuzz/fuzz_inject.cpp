// Fuzz target: `ebb inject` (ebb::inject_manifests) on arbitrary YAML or JSON text, in both of its
// shapes. Invariants: it never throws; injecting its output again changes nothing (the
// idempotence inject promises); and when check-k8s reads the input, it reads inject's output too.
#include <cstdint>
#include <string>

#include "config.hpp"
#include "fuzz_k8s_text.hpp"
#include "k8s/inject.hpp"

using ebb_fuzz::fail;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  static const ebb::Config config;
  ebb::InjectOptions opts;
  opts.native = size % 2 == 1;  // both shapes, decided by the input alone
  opts.image = "ghcr.io/your-org/ebb:fuzz";
  opts.generated_token = "fuzz-token-0123456789";
  ebb::InjectResult first = ebb::inject_manifests(text, "fuzz.yaml", config, opts);
  // An error, or documents inject leaves alone (copied byte for byte): nothing more to check.
  if (!first.error.empty() || first.output == text) return 0;
  ebb::InjectResult second = ebb::inject_manifests(first.output, "fuzz.yaml", config, opts);
  if (!second.error.empty()) fail("inject cannot read its own output", first.output + "\n--- " + second.error);
  if (second.output != first.output) fail("inject is not idempotent", first.output + "\n--- again:\n" + second.output);
  if (ebb_fuzz::check_text(text).error.empty()) {
    ebb::CheckResult checked = ebb_fuzz::check_text(first.output);
    if (!checked.error.empty()) fail("check-k8s cannot read inject's output", first.output + "\n--- " + checked.error);
  }
  return 0;
}
