// The arithmetic of the buffer budgets; the data path calls it with its own figures.
#include "proxy/budget.hpp"

#include <algorithm>

namespace ebb {

ConnBudget ConnBudget::of(std::size_t bytes) {
  ConnBudget b;
  b.write_queue = std::clamp(bytes, kMin, kMax);
  b.high = b.write_queue - b.write_queue / 4;
  b.low = b.write_queue / 4;
  b.held_input = b.write_queue;
  return b;
}

std::size_t ConnBudget::read_allowance(std::size_t queued) const {
  if (queued >= write_queue) return 0;
  return std::min(write_queue - queued, kReadBuffer);
}

void MemoryAccount::configure(std::uint64_t max_bytes) { max_ = std::max(max_bytes, kMin); }

std::vector<std::uint64_t> MemoryAccount::pick_shed(std::vector<Holder> holders) const {
  std::vector<std::uint64_t> out;
  if (held() < max_) return out;
  std::sort(holders.begin(), holders.end(), [](const Holder& a, const Holder& b) {
    return a.bytes != b.bytes ? a.bytes > b.bytes : a.id < b.id;
  });
  std::uint64_t left = held();
  for (const Holder& h : holders) {
    if (left < pause_mark() || h.bytes == 0) break;
    out.push_back(h.id);
    left = h.bytes >= left ? 0 : left - h.bytes;
  }
  return out;
}

}  // namespace ebb
