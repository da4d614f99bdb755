// YAML::LoadAll with a guard: yaml-cpp 0.7 loops forever, allocating, on a ',' where a document's
// node or its end is expected (",a", "{a: 1},", "- a\n,b"): it yields empty documents without
// consuming the token. Found by tests/fuzz; shared by the config loader and check-k8s. And
// yaml-cpp's own limit on nesting, whose message is "bad file", says what it is.
#pragma once

#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <sstream>
#include <string>
#include <vector>

namespace ebb {

// Every real document consumes at least one byte, so more documents than bytes means the parser
// is stuck; a first pass with a counting handler finds out before LoadAll runs. Throws
// YAML::ParserException like LoadAll does for other bad input.
// yaml-cpp refuses nesting past its limit (500 levels) with DeepRecursion and "bad file".
[[noreturn]] inline void rethrow_too_deep(const YAML::DeepRecursion& e) {
  throw YAML::ParserException(e.mark, "nested more than " + std::to_string(e.depth() - 1) + " levels deep");
}

// YAML::Load (one document) with the clear message for nesting past yaml-cpp's limit.
inline YAML::Node load_yaml(const std::string& text) {
  try {
    return YAML::Load(text);
  } catch (const YAML::DeepRecursion& e) {
    rethrow_too_deep(e);
  }
}

inline std::vector<YAML::Node> load_all_yaml(const std::string& text) {
  struct Counter : YAML::EventHandler {
    YAML::Mark last;
    void OnDocumentStart(const YAML::Mark& m) override { last = m; }
    void OnDocumentEnd() override {}
    void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
    void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
    void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
    void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
    void OnSequenceEnd() override {}
    void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
    void OnMapEnd() override {}
  } counter;
  try {
    // Only a ',' can stall the parser: a text without one (most configs) is parsed once.
    if (text.find(',') != std::string::npos) {
      std::istringstream in(text);
      YAML::Parser parser(in);
      for (size_t docs = 0; parser.HandleNextDocument(counter);) {
        if (++docs > text.size() + 1) throw YAML::ParserException(counter.last, "unexpected ','");
      }
    }
    return YAML::LoadAll(text);
  } catch (const YAML::DeepRecursion& e) {
    rethrow_too_deep(e);
  }
}

}  // namespace ebb
