// Unit tests for the socket-free readers as the connections drive them: ResponseReader (status
// rules, body rules, 1xx, upgrade, close-delimited bodies, limits) and RequestReader's own
// verdicts (which status a broken or refused request gets). Each response is also fed split at
// every offset and byte by byte, and must read the same.
#include <catch2/catch.hpp>

#include "split.hpp"

#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "http/request_reader.hpp"
#include "http/response_reader.hpp"

namespace {

using ebb::http::RequestReader;
using ebb::http::ResponseReader;

// What a ResponseReader reported, in a form that must not depend on how the bytes were split.
class ResponseLog final : private ebb::http::ResponseSink {
 public:
  explicit ResponseLog(bool head_request = false, std::uint64_t max_header = 65536) {
    reader_.begin(head_request, max_header);
  }
  // Feeds the pieces as UpstreamConn does; `eof`: then the app closes the connection.
  std::string feed(const std::vector<std::string_view>& pieces, bool eof = false) {
    for (std::string_view piece : pieces) {
      std::string buf(piece);  // its own allocation: a read past the end is an ASan error
      if (done_) {
        after_ += buf;
        continue;
      }
      ResponseReader::Result r = reader_.feed(buf.data(), buf.size());
      using Kind = ResponseReader::Result::Kind;
      if (r.kind == Kind::kError) {
        log_ << "error(" << r.reason << ")";
        return log_.str();
      }
      if (r.kind == Kind::kComplete || r.kind == Kind::kUpgrade) {
        log_ << (r.kind == Kind::kComplete ? "complete" : "upgrade") << " ka=" << reader_.keep_alive() << ";";
        done_ = true;
        after_ += buf.substr(r.used);
      }
    }
    if (eof && !done_) log_ << (reader_.finish_at_eof() ? "complete at eof;" : "cut at eof;");
    log_ << "body(" << body_ << ") after(" << after_ << ")";
    return log_.str();
  }

 private:
  int on_informational() override {
    log_ << "1xx " << reader_.status() << ";";
    return 0;
  }
  int on_response_head() override {
    log_ << "head " << reader_.status() << " " << reader_.head().target();
    for (size_t i = 0; i < reader_.head().count(); ++i) log_ << " [" << reader_.head().name(i) << "=" << reader_.head().value(i) << "]";
    log_ << ";";
    return 0;
  }
  int on_response_body(const char* at, size_t len) override {
    body_.append(at, len);
    return 0;
  }

  ResponseReader reader_{*this};
  std::ostringstream log_;
  std::string body_;
  std::string after_;
  bool done_ = false;
};

std::string read_response(std::string_view data, const std::vector<size_t>& cuts, bool eof, bool head = false,
                          std::uint64_t max_header = 65536) {
  std::vector<std::string_view> pieces = ebb::test::split_at(data, cuts);
  return ResponseLog(head, max_header).feed(pieces, eof);
}

// Whole, then split once at every offset, then byte by byte: all must read the same.
std::string read_every_split(std::string_view data, bool eof = false, bool head = false,
                             std::uint64_t max_header = 65536) {
  std::string whole = read_response(data, {}, eof, head, max_header);
  for (size_t i = 0; i <= data.size(); ++i) {
    INFO("split at " << i);
    REQUIRE(read_response(data, {i}, eof, head, max_header) == whole);
  }
  std::vector<size_t> every = ebb::test::every_offset(data.size());
  REQUIRE(read_response(data, every, eof, head, max_header) == whole);
  return whole;
}

}  // namespace

TEST_CASE("a response with Content-Length reads the same at every split point", "[http][reader]") {
  CHECK(read_every_split("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello") ==
        "head 200 OK [Content-Length=5] [X-A=b];complete ka=1;body(hello) after()");
}

TEST_CASE("a chunked response is de-chunked, and bytes after it are not the response's", "[http][reader]") {
  CHECK(read_every_split("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nXY") ==
        "head 200 OK [Transfer-Encoding=chunked];complete ka=1;body(abcde) after(XY)");
}

