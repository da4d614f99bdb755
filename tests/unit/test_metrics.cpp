// Unit tests for src/metrics.*: request counting and duration buckets, summing loops' copies,
// and render_prometheus checked line by line against the text exposition format 0.0.4.
#include <catch2/catch.hpp>

#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "metrics.hpp"

namespace {

using ebb::Metrics;
using ebb::ProcessFigures;
using Labels = std::map<std::string, std::string>;

struct Sample {
  std::string name;
  Labels labels;
  std::string label_text;
  std::string raw;
  double value = 0;
};

struct Exposition {
  std::vector<Sample> samples;
  std::map<std::string, std::string> type;  // family -> type
  std::map<std::string, std::string> help;
  std::vector<std::string> errors;

  std::optional<double> get(const std::string& name, const Labels& labels = {}) const {
    for (const Sample& s : samples) {
      if (s.name == name && s.labels == labels) return s.value;
    }
    return std::nullopt;
  }
  std::optional<std::string> raw(const std::string& name, const Labels& labels = {}) const {
    for (const Sample& s : samples) {
      if (s.name == name && s.labels == labels) return s.raw;
    }
    return std::nullopt;
  }
  std::vector<const Sample*> family(const std::string& name) const {
    std::vector<const Sample*> out;
    for (const Sample& s : samples) {
      if (s.name == name) out.push_back(&s);
    }
    return out;
  }
};

bool metric_name(const std::string& n) {
  if (n.empty() || std::isdigit(static_cast<unsigned char>(n[0]))) return false;
  for (char c : n) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == ':')) return false;
  }
  return true;
}

bool label_name(const std::string& n) {
  return metric_name(n) && n.find(':') == std::string::npos;
}

// `{a="x",b="y"}` into labels; false when it is not valid exposition syntax.
bool parse_labels(const std::string& text, Labels& out) {
  size_t i = 0;
  while (i < text.size()) {
    size_t eq = text.find('=', i);
    if (eq == std::string::npos) return false;
    std::string name = text.substr(i, eq - i);
    if (!label_name(name) || out.count(name) > 0) return false;
    if (eq + 1 >= text.size() || text[eq + 1] != '"') return false;
    std::string value;
    size_t j = eq + 2;
    for (; j < text.size() && text[j] != '"'; ++j) {
      if (text[j] == '\\') {
        if (j + 1 >= text.size()) return false;
        char e = text[++j];
        if (e == 'n') value += '\n';
        else if (e == '\\' || e == '"') value += e;
        else return false;
      } else if (text[j] == '\n') {
        return false;
      } else {
        value += text[j];
      }
    }
    if (j >= text.size()) return false;
    out[name] = value;
    i = j + 1;
    if (i < text.size()) {
      if (text[i] != ',') return false;
      ++i;
    }
  }
  return true;
}

bool parse_value(const std::string& v, double& out) {
  if (v == "+Inf") out = INFINITY;
  else if (v == "-Inf") out = -INFINITY;
  else if (v == "NaN") out = NAN;
  else {
    if (v.empty()) return false;
    char* end = nullptr;
    out = std::strtod(v.c_str(), &end);
    if (*end != '\0') return false;
  }
  return true;
}

