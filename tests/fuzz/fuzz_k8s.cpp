// Fuzz target: check-k8s's manifest reader and rules (ebb::check_k8s_files) on arbitrary YAML or
// JSON text, as `ebb check-k8s` reads a file. Invariants: it never throws, and every result,
// findings or a read error, formats as text and as JSON. `ebb inject` has a target of its own
// (fuzz_inject.cpp), which checks that check-k8s reads what inject writes.
#include <cstdint>
#include <string>

#include "fuzz_k8s_text.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ebb_fuzz::check_text(std::string(reinterpret_cast<const char*>(data), size));
  return 0;
}
