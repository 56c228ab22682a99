#include "testing/history/checker.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace floodgate::history {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kSecond = 1000 * kMs;
constexpr int64_t kHour = 3600 * kSecond;
// 2023-11-14T22:00:00Z, an hour boundary.
constexpr int64_t kEpochHour = 1'699'999'200 * kSecond;
static_assert(kEpochHour % kHour == 0);

Bound Fixed(uint64_t limit, int64_t period_ns, uint64_t tolerance = 0, int64_t slack_ns = 0) {
  return Bound{WindowKind::kFixed, limit, period_ns, tolerance, slack_ns};
}
Bound Sliding(uint64_t limit, int64_t period_ns, uint64_t tolerance = 0, int64_t slack_ns = 0) {
  return Bound{WindowKind::kSliding, limit, period_ns, tolerance, slack_ns};
}

// Appends `n` records for `key` at `time_ns`, alternating between nodes n0 and n1.
void Add(std::vector<Record>& records, const std::string& key, int64_t time_ns, int n,
         bool allowed) {
  for (int i = 0; i < n; ++i) {
    records.push_back({i % 2 == 0 ? "n0" : "n1", key, time_ns, allowed});
  }
}

Report MustCheck(const Checker& checker, const std::vector<Record>& records) {
  absl::StatusOr<Report> report = checker.CheckBound(records);
  EXPECT_TRUE(report.ok()) << report.status();
  return report.ok() ? *report : Report{};
}

TEST(CheckerTest, PassesWhenEveryWindowIsWithinTheLimit) {
  std::vector<Record> records;
  Add(records, "k", kEpochHour + 10 * kSecond, 100, true);
  Add(records, "k", kEpochHour + 20 * kSecond, 50, false);
  Add(records, "k", kEpochHour + kHour + 5 * kSecond, 100, true);
  const Report report = MustCheck(Checker(Fixed(100, kHour)), records);
  EXPECT_TRUE(report.pass) << report.Summary(true);
  ASSERT_EQ(report.keys.size(), 1u);
  const KeyResult& key = report.keys[0];
  ASSERT_EQ(key.windows.size(), 2u);
  EXPECT_EQ(key.windows[0].start_ns, kEpochHour);
  EXPECT_EQ(key.windows[0].offered, 150u);
  EXPECT_EQ(key.windows[0].admitted, 100u);
  EXPECT_EQ(key.windows[0].bound, 100u);
  EXPECT_EQ(key.windows[1].start_ns, kEpochHour + kHour);
  EXPECT_EQ(report.total_over_admission, 0u);
  EXPECT_THAT(report.Summary(), HasSubstr("RESULT: PASS"));
}

TEST(CheckerTest, FailsOverAdmissionAcrossNodes) {
  // Two nodes each enforcing the limit locally: twice the limit in one window.
  std::vector<Record> records;
  Add(records, "k", kEpochHour + kSecond, 20, true);
  Add(records, "k", kEpochHour + 2 * kSecond, 5, false);
  const Report report = MustCheck(Checker(Fixed(10, kHour)), records);
  EXPECT_FALSE(report.pass);
  EXPECT_EQ(report.failed_windows, 1u);
  EXPECT_EQ(report.total_over_admission, 10u);
  EXPECT_EQ(report.keys[0].windows[0].over, 10u);
  EXPECT_FALSE(report.keys[0].windows[0].pass);
  const std::string summary = report.Summary();
  EXPECT_THAT(summary, HasSubstr("FAIL [2023-11-14T22:00:00Z, +1h): offered 25, admitted 20"));
  EXPECT_THAT(summary, HasSubstr("RESULT: FAIL (1 failing windows, total over-admission 10)"));
}

TEST(CheckerTest, ToleranceAllowsAFewExtraAdmissionsButReportsThem) {
  std::vector<Record> records;
  Add(records, "k", kEpochHour + kSecond, 102, true);
  Report report = MustCheck(Checker(Fixed(100, kHour, FailoverTolerance(100))), records);
  EXPECT_TRUE(report.pass);
  EXPECT_EQ(report.total_over_admission, 2u);
  Add(records, "k", kEpochHour + kSecond, 1, true);
  report = MustCheck(Checker(Fixed(100, kHour, FailoverTolerance(100))), records);
  EXPECT_FALSE(report.pass);
  EXPECT_EQ(report.total_over_admission, 3u);
}

