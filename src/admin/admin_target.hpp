// The admin request target as callers really send it: normalised path, query parameters, the
// drain token given in the query, and the redacted form that is safe to log.
// Pure functions on strings, so every odd shape is unit-tested without sockets.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace ebb::admin {

// The query parameter that carries the drain token for kubelets that drop httpHeaders.
inline constexpr std::string_view kTokenParam = "token";

struct AdminTarget {
  std::string_view path;   // "/drain": repeated leading slashes folded to one
  std::string_view query;  // "wait=true&token=..." (without the '?'), or empty
};

// Kubelets before 1.26 build a hook's URL as "http://IP:PORT/" + path, so "/drain" arrives as
// "//drain". Every admin path goes through here once.
AdminTarget split_target(std::string_view target);

// The percent-decoded value of the first `name=` parameter; nullopt when absent. A bare `name`
// (no '=') has the empty value.
std::optional<std::string> query_param(std::string_view query, std::string_view name);

// The target with every token parameter's value replaced by REDACTED: the only form of a target
// that may reach a log line.
std::string redact_target(std::string_view target);

// Constant-time comparison: the token guards a shutdown switch.
bool token_equal(std::string_view given, std::string_view token);

}  // namespace ebb::admin