// Parses and validates: syntax of every line, HELP/TYPE once per family and before its
// samples, a family's samples together, no series twice, histograms cumulative and complete.
Exposition parse_exposition(const std::string& text) {
  Exposition e;
  auto error = [&](size_t line, const std::string& what) {
    std::ostringstream s;
    s << "line " << line << ": " << what;
    e.errors.push_back(s.str());
  };
  if (text.empty() || text.back() != '\n') error(0, "output does not end with a newline");
  std::set<std::string> finished;  // families whose samples are over
  std::string current;
  std::set<std::string> series;
  std::istringstream in(text);
  std::string line;
  size_t no = 0;
  auto family_of = [&](const std::string& name) {
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      std::string sfx = suffix;
      if (name.size() > sfx.size() && name.compare(name.size() - sfx.size(), sfx.size(), sfx) == 0) {
        std::string base = name.substr(0, name.size() - sfx.size());
        auto t = e.type.find(base);
        if (t != e.type.end() && t->second == "histogram") return base;
      }
    }
    return name;
  };
  auto enter = [&](const std::string& fam) {
    if (fam == current) return;
    if (finished.count(fam) > 0) error(no, "family " + fam + " is split");
    if (!current.empty()) finished.insert(current);
    current = fam;
  };
  while (std::getline(in, line)) {
    ++no;
    if (line.empty()) continue;
    if (line[0] == '#') {
      std::istringstream ls(line);
      std::string hash, kind, name;
      ls >> hash >> kind >> name;
      if (hash != "#" || (kind != "HELP" && kind != "TYPE")) continue;  // a plain comment
      if (!metric_name(name)) error(no, "bad metric name in " + kind);
      if (finished.count(name) > 0 || (name == current && kind == "TYPE" && e.type.count(name) > 0)) {
        error(no, kind + " after samples of " + name);
      }
      for (const Sample& s : e.samples) {
        if (family_of(s.name) == name) {
          error(no, kind + " after a sample of " + name);
          break;
        }
      }
      enter(name);
      std::string rest;
      std::getline(ls, rest);
      if (!rest.empty() && rest[0] == ' ') rest.erase(0, 1);
      auto& map = kind == "HELP" ? e.help : e.type;
      if (map.count(name) > 0) error(no, kind + " twice for " + name);
      if (kind == "TYPE" && rest != "counter" && rest != "gauge" && rest != "histogram" && rest != "summary" &&
          rest != "untyped") {
        error(no, "unknown type " + rest);
      }
      if (kind == "HELP" && rest.empty()) error(no, "empty HELP for " + name);
      map[name] = rest;
      continue;
    }
    Sample s;
    size_t brace = line.find('{');
    size_t space;
    if (brace != std::string::npos && brace < line.find(' ')) {
      size_t close = line.rfind('}');
      if (close == std::string::npos || close < brace) {
        error(no, "unclosed labels");
        continue;
      }
      s.name = line.substr(0, brace);
      s.label_text = line.substr(brace + 1, close - brace - 1);
      if (!parse_labels(s.label_text, s.labels)) error(no, "bad labels: " + s.label_text);
      space = close + 1;
    } else {
      space = line.find(' ');
      s.name = line.substr(0, space);
    }
    if (!metric_name(s.name)) error(no, "bad metric name: " + s.name);
    if (space >= line.size() || line[space] != ' ') {
      error(no, "no value");
      continue;
    }
    s.raw = line.substr(space + 1);
    if (s.raw.find(' ') != std::string::npos) error(no, "timestamps or extra fields: " + s.raw);
    if (!parse_value(s.raw, s.value)) error(no, "bad value: " + s.raw);
    std::string fam = family_of(s.name);
    if (e.type.count(fam) == 0) error(no, "sample before TYPE of " + fam);
    if (e.help.count(fam) == 0) error(no, "sample before HELP of " + fam);
    enter(fam);
    if (!series.insert(s.name + "{" + s.label_text + "}").second) error(no, "series twice: " + line);
    e.samples.push_back(s);
  }
  for (const auto& [fam, type] : e.type) {
    if (type != "histogram") continue;
    double last_le = -INFINITY, last_count = 0;
    bool inf = false;
    for (const Sample* b : e.family(fam + "_bucket")) {
      if (b->labels.count("le") == 0) {
        error(0, fam + " bucket without le");
        continue;
      }
      double le;
      if (!parse_value(b->labels.at("le"), le) || le <= last_le) error(0, fam + " le not increasing");
      if (b->value < last_count) error(0, fam + " buckets not cumulative");
      last_le = le;
      last_count = b->value;
      inf = std::isinf(le);
    }
    if (!inf) error(0, fam + " has no +Inf bucket last");
    auto count = e.get(fam + "_count");
    if (!count || *count != last_count) error(0, fam + " +Inf bucket differs from _count");
    if (!e.get(fam + "_sum")) error(0, fam + " has no _sum");
  }
  return e;
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += s + "\n";
  return out;
}

