// Tracks WebSocket frame boundaries in the app-to-client direction (RFC 6455 §5.2), so that at
// the drain deadline a close frame (1001, going away) can be put between two frames.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ebb {

class WsFrameTracker {
 public:
  static constexpr size_t kNone = SIZE_MAX;

  // Follows `len` bytes of the stream.
  void consume(const unsigned char* p, size_t len) { scan(p, len, false); }
  // Follows the stream up to the first frame boundary in these bytes and returns its offset
  // (0 when already on one), or kNone when the current frame goes on past them.
  size_t to_boundary(const unsigned char* p, size_t len) {
    if (at_boundary()) return 0;
    return scan(p, len, true);
  }
  bool at_boundary() const { return header_len_ == 0 && payload_left_ == 0; }

  // The close frame a server sends: FIN + opcode 8, unmasked, status code 1001.
  static constexpr unsigned char kGoingAway[4] = {0x88, 0x02, 0x03, 0xE9};

 private:
  size_t scan(const unsigned char* p, size_t len, bool stop) {
    size_t i = 0;
    while (i < len) {
      if (payload_left_ > 0) {
        size_t take = payload_left_ < len - i ? static_cast<size_t>(payload_left_) : len - i;
        payload_left_ -= take;
        i += take;
      } else {
        header_[header_len_++] = p[i++];
        if (header_complete()) start_payload();
      }
      if (stop && at_boundary()) return i;
    }
    return kNone;
  }
  size_t needed() const {
    if (header_len_ < 2) return 2;
    size_t n = 2;
    unsigned len7 = header_[1] & 0x7f;
    if (len7 == 126) n += 2;
    else if (len7 == 127) n += 8;
    if (header_[1] & 0x80) n += 4;
    return n;
  }
  bool header_complete() const { return header_len_ >= 2 && header_len_ == needed(); }
  void start_payload() {
    unsigned len7 = header_[1] & 0x7f;
    std::uint64_t len = len7;
    if (len7 == 126) {
      len = (std::uint64_t{header_[2]} << 8) | header_[3];
    } else if (len7 == 127) {
      len = 0;
      for (int k = 0; k < 8; ++k) len = (len << 8) | header_[2 + k];
    }
    payload_left_ = len;
    header_len_ = 0;
  }

  unsigned char header_[14] = {0};
  size_t header_len_ = 0;
  std::uint64_t payload_left_ = 0;
};

}  // namespace ebb
