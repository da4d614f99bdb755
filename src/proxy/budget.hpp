// Buffer budgets: what one connection may hold in user space (ConnBudget), and what the whole
// worker holds (MemoryAccount: limits.max_memory, its marks, and whom to shed above them).
// No sockets here: connections ask these questions with their own figures.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace ebb {

// The per-connection budget (limits.connection_buffer = B). It holds for an HTTP/1 connection
// and is shaped for an HTTP/2 stream (one write queue per direction, one held input):
// - read buffer: none of its own; reads land in the loop's one 64 KiB buffer (Worker) and are
//   forwarded straight from it;
// - write queue to the client: at most B (+ kFramingSlack) bytes that its kernel did not take;
// - write queue to the app: the same, for request bodies and tunnels;
// - held input: at most B bytes of pipelined requests or of a body read before the app could
//   take it.
// It holds because a read is never larger than the room left in the queue it feeds
// (read_allowance), not because reading stops after the fact: a connection holds at most
// 3 x B + kFramingSlack, and a slow reader of a large response B + kFramingSlack.
struct ConnBudget {
  // A rewritten response head can be longer than the app's (Connection, X-Request-Id), and
  // chunk framing adds a size line per piece: bytes beyond the read that fed them.
  static constexpr std::size_t kFramingSlack = 1024;
  static constexpr std::size_t kReadBuffer = 64 * 1024;  // the loop's shared read buffer
  static constexpr std::size_t kMin = 4 * 1024;
  static constexpr std::size_t kMax = 16 * 1024 * 1024;
  static constexpr std::size_t kDefault = 32 * 1024;

  std::size_t write_queue = kDefault;  // B
  // Reading the other side stops above `high` and resumes at or below `low`: a read is then
  // never smaller than B - high, so a blocked peer does not make reads tiny.
  std::size_t high = kDefault - kDefault / 4;
  std::size_t low = kDefault / 4;
  std::size_t held_input = kDefault;

  static ConnBudget of(std::size_t bytes);

  // How many bytes one read may take when the queue it feeds holds `queued`: the room left
  // under B, at most the read buffer. 0 means "do not read now".
  std::size_t read_allowance(std::size_t queued) const;
};

// The bytes one worker holds in buffers (write queues and held input of every connection),
// against limits.max_memory (M):
// - below the pause mark (3/4 M) everything reads;
// - from the pause mark, a connection that already holds bytes stops reading (it would only
//   hold more); one that holds nothing still reads, so answers that flow straight through
//   (a normal client's) are not held up by stalled ones;
// - from M nothing reads, and the connections holding the most are shed (closed) until the
//   total is back under the pause mark;
// - paused connections are resumed once the total is under the pause mark again, or when
//   their own queue drains.
class MemoryAccount {
 public:
  static constexpr std::uint64_t kMin = 1024 * 1024;
  static constexpr std::uint64_t kDefault = 64 * 1024 * 1024;

  MemoryAccount() = default;
  // The count lives in `storage` (the worker's metrics gauge, so a scrape reads it as is).
  explicit MemoryAccount(std::uint64_t* storage) : held_(storage) {}
  MemoryAccount(const MemoryAccount&) = delete;
  MemoryAccount& operator=(const MemoryAccount&) = delete;

  void configure(std::uint64_t max_bytes);
  void add(std::size_t n) { *held_ += n; }
  void sub(std::size_t n) { *held_ = n > *held_ ? 0 : *held_ - n; }
  std::uint64_t held() const { return *held_; }
  std::uint64_t max() const { return max_; }
  std::uint64_t pause_mark() const { return max_ - max_ / 4; }

  // May a connection that holds `own` bytes read now?
  bool may_read(std::size_t own) const { return held() < max_ && (own == 0 || held() < pause_mark()); }
  bool over_cap() const { return held() >= max_; }

  // The counter the write helpers keep current (net::write's `account`).
  std::uint64_t* counter() { return held_; }

  struct Holder {
    std::uint64_t id;
    std::size_t bytes;
  };
  // Whom to shed: the largest holders first, until what they hold brings the total down to
  // under the pause mark. Holders of nothing are never picked: closing them frees nothing.
  std::vector<std::uint64_t> pick_shed(std::vector<Holder> holders) const;

 private:
  std::uint64_t own_ = 0;
  std::uint64_t* held_ = &own_;
  std::uint64_t max_ = kDefault;
};

}  // namespace ebb
