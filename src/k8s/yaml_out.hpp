// Writing manifests back for `ebb inject` (yaml_out.cpp): the emitter, nodes built to be
// written, and the documents of a multi-document text with the text each came from.
#pragma once

#include <yaml-cpp/yaml.h>

#include <string>
#include <vector>

namespace ebb::k8s {

// One document of a multi-document text: kept verbatim unless inject changed its node.
struct Chunk {
  std::string separator;  // the "---" line that opened it, or "" for the first
  std::string text;
  YAML::Node node;
  std::string before;  // emit(node) as read, to tell whether anything changed
};

// Splits at "---" lines; the first chunk has no separator (and may hold only comments).
std::vector<Chunk> split_documents(const std::string& text);

// The comment lines that open a document, e.g. Helm's "# Source: chart/templates/x.yaml".
std::string leading_comments(const std::string& text);

// Block style unless a node was read or built in flow style; quoted strings stay quoted when
// plain text would read back as a boolean, null or number. Ends with a newline.
std::string emit(const YAML::Node& n);

// A string value that stays a string whatever it looks like ("8080", "true").
YAML::Node str_node(const std::string& s);
// A map written in flow style: {name: x, value: y}.
YAML::Node flow_map();

}  // namespace ebb::k8s
