#pragma once

// The standard Prometheus process metrics (process_cpu_seconds_total, process_resident_memory_bytes
// and the rest, as client libraries name them), read from /proc/self on Linux, and
// floodgate_build_info. RenderPrometheus (metrics.h) appends them to /metrics; docs/metrics.md.
//
// Thread-safety: free functions with no shared state; safe from any thread.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace floodgate::service {

// What /proc/self/stat says about this process, in Prometheus' units.
struct ProcStat {
  double cpu_seconds = 0;         // user + system time
  double start_time_seconds = 0;  // since the Unix epoch
  uint64_t virtual_bytes = 0;     // vsize
  uint64_t resident_bytes = 0;    // rss pages times the page size
};

// Parses the text of /proc/<pid>/stat (proc(5)): utime and stime (fields 14 and 15, in clock
// ticks), starttime (22, ticks since boot), vsize (23, bytes) and rss (24, pages). The command
// name (field 2) may hold spaces and ')', so fields are counted from the last ')'.
// `boot_time_seconds` is /proc/stat's btime (ParseBootTime). Returns nullopt when the text is
// not shaped like that or a unit is not positive.
std::optional<ProcStat> ParseProcStat(std::string_view stat, int64_t ticks_per_second,
                                      int64_t page_size, int64_t boot_time_seconds);

// Returns the `btime` line's value (seconds since the epoch) of /proc/stat's text, or nullopt.
std::optional<int64_t> ParseBootTime(std::string_view proc_stat);

// Appends the process_* families for this process (each omitted when /proc cannot be read: not
// Linux) and floodgate_build_info{version,commit} 1 (the CMake project version and the git
// commit the build was configured at, "unknown" outside a git checkout).
void RenderProcessPrometheus(std::string& out);

}  // namespace floodgate::service
