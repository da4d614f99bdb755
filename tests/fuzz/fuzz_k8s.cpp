// Fuzz target: check-k8s's manifest reader and rules (ebb::check_k8s_files) on arbitrary YAML or
// JSON text, and `ebb inject` (ebb::inject_manifests) on the same text. Invariants: neither
// throws; when check-k8s reads the input and inject succeeds, check-k8s reads inject's output too;
// and injecting inject's output again changes nothing (the idempotence inject promises).
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "config.hpp"
#include "k8s/check_k8s.hpp"
#include "k8s/inject.hpp"

namespace {

[[noreturn]] void fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "fuzz invariant broken: %s\n--- %s\n---\n", what, detail.c_str());
  std::abort();
}

// check-k8s reads files: the text goes into a memory file, read back through /proc/self/fd.
ebb::CheckResult check_text(const std::string& text) {
  static int fd = memfd_create("manifest.yaml", 0);
  static std::string path = "/proc/self/fd/" + std::to_string(fd);
  if (fd < 0 || ftruncate(fd, 0) != 0 ||
      pwrite(fd, text.data(), text.size(), 0) != static_cast<ssize_t>(text.size())) {
    fail("cannot write the memory file", path);
  }
  ebb::CheckOptions opts;
  opts.files = {path};
  ebb::CheckResult r = ebb::check_k8s_files(opts);
  // The report formats too: every finding is printable.
  (void)ebb::format_findings_text(r.findings);
  (void)ebb::format_result_json(r);
  return r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  bool readable = check_text(text).error.empty();

  static const ebb::Config config;
  ebb::InjectOptions opts;
  opts.native = size % 2 == 1;  // both shapes, decided by the input alone
  opts.image = "ghcr.io/your-org/ebb:fuzz";
  opts.generated_token = "fuzz-token-0123456789";
  ebb::InjectResult first = ebb::inject_manifests(text, "fuzz.yaml", config, opts);
  if (!first.error.empty()) return 0;
  // Documents inject leaves alone are copied byte for byte: an unchanged text was read above,
  // and injecting it again is the same call (a fifth of the inputs; this halves their cost).
  if (first.output == text) return 0;
  ebb::CheckResult checked = readable ? check_text(first.output) : ebb::CheckResult{};
  if (!checked.error.empty()) fail("check-k8s cannot read inject's output", first.output + "\n--- " + checked.error);
  ebb::InjectResult second = ebb::inject_manifests(first.output, "fuzz.yaml", config, opts);
  if (!second.error.empty()) fail("inject cannot read its own output", first.output + "\n--- " + second.error);
  if (second.output != first.output) fail("inject is not idempotent", first.output + "\n--- again:\n" + second.output);
  return 0;
}
