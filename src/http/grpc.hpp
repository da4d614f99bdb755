// The few gRPC rules a proxy applies (gRPC over HTTP/2, PROTOCOL-HTTP2.md): which requests are
// gRPC, the status ebb gives its own answers, the grpc-timeout and grpc-status fields.
#pragma once

#include <cstdint>
#include <string_view>

namespace ebb::http {

// content-type application/grpc, application/grpc+proto, application/grpc;...
bool is_grpc_content_type(std::string_view type);

// gRPC's status for an answer ebb makes itself (the gRPC HTTP mapping, timeouts kept apart):
// 4 DEADLINE_EXCEEDED for 408/504, 14 UNAVAILABLE for 502/503 (the client may retry),
// 8 RESOURCE_EXHAUSTED for 413/431, else 13 INTERNAL.
int grpc_status_for(int http_status);

// grpc-timeout: 1 to 8 digits and a unit (H M S m u n), as milliseconds rounded up (a timeout
// under a millisecond is 1 ms: it must still fire). False when malformed.
bool parse_grpc_timeout(std::string_view v, std::uint64_t& ms);

// grpc-status: 0..16 (the codes gRPC defines), or -1 when absent or malformed.
int parse_grpc_status(std::string_view v);
constexpr int kGrpcStatusCodes = 17;

}  // namespace ebb::http
