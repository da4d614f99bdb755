// check-k8s: every rule against a fixture of its own under tests/k8s/fixtures/ (exactly one
// finding, at the exact path), the clean fixtures (classic, native, multi-document), where the
// config comes from, the exit codes and both output formats. No sockets, no process.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "k8s/check_k8s.hpp"

namespace {

namespace fs = std::filesystem;

// The fixtures sit beside this file's directory; __FILE__ is absolute in the CMake build.
std::string fixture(const std::string& name) {
  return (fs::path(__FILE__).parent_path().parent_path() / "k8s" / "fixtures" / name).string();
}

const std::string kConfig = fixture("config/ebb.yaml");

ebb::CheckResult check(const std::string& name, const std::string& config = kConfig,
                       std::map<std::string, std::string> env = {}) {
  ebb::CheckOptions opts;
  opts.files = {fixture(name)};
  opts.config_path = config;
  opts.env = std::move(env);
  return ebb::check_k8s_files(opts);
}

struct Run {
  int rc;
  std::string out;
};

Run run(std::vector<std::string> args, std::map<std::string, std::string> env = {}) {
  std::ostringstream out;
  int rc = ebb::run_check_k8s(args, env, out);
  return {rc, out.str()};
}

// A manifest written for one test, removed when it ends.
struct TempManifest {
  fs::path path;
  explicit TempManifest(const std::string& text) {
    path = fs::temp_directory_path() /
           ("ebb-test-check-k8s-" + std::to_string(reinterpret_cast<std::uintptr_t>(this)) +
            ".yaml");
    std::ofstream(path) << text;
  }
  ~TempManifest() { fs::remove(path); }
};

struct Expected {
  const char* file;
  const char* kind;
  const char* name;
  const char* container;
  const char* path;
  const char* rule;
};

const Expected kFailing[] = {
    {"grace-short.yaml", "Deployment", "web", "ebb",
     "spec.template.spec.terminationGracePeriodSeconds", "grace-period"},
    {"grace-default-pod.yaml", "Pod", "web-pod", "ebb", "spec.terminationGracePeriodSeconds",
     "grace-period"},
    {"readiness-missing.yaml", "Deployment", "web", "ebb",
     "spec.template.spec.containers[1].readinessProbe", "readiness-probe"},
    {"readiness-wrong-path.yaml", "Deployment", "web", "ebb",
     "spec.template.spec.containers[1].readinessProbe.httpGet.path", "readiness-probe"},
    {"readiness-wrong-port.yaml", "Deployment", "web", "ebb",
     "spec.template.spec.containers[1].readinessProbe.httpGet.port", "readiness-probe"},
    {"readiness-slow.yaml", "Deployment", "web", "ebb",
     "spec.template.spec.containers[1].readinessProbe.periodSeconds", "readiness-slow"},
    {"liveness-readyz.yaml", "Deployment", "web", "ebb",
     "spec.template.spec.containers[1].livenessProbe.httpGet.path", "liveness-readyz"},
    {"prestop-sleep-exec.yaml", "Deployment", "web", "ebb",
     "spec.template.spec.containers[1].lifecycle.preStop.exec.command", "prestop-sleep"},
    {"prestop-sleep-action.yaml", "StatefulSet", "web", "ebb",
     "spec.template.spec.containers[1].lifecycle.preStop.sleep.seconds", "prestop-sleep"},
    {"prestop-drain-missing.yaml", "Deployment", "web", "app",
     "spec.template.spec.containers[0].lifecycle.preStop", "prestop-drain"},
    {"drain-no-header.yaml", "Deployment", "web", "app",
     "spec.template.spec.containers[0].lifecycle.preStop.httpGet.path", "drain-token"},
    {"drain-query-wrong-token.yaml", "Deployment", "web", "app",
     "spec.template.spec.containers[0].lifecycle.preStop.httpGet.path", "drain-token"},
    {"drain-header-only.yaml", "Deployment", "web", "app",
     "spec.template.spec.containers[0].lifecycle.preStop.httpGet.httpHeaders[0].value",
     "drain-token-header"},
    {"drain-no-wait.yaml", "Deployment", "web", "app",
     "spec.template.spec.containers[0].lifecycle.preStop.httpGet.path", "drain-wait"},
    {"exec-drain-no-wait.yaml", "Deployment", "web", "app",
     "spec.template.spec.containers[0].lifecycle.preStop.exec.command", "drain-wait"},
    {"exec-drain-wrong-admin.yaml", "Deployment", "web", "app",
     "spec.template.spec.containers[0].lifecycle.preStop.exec.command", "prestop-drain"},
    {"port-name-shared.yaml", "Deployment", "web", "app",
     "spec.template.spec.containers[0].ports[0].name", "port-name-shared"},
    {"upstream-undeclared.yaml", "Deployment", "web", "ebb", "spec.template.spec.containers",
     "upstream-port"},
    {"statefulset-max-unavailable.yaml", "StatefulSet", "web", "",
     "spec.updateStrategy.rollingUpdate.maxUnavailable", "max-unavailable"},
    {"daemonset-no-surge.yaml", "DaemonSet", "web", "", "spec.updateStrategy.rollingUpdate",
     "max-unavailable"},
    {"rollout-canary-default.yaml", "Rollout", "productcatalog", "",
     "spec.strategy.canary.maxUnavailable", "max-unavailable"},
    {"cronjob-classic-sidecar.yaml", "CronJob", "sitemap-export", "ebb",
     "spec.jobTemplate.spec.template.spec.containers[0]", "job-sidecar"},
    {"drain-wrong-token.yaml", "Deployment", "web", "app",
     "spec.template.spec.containers[0].lifecycle.preStop.httpGet.httpHeaders[0].value",
     "drain-token"},
    {"max-unavailable.yaml", "Deployment", "web", "",
     "spec.strategy.rollingUpdate.maxUnavailable", "max-unavailable"},
    {"max-unavailable-percent.yaml", "Deployment", "web", "",
     "spec.strategy.rollingUpdate.maxUnavailable", "max-unavailable"},
    {"max-unavailable-absent.yaml", "Deployment", "web", "",
     "spec.strategy.rollingUpdate.maxUnavailable", "max-unavailable"},
    {"service-app-port.yaml", "Service", "web", "app", "spec.ports[0].targetPort",
     "service-target"},
    {"init-not-sidecar.yaml", "Deployment", "web-native", "proxy",
     "spec.template.spec.initContainers[0].restartPolicy", "native-sidecar"},
};

}  // namespace

