#include "src/service/process_metrics.h"

#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

// Set by src/service/CMakeLists.txt on this file only, so that a new commit recompiles nothing
// else.
#ifndef FLOODGATE_VERSION
#define FLOODGATE_VERSION "unknown"
#endif
#ifndef FLOODGATE_COMMIT
#define FLOODGATE_COMMIT "unknown"
#endif

namespace floodgate::service {
namespace {

// Returns the whole file, or nullopt when it cannot be opened (not Linux, no /proc).
std::optional<std::string> ReadFile(const char* path) {
  std::ifstream in(path);
  if (!in) {
    return std::nullopt;
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void Metric(std::string& out, absl::string_view name, absl::string_view type,
            absl::string_view help, absl::string_view value) {
  absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n", name, " ",
                  value, "\n");
}

// Returns the entries of /proc/self/fd (the directory's own descriptor included, as the Go and
// Python clients count it), or nullopt.
std::optional<uint64_t> OpenFds() {
  std::error_code error;
  std::filesystem::directory_iterator it("/proc/self/fd", error);
  if (error) {
    return std::nullopt;
  }
  uint64_t n = 0;
  for (; it != std::filesystem::directory_iterator(); it.increment(error)) {
    if (error) {
      return std::nullopt;
    }
    ++n;
  }
  return n;
}

}  // namespace

std::optional<ProcStat> ParseProcStat(std::string_view stat, int64_t ticks_per_second,
                                      int64_t page_size, int64_t boot_time_seconds) {
  if (ticks_per_second <= 0 || page_size <= 0) {
    return std::nullopt;
  }
  const size_t close = stat.rfind(')');
  if (close == std::string_view::npos) {
    return std::nullopt;
  }
  // Field 3 (state) is the first after the command name.
  const std::vector<absl::string_view> fields =
      absl::StrSplit(absl::string_view(stat.data() + close + 1, stat.size() - close - 1), ' ',
                     absl::SkipWhitespace());
  const auto field = [&fields](int number, uint64_t& value) {
    const size_t i = static_cast<size_t>(number - 3);
    return i < fields.size() && absl::SimpleAtoi(fields[i], &value);
  };
  uint64_t utime, stime, start_ticks, vsize, rss_pages;
  if (!field(14, utime) || !field(15, stime) || !field(22, start_ticks) || !field(23, vsize) ||
      !field(24, rss_pages)) {
    return std::nullopt;
  }
  ProcStat out;
  const double ticks = static_cast<double>(ticks_per_second);
  out.cpu_seconds = static_cast<double>(utime + stime) / ticks;
  out.start_time_seconds = static_cast<double>(boot_time_seconds) + start_ticks / ticks;
  out.virtual_bytes = vsize;
  out.resident_bytes = rss_pages * static_cast<uint64_t>(page_size);
  return out;
}

std::optional<int64_t> ParseBootTime(std::string_view proc_stat) {
  for (absl::string_view line :
       absl::StrSplit(absl::string_view(proc_stat.data(), proc_stat.size()), '\n')) {
    int64_t seconds;
    if (absl::ConsumePrefix(&line, "btime ") && absl::SimpleAtoi(line, &seconds)) {
      return seconds;
    }
  }
  return std::nullopt;
}

void RenderProcessPrometheus(std::string& out) {
  const std::optional<std::string> self_stat = ReadFile("/proc/self/stat");
  const std::optional<std::string> proc_stat = ReadFile("/proc/stat");
  const std::optional<int64_t> boot = proc_stat ? ParseBootTime(*proc_stat) : std::nullopt;
  const std::optional<ProcStat> stat =
      self_stat && boot
          ? ParseProcStat(*self_stat, sysconf(_SC_CLK_TCK), sysconf(_SC_PAGESIZE), *boot)
          : std::nullopt;
  if (stat) {
    Metric(out, "process_cpu_seconds_total", "counter",
           "Total user and system CPU time spent in seconds.",
           absl::StrFormat("%.2f", stat->cpu_seconds));
    Metric(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
           absl::StrCat(stat->resident_bytes));
    Metric(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.",
           absl::StrCat(stat->virtual_bytes));
    Metric(out, "process_start_time_seconds", "gauge",
           "Start time of the process since unix epoch in seconds.",
           absl::StrFormat("%.2f", stat->start_time_seconds));
  }
  if (const std::optional<uint64_t> fds = OpenFds()) {
    Metric(out, "process_open_fds", "gauge", "Number of open file descriptors.",
           absl::StrCat(*fds));
  }
  if (struct rlimit limit; getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    Metric(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.",
           absl::StrCat(static_cast<uint64_t>(limit.rlim_cur)));
  }
  absl::StrAppend(&out,
                  "# HELP floodgate_build_info The version and git commit this server was built "
                  "from.\n# TYPE floodgate_build_info gauge\nfloodgate_build_info{version=\"",
                  FLOODGATE_VERSION, "\",commit=\"", FLOODGATE_COMMIT, "\"} 1\n");
}

}  // namespace floodgate::service
