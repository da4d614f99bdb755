// Admin request targets: slash folding, query parameters, token redaction.
#include "admin/admin_target.hpp"

namespace ebb::admin {

namespace {

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    int hi = 0, lo = 0;
    if (s[i] == '%' && i + 2 < s.size() && (hi = hex_digit(s[i + 1])) >= 0 && (lo = hex_digit(s[i + 2])) >= 0) {
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// Calls fn(name, value, whole) for each '&'-separated parameter; stops when fn returns true.
template <class F>
void for_each_param(std::string_view query, F fn) {
  while (true) {
    size_t amp = query.find('&');
    std::string_view part = query.substr(0, amp);
    size_t eq = part.find('=');
    std::string_view name = part.substr(0, eq);
    std::string_view value = eq == std::string_view::npos ? std::string_view{} : part.substr(eq + 1);
    if (!part.empty() && fn(name, value, eq != std::string_view::npos)) return;
    if (amp == std::string_view::npos) return;
    query.remove_prefix(amp + 1);
  }
}

}  // namespace

AdminTarget split_target(std::string_view target) {
  size_t q = target.find('?');
  AdminTarget t;
  t.path = target.substr(0, q);
  t.query = q == std::string_view::npos ? std::string_view{} : target.substr(q + 1);
  while (t.path.size() > 1 && t.path[0] == '/' && t.path[1] == '/') t.path.remove_prefix(1);
  return t;
}

std::optional<std::string> query_param(std::string_view query, std::string_view name) {
  std::optional<std::string> found;
  for_each_param(query, [&](std::string_view n, std::string_view v, bool) {
    if (percent_decode(n) != name) return false;
    found = percent_decode(v);
    return true;
  });
  return found;
}

std::string redact_target(std::string_view target) {
  size_t q = target.find('?');
  if (q == std::string_view::npos) return std::string(target);
  std::string out(target.substr(0, q + 1));
  bool first = true;
  for_each_param(target.substr(q + 1), [&](std::string_view n, std::string_view v, bool has_eq) {
    if (!first) out += '&';
    first = false;
    out += n;
    // A percent-encoded name ("%74oken") is the same parameter to query_param's callers only
    // when it decodes to it; compare decoded so no spelling slips a token into a log.
    if (percent_decode(n) == kTokenParam) out += "=REDACTED";
    else if (has_eq) out.append("=").append(v);
    return false;
  });
  return out;
}

bool token_equal(std::string_view given, std::string_view token) {
  if (given.size() != token.size()) return false;
  unsigned diff = 0;
  for (size_t k = 0; k < given.size(); ++k) diff |= static_cast<unsigned>(given[k] ^ token[k]);
  return diff == 0;
}

}  // namespace ebb::admin
