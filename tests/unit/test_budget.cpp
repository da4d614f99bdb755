// The buffer budgets (proxy/budget.hpp): read sizes that keep a queue within its budget, the
// watermarks derived from it, the worker's total against limits.max_memory, and whom to shed.
#include <catch2/catch.hpp>

#include <algorithm>
#include <vector>

#include "proxy/budget.hpp"

using ebb::ConnBudget;
using ebb::MemoryAccount;

TEST_CASE("budget: a read never takes a queue past its budget") {
  ConnBudget b = ConnBudget::of(32 * 1024);
  CHECK(b.read_allowance(0) == 32 * 1024);
  CHECK(b.read_allowance(10 * 1024) == 22 * 1024);
  CHECK(b.read_allowance(32 * 1024) == 0);
  CHECK(b.read_allowance(100 * 1024) == 0);
  for (size_t q = 0; q <= 40 * 1024; q += 511) CHECK(q + b.read_allowance(q) <= std::max<size_t>(q, b.write_queue));
  // The read buffer is the other bound: a large budget still reads 64 KiB at a time.
  ConnBudget big = ConnBudget::of(1024 * 1024);
  CHECK(big.read_allowance(0) == ConnBudget::kReadBuffer);
  CHECK(big.read_allowance(1024 * 1024 - 100) == 100);
}

TEST_CASE("budget: watermarks come from the budget and keep reads from getting small") {
  ConnBudget b = ConnBudget::of(32 * 1024);
  CHECK(b.high == 24 * 1024);
  CHECK(b.low == 8 * 1024);
  CHECK(b.held_input == 32 * 1024);
  // Reading goes on only at or below `high`: the smallest read is then a quarter of the budget.
  CHECK(b.read_allowance(b.high) == 8 * 1024);
  // Out-of-range budgets are clamped to what config validation allows.
  CHECK(ConnBudget::of(1).write_queue == ConnBudget::kMin);
  CHECK(ConnBudget::of(1ull << 40).write_queue == ConnBudget::kMax);
  CHECK(ConnBudget{}.write_queue == ConnBudget::kDefault);
}

TEST_CASE("memory account: pause mark, cap, and who may read") {
  std::uint64_t storage = 0;
  MemoryAccount m(&storage);
  m.configure(4 * 1024 * 1024);
  CHECK(m.pause_mark() == 3 * 1024 * 1024);
  CHECK(m.may_read(0));
  CHECK(m.may_read(1000));
  m.add(3 * 1024 * 1024);
  CHECK(storage == 3 * 1024 * 1024);  // the gauge is the count itself
  CHECK_FALSE(m.may_read(1));         // holds bytes: would only hold more
  CHECK(m.may_read(0));               // holds nothing: its answers flow through
  CHECK_FALSE(m.over_cap());
  m.add(1024 * 1024);
  CHECK(m.over_cap());
  CHECK_FALSE(m.may_read(0));  // at the cap nothing reads
  m.sub(2 * 1024 * 1024);
  CHECK(m.may_read(1));
  m.sub(100ull << 20);  // never below zero
  CHECK(m.held() == 0);
  m.configure(1);  // clamped to the minimum
  CHECK(m.max() == MemoryAccount::kMin);
}

TEST_CASE("memory account: sheds the largest holders until under the pause mark") {
  MemoryAccount m;
  m.configure(4 * 1024 * 1024);
  std::vector<MemoryAccount::Holder> holders = {
      {1, 100 * 1024}, {2, 0}, {3, 900 * 1024}, {4, 600 * 1024}, {5, 600 * 1024}, {6, 300 * 1024}};
  m.add(3 * 1024 * 1024);  // at the pause mark, under the cap: nobody is shed
  CHECK(m.pick_shed(holders).empty());
  m.add(1024 * 1024);  // 4 MiB: at the cap, 1 MiB + 1 byte to free
  auto ids = m.pick_shed(holders);
  REQUIRE(ids.size() == 2);
  CHECK(ids[0] == 3);  // 900 KiB
  CHECK(ids[1] == 4);  // 600 KiB, the lower id of the two equal holders
  // Far over: everyone who holds something, never the holder of nothing.
  m.add(100ull << 20);
  ids = m.pick_shed(holders);
  CHECK(ids.size() == 5);
  CHECK(std::find(ids.begin(), ids.end(), 2u) == ids.end());
}