TEST(CheckerTest, WindowsAreAlignedToTheUnixEpoch) {
  // 10 admissions each side of an hour boundary are two full windows, not one window of 20.
  std::vector<Record> records;
  Add(records, "k", kEpochHour + kHour - kSecond, 10, true);
  Add(records, "k", kEpochHour + kHour + kSecond, 10, true);
  EXPECT_TRUE(MustCheck(Checker(Fixed(10, kHour)), records).pass);
  // Shift by half an hour: now all 20 fall in one epoch-aligned window.
  for (Record& r : records) {
    r.time_ns += kHour / 2;
  }
  EXPECT_FALSE(MustCheck(Checker(Fixed(10, kHour)), records).pass);
}

TEST(CheckerTest, RecordJustAfterABoundaryMayCountInTheEarlierWindow) {
  // Window 0 has 9, window 1 has 10 plus one recorded 2 ms after the boundary: the server may
  // have decided it just before the boundary, in window 0.
  std::vector<Record> records;
  Add(records, "k", kEpochHour + kHour / 2, 9, true);
  Add(records, "k", kEpochHour + kHour + 2 * kMs, 1, true);
  Add(records, "k", kEpochHour + kHour + kHour / 2, 10, true);
  EXPECT_FALSE(MustCheck(Checker(Fixed(10, kHour)), records).pass);
  const Report report = MustCheck(Checker(Fixed(10, kHour, 0, 5 * kMs)), records);
  EXPECT_TRUE(report.pass) << report.Summary(true);
  EXPECT_EQ(report.keys[0].windows[0].admitted, 10u);
  EXPECT_EQ(report.keys[0].windows[0].ambiguous, 1u);
  EXPECT_EQ(report.keys[0].windows[1].admitted, 10u);
}

TEST(CheckerTest, RecordJustBeforeABoundaryMayCountInTheLaterWindow) {
  std::vector<Record> records;
  Add(records, "k", kEpochHour + kHour / 2, 10, true);
  Add(records, "k", kEpochHour + kHour - 2 * kMs, 1, true);
  Add(records, "k", kEpochHour + kHour + kHour / 2, 9, true);
  EXPECT_FALSE(MustCheck(Checker(Fixed(10, kHour)), records).pass);
  EXPECT_TRUE(MustCheck(Checker(Fixed(10, kHour, 0, 5 * kMs)), records).pass);
  // Outside the slack it is not ambiguous.
  EXPECT_FALSE(MustCheck(Checker(Fixed(10, kHour, 0, 2 * kMs)), records).pass);
}

TEST(CheckerTest, BoundaryRecordsGoWhereTheyAreNotOverAdmissions) {
  // A full window and one admission 1 ms before its end: with slack it belongs in the next,
  // empty window, so nothing was over-admitted, although the tolerance would let it stay.
  std::vector<Record> records;
  Add(records, "k", kEpochHour + kHour / 2, 10, true);
  Add(records, "k", kEpochHour + kHour - kMs, 1, true);
  Report report = MustCheck(Checker(Fixed(10, kHour, 1)), records);
  EXPECT_TRUE(report.pass);
  EXPECT_EQ(report.total_over_admission, 1u);
  report = MustCheck(Checker(Fixed(10, kHour, 1, 5 * kMs)), records);
  EXPECT_TRUE(report.pass);
  EXPECT_EQ(report.total_over_admission, 0u);
  ASSERT_EQ(report.keys[0].windows.size(), 2u);
  EXPECT_EQ(report.keys[0].windows[1].admitted, 1u);
  EXPECT_EQ(report.keys[0].windows[1].offered, 0u);
}

TEST(CheckerTest, SlackDoesNotHideARealViolation) {
  // Both windows full and one more near the boundary: no assignment passes.
  std::vector<Record> records;
  Add(records, "k", kEpochHour + kHour / 2, 10, true);
  Add(records, "k", kEpochHour + kHour - kMs, 1, true);
  Add(records, "k", kEpochHour + kHour + kHour / 2, 10, true);
  const Report report = MustCheck(Checker(Fixed(10, kHour, 0, 5 * kMs)), records);
  EXPECT_FALSE(report.pass);
  EXPECT_EQ(report.failed_windows, 1u);
  EXPECT_EQ(report.total_over_admission, 1u);
}

