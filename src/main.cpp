// Command line: run the proxy, or one of the tools (--check-config, drain, check-k8s, inject).
// Exit codes: 0 ok, 1 runtime failure (or requests cut at the drain timeout), 2 usage/config.
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <sys/stat.h>

#include "admin/drain_client.hpp"
#include "build_commit.hpp"
#include "config.hpp"
#include "k8s/check_k8s.hpp"
#include "k8s/inject.hpp"
#include "log.hpp"
#include "server.hpp"

namespace {

constexpr const char* kDefaultConfig = "/etc/ebb/ebb.yaml";

void usage(FILE* to) {
  std::fprintf(to,
               "ebb %s: a drain-aware reverse-proxy sidecar (HTTP/1.1, WebSocket, HTTP/2, gRPC)\n\n"
               "usage:\n"
               "  ebb [--config FILE]                  run (default %s if present, else built-in defaults)\n"
               "  ebb --check-config [--config FILE]   validate, print the effective config, exit 0 or 2\n"
               "  ebb drain [--admin HOST:PORT] [--wait] [--token T] [--config FILE]\n"
               "                                       start a drain through the admin port (preStop.exec)\n"
               "  ebb check-k8s FILE.yaml|DIR|- [...] [--config FILE] [--json]\n"
               "                                       lint Kubernetes manifests for settings that drop requests\n"
               "  ebb inject [FILE|-] [--native] [--config FILE] [--image IMAGE]\n"
               "                                       add ebb to Deployments/StatefulSets/Rollouts, print them\n"
               "  ebb --version | --help\n\n"
               "Every config key can be set by an environment variable: EBB_ + the key path in capitals,\n"
               "e.g. EBB_UPSTREAM=127.0.0.1:3000, EBB_SHUTDOWN_DRAIN_TIMEOUT=25s. The environment wins.\n",
               EBB_VERSION, kDefaultConfig);
}

bool file_exists(const char* p) {
  struct stat st{};
  return ::stat(p, &st) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  if (argc >= 2 && std::strcmp(argv[1], "drain") == 0) return ebb::drain_main(argc - 1, argv + 1);
  if (argc >= 2 && std::strcmp(argv[1], "check-k8s") == 0) return ebb::check_k8s_main(argc - 1, argv + 1);
  if (argc >= 2 && std::strcmp(argv[1], "inject") == 0) return ebb::inject_main(argc - 1, argv + 1);

  std::string config_path;
  bool check = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--version" || a == "-v") {
      std::printf("ebb %s (commit %s)\n", EBB_VERSION, EBB_COMMIT);
      return 0;
    }
    if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    }
    if (a == "--check-config") {
      check = true;
    } else if (a == "--config" || a == "-c") {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "ebb: --config needs a file\n");
        return 2;
      }
      config_path = argv[++i];
    } else if (a.rfind("--config=", 0) == 0) {
      config_path = a.substr(9);
    } else {
      std::fprintf(stderr, "ebb: unknown argument '%s'\n\n", a.c_str());
      usage(stderr);
      return 2;
    }
  }
  if (config_path.empty() && file_exists(kDefaultConfig)) config_path = kDefaultConfig;

  ebb::ConfigResult r = ebb::load_config(config_path, ebb::ebb_environment());
  if (!r.config) {
    std::fprintf(stderr, "ebb: invalid config: %s\n", r.error.c_str());
    return 2;
  }
  if (check) {
    // A misspelt EBB_* variable only warns at run time (it may be a foreign variable), but a
    // check in CI exists to catch it: warnings fail --check-config.
    for (const std::string& n : r.notes) std::fprintf(stderr, "ebb: note: %s\n", n.c_str());
    for (const std::string& w : r.warnings) std::fprintf(stderr, "ebb: warning: %s\n", w.c_str());
    if (!r.warnings.empty()) {
      std::fprintf(stderr, "ebb: config has %zu warning(s); --check-config fails on them\n", r.warnings.size());
      return 2;
    }
    std::printf("# ebb %s: config OK (%s)\n%s", EBB_VERSION, ebb::describe_source(*r.config).c_str(),
                ebb::dump_config(*r.config).c_str());
    return 0;
  }
  ebb::logger().configure(r.config->log.format, r.config->log.level);
  for (const std::string& n : r.notes) LOG_DEBUG("environment variable ignored", {"reason", n});
  for (const std::string& w : r.warnings) LOG_WARN("environment variable ignored", {"reason", w});
  ebb::Server server(std::move(*r.config), config_path);
  return server.run();
}
