// check-k8s on a text, for the k8s and inject fuzz targets: check-k8s reads files, so the text
// goes into a memory file, read back through /proc/self/fd.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "k8s/check_k8s.hpp"

namespace ebb_fuzz {

[[noreturn]] inline void fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "fuzz invariant broken: %s\n--- %s\n---\n", what, detail.c_str());
  std::abort();
}

inline ebb::CheckResult check_text(const std::string& text) {
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

}  // namespace ebb_fuzz
