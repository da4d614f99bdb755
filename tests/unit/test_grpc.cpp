// gRPC's field rules: which requests are gRPC, grpc-timeout, grpc-status, ebb's own statuses.
#include <catch2/catch.hpp>

#include "http/grpc.hpp"

using namespace ebb::http;

TEST_CASE("grpc: content-type names gRPC with its subtypes and parameters only", "[grpc]") {
  CHECK(is_grpc_content_type("application/grpc"));
  CHECK(is_grpc_content_type(" application/grpc+proto"));
  CHECK(is_grpc_content_type("application/grpc;charset=utf-8"));
  CHECK(is_grpc_content_type("Application/GRPC"));
  CHECK_FALSE(is_grpc_content_type("application/grpc-web"));
  CHECK_FALSE(is_grpc_content_type("application/grpcx"));
  CHECK_FALSE(is_grpc_content_type("application/json"));
  CHECK_FALSE(is_grpc_content_type(""));
}

TEST_CASE("grpc: grpc-timeout in every unit, rounded up to a millisecond", "[grpc]") {
  std::uint64_t ms = 0;
  CHECK((parse_grpc_timeout("1H", ms) && ms == 3'600'000));
  CHECK((parse_grpc_timeout("2M", ms) && ms == 120'000));
  CHECK((parse_grpc_timeout("3S", ms) && ms == 3000));
  CHECK((parse_grpc_timeout("250m", ms) && ms == 250));
  CHECK((parse_grpc_timeout("1500u", ms) && ms == 2));
  CHECK((parse_grpc_timeout("1n", ms) && ms == 1));
  CHECK((parse_grpc_timeout("99999999S", ms) && ms == 99'999'999'000));
  CHECK((parse_grpc_timeout("0m", ms) && ms == 0));
  CHECK_FALSE(parse_grpc_timeout("", ms));
  CHECK_FALSE(parse_grpc_timeout("m", ms));
  CHECK_FALSE(parse_grpc_timeout("123456789S", ms));  // nine digits: more than the spec's eight
  CHECK_FALSE(parse_grpc_timeout("10s", ms));         // units are case-sensitive
  CHECK_FALSE(parse_grpc_timeout("-1S", ms));
  CHECK_FALSE(parse_grpc_timeout("1.5S", ms));
}

TEST_CASE("grpc: grpc-status is one of the 17 codes", "[grpc]") {
  CHECK(parse_grpc_status("0") == 0);
  CHECK(parse_grpc_status(" 14 ") == 14);
  CHECK(parse_grpc_status("16") == 16);
  CHECK(parse_grpc_status("17") == -1);
  CHECK(parse_grpc_status("") == -1);
  CHECK(parse_grpc_status("1x") == -1);
  CHECK(parse_grpc_status("100") == -1);
}

TEST_CASE("grpc: ebb's own answers map to the statuses a client acts on", "[grpc]") {
  CHECK(grpc_status_for(502) == 14);
  CHECK(grpc_status_for(503) == 14);
  CHECK(grpc_status_for(504) == 4);
  CHECK(grpc_status_for(408) == 4);
  CHECK(grpc_status_for(413) == 8);
  CHECK(grpc_status_for(400) == 13);
}
