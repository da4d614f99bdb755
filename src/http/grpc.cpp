// The gRPC field rules.
#include "http/grpc.hpp"

#include "http/message.hpp"

namespace ebb::http {

bool is_grpc_content_type(std::string_view type) {
  type = trim(type);
  if (type.size() < 16 || !iequals(type.substr(0, 16), "application/grpc")) return false;
  return type.size() == 16 || type[16] == '+' || type[16] == ';';
}

int grpc_status_for(int http_status) {
  switch (http_status) {
    case 408:
    case 504: return 4;
    case 502:
    case 503: return 14;
    case 413:
    case 431: return 8;
    default: return 13;
  }
}

bool parse_grpc_timeout(std::string_view v, std::uint64_t& ms) {
  v = trim(v);
  if (v.size() < 2 || v.size() > 9) return false;
  std::uint64_t n = 0;
  for (char c : v.substr(0, v.size() - 1)) {
    if (c < '0' || c > '9') return false;
    n = n * 10 + static_cast<std::uint64_t>(c - '0');
  }
  switch (v.back()) {
    case 'H': ms = n * 3'600'000; break;
    case 'M': ms = n * 60'000; break;
    case 'S': ms = n * 1000; break;
    case 'm': ms = n; break;
    case 'u': ms = (n + 999) / 1000; break;
    case 'n': ms = (n + 999'999) / 1'000'000; break;
    default: return false;
  }
  if (ms == 0 && n > 0) ms = 1;
  return true;
}

int parse_grpc_status(std::string_view v) {
  v = trim(v);
  if (v.empty() || v.size() > 2) return -1;
  int n = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return -1;
    n = n * 10 + (c - '0');
  }
  return n < kGrpcStatusCodes ? n : -1;
}

}  // namespace ebb::http
