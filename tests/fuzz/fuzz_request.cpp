// Fuzz target: ebb's request-head rules. The input, split in two at a point its first byte picks,
// goes through http::HeadScanner and strict llhttp as ClientConn::parse feeds them, with the
// head collected and judged by http::analyse_request. Invariants: the split never changes the
// outcome, and an accepted head serialises (http::write_request_head) to one that the same scanner
// and llhttp accept again, that analyse_request accepts, and that has no hop-by-hop field.
#include <cstdint>
#include <cstring>
#include <string>

#include "http_collect.hpp"
#include "http/head_scan.hpp"

namespace {

using ebb::fuzz::fail;
using ebb::fuzz::HeadCollector;
namespace http = ebb::http;

// The parse of a head ebb wrote, as the app would see it.
struct Reparse {
  bool upgrade = false;
  bool chunked = false;
  std::string_view method;
  std::string_view out;
  int on_head(HeadCollector<Reparse>& c) {
    const llhttp_t& p = c.parser();
    if (p.http_major != 1 || p.http_minor != 1) fail("the written head is not HTTP/1.1", out);
    if (method != llhttp_method_name(static_cast<llhttp_method_t>(p.method))) fail("the method changed", out);
    http::RequestInfo info = http::analyse_request(c.head, true);
    if (info.error != nullptr) fail(info.error, out);
    if (info.host_count != 1) fail("the written head has not exactly one Host", out);
    ebb::fuzz::check_no_hop_by_hop(c.head, upgrade, chunked, "", out);
    return 1;  // the head is all that is checked
  }
  int on_complete(HeadCollector<Reparse>&) { return HPE_PAUSED; }
};

// The client side, as ClientConn::on_headers_complete judges the first request.
struct Client {
  bool accepted = false;
  std::string out;
  int on_head(HeadCollector<Client>& c) {
    const llhttp_t& p = c.parser();
    if (p.http_major != 1 || p.http_minor > 1) return http::fail(&c.parser(), "version");
    bool http10 = p.http_minor == 0;
    auto method = static_cast<llhttp_method_t>(p.method);
    if (method == HTTP_CONNECT) return http::fail(&c.parser(), "CONNECT");
    http::RequestInfo info = http::analyse_request(c.head, !http10);
    if (info.error != nullptr) return http::fail(&c.parser(), info.error);
    http::ForwardContext ctx;
    ctx.method = llhttp_method_name(method);
    ctx.client_ip = "192.0.2.7";
    ctx.request_id = "0123456789abcdef";
    ctx.default_host = "127.0.0.1:3000";
    ctx.body_chunked = info.chunked;
    ctx.upgrade = info.has_upgrade && info.connection.upgrade && !http10;
    accepted = true;
    out.clear();
    http::write_request_head(out, c.head, info, ctx);
    check(ctx);
    return 0;
  }
  int on_complete(HeadCollector<Client>&) { return HPE_PAUSED; }

  void check(const http::ForwardContext& ctx) {
    std::string again = out;
    http::HeadScanner scan;
    if (const char* bad = scan.feed(again.data(), again.size())) fail(bad, out);
    if (!scan.done() || scan.size() != out.size()) fail("the scanner does not end the written head at its end", out);
    Reparse r{ctx.upgrade, ctx.body_chunked, ctx.method, out};
    HeadCollector<Reparse> parser(r, HTTP_REQUEST, false);
    llhttp_errno_t err = parser.execute(again.data(), again.size());
    if (!parser.head_done) fail(llhttp_errno_name(err), out);
  }
};

// What ClientConn::parse does with the first request of a connection, the bytes arriving in
// two reads: `std::string::npos` when rejected, else the head written for the app.
std::string run(std::string buf, size_t split) {
  Client client;
  HeadCollector<Client> parser(client, HTTP_REQUEST, true);
  http::HeadScanner scan;
  size_t pieces[2][2] = {{0, split}, {split, buf.size() - split}};
  for (auto& piece : pieces) {
    char* data = buf.data() + piece[0];
    size_t len = piece[1];
    if (len == 0) continue;  // a read always brings bytes
    if (!scan.done() && scan.feed(data, len) != nullptr) return "rejected";
    llhttp_errno_t err = parser.execute(data, len);
    if (err != HPE_OK) break;
  }
  return client.accepted ? client.out : "rejected";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::string input(reinterpret_cast<const char*>(data) + 1, size - 1);
  size_t split = input.empty() ? 0 : data[0] % (input.size() + 1);
  std::string whole = run(input, input.size());
  std::string parts = run(input, split);
  if (whole != parts) fail("splitting the input changed the outcome", whole + "\n--- split:\n" + parts);
  return 0;
}