// Every field of a Metrics set to a value derived from `seed`, all different.
Metrics filled(std::uint64_t seed) {
  Metrics m;
  std::uint64_t k = seed;
  for (auto& c : m.requests_by_code) c = k++;
  m.requests_in_flight = k++;
  m.connections_active = k++;
  m.connections_accepted = k++;
  m.connections_rejected = k++;
  for (auto& u : m.upstream_errors) u = k++;
  for (auto& b : m.duration.buckets) b = k++;
  m.duration.count = k++;
  m.duration.sum = static_cast<double>(k++) + 0.25;
  m.drain_cut_requests = k++;
  m.client_send_timeouts = k++;
  m.backpressure_pauses_client = k++;
  m.backpressure_pauses_upstream = k++;
  m.upstream_connections_opened = k++;
  m.upstream_connections_reused = k++;
  m.upstream_active = k++;
  m.upstream_queue_depth = k++;
  m.upstream_concurrency_limit = k++;
  for (auto& b : m.upstream_queue_wait.buckets) b = k++;
  m.upstream_queue_wait.count = k++;
  m.upstream_queue_wait.sum = static_cast<double>(k++) + 0.5;
  for (auto& r : m.upstream_queue_rejected) r = k++;
  return m;
}

}  // namespace

TEST_CASE("count_request puts a duration in the first bucket whose bound it does not exceed", "[metrics]") {
  struct Case {
    double seconds;
    int bucket;  // -1: above every bound, only +Inf
  };
  const std::vector<Case> cases = {{0, 0},     {0.0005, 0},  {0.001, 0}, {0.0011, 1}, {0.005, 1}, {0.0051, 2},
                                   {0.3, 7},   {0.5, 7},     {1, 8},     {1.0001, 9}, {2.5, 9},   {5, 10},
                                   {9.99, 11}, {10, 11},     {10.001, -1}, {86400, -1}};
  for (const Case& c : cases) {
    INFO(c.seconds << " s");
    Metrics m;
    m.count_request(200, c.seconds);
    CHECK(m.duration.count == 1);
    CHECK(m.duration.sum == c.seconds);
    for (size_t i = 0; i < m.duration.buckets.size(); ++i) {
      INFO("bucket " << i);
      CHECK(m.duration.buckets[i] == (static_cast<int>(i) == c.bucket ? 1u : 0u));
    }
  }
}

TEST_CASE("count_request counts codes 100-599 by code and every request in the histogram", "[metrics]") {
  Metrics m;
  for (int code : {200, 200, 100, 599, 502, 99, 600, 0, -1}) m.count_request(code, 0.01);
  CHECK(m.requests_by_code[200] == 2);
  CHECK(m.requests_by_code[100] == 1);
  CHECK(m.requests_by_code[599] == 1);
  CHECK(m.requests_by_code[502] == 1);
  CHECK(m.requests_by_code[99] == 0);
  CHECK(m.requests_by_code[0] == 0);
  std::uint64_t total = 0;
  for (auto c : m.requests_by_code) total += c;
  CHECK(total == 5);
  CHECK(m.requests_in_flight == 0);  // a code of 600 must not spill into the next field
  CHECK(m.duration.count == 9);
  CHECK(m.duration.buckets[2] == 9);
  CHECK(m.duration.sum == Approx(0.09));
  m.count_upstream_error(ebb::UpstreamError::kStaleRetried);
  m.count_upstream_error(ebb::UpstreamError::kStaleRetried);
  CHECK(m.upstream_errors[static_cast<size_t>(ebb::UpstreamError::kStaleRetried)] == 2);
}

