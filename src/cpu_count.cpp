// workers: auto from cgroup v2's cpu.max and sched_getaffinity.
#include "cpu_count.hpp"

#include <sched.h>

#include <algorithm>
#include <charconv>

namespace ebb {

namespace {
bool parse_u64(std::string_view s, std::uint64_t& out) {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size() && !s.empty();
}

// The cgroup's own cpu.max: in a container with a cgroup namespace (Kubernetes, Docker) that is
// /sys/fs/cgroup/cpu.max; otherwise the path /proc/self/cgroup names ("0::/some/group").
std::string read_cpu_max() {
  std::string text;
  if (read_whole_file("/sys/fs/cgroup/cpu.max", text) == 0) return text;
  std::string self;
  if (read_whole_file("/proc/self/cgroup", self) != 0) return {};
  auto at = self.find("0::");
  if (at == std::string::npos) return {};
  auto end = self.find('\n', at);
  std::string path = self.substr(at + 3, end == std::string::npos ? std::string::npos : end - at - 3);
  if (read_whole_file("/sys/fs/cgroup" + path + "/cpu.max", text) == 0) return text;
  return {};
}
}  // namespace

std::uint32_t auto_workers(std::string_view cpu_max, std::uint32_t affinity_cpus, std::uint32_t cap,
                           std::string& how) {
  while (!cpu_max.empty() && (cpu_max.back() == '\n' || cpu_max.back() == ' ')) cpu_max.remove_suffix(1);
  std::uint32_t n = cap;
  auto space = cpu_max.find(' ');
  std::uint64_t quota = 0, period = 0;
  if (space != std::string_view::npos && parse_u64(cpu_max.substr(0, space), quota) &&
      parse_u64(cpu_max.substr(space + 1), period) && period > 0) {
    // 150000/100000 is 1.5 CPUs: two loops, each busy three quarters of the time at most.
    std::uint64_t cpus = std::max<std::uint64_t>(1, (quota + period - 1) / period);
    how = "cpu.max " + std::to_string(quota) + "/" + std::to_string(period) + " = " + std::to_string(cpus);
    n = static_cast<std::uint32_t>(std::min<std::uint64_t>(n, cpus));
  } else if (cpu_max.substr(0, 4) == "max " || cpu_max == "max") {
    how = "cpu.max unlimited";
  } else {
    how = "no cpu.max";
  }
  if (affinity_cpus > 0) {
    how += ", affinity " + std::to_string(affinity_cpus);
    n = std::min(n, affinity_cpus);
  }
  how += ", cap " + std::to_string(cap);
  return std::max<std::uint32_t>(1, n);
}

std::uint32_t resolve_workers(const Config& c, std::string& how) {
  if (!c.workers.automatic) {
    how = "configured";
    return c.workers.n;
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  std::uint32_t affinity = sched_getaffinity(0, sizeof set, &set) == 0 ? static_cast<std::uint32_t>(CPU_COUNT(&set)) : 0;
  std::uint32_t n = auto_workers(read_cpu_max(), affinity, kAutoWorkersCap, how);
  const auto& mc = c.upstream_limits.max_concurrency;
  if (!mc.adaptive && mc.fixed != 0 && mc.fixed < n) {
    n = mc.fixed;
    how += ", upstream_limits.max_concurrency " + std::to_string(mc.fixed);
  }
  return n;
}

}  // namespace ebb
