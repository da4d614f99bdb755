// Where manifests come from, for check-k8s and inject alike: a file, stdin ("-"), or a directory
// read the way `kubectl apply -f DIR` reads one (its *.yaml, *.yml and *.json, sorted).
#pragma once

#include <yaml-cpp/yaml.h>

#include <string>
#include <vector>

namespace ebb::k8s {

// Replaces each directory by its manifest files; "-" and files pass through. False with `error`
// when an argument does not exist or a directory holds no manifest.
bool expand_inputs(const std::vector<std::string>& args, std::vector<std::string>& files,
                   std::string& error);

// The whole text of a file, or of stdin for "-" (read once: a second "-" reads nothing).
bool read_source(const std::string& path, std::string& text, std::string& error);

// Resolves YAML merge keys (`<<: *defaults`) in place, as kubectl's parser does and yaml-cpp
// does not: the merged maps' keys are added where the map does not set them itself. Throws
// YAML::ParserException, at the key concerned, for an alias inside the node it names (a cycle,
// plain or through `<<`) and aliases that repeat more than 100000 nodes, which kubectl's reader
// refuses too, and for nesting deeper than 512 levels (aliases followed).
void expand_merge_keys(YAML::Node node);

}  // namespace ebb::k8s