TEST_CASE("add sums every field of another loop's Metrics", "[metrics]") {
  const Metrics a = filled(1);
  const Metrics b = filled(100000);
  Metrics sum = a;
  sum.add(b);
  for (size_t i = 0; i < sum.requests_by_code.size(); ++i) {
    if (sum.requests_by_code[i] != a.requests_by_code[i] + b.requests_by_code[i]) {
      FAIL("requests_by_code[" << i << "]");
    }
  }
  CHECK(sum.requests_in_flight == a.requests_in_flight + b.requests_in_flight);
  CHECK(sum.connections_active == a.connections_active + b.connections_active);
  CHECK(sum.connections_accepted == a.connections_accepted + b.connections_accepted);
  CHECK(sum.connections_rejected == a.connections_rejected + b.connections_rejected);
  for (size_t i = 0; i < sum.upstream_errors.size(); ++i) {
    CHECK(sum.upstream_errors[i] == a.upstream_errors[i] + b.upstream_errors[i]);
  }
  for (size_t i = 0; i < sum.duration.buckets.size(); ++i) {
    CHECK(sum.duration.buckets[i] == a.duration.buckets[i] + b.duration.buckets[i]);
  }
  CHECK(sum.duration.count == a.duration.count + b.duration.count);
  CHECK(sum.duration.sum == a.duration.sum + b.duration.sum);
  CHECK(sum.drain_cut_requests == a.drain_cut_requests + b.drain_cut_requests);
  CHECK(sum.client_send_timeouts == a.client_send_timeouts + b.client_send_timeouts);
  CHECK(sum.backpressure_pauses_client == a.backpressure_pauses_client + b.backpressure_pauses_client);
  CHECK(sum.backpressure_pauses_upstream == a.backpressure_pauses_upstream + b.backpressure_pauses_upstream);
  CHECK(sum.upstream_connections_opened == a.upstream_connections_opened + b.upstream_connections_opened);
  CHECK(sum.upstream_connections_reused == a.upstream_connections_reused + b.upstream_connections_reused);
  CHECK(sum.upstream_active == a.upstream_active + b.upstream_active);
  CHECK(sum.upstream_queue_depth == a.upstream_queue_depth + b.upstream_queue_depth);
  CHECK(sum.upstream_concurrency_limit == a.upstream_concurrency_limit + b.upstream_concurrency_limit);
  for (size_t i = 0; i < sum.upstream_queue_wait.buckets.size(); ++i) {
    CHECK(sum.upstream_queue_wait.buckets[i] == a.upstream_queue_wait.buckets[i] + b.upstream_queue_wait.buckets[i]);
  }
  CHECK(sum.upstream_queue_wait.count == a.upstream_queue_wait.count + b.upstream_queue_wait.count);
  CHECK(sum.upstream_queue_wait.sum == a.upstream_queue_wait.sum + b.upstream_queue_wait.sum);
  for (size_t i = 0; i < sum.upstream_queue_rejected.size(); ++i) {
    CHECK(sum.upstream_queue_rejected[i] == a.upstream_queue_rejected[i] + b.upstream_queue_rejected[i]);
  }
}

TEST_CASE("render_prometheus shows upstream_limits: limit, slots, queue depth, wait and rejections", "[metrics]") {
  Metrics m;
  m.upstream_concurrency_limit = 8;
  m.upstream_active = 7;
  m.upstream_queue_depth = 3;
  m.upstream_queue_wait.observe(0.2);
  m.upstream_queue_rejected[static_cast<size_t>(ebb::QueueRejection::kFull)] = 5;
  m.upstream_queue_rejected[static_cast<size_t>(ebb::QueueRejection::kTimeout)] = 2;
  ProcessFigures p;
  p.version = "v";
  std::string text = ebb::render_prometheus(m, p);
  Exposition e = parse_exposition(text);
  INFO(text);
  CHECK(join(e.errors) == "");
  CHECK(e.get("ebb_upstream_concurrency_limit") == 8.0);
  CHECK(e.get("ebb_upstream_active_requests") == 7.0);
  CHECK(e.get("ebb_upstream_queue_depth") == 3.0);
  CHECK(e.get("ebb_upstream_queue_wait_seconds_count") == 1.0);
  CHECK(e.get("ebb_upstream_queue_wait_seconds_bucket", {{"le", "0.25"}}) == 1.0);
  CHECK(e.get("ebb_upstream_queue_wait_seconds_bucket", {{"le", "0.1"}}) == 0.0);
  CHECK(e.get("ebb_upstream_queue_rejected_total", {{"reason", "full"}}) == 5.0);
  CHECK(e.get("ebb_upstream_queue_rejected_total", {{"reason", "timeout"}}) == 2.0);
}

