// For the HTTP fuzz targets: an llhttp parser (strict, as ebb builds it) whose callbacks fill an
// ebb http::MessageHead the way src/proxy/client.cpp and upstream.cpp do, with their limits, plus
// the checks both targets make on a head ebb wrote. No sockets: the http/ layer is driven directly.
#pragma once

#include <llhttp.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "config.hpp"
#include "http/message.hpp"
#include "http/writer.hpp"
#include "http/parser.hpp"

namespace ebb::fuzz {

// A failed invariant: print what broke and abort, so libFuzzer records the input.
[[noreturn]] inline void fail(const char* what, std::string_view detail) {
  std::fprintf(stderr, "fuzz invariant broken: %s\n--- %.*s\n---\n", what, static_cast<int>(detail.size()),
               detail.data());
  std::abort();
}

// One llhttp parser and the head it collects. `on_head` runs at on_headers_complete and returns
// what a callback there returns (0, 1 = no body, or an error).
template <typename Owner>
class HeadCollector {
 public:
  // `limits`: ebb's default head limits apply (false for the app's view of a head ebb wrote).
  HeadCollector(Owner& owner, llhttp_type_t type, bool limits) : owner_(owner) {
    if (!limits) max_uri_ = max_head_ = UINT64_MAX;
    llhttp_settings_init(&settings_);
    using B = http::Bind<HeadCollector>;
    settings_.on_message_begin = B::template cb<&HeadCollector::on_message_begin>;
    settings_.on_url = B::template data<&HeadCollector::on_target>;
    settings_.on_status = B::template data<&HeadCollector::on_target>;
    settings_.on_header_field = B::template data<&HeadCollector::on_header_field>;
    settings_.on_header_value = B::template data<&HeadCollector::on_header_value>;
    settings_.on_headers_complete = B::template cb<&HeadCollector::on_headers_complete>;
    settings_.on_body = B::template data<&HeadCollector::on_body>;
    settings_.on_message_complete = B::template cb<&HeadCollector::on_message_complete>;
    llhttp_init(&parser_, type, &settings_);
    parser_.data = this;
  }

  llhttp_errno_t execute(const char* p, size_t n) { return llhttp_execute(&parser_, p, n); }
  llhttp_t& parser() { return parser_; }
  http::MessageHead head;
  std::string body;
  int messages_begun = 0;
  bool head_done = false;
  bool complete = false;

 private:
  int on_message_begin() {
    ++messages_begun;
    head.clear();
    head_done = false;
    complete = false;
    body.clear();
    return 0;
  }
  // The limits of the default config, checked as client.cpp and upstream.cpp check them.
  int on_target(const char* at, size_t len) {
    size_t n = head.add_target(at, len);
    if (head.target().size() > max_uri_ || n > max_head_) return http::fail(&parser_, "limit");
    return 0;
  }
  int on_header_field(const char* at, size_t len) {
    if (head.add_name(at, len) > max_head_) return http::fail(&parser_, "limit");
    return 0;
  }
  int on_header_value(const char* at, size_t len) {
    if (head.add_value(at, len) > max_head_) return http::fail(&parser_, "limit");
    return 0;
  }
  int on_headers_complete() {
    head_done = true;
    return owner_.on_head(*this);
  }
  int on_body(const char* at, size_t len) {
    body.append(at, len);
    return 0;
  }
  int on_message_complete() {
    complete = true;
    return owner_.on_complete(*this);
  }

  Owner& owner_;
  std::uint64_t max_uri_ = Config{}.limits.max_uri_bytes;
  std::uint64_t max_head_ = Config{}.limits.max_header_bytes;
  llhttp_settings_t settings_;
  llhttp_t parser_;
};

// A head ebb wrote keeps hop-by-hop fields only where ebb itself adds them: Upgrade and
// "Connection: upgrade" for an upgrade, "Transfer-Encoding: chunked" when it frames the body, and
// `connection` (a response's "close" or "keep-alive"; "" for none).
inline void check_no_hop_by_hop(const http::MessageHead& h, bool upgrade, bool chunked,
                                std::string_view connection, std::string_view out) {
  for (size_t i = 0; i < h.count(); ++i) {
    std::string_view n = h.name(i), v = h.value(i);
    if (!http::is_hop_by_hop(n)) continue;
    if (upgrade && http::iequals(n, "upgrade")) continue;
    if (upgrade && http::iequals(n, "connection") && v == "upgrade") continue;
    if (chunked && http::iequals(n, "transfer-encoding") && v == "chunked") continue;
    if (!connection.empty() && http::iequals(n, "connection") && v == connection) continue;
    fail("a hop-by-hop field in the head ebb wrote", out);
  }
}

}  // namespace ebb::fuzz