TEST_CASE("a close-delimited body ends at EOF, and an EOF inside a framed body is a cut", "[http][reader]") {
  CHECK(read_every_split("HTTP/1.1 200 OK\r\n\r\nuntil the end", true) ==
        "head 200 OK;complete at eof;body(until the end) after()");
  CHECK(read_every_split("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", true) ==
        "head 200 OK [Content-Length=10];cut at eof;body(short) after()");
  CHECK(read_every_split("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true) ==
        "head 200 OK [Content-Length=10];cut at eof;body() after()");
}

TEST_CASE("1xx answers come before the final head, which alone completes the response", "[http][reader]") {
  CHECK(read_every_split("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                         "HTTP/1.1 204 No Content\r\n\r\n") == "1xx 100;1xx 103;head 204 No Content;complete ka=1;body() after()");
}

TEST_CASE("a 101 pauses the reader; what follows belongs to the tunnel", "[http][reader]") {
  CHECK(read_every_split("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\x81\x02hi") ==
        "head 101 Switching Protocols [Upgrade=websocket] [Connection=upgrade];upgrade ka=0;body() after(\x81\x02hi)");
}

TEST_CASE("no body after HEAD, 204 or 304, whatever Content-Length says", "[http][reader]") {
  CHECK(read_every_split("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false, true) ==
        "head 200 OK [Content-Length=5];complete ka=1;body() after()");
  CHECK(read_every_split("HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nnext") ==
        "head 304 Not Modified [Content-Length=5];complete ka=1;body() after(next)");
}

TEST_CASE("Connection: close and HTTP/1.0 make a response not reusable", "[http][reader]") {
  CHECK(read_every_split("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n") ==
        "head 200 OK [Content-Length=0] [Connection=close];complete ka=0;body() after()");
  CHECK(read_every_split("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx") ==
        "head 200 OK [Content-Length=1];complete ka=0;body(x) after()");
}

TEST_CASE("a status outside 100-599 is an error, not a response", "[http][reader]") {
  for (const char* s : {"HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n", "HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n"}) {
    INFO(s);
    CHECK(read_every_split(s) == "error(status code outside 100-599)");
  }
}

TEST_CASE("a response head over the limit is an error at every split point", "[http][reader]") {
  std::string head = "HTTP/1.1 200 OK\r\nX-Big: " + std::string(300, 'a') + "\r\nContent-Length: 0\r\n\r\n";
  CHECK(read_every_split(head, false, false, 100) == "error(response head too large)");
  CHECK(read_every_split(head, false, false, 1000).rfind("head 200", 0) == 0);
}

TEST_CASE("smuggling shapes in a response are errors", "[http][reader]") {
  for (const char* s : {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
                        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                        "HTTP/1.1 200 OK\nContent-Length: 0\n\n"}) {
    INFO(s);
    CHECK(read_response(s, {}, false).find("error(") != std::string::npos);
  }
}

namespace {

// A sink that can refuse a request at its head, as the exchange does at upstream_limits.
class Refuser final : private ebb::http::RequestSink {
 public:
  explicit Refuser(bool refuse) : refuse_(refuse) {}
  RequestReader::Result feed(std::string data, const ebb::http::RequestLimits& limits) {
    return reader_.feed(data.data(), data.size(), limits);
  }
  const ebb::http::Request& request() const { return reader_.request(); }

 private:
  void on_request_begin() override {}
  int on_request_head() override { return refuse_ ? reader_.reject(503, "full") : 0; }
  int on_request_body(const char*, size_t) override { return 0; }
  int on_request_complete() override { return 0; }
  RequestReader reader_{*this};
  bool refuse_;
};

RequestReader::Result verdict(const std::string& req, ebb::http::RequestLimits limits = {}, bool refuse = false) {
  return Refuser(refuse).feed(req, limits);
}

}  // namespace

TEST_CASE("the request reader gives each broken request its status", "[http][reader]") {
  using Kind = RequestReader::Result::Kind;
  ebb::http::RequestLimits small;
  small.max_uri_bytes = 10;
  small.max_header_bytes = 100;
  small.max_body_bytes = 3;
  struct Case {
    std::string req;
    int status;
  } cases[] = {
      {"GET /0123456789abc HTTP/1.1\r\nHost: h\r\n\r\n", 414},
      {"GET / HTTP/1.1\r\nHost: h\r\nX: " + std::string(200, 'a') + "\r\n\r\n", 431},
      {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nabcd", 413},
      {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n", 413},
      {"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505},
      {"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", 405},
      {"GET / HTTP/1.1\r\n\r\n", 400},
      {"GET / HTTP/1.1\nHost: h\n\n", 400},
  };
  for (const Case& c : cases) {
    INFO(c.req);
    RequestReader::Result r = verdict(c.req, small);
    REQUIRE(r.kind == Kind::kError);
    CHECK(r.status == c.status);
    CHECK(r.reason != nullptr);
  }
  RequestReader::Result ok = verdict("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET", small);
  CHECK(ok.kind == Kind::kPaused);
  CHECK(ok.used == std::string("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc").size());
}

TEST_CASE("a request refused by the sink at its head gets the sink's status and reason", "[http][reader]") {
  RequestReader::Result r = verdict("GET / HTTP/1.1\r\nHost: h\r\n\r\n", {}, true);
  REQUIRE(r.kind == RequestReader::Result::Kind::kError);
  CHECK(r.status == 503);
  CHECK(std::string(r.reason) == "full");
}

TEST_CASE("the request reader says what the exchange needs of a head", "[http][reader]") {
  Refuser r(false);
  r.feed("HEAD /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", {});
  CHECK(r.request().head_method);
  CHECK(r.request().http10);
  CHECK_FALSE(r.request().close);
  CHECK(r.request().replayable);
  Refuser up(false);
  up.feed("GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", {});
  CHECK(up.request().upgrade);
  CHECK(up.request().info.websocket);
  Refuser post(false);
  post.feed("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx", {});
  CHECK(post.request().close);
  CHECK_FALSE(post.request().replayable);
  CHECK(post.request().body_bytes == 1);
  CHECK(post.request().head_bytes == std::string("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nConnection: close\r\n\r\n").size());
}