TEST_CASE("upstream_error_name gives each kind a distinct label value", "[metrics]") {
  std::set<std::string> names;
  for (size_t i = 0; i < static_cast<size_t>(ebb::UpstreamError::kCount); ++i) {
    std::string n = ebb::upstream_error_name(static_cast<ebb::UpstreamError>(i));
    CHECK(n != "unknown");
    CHECK(label_name(n));  // snake_case, safe in a label value without escaping
    names.insert(n);
  }
  CHECK(names.size() == static_cast<size_t>(ebb::UpstreamError::kCount));
  CHECK(ebb::upstream_error_name(ebb::UpstreamError::kConnectRefused) == std::string("connect_refused"));
  CHECK(ebb::upstream_error_name(ebb::UpstreamError::kCount) == std::string("unknown"));
}

TEST_CASE("render_prometheus of empty Metrics is valid and names every SPEC §6 family", "[metrics]") {
  ProcessFigures p;
  p.version = "0.1.0";
  std::string text = ebb::render_prometheus(Metrics{}, p);
  Exposition e = parse_exposition(text);
  INFO(text);
  CHECK(join(e.errors) == "");
  for (const char* fam : {"ebb_requests_total", "ebb_requests_in_flight", "ebb_connections_active",
                          "ebb_upstream_errors_total", "ebb_request_duration_seconds", "ebb_lifecycle_state",
                          "ebb_drain_cut_requests_total", "ebb_build_info", "ebb_admin_refused_total"}) {
    INFO(fam);
    CHECK(e.type.count(fam) == 1);
  }
  CHECK(e.type.at("ebb_requests_total") == "counter");
  CHECK(e.type.at("ebb_requests_in_flight") == "gauge");
  CHECK(e.type.at("ebb_request_duration_seconds") == "histogram");
  CHECK(e.get("ebb_requests_total", {{"code", "200"}, {"source", "app"}}) == 0.0);
  CHECK(e.family("ebb_requests_total").size() == 1);
  CHECK(e.family("ebb_upstream_errors_total").size() == static_cast<size_t>(ebb::UpstreamError::kCount));
  CHECK(e.get("ebb_request_duration_seconds_count") == 0.0);
  CHECK(e.get("ebb_request_duration_seconds_bucket", {{"le", "+Inf"}}) == 0.0);
  CHECK(e.get("ebb_lifecycle_state", {{"state", "starting"}}) == 1.0);
  CHECK(e.get("ebb_build_info", {{"version", "0.1.0"}, {"commit", "unknown"}}) == 1.0);
  // Without /proc figures no process_* family is rendered (rather than zeros that look real).
  CHECK(e.family("process_open_fds").empty());
}

