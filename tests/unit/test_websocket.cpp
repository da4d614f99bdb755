// Unit tests for src/proxy/websocket.hpp: WsFrameTracker follows RFC 6455 §5.2 frames of every
// length encoding, masked or not, split anywhere, and finds the boundary where ebb may put its
// close frame at the drain deadline.
#include <catch2/catch.hpp>

#include <cstdint>
#include <iterator>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "proxy/websocket.hpp"

namespace {

using Bytes = std::vector<unsigned char>;
using ebb::WsFrameTracker;

enum class Enc { kMin, k7, k16, k64 };

// A frame header: FIN, opcode, length in the requested encoding, and a masking key when masked.
Bytes header(unsigned opcode, std::uint64_t len, bool masked, Enc enc = Enc::kMin, bool fin = true) {
  if (enc == Enc::kMin) enc = len < 126 ? Enc::k7 : len <= 0xffff ? Enc::k16 : Enc::k64;
  Bytes h{static_cast<unsigned char>((fin ? 0x80 : 0) | opcode)};
  unsigned char mask = masked ? 0x80 : 0;
  if (enc == Enc::k7) {
    h.push_back(static_cast<unsigned char>(mask | len));
  } else if (enc == Enc::k16) {
    h.push_back(mask | 126);
    h.push_back(static_cast<unsigned char>(len >> 8));
    h.push_back(static_cast<unsigned char>(len));
  } else {
    h.push_back(mask | 127);
    for (int k = 7; k >= 0; --k) h.push_back(static_cast<unsigned char>(len >> (8 * k)));
  }
  if (masked) h.insert(h.end(), {0x37, 0xfa, 0x21, 0x3d});
  return h;
}

// A whole frame whose payload is full of bytes that would mean something in a header.
Bytes frame(unsigned opcode, std::uint64_t len, bool masked, Enc enc = Enc::kMin, bool fin = true) {
  Bytes f = header(opcode, len, masked, enc, fin);
  static const unsigned char noise[] = {0x81, 0xff, 0x7f, 0x7e, 0x88, 0x00, 0xfe};
  for (std::uint64_t i = 0; i < len; ++i) f.push_back(noise[i % sizeof noise]);
  return f;
}

struct Stream {
  Bytes bytes;
  std::set<size_t> boundaries{0};  // offsets where a frame starts or the stream ends
  void add(const Bytes& f) {
    bytes.insert(bytes.end(), f.begin(), f.end());
    boundaries.insert(bytes.size());
  }
};

// For every split point i: follow bytes[0:i] with consume(), then to_boundary(bytes[i:]) must
// return the distance to the next boundary (0 on one), leave the tracker on it, and the rest of
// the stream must end on a boundary. Returns a description of the first failing split, or "".
std::string check_every_split(const Stream& s) {
  const Bytes& b = s.bytes;
  for (size_t i = 0; i <= b.size(); ++i) {
    WsFrameTracker t;
    t.consume(b.data(), i);
    bool on = s.boundaries.count(i) > 0;
    std::ostringstream err;
    if (t.at_boundary() != on) {
      err << "split " << i << ": at_boundary " << t.at_boundary() << " expected " << on;
      return err.str();
    }
    size_t next = *s.boundaries.lower_bound(i);
    size_t r = t.to_boundary(b.data() + i, b.size() - i);
    if (r != next - i) {
      err << "split " << i << ": to_boundary " << r << " expected " << next - i;
      return err.str();
    }
    if (!t.at_boundary()) {
      err << "split " << i << ": not on a boundary after to_boundary";
      return err.str();
    }
    t.consume(b.data() + next, b.size() - next);
    if (!t.at_boundary()) {
      err << "split " << i << ": stream did not end on a boundary";
      return err.str();
    }
  }
  return "";
}

}  // namespace

TEST_CASE("a fresh tracker is on a boundary and to_boundary then consumes nothing", "[websocket]") {
  WsFrameTracker t;
  CHECK(t.at_boundary());
  Bytes f = frame(0x1, 3, false);
  CHECK(t.to_boundary(f.data(), f.size()) == 0);
  CHECK(t.to_boundary(nullptr, 0) == 0);
  t.consume(f.data(), 4);  // if to_boundary had eaten bytes, the header would be misread here
  CHECK_FALSE(t.at_boundary());
  t.consume(f.data() + 4, 1);
  CHECK(t.at_boundary());
}

TEST_CASE("every length encoding, masked or not, is followed at every split point", "[websocket]") {
  struct Shape {
    std::uint64_t len;
    Enc enc;
    size_t header_len;
  };
  const std::vector<Shape> shapes = {
      {0, Enc::k7, 2},       {1, Enc::k7, 2},      {125, Enc::k7, 2},      {126, Enc::k16, 4},
      {127, Enc::k16, 4},    {1000, Enc::k16, 4},  {65535, Enc::k16, 4},   {5, Enc::k16, 4},
      {0, Enc::k16, 4},      {65536, Enc::k64, 10}, {70000, Enc::k64, 10}, {3, Enc::k64, 10},
      {0, Enc::k64, 10},
  };
  for (const Shape& sh : shapes) {
    for (bool masked : {false, true}) {
      Bytes f = frame(0x2, sh.len, masked, sh.enc);
      INFO("len " << sh.len << " enc " << static_cast<int>(sh.enc) << " masked " << masked);
      REQUIRE(f.size() == sh.header_len + (masked ? 4 : 0) + sh.len);
      Stream s;
      s.add(f);
      CHECK(check_every_split(s) == "");
      WsFrameTracker t;
      t.consume(f.data(), f.size() - 1);
      CHECK_FALSE(t.at_boundary());
      CHECK(t.to_boundary(f.data() + f.size() - 1, 1) == 1);
      CHECK(t.at_boundary());
    }
  }
}