TEST(CheckerTest, SlackAssignmentChainsAcrossWindows) {
  // Windows 0..2 with 8, 10, 8 sure admissions and 2 ambiguous at each boundary: window 0 must
  // take both of its boundary's, and window 1 pass both of its right boundary on to window 2.
  std::vector<Record> records;
  const int64_t p = kSecond;
  Add(records, "k", kEpochHour + p / 2, 8, true);
  Add(records, "k", kEpochHour + p + kMs, 2, true);
  Add(records, "k", kEpochHour + p + p / 2, 10, true);
  Add(records, "k", kEpochHour + 2 * p - kMs, 2, true);
  Add(records, "k", kEpochHour + 2 * p + p / 2, 8, true);
  Report report = MustCheck(Checker(Fixed(10, p, 0, 5 * kMs)), records);
  EXPECT_TRUE(report.pass) << report.Summary(true);
  ASSERT_EQ(report.keys[0].windows.size(), 3u);
  EXPECT_EQ(report.keys[0].windows[0].admitted, 10u);
  EXPECT_EQ(report.keys[0].windows[1].admitted, 10u);
  EXPECT_EQ(report.keys[0].windows[2].admitted, 10u);
  // One more sure admission in window 2 leaves no room anywhere.
  Add(records, "k", kEpochHour + 2 * p + p / 2, 1, true);
  report = MustCheck(Checker(Fixed(10, p, 0, 5 * kMs)), records);
  EXPECT_FALSE(report.pass) << report.Summary(true);
}

TEST(CheckerTest, RefusedRecordsAreOfferedNotAdmitted) {
  std::vector<Record> records;
  Add(records, "k", kEpochHour + kSecond, 1000, false);
  const Report report = MustCheck(Checker(Fixed(0, kHour)), records);
  EXPECT_TRUE(report.pass);
  EXPECT_EQ(report.keys[0].offered, 1000u);
  EXPECT_EQ(report.keys[0].admitted, 0u);
}

TEST(CheckerTest, EachKeyHasItsOwnBound) {
  std::vector<Record> records;
  Add(records, "small", kEpochHour + kSecond, 5, true);
  Add(records, "large", kEpochHour + kSecond, 50, true);
  Checker checker(Fixed(10, kHour));
  EXPECT_FALSE(MustCheck(checker, records).pass);
  checker.SetBound("large", Fixed(50, kHour));
  const Report report = MustCheck(checker, records);
  EXPECT_TRUE(report.pass);
  ASSERT_EQ(report.keys.size(), 2u);
  EXPECT_EQ(report.keys[0].key, "large");
  EXPECT_EQ(report.keys[0].bound.limit, 50u);
  checker.SetBound("small", Fixed(4, kHour));
  EXPECT_FALSE(MustCheck(checker, records).pass);
}

TEST(CheckerTest, ExactPassesWhenEveryWindowAdmitsMinOfLimitAndOffered) {
  std::vector<Record> records;
  Add(records, "k", kEpochHour + kSecond, 10, true);  // window 0: 15 offered, 10 admitted
  Add(records, "k", kEpochHour + 2 * kSecond, 5, false);
  Add(records, "k", kEpochHour + kHour + kSecond, 3, true);  // window 1: 3 offered, 3 admitted
  absl::StatusOr<Report> report = Checker(Fixed(10, kHour)).CheckExact(records);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->pass) << report->Summary(true);
  EXPECT_EQ(report->keys[0].windows[0].expected, 10u);
  EXPECT_EQ(report->keys[0].windows[1].expected, 3u);
  EXPECT_THAT(report->Summary(), HasSubstr("exactness check"));
}

TEST(CheckerTest, ExactFailsUnderAdmission) {
  // A limit split across two nodes (each admitting 5 of 10) refuses requests it should allow.
  std::vector<Record> records;
  Add(records, "k", kEpochHour + kSecond, 8, true);
  Add(records, "k", kEpochHour + kSecond, 7, false);
  absl::StatusOr<Report> report = Checker(Fixed(10, kHour)).CheckExact(records);
  ASSERT_TRUE(report.ok());
  EXPECT_FALSE(report->pass);
  EXPECT_THAT(report->Summary(), HasSubstr("admitted 8, expected 10 +- 0"));
  // Within tolerance 2 it passes; the bound check passes too (no over-admission).
  report = Checker(Fixed(10, kHour, 2)).CheckExact(records);
  EXPECT_TRUE(report->pass);
  EXPECT_TRUE(MustCheck(Checker(Fixed(10, kHour)), records).pass);
}

TEST(CheckerTest, ExactFailsOverAdmission) {
  std::vector<Record> records;
  Add(records, "k", kEpochHour + kSecond, 11, true);
  absl::StatusOr<Report> report = Checker(Fixed(10, kHour)).CheckExact(records);
  ASSERT_TRUE(report.ok());
  EXPECT_FALSE(report->pass);
  EXPECT_EQ(report->total_over_admission, 1u);
}

