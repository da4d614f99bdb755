// Fuzz target: ebb's response-head rules and chunked framing. The input (after two control
// bytes: the split point and the request's shape) is an app's answer, parsed by strict llhttp as
// UpstreamConn parses it, judged and rewritten as ClientConn::upstream_head does (analyse_response,
// write_response_head). Invariants: the split never changes the outcome; each head written parses
// again with the same status and no hop-by-hop field but those ebb adds, its status line in
// RFC 9112's alphabet whatever the app's reason phrase; and a complete body
// arrives unchanged when framed as the head written says (re-chunked, or as it came).
#include <charconv>
#include <cstdint>
#include <string>

#include "http_collect.hpp"

namespace {

using ebb::fuzz::fail;
using ebb::fuzz::HeadCollector;
namespace http = ebb::http;

// The client's view of what ebb sends: the head's checks, and the body it frames.
struct ClientView {
  int status = 0;
  bool no_body = false;
  bool upgrade = false;
  bool chunked = false;
  std::string_view connection;
  std::string_view out;
  int on_head(HeadCollector<ClientView>& c) {
    if (llhttp_get_status_code(&c.parser()) != status) fail("the status changed", out);
    ebb::fuzz::check_no_hop_by_hop(c.head, upgrade, chunked, connection, out);
    return no_body ? 1 : 0;
  }
  int on_complete(HeadCollector<ClientView>&) { return HPE_PAUSED; }
};

struct Exchange {
  bool head_method = false;
  bool http10 = false;
  bool upgrade_asked = false;
  bool request_complete = false;
  // What ebb sends the client, heads and the framing of the final response.
  std::string sent;
  bool final_head = false;
  size_t final_at = 0;  // where the final response's head starts in `sent`
  bool no_body = false;
  http::ResponseFraming framing;
  http::ResponseInfo info;

  int on_head(HeadCollector<Exchange>& c) {
    int status = llhttp_get_status_code(&c.parser());
    if (status < 100 || status > 599) return http::fail(&c.parser(), "status code outside 100-599");
    if (status >= 100 && status < 200 && status != 101) {  // ClientConn::upstream_informational
      if (http10) return 0;
      http::ResponseFraming f;
      f.status = status;
      write(c.head, http::analyse_response(c.head), f, false);
      return 0;
    }
    info = http::analyse_response(c.head);
    framing = http::ResponseFraming{};
    framing.status = status;
    if (status == 101) {
      if (!upgrade_asked) return http::fail(&c.parser(), "upstream switched protocols unasked");
      framing.upgrade = true;
    } else {
      no_body = head_method || status == 204 || status == 304;
      bool close_delimited = !no_body && !info.has_content_length && http10;
      framing.chunked = !no_body && !info.has_content_length && !http10;
      framing.close = upgrade_asked || close_delimited || !request_complete;
      framing.keep_alive_10 = http10 && !framing.close;
    }
    final_head = true;
    final_at = sent.size();
    write(c.head, info, framing, no_body);
    return no_body ? 1 : 0;  // UpstreamConn::on_headers_complete
  }
  int on_complete(HeadCollector<Exchange>& c) {
    int status = llhttp_get_status_code(&c.parser());
    return status >= 100 && status < 200 ? 0 : HPE_PAUSED;
  }

  void write(const http::MessageHead& head, const http::ResponseInfo& ri, const http::ResponseFraming& f,
             bool head_only) {
    std::string out;
    http::write_response_head(out, head, ri, f);
    // RFC 9112 §4: the status line is HTTP-version SP status-code SP reason-phrase, all of it in
    // the field-value alphabet (HTAB, SP, VCHAR, obs-text): whatever reason the app sent.
    if (!http::valid_field_value(std::string_view(out).substr(0, out.find("\r\n"))))
      fail("the status line carries a byte outside the reason-phrase grammar", out);
    std::string_view connection = f.upgrade ? "" : f.close ? "close" : f.keep_alive_10 ? "keep-alive" : "";
    ClientView v{f.status, true, f.upgrade, f.chunked, connection, out};
    HeadCollector<ClientView> parser(v, HTTP_RESPONSE, false);
    std::string again = out;
    llhttp_errno_t err = parser.execute(again.data(), again.size());
    if (!parser.head_done) fail(llhttp_errno_name(err), out);
    sent += out;
  }
};

// The body a client reads from ebb's head plus the body framed as that head says.
void check_body(const Exchange& ex, const std::string& body) {
  std::string msg = ex.sent.substr(ex.final_at);
  if (ex.framing.chunked) {
    if (!body.empty()) {
      char hex[20];
      auto r = std::to_chars(hex, hex + sizeof hex, body.size(), 16);
      msg.append(hex, r.ptr).append("\r\n").append(body).append("\r\n");
    }
    msg += "0\r\n\r\n";
  } else {
    msg += body;
  }
  std::string_view connection = ex.framing.close ? "close" : ex.framing.keep_alive_10 ? "keep-alive" : "";
  ClientView v{ex.framing.status, false, false, ex.framing.chunked, connection, msg};
  HeadCollector<ClientView> parser(v, HTTP_RESPONSE, false);
  llhttp_errno_t err = parser.execute(msg.data(), msg.size());
  if (err == HPE_OK && llhttp_message_needs_eof(&parser.parser())) err = llhttp_finish(&parser.parser());
  if (!parser.complete) fail("the framed body does not complete", msg);
  if (parser.body != body) fail("the body changed in framing", msg);
}

std::string run(const Exchange& shape, std::string buf, size_t split) {
  Exchange ex = shape;
  HeadCollector<Exchange> parser(ex, HTTP_RESPONSE, true);
  llhttp_errno_t err = HPE_OK;
  for (auto [at, len] : {std::pair{size_t{0}, split}, std::pair{split, buf.size() - split}}) {
    if (len == 0) continue;
    err = parser.execute(buf.data() + at, len);
    if (err != HPE_OK) break;
  }
  // At the app's EOF, a body delimited by the close ends (UpstreamConn::on_read).
  if (err == HPE_OK && parser.head_done && llhttp_message_needs_eof(&parser.parser())) {
    err = llhttp_finish(&parser.parser());
  }
  bool done = parser.complete && ex.final_head && !ex.framing.upgrade && !ex.no_body;
  if (done) check_body(ex, parser.body);
  return ex.sent + (done ? "\n-- body:\n" + parser.body : std::string("\n-- no body"));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  Exchange shape;
  shape.head_method = data[1] & 1;
  shape.http10 = data[1] & 2;
  shape.upgrade_asked = (data[1] & 4) && !shape.http10;
  shape.request_complete = !(data[1] & 8);
  std::string input(reinterpret_cast<const char*>(data) + 2, size - 2);
  size_t split = input.empty() ? 0 : data[0] % (input.size() + 1);
  std::string whole = run(shape, input, input.size());
  std::string parts = run(shape, input, split);
  if (whole != parts) fail("splitting the input changed the outcome", whole + "\n--- split:\n" + parts);
  return 0;
}