TEST_CASE("several frames in one buffer, zero-length ones included, at every split point", "[websocket]") {
  Stream s;
  s.add(frame(0x1, 5, false, Enc::kMin, false));  // text fragment
  s.add(frame(0x9, 0, false));                    // ping between fragments
  s.add(frame(0xA, 0, true));                     // masked empty pong
  s.add(frame(0x0, 300, true, Enc::kMin, false));  // continuation, 16-bit
  s.add(frame(0x0, 0, false));                    // empty final continuation
  s.add(frame(0x2, 70000, false));                // binary, 64-bit
  s.add(frame(0x2, 126, true));
  s.add(frame(0x8, 2, true));                     // close
  CHECK(s.boundaries.size() == 9);
  CHECK(check_every_split(s) == "");
}

TEST_CASE("fed byte by byte, the tracker is on a boundary exactly at frame ends", "[websocket]") {
  Stream s;
  s.add(frame(0x1, 0, false));
  s.add(frame(0x1, 2, true));
  s.add(frame(0x2, 200, false));
  s.add(frame(0x2, 0, true, Enc::k64));
  s.add(frame(0x2, 7, true, Enc::k64));
  s.add(frame(0x1, 1, false));
  WsFrameTracker consumed;
  WsFrameTracker seeking;
  std::vector<size_t> seen, found;
  for (size_t i = 0; i < s.bytes.size(); ++i) {
    consumed.consume(&s.bytes[i], 1);
    if (consumed.at_boundary()) seen.push_back(i + 1);
    if (seeking.at_boundary()) {
      // On a boundary to_boundary takes nothing, so the byte is followed with consume.
      CHECK(seeking.to_boundary(&s.bytes[i], 1) == 0);
      seeking.consume(&s.bytes[i], 1);
      if (seeking.at_boundary()) found.push_back(i + 1);
    } else {
      size_t r = seeking.to_boundary(&s.bytes[i], 1);
      if (r == 1) found.push_back(i + 1);
      else CHECK(r == WsFrameTracker::kNone);
    }
  }
  std::vector<size_t> ends(std::next(s.boundaries.begin()), s.boundaries.end());
  CHECK(seen == ends);
  CHECK(found == ends);
}

TEST_CASE("to_boundary returns kNone while the frame goes on, and follows those bytes", "[websocket]") {
  Bytes f = frame(0x2, 100, true);
  Bytes next = frame(0x1, 1, false);
  WsFrameTracker t;
  t.consume(f.data(), 1);  // half a header
  CHECK(t.to_boundary(f.data() + 1, 3) == WsFrameTracker::kNone);  // rest of header, 2 of 4 key bytes
  CHECK(t.to_boundary(f.data() + 4, 50) == WsFrameTracker::kNone);
  CHECK_FALSE(t.at_boundary());
  Bytes rest(f.begin() + 54, f.end());
  rest.insert(rest.end(), next.begin(), next.end());
  CHECK(t.to_boundary(rest.data(), rest.size()) == f.size() - 54);
  CHECK(t.at_boundary());
  t.consume(next.data(), next.size());
  CHECK(t.at_boundary());
}

TEST_CASE("a 64-bit length beyond 4 GiB is counted without overflow", "[websocket]") {
  const std::uint64_t len = (std::uint64_t{5} << 30) + 3;
  Bytes h = header(0x2, len, true);
  REQUIRE(h.size() == 14);
  WsFrameTracker t;
  t.consume(h.data(), h.size());
  CHECK_FALSE(t.at_boundary());
  Bytes chunk(1 << 20, 0x81);
  std::uint64_t left = len;
  size_t calls = 0;
  while (left > chunk.size()) {
    REQUIRE(t.to_boundary(chunk.data(), chunk.size()) == WsFrameTracker::kNone);
    left -= chunk.size();
    ++calls;
  }
  CHECK(calls == 5 * 1024);
  CHECK(left == 3);
  CHECK(t.to_boundary(chunk.data(), chunk.size()) == 3);
  CHECK(t.at_boundary());
}

TEST_CASE("kGoingAway is a whole unmasked close frame with status 1001", "[websocket]") {
  const unsigned char* g = WsFrameTracker::kGoingAway;
  CHECK(g[0] == 0x88);          // FIN + close
  CHECK((g[1] & 0x80) == 0);    // a server does not mask
  CHECK((g[1] & 0x7f) == 2);
  CHECK(((g[2] << 8) | g[3]) == 1001);
  WsFrameTracker t;
  t.consume(g, 3);
  CHECK_FALSE(t.at_boundary());
  t.consume(g + 3, 1);
  CHECK(t.at_boundary());
}
