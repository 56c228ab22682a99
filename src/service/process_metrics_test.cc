// The /proc parsing behind the process_* metrics, on fixed text shaped like Linux's, and the
// families the renderer appends on this (Linux) machine.

#include "src/service/process_metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace floodgate::service {
namespace {

using ::testing::ContainsRegex;
using ::testing::HasSubstr;

// /proc/<pid>/stat of a process whose command name holds a space and a ')': utime 250 and stime
// 150 ticks, started 12345 ticks after boot, vsize 3133440 bytes, rss 392 pages.
constexpr char kStat[] =
    "14059 (fg worker) x) S 14057 14057 9658 0 -1 4194304 99 0 0 0 250 150 0 0 20 0 1 0 12345 "
    "3133440 392 18446744073709551615 94799600787456 94799600807337 140730131201408 0 0 0 0 0 0 0 "
    "0 0 17 0 0 0 0 0 0\n";

TEST(ParseProcStatTest, ReadsTimesAndSizesPastTheCommandName) {
  const std::optional<ProcStat> stat = ParseProcStat(kStat, 100, 4096, 1796516455);
  ASSERT_TRUE(stat.has_value());
  EXPECT_DOUBLE_EQ(stat->cpu_seconds, 4.0);                           // (250 + 150) / 100
  EXPECT_DOUBLE_EQ(stat->start_time_seconds, 1796516455.0 + 123.45);  // btime + 12345 / 100
  EXPECT_EQ(stat->virtual_bytes, 3133440u);
  EXPECT_EQ(stat->resident_bytes, 392u * 4096u);
}

TEST(ParseProcStatTest, UsesTheGivenUnits) {
  const std::optional<ProcStat> stat = ParseProcStat(kStat, 1000, 65536, 0);
  ASSERT_TRUE(stat.has_value());
  EXPECT_DOUBLE_EQ(stat->cpu_seconds, 0.4);
  EXPECT_DOUBLE_EQ(stat->start_time_seconds, 12.345);
  EXPECT_EQ(stat->resident_bytes, 392u * 65536u);
}

TEST(ParseProcStatTest, RefusesTextOfAnotherShape) {
  EXPECT_FALSE(ParseProcStat("", 100, 4096, 0).has_value());
  EXPECT_FALSE(ParseProcStat("14059 (cat R 1 2 3", 100, 4096, 0).has_value());  // no ')'
  // Cut after vsize: no rss.
  EXPECT_FALSE(
      ParseProcStat("1 (a) S 1 1 1 0 -1 0 0 0 0 0 250 150 0 0 20 0 1 0 12345 3133440", 100, 4096, 0)
          .has_value());
  // A field that is not a number.
  std::string bad = kStat;
  bad.replace(bad.find(" 250 "), 5, " 2x0 ");
  EXPECT_FALSE(ParseProcStat(bad, 100, 4096, 0).has_value());
  EXPECT_FALSE(ParseProcStat(kStat, 0, 4096, 0).has_value());
  EXPECT_FALSE(ParseProcStat(kStat, 100, 0, 0).has_value());
}

TEST(ParseBootTimeTest, FindsTheBtimeLine) {
  EXPECT_EQ(ParseBootTime("cpu  1 2 3\nintr 5\nbtime 1796516455\nprocesses 9\n"), 1796516455);
  EXPECT_FALSE(ParseBootTime("cpu  1 2 3\nprocesses 9\n").has_value());
  EXPECT_FALSE(ParseBootTime("btime soon\n").has_value());
}

TEST(RenderProcessPrometheusTest, AppendsEveryProcessFamilyAndBuildInfo) {
  std::string out;
  RenderProcessPrometheus(out);
  for (const char* family :
       {"process_cpu_seconds_total counter", "process_resident_memory_bytes gauge",
        "process_virtual_memory_bytes gauge", "process_open_fds gauge", "process_max_fds gauge",
        "process_start_time_seconds gauge", "floodgate_build_info gauge"}) {
    EXPECT_THAT(out, HasSubstr(std::string("# TYPE ") + family + "\n")) << family;
  }
  // This test process holds a few files open and has been running since after 2020.
  EXPECT_THAT(out, ContainsRegex("\nprocess_open_fds [1-9][0-9]*\n"));
  EXPECT_THAT(out, ContainsRegex("\nprocess_resident_memory_bytes [1-9][0-9]*\n"));
  EXPECT_THAT(out, ContainsRegex("\nprocess_start_time_seconds (1[6-9]|[2-9][0-9])[0-9]{8}\\."));
  EXPECT_THAT(out, ContainsRegex("floodgate_build_info\\{version=\"[0-9]+\\.[0-9]+\\.[0-9]+\","
                                 "commit=\"([0-9a-f]+|unknown)\"\\} 1\n"));
}

}  // namespace
}  // namespace floodgate::service
