// Fuzz target: the WebSocket frame tracker (src/proxy/websocket.hpp) on arbitrary app-to-client
// streams cut into arbitrary reads. Invariants: to_boundary never points past the bytes given and
// lands where at_boundary() holds; the tracker's view of the stream is the same however it is cut
// and whichever of consume and to_boundary follows each read.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "proxy/websocket.hpp"

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz invariant broken: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  // The first byte seeds the cuts; the rest is the stream.
  unsigned seed = data[0] * 2654435761u + 1;
  const unsigned char* p = data + 1;
  size_t n = size - 1;

  // Reference: every boundary offset, found one byte at a time.
  ebb::WsFrameTracker ref;
  std::vector<bool> boundary_after(n + 1, false);  // boundary_after[i]: a frame ends before byte i
  boundary_after[0] = true;
  for (size_t i = 0; i < n; ++i) {
    ref.consume(p + i, 1);
    boundary_after[i + 1] = ref.at_boundary();
  }

  ebb::WsFrameTracker t;
  size_t at = 0;
  while (at < n) {
    seed = seed * 1103515245u + 12345u;
    size_t cap = (seed & 1) && n - at > 64 ? 64 : n - at;  // short reads and long ones
    size_t len = 1 + (seed >> 8) % cap;
    if (t.at_boundary() != boundary_after[at]) fail("at_boundary disagrees with the byte-wise walk");
    if ((seed >> 4) & 1) {
      size_t b = t.to_boundary(p + at, len);
      if (b == ebb::WsFrameTracker::kNone) {
        for (size_t k = at + 1; k <= at + len; ++k) {
          if (boundary_after[k]) fail("to_boundary missed a boundary");
        }
        at += len;
        continue;
      }
      if (b > len) fail("to_boundary points past the bytes given");
      if (!t.at_boundary()) fail("to_boundary stopped off a boundary");
      if (!boundary_after[at + b]) fail("to_boundary stopped where no frame ends");
      for (size_t k = at + 1; k < at + b; ++k) {
        if (boundary_after[k]) fail("to_boundary skipped an earlier boundary");
      }
      if (b == 0 && at > 0 && !boundary_after[at]) fail("to_boundary returned 0 off a boundary");
      // The rest of the read is consumed as the tunnel would after the close frame decision.
      t.consume(p + at + b, len - b);
    } else {
      t.consume(p + at, len);
    }
    at += len;
  }
  if (t.at_boundary() != boundary_after[n]) fail("the cut stream ends in another state");
  return 0;
}
