// Reading manifests from files, directories and stdin (see manifest_io.hpp).
#include "k8s/manifest_io.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <unordered_map>
#include <utility>

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

namespace {

// Deeper than this, aliases followed, a document is refused: Kubernetes objects nest a few dozen
// levels (a CRD's schema some more), and inject's writer and the rules recurse.
constexpr std::size_t kMaxDepth = 512;
// Nodes that aliases may repeat in one document: aliases of lists of aliases (the "billion laughs")
// would otherwise make inject write gigabytes. kubectl's YAML reader refuses such excess too.
constexpr std::size_t kMaxAliasedNodes = 100000;

// One walk over a document, in document order. yaml-cpp resolves an alias to the anchored node
// itself, so an alias inside the node it names makes a cycle (yaml-cpp builds it, kubectl refuses
// it): the nodes being expanded are kept, and meeting one of them again is an error. Each node is
// expanded once; meeting it again (an alias) adds its size to the aliased count.
class MergeExpander {
 public:
  void expand(const YAML::Node& node, const YAML::Mark& at, std::size_t depth) {
    if (!node.IsMap() && !node.IsSequence()) return;
    for (const auto& n : path_) {
      if (n.node.is(node)) {
        refuse(at, "an alias refers to a node that contains it (an alias cycle)");
      }
    }
    if (const Done* d = done(node)) {
      aliased_ += d->figures.size;
      if (aliased_ > kMaxAliasedNodes) {
        refuse(at, "aliases repeat more than " + std::to_string(kMaxAliasedNodes) + " nodes");
      }
      if (depth + d->figures.height > kMaxDepth) refuse(at, too_deep());
      last_ = d->figures;
      return;
    }
    if (depth > kMaxDepth) refuse(at, too_deep());
    path_.push_back(Level{node, ""});
    Figures mine;
    if (node.IsSequence()) {
      for (std::size_t i = 0; i < node.size(); ++i) {
        path_.back().key = "[" + std::to_string(i) + "]";
        expand(node[i], node.Mark(), depth + 1);
        add(mine, node[i]);
      }
    } else {
      merge(node, depth);
      for (const auto& kv : node) {
        path_.back().key = kv.first.IsScalar() ? kv.first.Scalar() : "(key)";
        expand(kv.first, kv.first.Mark(), depth + 1);
        add(mine, kv.first);
        expand(kv.second, kv.first.Mark(), depth + 1);
        add(mine, kv.second);
      }
    }
    path_.pop_back();
    done_.emplace(node.Mark().pos, Done{node, mine});
    last_ = mine;
  }

 private:
  struct Level {
    YAML::Node node;
    std::string key;  // the key or [index] being expanded under it, for messages
  };
  struct Figures {
    std::size_t size = 1;    // nodes in it, aliases expanded
    std::size_t height = 1;  // levels in it, aliases expanded
  };
  // Never assigned to: assigning a YAML::Node rebinds the node it refers to, in the document.
  struct Done {
    YAML::Node node;
    Figures figures;
  };

  // `<<: *a` and `<<: [*a, *b]`: the merged maps are expanded first (a map may merge one that
  // merges), then their keys are added where the map does not set them itself.
  void merge(YAML::Node node, std::size_t depth) {
    std::vector<std::pair<YAML::Node, YAML::Mark>> sources;
    for (const auto& kv : node) {
      if (kv.first.IsScalar() && kv.first.Scalar() == "<<" && kv.first.Tag() == "?") {
        if (kv.second.IsMap()) sources.emplace_back(kv.second, kv.first.Mark());
        if (kv.second.IsSequence()) {
          for (const auto& m : kv.second) {
            if (m.IsMap()) sources.emplace_back(m, kv.first.Mark());
          }
        }
      }
    }
    if (sources.empty()) return;
    path_.back().key = "<<";
    for (const auto& [src, at] : sources) expand(src, at, depth + 1);
    node.remove("<<");
    // Earlier maps in a `<<: [*a, *b]` list win over later ones, and the map's own keys over all.
    for (const auto& [src, at] : sources) {
      for (const auto& kv : src) {
        const YAML::Node& lookup = node;  // the const operator[] adds no key
        if (kv.first.IsScalar() && !lookup[kv.first.Scalar()].IsDefined()) {
          node[kv.first.Scalar()] = kv.second;
        }
      }
    }
  }

  // Adds the child just expanded (its figures are in last_) to its parent's.
  void add(Figures& parent, const YAML::Node& child) {
    if (!child.IsMap() && !child.IsSequence()) {
      parent.size += 1;
      return;
    }
    parent.size += last_.size;
    parent.height = std::max(parent.height, last_.height + 1);
  }

  // yaml-cpp gives nodes no hashable identity: the position they were read at narrows the
  // search, Node::is decides.
  const Done* done(const YAML::Node& node) const {
    auto [from, to] = done_.equal_range(node.Mark().pos);
    for (auto it = from; it != to; ++it) {
      if (it->second.node.is(node)) return &it->second;
    }
    return nullptr;
  }

  std::string too_deep() const { return "nested more than " + std::to_string(kMaxDepth) + " levels deep"; }

  // The error names the key whose value closes the cycle (or goes too deep), as a path.
  [[noreturn]] void refuse(const YAML::Mark& at, const std::string& what) const {
    std::string where;
    for (const auto& level : path_) {
      if (level.key.empty()) continue;
      if (!where.empty() && level.key[0] != '[') where += '.';
      where += level.key;
    }
    throw YAML::ParserException(at, (where.empty() ? "" : "key " + where + ": ") + what);
  }

  std::vector<Level> path_;
  std::unordered_multimap<int, Done> done_;
  std::size_t aliased_ = 0;
  Figures last_;
};

}  // namespace

void expand_merge_keys(YAML::Node node) { MergeExpander().expand(node, node.Mark(), 1); }

}  // namespace ebb::k8s
