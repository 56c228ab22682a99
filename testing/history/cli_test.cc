#include "testing/history/cli.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <sstream>

#include "testing/history/record.h"

namespace floodgate::history {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kSecond = 1'000'000'000;
constexpr int64_t kEpochHour = 1'699'999'200 * kSecond;  // an hour boundary

class HistoryCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char path[] = "/tmp/fg-history-cli-XXXXXX";
    close(mkstemp(path));
    path_ = path;
  }
  void TearDown() override { std::remove(path_.c_str()); }

  // Writes `admitted` allowed and `refused` refused records for `key` in one hour window.
  void Write(const std::vector<std::tuple<std::string, int, int>>& keys) {
    Recorder recorder;
    for (const auto& [key, admitted, refused] : keys) {
      for (int i = 0; i < admitted + refused; ++i) {
        recorder.Record(i % 2 ? "n1" : "n0", key, kEpochHour + 60 * kSecond + i, i < admitted);
      }
    }
    ASSERT_TRUE(recorder.WriteJsonLines(path_).ok());
  }

  int Run(std::vector<std::string> args) {
    out_.str("");
    err_.str("");
    args.insert(args.begin(), {"--history", path_});
    return RunHistoryChecker(args, out_, err_);
  }

  std::string path_;
  std::ostringstream out_, err_;
};

TEST_F(HistoryCliTest, PassesAndFails) {
  Write({{"k", 100, 20}});
  EXPECT_EQ(Run({"--limit", "100", "--period", "1h"}), kExitPass);
  EXPECT_THAT(out_.str(), HasSubstr("RESULT: PASS"));
  EXPECT_EQ(Run({"--limit=99", "--period=1h"}), kExitViolation);
  EXPECT_THAT(out_.str(), HasSubstr("RESULT: FAIL (1 failing windows, total over-admission 1)"));
  EXPECT_EQ(Run({"--limit", "99", "--period", "1h", "--tolerance", "1"}), kExitPass);
  EXPECT_EQ(Run({"--limit", "99", "--period", "1h", "--tolerance", "failover"}), kExitPass);
  EXPECT_EQ(Run({"--limit", "100", "--period", "3600s", "--window", "sliding"}), kExitPass);
}

TEST_F(HistoryCliTest, ExactChecksUnderAdmission) {
  Write({{"k", 90, 20}});
  EXPECT_EQ(Run({"--limit", "100", "--period", "1h"}), kExitPass);
  EXPECT_EQ(Run({"--limit", "100", "--period", "1h", "--exact"}), kExitViolation);
  EXPECT_THAT(out_.str(), HasSubstr("expected 100 +- 0"));
  EXPECT_EQ(Run({"--limit", "90", "--period", "1h", "--exact", "--verbose"}), kExitPass);
  EXPECT_THAT(out_.str(), HasSubstr("ok   [2023-11-14T22:00:00Z, +1h)"));
}

TEST_F(HistoryCliTest, KeyRestrictsTheCheck) {
  Write({{"a", 5, 0}, {"b", 50, 0}});
  EXPECT_EQ(Run({"--limit", "10", "--period", "1m"}), kExitViolation);
  EXPECT_EQ(Run({"--limit", "10", "--period", "1m", "--key", "a"}), kExitPass);
  EXPECT_THAT(out_.str(), HasSubstr("1 keys"));
}

TEST_F(HistoryCliTest, UsageAndInputErrors) {
  Write({{"k", 1, 0}});
  EXPECT_EQ(Run({"--limit", "10"}), kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("usage:"));
  EXPECT_EQ(Run({"--limit", "x", "--period", "1h"}), kExitUsage);
  EXPECT_EQ(Run({"--limit", "1", "--period", "1 hour"}), kExitUsage);
  EXPECT_EQ(Run({"--limit", "1", "--period", "1h", "--window", "rolling"}), kExitUsage);
  EXPECT_EQ(Run({"--limit", "1", "--period", "1h", "--slack", "30m"}), kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("slack"));
  EXPECT_EQ(Run({"--limit", "1", "--period", "1h", "--bogus", "1"}), kExitUsage);
  EXPECT_EQ(Run({"--limit", "1", "--period", "1h", "--window", "sliding", "--exact"}), kExitUsage);
  EXPECT_EQ(Run({"--limit", "1", "--period"}), kExitUsage);
  std::remove(path_.c_str());
  EXPECT_EQ(Run({"--limit", "1", "--period", "1h"}), kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("cannot read"));
}

}  // namespace
}  // namespace floodgate::history