TEST_CASE("render_prometheus renders the counted values", "[metrics]") {
  Metrics m;
  for (double s : {0.0005, 0.003, 0.003, 0.2, 7.0, 42.0}) m.count_request(200, s);
  m.count_request(503, 0.0005);
  m.requests_in_flight = 4;
  m.connections_active = 9;
  m.connections_accepted = 120;
  m.connections_rejected = 3;
  m.count_upstream_error(ebb::UpstreamError::kConnectRefused);
  m.count_upstream_error(ebb::UpstreamError::kResponseTimeout);
  m.count_upstream_error(ebb::UpstreamError::kResponseTimeout);
  m.drain_cut_requests = 2;
  m.client_send_timeouts = 5;
  m.backpressure_pauses_client = 11;
  m.backpressure_pauses_upstream = 12;
  m.upstream_connections_opened = 13;
  m.upstream_connections_reused = 14;
  ProcessFigures p;
  p.state = "draining";
  p.admin_refused = 6;
  p.version = "1.2.3-rc1";
  std::string text = ebb::render_prometheus(m, p);
  Exposition e = parse_exposition(text);
  INFO(text);
  CHECK(join(e.errors) == "");
  CHECK(e.get("ebb_requests_total", {{"code", "200"}, {"source", "app"}}) == 6.0);
  CHECK(e.get("ebb_requests_total", {{"code", "503"}, {"source", "app"}}) == 1.0);
  CHECK(e.family("ebb_requests_total").size() == 2);  // codes never seen are left out
  CHECK(e.get("ebb_requests_in_flight") == 4.0);
  CHECK(e.get("ebb_connections_active") == 9.0);
  CHECK(e.get("ebb_connections_accepted_total") == 120.0);
  CHECK(e.get("ebb_connections_rejected_total") == 3.0);
  CHECK(e.get("ebb_upstream_errors_total", {{"kind", "connect_refused"}}) == 1.0);
  CHECK(e.get("ebb_upstream_errors_total", {{"kind", "response_timeout"}}) == 2.0);
  CHECK(e.get("ebb_upstream_errors_total", {{"kind", "stale_retried"}}) == 0.0);
  CHECK(e.get("ebb_drain_cut_requests_total") == 2.0);
  CHECK(e.get("ebb_client_send_timeouts_total") == 5.0);
  CHECK(e.get("ebb_backpressure_pauses_total", {{"side", "client"}}) == 11.0);
  CHECK(e.get("ebb_backpressure_pauses_total", {{"side", "upstream"}}) == 12.0);
  CHECK(e.get("ebb_upstream_connections_opened_total") == 13.0);
  CHECK(e.get("ebb_upstream_connections_reused_total") == 14.0);
  CHECK(e.get("ebb_admin_refused_total") == 6.0);
  CHECK(e.get("ebb_build_info", {{"version", "1.2.3-rc1"}, {"commit", "unknown"}}) == 1.0);
  for (const char* s : {"starting", "ready", "drained"}) CHECK(e.get("ebb_lifecycle_state", {{"state", s}}) == 0.0);
  CHECK(e.get("ebb_lifecycle_state", {{"state", "draining"}}) == 1.0);

  // 0.0005, 0.0005, 0.003, 0.003 | 0.2 | 7 | 42 (only +Inf)
  std::vector<std::string> les;
  std::vector<double> counts;
  for (const Sample* b : e.family("ebb_request_duration_seconds_bucket")) {
    les.push_back(b->labels.at("le"));
    counts.push_back(b->value);
  }
  CHECK(les == std::vector<std::string>{"0.001", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
                                        "2.5", "5", "10", "+Inf"});
  CHECK(counts == std::vector<double>{2, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 6, 7});
  CHECK(e.get("ebb_request_duration_seconds_count") == 7.0);
  CHECK(*e.get("ebb_request_duration_seconds_sum") == Approx(0.0005 * 2 + 0.006 + 0.2 + 7 + 42).epsilon(1e-9));
}

TEST_CASE("render_prometheus prints 64-bit counters exactly and each lifecycle state alone", "[metrics]") {
  Metrics m;
  const std::uint64_t max = std::numeric_limits<std::uint64_t>::max();
  m.requests_by_code[204] = max;
  m.connections_accepted = max;
  m.duration.buckets[0] = 1;
  m.duration.count = 1;
  ProcessFigures p;
  p.version = "v";
  for (const char* state : {"starting", "ready", "draining", "drained"}) {
    p.state = state;
    Exposition e = parse_exposition(ebb::render_prometheus(m, p));
    INFO(state);
    CHECK(join(e.errors) == "");
    CHECK(e.raw("ebb_requests_total", {{"code", "204"}, {"source", "app"}}) == std::to_string(max));
    CHECK(e.raw("ebb_connections_accepted_total") == std::to_string(max));
    double ones = 0;
    for (const Sample* s : e.family("ebb_lifecycle_state")) ones += s->value;
    CHECK(ones == 1.0);
    CHECK(e.get("ebb_lifecycle_state", {{"state", state}}) == 1.0);
  }
}

