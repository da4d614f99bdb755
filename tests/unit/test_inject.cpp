// ebb inject: the changes to one workload and its Services, checked on the parsed output, and the
// properties that make it safe in a pipeline: idempotent byte for byte, untouched documents kept
// verbatim, quoted strings kept strings, its output clean for check-k8s. No sockets, no process.
#include <catch2/catch.hpp>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "k8s/check_k8s.hpp"
#include "k8s/inject.hpp"
#include "k8s/yaml_out.hpp"

namespace {

namespace fs = std::filesystem;

std::string fixture_path(const std::string& name) {
  return (fs::path(__FILE__).parent_path().parent_path() / "k8s" / "fixtures" / "inject" / name)
      .string();
}

std::string read(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

ebb::Config config_with(const std::string& token) {
  ebb::Config c;
  c.admin.drain_token = token;
  c.shutdown.propagation_max = 20000;
  c.shutdown.drain_timeout = 30000;
  return c;
}

ebb::InjectResult inject(const std::string& text, bool native = false,
                         const ebb::Config& c = config_with("t0k/en+1")) {
  ebb::InjectOptions opts;
  opts.native = native;
  opts.image = "registry.example.com/ebb:9.9";
  opts.generated_token = "generated";
  return ebb::inject_manifests(text, "test", c, opts);
}

YAML::Node doc(const std::string& text, std::size_t i) { return YAML::LoadAll(text).at(i); }

// check-k8s over a text, as `ebb inject | ebb check-k8s -` would.
ebb::CheckResult check_text(const std::string& text) {
  fs::path p = fs::temp_directory_path() / "ebb-test-inject-out.yaml";
  std::ofstream(p) << text;
  ebb::CheckOptions opts;
  opts.files = {p.string()};
  auto r = ebb::check_k8s_files(opts);
  fs::remove(p);
  return r;
}

}  // namespace

TEST_CASE("inject: the frontend gets ebb, its drain, timing and strategy", "[inject]") {
  auto r = inject(read(fixture_path("shop-frontend.yaml")));
  REQUIRE(r.error.empty());
  CHECK(r.injected == 1);
  YAML::Node d = doc(r.output, 0);
  YAML::Node spec = d["spec"]["template"]["spec"];
  REQUIRE(spec["containers"].size() == 3);
  YAML::Node ebb = spec["containers"][2];
  CHECK(ebb["name"].as<std::string>() == "ebb");
  CHECK(ebb["image"].as<std::string>() == "registry.example.com/ebb:9.9");
  // The app has 8080: ebb's listener moves to the next free port; the admin keeps 9901.
  CHECK(ebb["ports"][0]["containerPort"].as<int>() == 8081);
  CHECK(ebb["ports"][1]["containerPort"].as<int>() == 9901);
  CHECK(ebb["env"][1]["value"].as<std::string>() == "127.0.0.1:8080");
  CHECK(ebb["readinessProbe"]["httpGet"]["path"].as<std::string>() == "/readyz");
  CHECK(ebb["livenessProbe"]["httpGet"]["path"].as<std::string>() == "/healthz");
  CHECK(ebb["securityContext"]["seccompProfile"]["type"].as<std::string>() == "RuntimeDefault");
  // The sleep is replaced by the drain; the token is percent-encoded into the path.
  YAML::Node get = spec["containers"][0]["lifecycle"]["preStop"]["httpGet"];
  CHECK(get["port"].as<int>() == 9901);
  CHECK(get["path"].as<std::string>() == "/drain?wait=true&token=t0k%2Fen%2B1");
  // The log shipper is left alone.
  CHECK(!spec["containers"][1]["lifecycle"]);
  CHECK(spec["terminationGracePeriodSeconds"].as<int>() == 55);  // 20 + 30 + 5
  CHECK(d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"].as<int>() == 0);
  CHECK(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"].as<int>() == 1);
  // ebb's listen port takes over the app port's name "http", which the public Service targets:
  // old pods resolve it to the app, new ones to ebb, so the Service itself is left unchanged,
  // byte for byte. The app's port and its readiness probe move to a name and number of their own.
  CHECK(ebb["ports"][0]["name"].as<std::string>() == "http");
  CHECK(spec["containers"][0]["ports"][0]["name"].as<std::string>() == "app-http");
  CHECK(spec["containers"][0]["readinessProbe"]["httpGet"]["port"].as<int>() == 8080);
  std::string in = read(fixture_path("shop-frontend.yaml"));
  std::string svc = in.substr(in.find("# Source: shop/templates/service.yaml"));
  svc = svc.substr(0, svc.find("---\napiVersion: v1\nkind: Service\nmetadata:\n  name: frontend-metrics"));
  CHECK(r.output.find(svc) != std::string::npos);
  CHECK(doc(r.output, 1)["spec"]["ports"][0]["targetPort"].as<std::string>() == "http");
  // The metrics Service still targets the app's metrics port.
  CHECK(doc(r.output, 2)["spec"]["ports"][0]["targetPort"].as<std::string>() == "metrics");
}

TEST_CASE("inject: idempotent byte for byte, untouched documents verbatim", "[inject]") {
  for (const char* name : {"shop-frontend.yaml", "ledger-statefulset.yaml", "catalog-rollout.yaml",
                           "kubectl-list.json"}) {
    for (bool native : {false, true}) {
      INFO(name << (native ? " --native" : ""));
      std::string in = read(fixture_path(name));
      auto once = inject(in, native);
      REQUIRE(once.error.empty());
      CHECK(once.output != in);
      auto twice = inject(once.output, native);
      REQUIRE(twice.error.empty());
      CHECK(twice.output == once.output);
      CHECK(twice.injected == 1);
    }
  }
  std::string in = read(fixture_path("shop-frontend.yaml"));
  auto out = inject(in).output;
  // The ConfigMap, with its comments, and the leading "# Source:" comments survive.
  auto cm = in.substr(in.find("# Source: shop/templates/configmap.yaml"));
  CHECK(out.find(cm) != std::string::npos);
  CHECK(out.rfind("# Source: shop/templates/frontend.yaml\n", 0) == 0);
  // Quoted strings that look like booleans or numbers stay quoted.
  CHECK(out.find("prometheus.io/scrape: \"true\"") != std::string::npos);
  CHECK(out.find("{name: PORT, value: \"8080\"}") != std::string::npos);
  CHECK(out.find("{name: ENABLE_PROFILER, value: \"false\"}") != std::string::npos);
}

TEST_CASE("inject: its output passes check-k8s, classic and native", "[inject]") {
  for (const char* name : {"shop-frontend.yaml", "ledger-statefulset.yaml", "catalog-rollout.yaml",
                           "kubectl-list.json"}) {
    for (bool native : {false, true}) {
      INFO(name << (native ? " --native" : ""));
      std::string in = read(fixture_path(name));
      auto before = check_text(in);
      CHECK(before.workloads == 0);  // no ebb yet: nothing to check
      auto r = check_text(inject(in, native).output);
      REQUIRE(r.error.empty());
      CHECK(r.workloads == 1);
      INFO(ebb::format_findings_text(r.findings));
      CHECK(r.findings.empty());
    }
  }
}

TEST_CASE("inject: native sidecar, StatefulSet and Rollout strategies", "[inject]") {
  auto native = inject(read(fixture_path("shop-frontend.yaml")), true);
  YAML::Node spec = doc(native.output, 0)["spec"]["template"]["spec"];
  REQUIRE(spec["initContainers"].size() == 1);
  CHECK(spec["initContainers"][0]["restartPolicy"].as<std::string>() == "Always");
  CHECK(spec["containers"].size() == 2);

  auto sts = inject(read(fixture_path("ledger-statefulset.yaml")));
  YAML::Node s = doc(sts.output, 0);
  CHECK(!s["spec"]["updateStrategy"]);  // the API rejects maxUnavailable 0 for StatefulSets
  CHECK(s["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as<int>() == 120);  // kept
  // The headless Service without targetPort targeted the app's 7070 through `port`: now the
  // port name "api", which ebb took over from the app.
  CHECK(doc(sts.output, 1)["spec"]["ports"][0]["targetPort"].as<std::string>() == "api");

  auto ro = inject(read(fixture_path("catalog-rollout.yaml")));
  YAML::Node canary = doc(ro.output, 0)["spec"]["strategy"]["canary"];
  CHECK(canary["maxUnavailable"].as<int>() == 0);
  CHECK(canary["maxSurge"].as<int>() == 1);
  CHECK(canary["steps"].size() == 2);  // unknown to inject, kept
  // An unnamed app port: ebb's is "ebb-http", and the Service says in which order to apply.
  CHECK(doc(ro.output, 1)["spec"]["ports"][0]["targetPort"].as<std::string>() == "ebb-http");
  bool order = false;
  for (const auto& n : ro.notes) order = order || n.find("apply the workloads first") != std::string::npos;
  CHECK(order);

  auto list = inject(read(fixture_path("kubectl-list.json")));
  YAML::Node cart = doc(list.output, 0)["items"][0];
  CHECK(cart["spec"]["strategy"]["type"].as<std::string>() == "RollingUpdate");
  CHECK(cart["status"]["readyReplicas"].as<int>() == 2);  // unknown fields preserved
  CHECK(doc(list.output, 0)["items"][1]["spec"]["ports"][0]["targetPort"].as<std::string>() ==
        "ebb-http");
}

TEST_CASE("inject: no token in the config: a generated one, in ebb's env and the hook", "[inject]") {
  auto r = inject(read(fixture_path("catalog-rollout.yaml")), false, config_with(""));
  YAML::Node spec = doc(r.output, 0)["spec"]["template"]["spec"];
  CHECK(spec["containers"][0]["lifecycle"]["preStop"]["httpGet"]["path"].as<std::string>() ==
        "/drain?wait=true&token=generated");
  CHECK(spec["containers"][1]["env"][3]["value"].as<std::string>() == "generated");
  bool noted = false;
  for (const auto& n : r.notes) noted = noted || n.find("generated") != std::string::npos;
  CHECK(noted);
}

TEST_CASE("inject: bad input is an error naming the line, never a crash", "[inject]") {
  auto r = inject("apiVersion: v1\nkind: Service\n---\nkind: [unclosed\n");
  CHECK(!r.error.empty());
  CHECK(r.error.find("test:") == 0);
  CHECK(r.error.find("not valid YAML") != std::string::npos);
  auto odd = inject("kind: Deployment\nspec: {template: {spec: {containers: 3}}}\n---\n- a\n");
  CHECK(odd.error.empty());
  CHECK(odd.injected == 0);
  CHECK(inject("").output.empty());
}

TEST_CASE("inject: the emitter keeps every string a string, and reads back the same", "[inject]") {
  const char* text =
      "a: \"true\"\nb: \"0x1F\"\nc: \"1e3\"\nd: \".5\"\ne: \"-3\"\nf: \"~\"\ng: \"\"\nh: \"yes\"\n"
      "i: 80\nj: plain words\nk: \"quoted words\"\nl: |\n  line one\n  line two\n"
      "m: \"no newline\\nat end\"\nn: {x: \"null\", y: [1, \"2\"]}\n";
  YAML::Node in = YAML::Load(text);
  std::string out = ebb::k8s::emit(in);
  YAML::Node back = YAML::Load(out);
  for (const char* key : {"a", "b", "c", "d", "e", "f", "g", "h", "l", "m"}) {
    INFO(key << " in\n" << out);
    CHECK(back[key].Tag() == "!");  // quoted or a literal block: a string
    CHECK(back[key].Scalar() == in[key].Scalar());
  }
  CHECK(back["i"].Tag() == "?");  // a plain number stays plain
  CHECK(back["k"].Scalar() == "quoted words");  // needs no quotes to stay a string
  CHECK(back["n"]["x"].Tag() == "!");
  CHECK(back["n"]["y"][1].Tag() == "!");
  CHECK(ebb::k8s::emit(back) == out);  // stable
}

TEST_CASE("inject: a manifest written in flow style gets ebb in block style", "[inject]") {
  const std::string in =
      "{apiVersion: apps/v1, kind: Deployment, metadata: {name: w}, spec: {selector: "
      "{matchLabels: {a: w}}, template: {metadata: {labels: {a: w}}, spec: {containers: "
      "[{name: app, image: x, ports: [{containerPort: 3000}]}]}}}}\n";
  auto once = inject(in);
  REQUIRE(once.error.empty());
  CHECK(once.output.find("\n      containers:\n") != std::string::npos);
  CHECK(once.output.find("matchLabels: {a: w}") != std::string::npos);  // untouched: still flow
  CHECK(inject(once.output).output == once.output);
  CHECK(check_text(once.output).findings.empty());
}

TEST_CASE("inject: merge keys are expanded as kubectl expands them", "[inject]") {
  const std::string in =
      "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: w}\nspec:\n"
      "  selector: {matchLabels: {a: w}}\n  template:\n    metadata: {labels: {a: w}}\n"
      "    spec:\n      containers:\n        - &base\n          name: app\n          image: x\n"
      "          ports: [{name: http, containerPort: 3000}]\n"
      "        - <<: *base\n          name: worker\n          ports: []\n";
  auto once = inject(in);
  REQUIRE(once.error.empty());
  CHECK(once.output.find("<<") == std::string::npos);
  YAML::Node containers = doc(once.output, 0)["spec"]["template"]["spec"]["containers"];
  REQUIRE(containers.size() == 3);
  CHECK(containers[1]["name"].as<std::string>() == "worker");
  CHECK(containers[1]["image"].as<std::string>() == "x");  // merged from the anchor
  CHECK(inject(once.output).output == once.output);
  CHECK(check_text(once.output).findings.empty());
}

TEST_CASE("inject writes a key too long for an implicit YAML key as an explicit one, readable again", "[inject]") {
  // Found by fuzzing: a key under 1024 characters whose quoted form is longer came back as an
  // implicit key, which YAML refuses, so check-k8s (and kubectl) could not read inject's output.
  std::string text = read((fs::path(__FILE__).parent_path().parent_path() / "fuzz" / "corpus" / "k8s" /
                           "regression-inject-long-key.yaml").string());
  REQUIRE(!text.empty());
  REQUIRE(check_text(text).error.empty());
  auto first = inject(text);
  REQUIRE(first.error.empty());
  auto checked = check_text(first.output);
  CHECK(checked.error.empty());
  CHECK(inject(first.output).output == first.output);
  // A long key that needs no quoting stays readable too.
  std::string plain = read(fixture_path("shop-frontend.yaml"));
  std::string key(1040, 'k');
  plain.insert(plain.find("  annotations:\n") + 15, "    ? " + key + "\n    : \"v\"\n");
  auto second = inject(plain);
  REQUIRE(second.error.empty());
  CHECK(check_text(second.output).error.empty());
  CHECK(doc(second.output, 0)["metadata"]["annotations"][key].as<std::string>() == "v");
  CHECK(second.output.find("  replicas: 3\n") != std::string::npos);  // other keys stay implicit
}

TEST_CASE("a long key inside a flow map is written in block style, readable again", "[inject]") {
  // Found by fuzzing: yaml-cpp writes a flow map's explicit key as `{ ?key: v }`, which YAML reads
  // as a plain scalar key and then fails on, so inject's output could not be read back.
  std::string key(200, 'k');
  std::string text = read(fixture_path("shop-frontend.yaml"));
  text.insert(text.find("  annotations:\n") + 15, "    flowy: {" + key + ": v, short: w}\n");
  REQUIRE(check_text(text).error.empty());
  auto first = inject(text);
  REQUIRE(first.error.empty());
  REQUIRE(check_text(first.output).error.empty());
  YAML::Node flowy = doc(first.output, 0)["metadata"]["annotations"]["flowy"];
  CHECK(flowy[key].as<std::string>() == "v");
  CHECK(flowy["short"].as<std::string>() == "w");
  CHECK(inject(first.output).output == first.output);
  // And the fuzzer's own input: the key holds bytes that are not UTF-8, in a probe's httpGet.
  std::string found = read((fs::path(__FILE__).parent_path().parent_path() / "fuzz" / "corpus" / "k8s" /
                            "regression-inject-long-key-in-flow-map.yaml").string());
  auto again = inject(found);
  REQUIRE(again.error.empty());
  CHECK(check_text(again.output).error.empty());
}
