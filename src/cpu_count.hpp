// workers: auto, how many event loops fit the CPUs this process may use: the cgroup v2 CPU quota
// (cpu.max, rounded up) and the affinity mask, the smaller, capped. The arithmetic is a pure
// function (unit-tested); reading the cgroup file and the mask is a thin wrapper around it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "config.hpp"

namespace ebb {

// A sidecar usually gets one CPU or less; past 8 loops the one accepting thread and the app's
// own cores are the limit, not ebb's loops.
constexpr std::uint32_t kAutoWorkersCap = 8;

// `cpu_max`: the text of cgroup v2's cpu.max ("max 100000", "150000 100000"; empty or malformed:
// no quota known). `affinity_cpus`: the CPUs in the affinity mask (0: unknown). Sets `how` to a
// short account for the start-up log, e.g. "cpu.max 150000/100000 = 2, affinity 4, cap 8".
std::uint32_t auto_workers(std::string_view cpu_max, std::uint32_t affinity_cpus, std::uint32_t cap,
                           std::string& how);

// The configured count, or `auto` resolved from this process's cgroup and affinity mask, never
// above a fixed upstream_limits.max_concurrency (each worker needs a slot at the app).
std::uint32_t resolve_workers(const Config& c, std::string& how);

}  // namespace ebb