TEST_CASE("the exposition checker catches the faults it looks for", "[metrics]") {
  // So that a clean result above means something.
  CHECK(parse_exposition("# HELP a x\n# TYPE a counter\na 1\n").errors.empty());
  CHECK_FALSE(parse_exposition("a 1\n").errors.empty());                                  // no TYPE/HELP
  CHECK_FALSE(parse_exposition("# HELP a x\n# TYPE a counter\na 1").errors.empty());      // no newline
  CHECK_FALSE(parse_exposition("# HELP a x\n# TYPE a counter\na{b=\"1} 1\n").errors.empty());
  CHECK_FALSE(parse_exposition("# HELP a x\n# TYPE a counter\na one\n").errors.empty());
  CHECK_FALSE(parse_exposition("# HELP a x\n# TYPE a counter\na 1\na 2\n").errors.empty());
  CHECK_FALSE(parse_exposition("# HELP a x\n# TYPE a counter\na{k=\"1\"} 1\n# HELP b x\n# TYPE b gauge\nb 1\n"
                               "a{k=\"2\"} 1\n")
                  .errors.empty());
  const std::string h = "# HELP h x\n# TYPE h histogram\n";
  CHECK(parse_exposition(h + "h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n").errors.empty());
  CHECK_FALSE(parse_exposition(h + "h_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n").errors.empty());
  CHECK_FALSE(parse_exposition(h + "h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 5\n").errors.empty());
  CHECK_FALSE(parse_exposition(h + "h_bucket{le=\"1\"} 1\nh_sum 3\nh_count 1\n").errors.empty());
}

TEST_CASE("render_prometheus separates ebb's own answers from the app's, and renders the upstream histogram", "[metrics]") {
  Metrics m;
  m.count_request(502, 0.002, true);
  m.count_request(502, 0.002, false);
  m.count_request(200, 0.002, false);
  m.upstream_response.observe(0.03);
  m.request_bytes = 1234;
  m.response_bytes = 5678;
  ProcessFigures p;
  p.version = "v";
  std::string text = ebb::render_prometheus(m, p);
  Exposition e = parse_exposition(text);
  INFO(text);
  CHECK(join(e.errors) == "");
  CHECK(e.get("ebb_requests_total", {{"code", "502"}, {"source", "ebb"}}) == 1.0);
  CHECK(e.get("ebb_requests_total", {{"code", "502"}, {"source", "app"}}) == 1.0);
  CHECK(e.get("ebb_requests_total", {{"code", "200"}, {"source", "app"}}) == 1.0);
  CHECK(!e.get("ebb_requests_total", {{"code", "200"}, {"source", "ebb"}}));
  CHECK(e.family("ebb_requests_total").size() == 3);
  CHECK(e.type.at("ebb_upstream_response_duration_seconds") == "histogram");
  CHECK(e.get("ebb_upstream_response_duration_seconds_bucket", {{"le", "0.025"}}) == 0.0);
  CHECK(e.get("ebb_upstream_response_duration_seconds_bucket", {{"le", "0.05"}}) == 1.0);
  CHECK(e.get("ebb_upstream_response_duration_seconds_count") == 1.0);
  CHECK(e.get("ebb_request_bytes_total") == 1234.0);
  CHECK(e.get("ebb_response_bytes_total") == 5678.0);
  for (const char* reason : {"client_closed", "upstream_broken", "request_error", "drain_timeout",
                             "client_send_timeout", "after_close", "exit", "memory_shed"}) {
    CHECK(e.get("ebb_requests_unanswered_total", {{"reason", reason}}) == 0.0);
  }
  Metrics sum;
  sum.add(m);
  sum.add(m);
  sum.count_unanswered(ebb::Unanswered::kAfterClose);
  CHECK(sum.local_by_code[502] == 2);
  CHECK(sum.upstream_response.count == 2);
  CHECK(sum.response_bytes == 2 * 5678);
  CHECK(sum.unanswered_total() == 1);
}