TEST_CASE("check-k8s: each failing fixture has exactly its own finding", "[check_k8s]") {
  for (const auto& e : kFailing) {
    INFO("fixture " << e.file);
    auto r = check(e.file);
    REQUIRE(r.error.empty());
    REQUIRE(r.findings.size() == 1);
    const auto& f = r.findings[0];
    CHECK(f.kind == e.kind);
    CHECK(f.name == e.name);
    CHECK(f.container == e.container);
    CHECK(f.path == e.path);
    CHECK(f.rule == e.rule);
    CHECK(f.file == fixture(e.file));
    CHECK(!f.message.empty());
    CHECK((f.severity == "error" || f.severity == "warning"));
    CHECK(run({fixture(e.file), "--config", kConfig}).rc == 1);
  }
}

TEST_CASE("check-k8s: clean fixtures, classic and native", "[check_k8s]") {
  for (const char* name : {"clean-classic.yaml", "clean-native.yaml", "clean-exec-drain.yaml",
                           "service-unrelated.yaml", "clean-statefulset.yaml",
                           "clean-daemonset.yaml"}) {
    INFO("fixture " << name);
    auto r = check(name);
    REQUIRE(r.error.empty());
    CHECK(r.findings.empty());
    CHECK(r.workloads == 1);
    auto out = run({fixture(name), "--config", kConfig});
    CHECK(out.rc == 0);
    CHECK(out.out.find("no findings") != std::string::npos);
  }
}

