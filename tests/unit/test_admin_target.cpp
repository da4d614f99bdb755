// Unit tests for src/admin/admin_target.*: the kubelet's "//drain", query parameters, the token
// in the query and its redaction, the constant-time comparison.
#include <catch2/catch.hpp>

#include <string>

#include "admin/admin_target.hpp"

using ebb::admin::query_param;
using ebb::admin::redact_target;
using ebb::admin::split_target;
using ebb::admin::token_equal;

TEST_CASE("split_target folds repeated leading slashes and splits the query", "[admin]") {
  for (const char* t : {"/drain?wait=true", "//drain?wait=true", "///drain?wait=true"}) {
    INFO(t);
    auto s = split_target(t);
    CHECK(s.path == "/drain");
    CHECK(s.query == "wait=true");
  }
  CHECK(split_target("/").path == "/");
  CHECK(split_target("//").path == "/");
  CHECK(split_target("/healthz").query.empty());
  CHECK(split_target("//metrics?").path == "/metrics");
  // Only leading slashes: an inner "//" is another path, and stays unknown.
  CHECK(split_target("/drain//x").path == "/drain//x");
  CHECK(split_target("/x//drain").path == "/x//drain");
  CHECK(split_target("drain").path == "drain");
}

TEST_CASE("query_param finds, decodes and tells absent from empty", "[admin]") {
  CHECK(query_param("wait=true", "wait") == "true");
  CHECK(query_param("a=1&wait=true&token=s3cret", "token") == "s3cret");
  CHECK(query_param("token=a%2Fb%3d", "token") == "a/b=");
  CHECK(query_param("%74oken=x", "token") == "x");
  CHECK(query_param("token=", "token") == "");
  CHECK(query_param("token", "token") == "");
  CHECK(query_param("token=first&token=second", "token") == "first");
  CHECK(query_param("bad%zz=1&token=%4", "token") == "%4");  // a broken escape stays as it is
  CHECK_FALSE(query_param("", "token").has_value());
  CHECK_FALSE(query_param("tokens=x&xtoken=y", "token").has_value());
  CHECK_FALSE(query_param("wait=truex", "token").has_value());
  CHECK(query_param("wait=truex", "wait") == "truex");
}

TEST_CASE("redact_target hides every token value and nothing else", "[admin]") {
  CHECK(redact_target("/drain?wait=true&token=s3cret") == "/drain?wait=true&token=REDACTED");
  CHECK(redact_target("//drain?token=s3cret&wait=true") == "//drain?token=REDACTED&wait=true");
  CHECK(redact_target("/drain?token=a&token=b") == "/drain?token=REDACTED&token=REDACTED");
  CHECK(redact_target("/drain?%74oken=s3cret") == "/drain?%74oken=REDACTED");
  CHECK(redact_target("/drain?token") == "/drain?token=REDACTED");
  CHECK(redact_target("/drain?wait=true") == "/drain?wait=true");
  CHECK(redact_target("/nope") == "/nope");
  CHECK(redact_target("/x?tokens=keep&xtoken=keep") == "/x?tokens=keep&xtoken=keep");
  CHECK(redact_target("/reload?token=s3cret").find("s3cret") == std::string::npos);
}

TEST_CASE("token_equal is exact", "[admin]") {
  CHECK(token_equal("s3cret", "s3cret"));
  CHECK_FALSE(token_equal("s3cre", "s3cret"));
  CHECK_FALSE(token_equal("s3cretx", "s3cret"));
  CHECK_FALSE(token_equal("S3cret", "s3cret"));
  CHECK_FALSE(token_equal("", "s3cret"));
}
