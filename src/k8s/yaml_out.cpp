// Writing manifests back for `ebb inject`: an emitter that keeps quoted strings strings
// (yaml-cpp's own drops the quotes of "true" or "8080", which would then read as a boolean or a
// number), and the split of a multi-document text that lets untouched documents stay verbatim.
#include "k8s/yaml_out.hpp"

#include <cctype>
#include <set>

namespace ebb::k8s {
namespace {

// Would this text, written plain, read back as something other than a string (YAML 1.1 and
// 1.2 booleans, nulls, numbers)? Then a string with this text must stay quoted.
bool plain_would_retype(const std::string& s) {
  if (s.empty()) return true;
  std::string low;
  for (char c : s) low += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  static const std::set<std::string> words = {"true", "false", "yes", "no", "on", "off", "y",
                                              "n", "null", "~", ".inf", "-.inf", ".nan"};
  if (words.count(low)) return true;
  char c = s[0];
  return std::isdigit(static_cast<unsigned char>(c)) || c == '+' || c == '-' || c == '.';
}

void emit_scalar(YAML::Emitter& out, const YAML::Node& n) {
  const std::string& s = n.Scalar();
  // "?" is a plain scalar in the input, "" one built here (numbers): both are written plain.
  bool string_typed = !(n.Tag() == "?" || n.Tag().empty());
  if (string_typed && s.find('\n') != std::string::npos && s.back() == '\n' &&
      s.find(" \n") == std::string::npos && s.find("\n\n", s.size() - 2) == std::string::npos &&
      s[0] != ' ') {
    out << YAML::Literal << s;
  } else if (string_typed && (plain_would_retype(s) || s.find('\n') != std::string::npos)) {
    out << YAML::DoubleQuoted << s;
  } else {
    out << s;
  }
}

// YAML caps an implicit key at 1024 characters as written (quotes and escapes included): a long
// one is written as an explicit `? key` (with room for escapes: 128 bytes can be 1024 written).
bool long_key(const YAML::Node& key) { return !key.IsScalar() || key.Scalar().size() > 128; }

// A collection read in flow style stays so unless it now holds one built in block style (a
// container inject added to `containers: [...]`), which would otherwise turn into one long line,
// or a long key: yaml-cpp writes a flow map's explicit key as `?key`, which YAML reads as a
// plain scalar, so such a map is written in block style.
bool all_flow(const YAML::Node& n) {
  if (!n.IsMap() && !n.IsSequence()) return true;
  if (n.Style() != YAML::EmitterStyle::Flow) return false;
  if (n.IsSequence()) {
    for (const auto& item : n) {
      if (!all_flow(item)) return false;
    }
  } else {
    for (const auto& kv : n) {
      if (long_key(kv.first) || !all_flow(kv.second)) return false;
    }
  }
  return true;
}

void emit_node(YAML::Emitter& out, const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Sequence:
      if (all_flow(n)) out << YAML::Flow;
      out << YAML::BeginSeq;
      for (const auto& item : n) emit_node(out, item);
      out << YAML::EndSeq;
      break;
    case YAML::NodeType::Map:
      if (all_flow(n)) out << YAML::Flow;
      out << YAML::BeginMap;
      for (const auto& kv : n) {
        // yaml-cpp keeps a key format set for the rest of the document: set one for every key.
        out << (long_key(kv.first) ? YAML::LongKey : YAML::Auto);
        out << YAML::Key;
        emit_node(out, kv.first);
        out << YAML::Value;
        emit_node(out, kv.second);
      }
      out << YAML::EndMap;
      break;
    case YAML::NodeType::Scalar:
      emit_scalar(out, n);
      break;
    default:
      out << YAML::Null;
  }
}

bool is_separator(const std::string& line) {
  return line.rfind("---", 0) == 0 && (line.size() == 3 || line[3] == ' ' || line[3] == '\t' ||
                                       line[3] == '\r');
}

}  // namespace

std::string emit(const YAML::Node& n) {
  YAML::Emitter out;
  out.SetIndent(2);
  out.SetSeqFormat(YAML::Block);
  emit_node(out, n);
  return std::string(out.c_str()) + "\n";
}

// A string value that stays a string whatever it looks like.
YAML::Node str_node(const std::string& s) {
  YAML::Node n(s);
  n.SetTag("!");
  return n;
}

YAML::Node flow_map() {
  YAML::Node n(YAML::NodeType::Map);
  n.SetStyle(YAML::EmitterStyle::Flow);
  return n;
}


std::vector<Chunk> split_documents(const std::string& text) {
  std::vector<Chunk> chunks(1);
  std::size_t at = 0;
  while (at < text.size()) {
    std::size_t nl = text.find('\n', at);
    std::size_t end = nl == std::string::npos ? text.size() : nl + 1;
    std::string line = text.substr(at, end - at);
    std::string bare = line.substr(0, line.find_last_not_of("\r\n") + 1);
    if (is_separator(bare)) {
      chunks.push_back(Chunk{line, "", {}, ""});
    } else {
      chunks.back().text += line;
    }
    at = end;
  }
  return chunks;
}

// The comment lines that open a document (`# Source: chart/templates/x.yaml`): kept when the
// document is written anew, since yaml-cpp drops every comment it reads.
std::string leading_comments(const std::string& text) {
  std::string out;
  std::size_t at = 0;
  while (at < text.size()) {
    std::size_t nl = text.find('\n', at);
    std::size_t end = nl == std::string::npos ? text.size() : nl + 1;
    std::string line = text.substr(at, end - at);
    auto first = line.find_first_not_of(" \t\r\n");
    if (first != std::string::npos && line[first] != '#') break;
    if (first != std::string::npos) out += line.substr(0, line.find_last_not_of("\r\n") + 1) + "\n";
    at = end;
  }
  return out;
}

}  // namespace ebb::k8s
