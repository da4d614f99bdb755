// Reading manifests from files, directories and stdin (see manifest_io.hpp).
#include "k8s/manifest_io.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

namespace ebb::k8s {

namespace fs = std::filesystem;

bool expand_inputs(const std::vector<std::string>& args, std::vector<std::string>& files,
                   std::string& error) {
  for (const auto& a : args) {
    std::error_code ec;
    if (a == "-" || !fs::is_directory(a, ec)) {
      files.push_back(a);
      continue;
    }
    std::vector<std::string> found;
    for (const auto& entry : fs::directory_iterator(a, ec)) {
      std::string ext = entry.path().extension().string();
      if (entry.is_regular_file(ec) && (ext == ".yaml" || ext == ".yml" || ext == ".json")) {
        found.push_back(entry.path().string());
      }
    }
    if (ec) {
      error = a + ": cannot read the directory: " + ec.message();
      return false;
    }
    if (found.empty()) {
      error = a + ": no *.yaml, *.yml or *.json file in the directory";
      return false;
    }
    std::sort(found.begin(), found.end());
    files.insert(files.end(), found.begin(), found.end());
  }
  return true;
}

bool read_source(const std::string& path, std::string& text, std::string& error) {
  if (path == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    return true;
  }
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    error = path + ": is a directory, not a manifest file";
    return false;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    error = path + ": cannot read the file";
    return false;
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  text = ss.str();
  return true;
}

void expand_merge_keys(YAML::Node node) {
  if (node.IsSequence()) {
    for (std::size_t i = 0; i < node.size(); ++i) expand_merge_keys(node[i]);
    return;
  }
  if (!node.IsMap()) return;
  std::vector<YAML::Node> sources;
  for (const auto& kv : node) {
    if (kv.first.IsScalar() && kv.first.Scalar() == "<<" && kv.first.Tag() == "?") {
      if (kv.second.IsMap()) sources.push_back(kv.second);
      if (kv.second.IsSequence()) {
        for (const auto& m : kv.second) {
          if (m.IsMap()) sources.push_back(m);
        }
      }
    }
  }
  if (!sources.empty()) {
    node.remove("<<");
    // Earlier maps in a `<<: [*a, *b]` list win over later ones, and the map's own keys over all.
    for (const auto& src : sources) {
      for (const auto& kv : src) {
        const YAML::Node& lookup = node;  // the const operator[] adds no key
        if (kv.first.IsScalar() && !lookup[kv.first.Scalar()].IsDefined()) {
          node[kv.first.Scalar()] = kv.second;
        }
      }
    }
  }
  for (auto kv : node) expand_merge_keys(kv.second);
}

}  // namespace ebb::k8s