TEST_CASE("check-k8s: a multi-document file takes ebb's config from the mounted ConfigMap",
          "[check_k8s]") {
  auto r = check("clean-multi.yaml", "");
  REQUIRE(r.error.empty());
  CHECK(r.findings.empty());
  CHECK(r.workloads == 1);  // the DaemonSet without ebb is only noted
  bool noted = false;
  for (const auto& n : r.notes) noted = noted || n.find("DaemonSet/node-agent") != std::string::npos;
  CHECK(noted);
  // --config wins over the ConfigMap: the fixture's 35s grace and token then fall short.
  auto with = check("clean-multi.yaml");
  REQUIRE(with.findings.size() == 2);
  CHECK(with.findings[0].rule == "grace-period");
  CHECK(with.findings[1].rule == "drain-token");
}

TEST_CASE("check-k8s: a /drain hook with no token configured is refused", "[check_k8s]") {
  auto r = check("clean-classic.yaml", "");
  REQUIRE(r.findings.size() == 1);
  CHECK(r.findings[0].rule == "drain-token");
  CHECK(r.findings[0].path == "spec.template.spec.containers[0].lifecycle.preStop.httpGet");
  // The same config given through the environment, as for `ebb --check-config`.
  CHECK(check("clean-classic.yaml", "", {{"EBB_ADMIN_DRAIN_TOKEN", "fixture-token"}})
            .findings.empty());
}

TEST_CASE("check-k8s: a token from a Secret is compared once it is known", "[check_k8s]") {
  auto unknown = check("token-from-secret.yaml", "");
  CHECK(unknown.findings.empty());
  bool noted = false;
  for (const auto& n : unknown.notes) noted = noted || n.find("Secret") != std::string::npos;
  CHECK(noted);
  auto mismatch = check("token-from-secret.yaml");
  REQUIRE(mismatch.findings.size() == 1);
  CHECK(mismatch.findings[0].path == "spec.template.spec.containers[0].lifecycle.preStop.httpGet.path");
  CHECK(check("token-from-secret.yaml", kConfig, {{"EBB_ADMIN_DRAIN_TOKEN", "secret-token"}})
            .findings.empty());
}