TEST_CASE("render_prometheus renders the admin, reload, drain, build and process figures", "[metrics]") {
  ProcessFigures p;
  p.version = "0.1.0";
  p.commit = "0123456789ab";
  p.admin_refused = 2;
  p.admin_not_found = 3;
  p.admin_bad_method = 4;
  p.admin_malformed = 5;
  p.reload_success = false;
  p.reload_timestamp = 1790000000.25;
  p.reloads_ok = 6;
  p.reloads_failed = 7;
  p.last_propagation_seconds = 1.5;
  p.last_drain_seconds = 0.25;
  p.have_process = true;
  p.cpu_seconds = 1.25;
  p.resident_bytes = 4096 * 1000;
  p.virtual_bytes = 1 << 30;
  p.open_fds = 9;
  p.max_fds = 1048576;
  p.start_time_seconds = 1789999999.5;
  std::string text = ebb::render_prometheus(Metrics{}, p);
  Exposition e = parse_exposition(text);
  INFO(text);
  CHECK(join(e.errors) == "");
  CHECK(e.get("ebb_build_info", {{"version", "0.1.0"}, {"commit", "0123456789ab"}}) == 1.0);
  CHECK(e.get("ebb_admin_refused_total") == 2.0);
  CHECK(e.get("ebb_admin_unknown_total", {{"code", "404"}}) == 3.0);
  CHECK(e.get("ebb_admin_unknown_total", {{"code", "405"}}) == 4.0);
  CHECK(e.get("ebb_admin_unknown_total", {{"code", "400"}}) == 5.0);
  CHECK(e.type.at("ebb_admin_unknown_total") == "counter");
  CHECK(e.get("ebb_config_last_reload_success") == 0.0);
  CHECK(e.type.at("ebb_config_last_reload_success") == "gauge");
  CHECK(*e.get("ebb_config_last_reload_timestamp_seconds") == Approx(1790000000.25));
  CHECK(e.get("ebb_config_reloads_total", {{"result", "success"}}) == 6.0);
  CHECK(e.get("ebb_config_reloads_total", {{"result", "failure"}}) == 7.0);
  CHECK(e.get("ebb_drain_propagation_seconds") == 1.5);
  CHECK(e.get("ebb_drain_phase_seconds") == 0.25);
  CHECK(e.get("process_cpu_seconds_total") == 1.25);
  CHECK(e.type.at("process_cpu_seconds_total") == "counter");
  CHECK(e.get("process_resident_memory_bytes") == 4096000.0);
  CHECK(e.get("process_virtual_memory_bytes") == static_cast<double>(1 << 30));
  CHECK(e.get("process_open_fds") == 9.0);
  CHECK(e.get("process_max_fds") == 1048576.0);
  CHECK(*e.get("process_start_time_seconds") == Approx(1789999999.5));
  p.reload_success = true;
  CHECK(parse_exposition(ebb::render_prometheus(Metrics{}, p)).get("ebb_config_last_reload_success") == 1.0);
}

TEST_CASE("read_process_figures reads this process from /proc/self", "[metrics]") {
  ProcessFigures p;
  ebb::read_process_figures(p);
  REQUIRE(p.have_process);
  // Plausible, not exact: this test process is alive, holds stdin/out/err and some memory,
  // started within the last day, and has used some CPU.
  CHECK(p.open_fds >= 3);
  CHECK(p.max_fds >= p.open_fds);
  CHECK(p.resident_bytes > 1024 * 1024);
  CHECK(p.virtual_bytes >= p.resident_bytes);
  std::time_t now = std::time(nullptr);
  CHECK(p.start_time_seconds <= static_cast<double>(now) + 1);
  CHECK(p.start_time_seconds > static_cast<double>(now) - 86400);
  CHECK(p.cpu_seconds >= 0);
  // A descriptor opened now is counted.
  std::FILE* f = std::tmpfile();
  REQUIRE(f != nullptr);
  ProcessFigures q;
  ebb::read_process_figures(q);
  std::fclose(f);
  CHECK(q.open_fds == p.open_fds + 1);
}