TEST(CheckerTest, ExactNeedsFixedWindows) {
  EXPECT_EQ(Checker(Sliding(10, kHour)).CheckExact({{"n", "k", 1, true}}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CheckerTest, SlidingBoundCatchesBurstsAcrossFixedBoundaries) {
  // 2 just before and 2 just after a boundary: fine for fixed windows of 2, but 4 within one
  // second for an any-interval bound of 2 per second.
  std::vector<Record> records;
  Add(records, "k", kEpochHour + kSecond - 100 * kMs, 2, true);
  Add(records, "k", kEpochHour + kSecond + 100 * kMs, 2, true);
  EXPECT_TRUE(MustCheck(Checker(Fixed(2, kSecond)), records).pass);
  const Report report = MustCheck(Checker(Sliding(2, kSecond)), records);
  EXPECT_FALSE(report.pass);
  EXPECT_EQ(report.keys[0].max_in_interval, 4u);
  EXPECT_EQ(report.keys[0].max_interval_start_ns, kEpochHour + kSecond - 100 * kMs);
  EXPECT_EQ(report.total_over_admission, 2u);
  EXPECT_THAT(report.Summary(), HasSubstr("most in one interval 4"));
}

TEST(CheckerTest, SlidingBoundPassesASteadyRate) {
  // 2 per second, evenly spaced: every interval of one second holds exactly 2.
  std::vector<Record> records;
  for (int i = 0; i < 100; ++i) {
    Add(records, "k", kEpochHour + i * 500 * kMs, 1, true);
    Add(records, "k", kEpochHour + i * 500 * kMs + 250 * kMs, 1, false);
  }
  const Report report = MustCheck(Checker(Sliding(2, kSecond)), records);
  EXPECT_TRUE(report.pass) << report.Summary();
  EXPECT_EQ(report.keys[0].max_in_interval, 2u);
  EXPECT_EQ(report.total_over_admission, 0u);
  // One extra admission makes 3 in some second.
  Add(records, "k", kEpochHour + 10 * kSecond + 100 * kMs, 1, true);
  EXPECT_FALSE(MustCheck(Checker(Sliding(2, kSecond)), records).pass);
  EXPECT_TRUE(MustCheck(Checker(Sliding(2, kSecond, 1)), records).pass);
}

TEST(CheckerTest, SlidingSlackShrinksTheInterval) {
  // Limit 1 per second; two admissions 995 ms apart pass only with 5 ms of slack.
  std::vector<Record> records = {{"n0", "k", kEpochHour, true},
                                 {"n1", "k", kEpochHour + 995 * kMs, true}};
  EXPECT_FALSE(MustCheck(Checker(Sliding(1, kSecond)), records).pass);
  EXPECT_TRUE(MustCheck(Checker(Sliding(1, kSecond, 0, 3 * kMs)), records).pass);
}

TEST(CheckerTest, RejectsBadBoundsAndTimes) {
  const std::vector<Record> records = {{"n0", "k", 1, true}};
  EXPECT_FALSE(Checker(Fixed(1, 0)).CheckBound(records).ok());
  EXPECT_FALSE(Checker(Fixed(1, kMaxPeriodNs + 1)).CheckBound(records).ok());
  EXPECT_FALSE(Checker(Fixed(1, kSecond, 0, kSecond / 2)).CheckBound(records).ok());
  EXPECT_FALSE(Checker(Fixed(1, kSecond, 0, -1)).CheckBound(records).ok());
  EXPECT_TRUE(Checker(Fixed(1, kSecond, 0, kSecond / 2 - 1)).CheckBound(records).ok());
  EXPECT_FALSE(Checker(Fixed(1, kSecond)).CheckBound({{"n0", "k", -1, true}}).ok());
  EXPECT_FALSE(Checker(Fixed(1, kSecond)).CheckBound({{"n0", "k", kMaxTimeNs + 1, true}}).ok());
}

TEST(CheckerTest, EmptyHistoryPasses) {
  const Report report = MustCheck(Checker(Fixed(1, kSecond)), {});
  EXPECT_TRUE(report.pass);
  EXPECT_TRUE(report.keys.empty());
}

TEST(CheckerTest, FailoverToleranceIsOnePercentPlusOne) {
  EXPECT_EQ(FailoverTolerance(0), 1u);
  EXPECT_EQ(FailoverTolerance(99), 1u);
  EXPECT_EQ(FailoverTolerance(1000), 11u);
}

}  // namespace
}  // namespace floodgate::history