TEST_CASE("check-k8s: the ebb container's literal EBB_* env changes its timing", "[check_k8s]") {
  std::ifstream in(fixture("clean-classic.yaml"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string anchor = "          image: ghcr.io/acme/ebb:0.1.0\n";
  REQUIRE(text.find(anchor) != std::string::npos);
  text.replace(text.find(anchor), anchor.size(),
               anchor + "          env:\n            - {name: EBB_SHUTDOWN_DRAIN_TIMEOUT, "
                        "value: 40s}\n");
  TempManifest m(text);
  ebb::CheckOptions opts;
  opts.files = {m.path.string()};
  opts.config_path = kConfig;
  auto r = ebb::check_k8s_files(opts);
  REQUIRE(r.findings.size() == 1);
  CHECK(r.findings[0].rule == "grace-period");
  CHECK(r.findings[0].message.find("drain_timeout 40s + 5s margin = 60s") != std::string::npos);
}

TEST_CASE("check-k8s: ebb is found by image, name or command, not by a look-alike",
          "[check_k8s]") {
  TempManifest m(R"(apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
    - {name: webb, image: example.com/webb:1}
    - {name: side, image: example.com/proxy:1, command: [/usr/local/bin/ebb, --config, /c.yaml]}
)");
  ebb::CheckOptions opts;
  opts.files = {m.path.string()};
  opts.config_path = kConfig;
  auto r = ebb::check_k8s_files(opts);
  REQUIRE(r.error.empty());
  REQUIRE(r.workloads == 1);
  bool drain_on_webb = false, readiness_on_side = false;
  for (const auto& f : r.findings) {
    drain_on_webb = drain_on_webb || (f.container == "webb" && f.rule == "prestop-drain");
    readiness_on_side = readiness_on_side || (f.container == "side" && f.rule == "readiness-probe");
  }
  CHECK(drain_on_webb);      // "webb" is the app here, and it has no drain hook
  CHECK(readiness_on_side);  // "side" runs ebb, and it has no readiness probe
}

TEST_CASE("check-k8s: exit 2 for what cannot be read, and for usage errors", "[check_k8s]") {
  auto broken = run({fixture("broken.yaml")});
  CHECK(broken.rc == 2);
  CHECK(broken.out.find("broken.yaml:4:") != std::string::npos);
  CHECK(run({fixture("no-such-file.yaml")}).rc == 2);
  CHECK(run({}).rc == 2);
  CHECK(run({"--json"}).rc == 2);
  CHECK(run({fixture("clean-classic.yaml"), "--frobnicate"}).rc == 2);
  CHECK(run({fixture("clean-classic.yaml"), "--config"}).rc == 2);
  auto bad = run({fixture("clean-classic.yaml"), "--config", fixture("config/ebb-bad.yaml")});
  CHECK(bad.rc == 2);
  CHECK(bad.out.find("drain_timeout") != std::string::npos);
  CHECK(run({"--help"}).rc == 0);
}

TEST_CASE("check-k8s: the human-readable line", "[check_k8s]") {
  auto out = run({fixture("readiness-wrong-path.yaml"), "--config=" + kConfig});
  CHECK(out.rc == 1);
  std::string want = fixture("readiness-wrong-path.yaml") +
                     ": Deployment/web container ebb: "
                     "spec.template.spec.containers[1].readinessProbe.httpGet.path: ";
  auto at = out.out.find(want);
  REQUIRE(at != std::string::npos);
  CHECK((at == 0 || out.out[at - 1] == '\n'));
  // No container for object-level findings.
  auto mu = run({fixture("max-unavailable.yaml"), "--config", kConfig});
  CHECK(mu.out.find(fixture("max-unavailable.yaml") +
                    ": Deployment/web: spec.strategy.rollingUpdate.maxUnavailable: ") !=
        std::string::npos);
}

TEST_CASE("check-k8s: --json carries findings, notes and the workload count", "[check_k8s]") {
  auto out = run({fixture("max-unavailable.yaml"), "--config", kConfig, "--json"});
  CHECK(out.rc == 1);
  CHECK(out.out.rfind("{\"findings\": [", 0) == 0);
  CHECK(out.out.find("note:") == std::string::npos);
  CHECK(out.out.find("\"kind\":\"Deployment\",\"name\":\"web\",\"container\":\"\","
                     "\"path\":\"spec.strategy.rollingUpdate.maxUnavailable\",") !=
        std::string::npos);
  CHECK(out.out.find("\"severity\":\"warning\",\"rule\":\"max-unavailable\"}") !=
        std::string::npos);
  CHECK(out.out.find("\"workloads\": 1}") != std::string::npos);
  auto clean = run({fixture("clean-native.yaml"), "--config", kConfig, "--json"});
  CHECK(clean.rc == 0);
  CHECK(clean.out == "{\"findings\": [],\n\"notes\": [],\n\"workloads\": 1}\n");
  // Without --config the note says which config was assumed, in JSON too.
  auto noted = run({fixture("clean-multi.yaml"), "--json"});
  CHECK(noted.rc == 0);
  CHECK(noted.out.find("\"notes\": [\n \"DaemonSet/node-agent: no ebb container; not checked\"") !=
        std::string::npos);
  ebb::Finding f{"a\"b.yaml", "Pod", "p", "c", "spec", "line\nbreak\\", "error", "r"};
  CHECK(ebb::format_findings_json({f}).find("\"a\\\"b.yaml\"") != std::string::npos);
  CHECK(ebb::format_findings_json({f}).find("\"line\\nbreak\\\\\"") != std::string::npos);
}

namespace {

std::vector<std::string> rules_of(const ebb::CheckResult& r) {
  std::vector<std::string> out;
  for (const auto& f : r.findings) out.push_back(f.kind + "/" + f.name + " " + f.container + " " + f.rule);
  return out;
}

}  // namespace

TEST_CASE("check-k8s: a realistic shop read as a directory is clean", "[check_k8s]") {
  // Frontend with a fluent-bit sidecar and a Service for the app's own metrics port, a
  // StatefulSet, a surging DaemonSet, a CronJob with a native ebb, an Argo Rollout, Helm output
  // with anchors and a JSON manifest, all with ebb's config from the mounted ConfigMap.
  ebb::CheckOptions opts;
  opts.files = {fixture("shop")};
  auto r = ebb::check_k8s_files(opts);
  REQUIRE(r.error.empty());
  INFO(format_findings_text(r.findings));
  CHECK(r.findings.empty());
  CHECK(r.workloads == 7);
  CHECK(run({fixture("shop")}).rc == 0);
}

TEST_CASE("check-k8s: no false alarm for a log shipper or the app's metrics Service",
          "[check_k8s]") {
  ebb::CheckOptions opts;
  opts.files = {fixture("shop/frontend.yaml"), fixture("shop/configmap.yaml")};
  auto r = ebb::check_k8s_files(opts);
  REQUIRE(r.error.empty());
  REQUIRE(r.workloads == 1);
  CHECK(r.findings.empty());
  // Negative control: the same frontend with its upstream moved to the metrics port makes the
  // metrics Service the fronted port (an error), and the log shipper is still left alone.
  std::ifstream in(fixture("shop/frontend.yaml"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string up = "value: \"127.0.0.1:8080\"";
  REQUIRE(text.find(up) != std::string::npos);
  text.replace(text.find(up), up.size(), "value: \"127.0.0.1:9464\"");
  TempManifest m(text);
  opts.files = {m.path.string(), fixture("shop/configmap.yaml")};
  auto moved = ebb::check_k8s_files(opts);
  auto rules = rules_of(moved);
  CHECK(std::count(rules.begin(), rules.end(), "Service/frontend-metrics server service-target") == 1);
  CHECK(std::count(rules.begin(), rules.end(), "Deployment/frontend fluent-bit prestop-drain") == 0);
}

TEST_CASE("check-k8s: kubectl get -o yaml (kind: List) is read item by item", "[check_k8s]") {
  ebb::CheckOptions opts;
  opts.files = {fixture("kubectl/get-o-yaml.yaml")};
  auto r = ebb::check_k8s_files(opts);
  REQUIRE(r.error.empty());
  CHECK(r.workloads == 1);
  CHECK(rules_of(r) == std::vector<std::string>{
                           "Deployment/checkout ebb grace-period",
                           "Deployment/checkout ebb readiness-slow",
                           "Deployment/checkout server prestop-drain",
                           "Deployment/checkout  max-unavailable",
                           "Service/checkout server service-target"});
}

TEST_CASE("check-k8s: kubectl get all: a Deployment's ReplicaSets and Pods are checked once",
          "[check_k8s]") {
  ebb::CheckOptions opts;
  opts.files = {fixture("kubectl/get-all.yaml")};
  auto r = ebb::check_k8s_files(opts);
  REQUIRE(r.error.empty());
  CHECK(r.workloads == 1);
  CHECK(rules_of(r) == std::vector<std::string>{
                           "Deployment/checkout ebb grace-period",
                           "Deployment/checkout ebb readiness-slow",
                           "Deployment/checkout server prestop-drain",
                           "Deployment/checkout  max-unavailable",
                           "Service/checkout server service-target"});
  int through_owner = 0;
  for (const auto& n : r.notes) through_owner += n.find("checked through its owner") != std::string::npos;
  CHECK(through_owner == 2);
  // Without its owners among the objects, a Pod is checked as it runs.
  std::ifstream in(fixture("kubectl/get-all.yaml"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto cut = text.find("- apiVersion: v1\n  kind: Service");
  REQUIRE(cut != std::string::npos);
  TempManifest pods_only(text.substr(0, cut) + "kind: List\n");
  opts.files = {pods_only.path.string()};
  auto p = ebb::check_k8s_files(opts);
  CHECK(p.workloads == 1);
  CHECK(p.findings.size() == 3);
  CHECK(p.findings[0].kind == "Pod");
}

TEST_CASE("check-k8s: rollout advice the API accepts, per kind", "[check_k8s]") {
  auto sts = check("statefulset-max-unavailable.yaml");
  REQUIRE(sts.findings.size() == 1);
  CHECK(sts.findings[0].message.find("set it to 0") == std::string::npos);
  CHECK(sts.findings[0].message.find("keep 1") != std::string::npos);
  CHECK(sts.findings[0].message.find("partition") != std::string::npos);
  auto ds = check("daemonset-no-surge.yaml");
  REQUIRE(ds.findings.size() == 1);
  CHECK(ds.findings[0].message.find("maxSurge: 1 with maxUnavailable: 0") != std::string::npos);
  // A CronJob has no rolling update: only the pod's rules apply.
  auto cj = check("cronjob-classic-sidecar.yaml");
  REQUIRE(cj.findings.size() == 1);
  CHECK(cj.findings[0].rule == "job-sidecar");
}

TEST_CASE("check-k8s: a hook path without its leading slash is still the drain", "[check_k8s]") {
  std::ifstream in(fixture("clean-classic.yaml"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string hook = "path: /drain?wait=true&token=fixture-token";
  REQUIRE(text.find(hook) != std::string::npos);
  for (const char* path : {"path: drain?wait=true&token=fixture-token",
                           "path: //drain?wait=true&token=fixture-token"}) {
    std::string t = text;
    t.replace(t.find(hook), hook.size(), path);
    TempManifest m(t);
    ebb::CheckOptions opts;
    opts.files = {m.path.string()};
    opts.config_path = kConfig;
    INFO(path);
    CHECK(ebb::check_k8s_files(opts).findings.empty());
  }
}

TEST_CASE("check-k8s: an upstream outside the pod needs no app port", "[check_k8s]") {
  CHECK(check("upstream-undeclared.yaml").findings.size() == 1);
  auto remote = check("upstream-undeclared.yaml", kConfig, {{"EBB_UPSTREAM", "legacy.shop.svc:3000"}});
  CHECK(remote.findings.empty());
}

TEST_CASE("check-k8s: which hook form works on which kubelet", "[check_k8s]") {
  auto header = check("drain-header-only.yaml");
  REQUIRE(header.findings.size() == 1);
  CHECK(header.findings[0].severity == "warning");
  CHECK(header.findings[0].message.find("before 1.26") != std::string::npos);
  CHECK(header.findings[0].message.find("every kubelet") != std::string::npos);
  // The query form and both forms together are clean; a wrong header next to a right query
  // token is still an error.
  CHECK(check("clean-classic.yaml").findings.empty());
  CHECK(check("clean-native.yaml").findings.empty());
  auto both_wrong = check("clean-native.yaml", kConfig, {{"EBB_ADMIN_DRAIN_TOKEN", "other"}});
  CHECK(both_wrong.findings.size() == 2);
}

TEST_CASE("check-k8s: a directory without manifests is an error", "[check_k8s]") {
  fs::path dir = fs::temp_directory_path() / "ebb-test-check-k8s-empty-dir";
  fs::create_directories(dir);
  std::ofstream(dir / "README.md") << "not a manifest\n";
  auto r = run({dir.string()});
  fs::remove_all(dir);
  CHECK(r.rc == 2);
  CHECK(r.out.find("no *.yaml, *.yml or *.json file") != std::string::npos);
}
