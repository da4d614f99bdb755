// workers: auto, the arithmetic: cgroup v2 cpu.max (rounded up), the affinity mask, the cap.
#include <catch2/catch.hpp>

#include "cpu_count.hpp"

using ebb::auto_workers;

TEST_CASE("cpu_count: a quota is rounded up to whole CPUs", "[cpu_count]") {
  std::string how;
  CHECK(auto_workers("100000 100000\n", 0, 8, how) == 1);
  CHECK(how == "cpu.max 100000/100000 = 1, cap 8");
  CHECK(auto_workers("150000 100000\n", 0, 8, how) == 2);
  CHECK(auto_workers("200000 100000", 0, 8, how) == 2);
  CHECK(auto_workers("200001 100000", 0, 8, how) == 3);
  // Less than a CPU (a sidecar's 250m) is still one loop.
  CHECK(auto_workers("25000 100000\n", 0, 8, how) == 1);
  CHECK(auto_workers("1 100000\n", 16, 8, how) == 1);
  CHECK(auto_workers("50000 50000\n", 16, 8, how) == 1);
}

TEST_CASE("cpu_count: the affinity mask and the cap bound it, whichever is smaller", "[cpu_count]") {
  std::string how;
  CHECK(auto_workers("400000 100000\n", 2, 8, how) == 2);
  CHECK(how == "cpu.max 400000/100000 = 4, affinity 2, cap 8");
  CHECK(auto_workers("200000 100000\n", 6, 8, how) == 2);
  CHECK(auto_workers("max 100000\n", 6, 8, how) == 6);
  CHECK(how == "cpu.max unlimited, affinity 6, cap 8");
  CHECK(auto_workers("max 100000\n", 64, 8, how) == 8);
  CHECK(auto_workers("3200000 100000\n", 64, 8, how) == 8);
  CHECK(auto_workers("3200000 100000\n", 0, 4, how) == 4);
}

TEST_CASE("cpu_count: no quota file, or one that does not parse, leaves the mask and the cap", "[cpu_count]") {
  std::string how;
  CHECK(auto_workers("", 3, 8, how) == 3);
  CHECK(how == "no cpu.max, affinity 3, cap 8");
  CHECK(auto_workers("", 0, 8, how) == 8);
  CHECK(auto_workers("garbage", 2, 8, how) == 2);
  CHECK(auto_workers("100000 0\n", 2, 8, how) == 2);  // a zero period is no quota
  CHECK(auto_workers("-1 100000\n", 2, 8, how) == 2);
  CHECK(auto_workers("100000 100000 7\n", 5, 8, how) == 5);
}

TEST_CASE("cpu_count: a configured count is kept; auto never exceeds a fixed max_concurrency", "[cpu_count]") {
  ebb::Config c;
  std::string how;
  c.workers = ebb::WorkerCount{false, 3};
  CHECK(ebb::resolve_workers(c, how) == 3);
  CHECK(how == "configured");
  c.workers = ebb::WorkerCount{true, 0};
  c.upstream_limits.max_concurrency = ebb::ConcurrencyLimit{false, 1};
  CHECK(ebb::resolve_workers(c, how) == 1);
  std::uint32_t unbounded = (c.upstream_limits.max_concurrency = ebb::ConcurrencyLimit{false, 0}, ebb::resolve_workers(c, how));
  CHECK(unbounded >= 1);
  CHECK(unbounded <= ebb::kAutoWorkersCap);
}
