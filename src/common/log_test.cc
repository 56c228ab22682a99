#include "src/common/log.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "src/common/rate_limited_log.h"

namespace floodgate::common {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

const absl::Time kTime = absl::FromUnixMillis(1796529662123);  // 2026-12-06T04:01:02.123Z

TEST(LogFormatTest, PlainLineHasTimestampLevelEventAndFields) {
  EXPECT_EQ(FormatLogLine(LogFormat::kPlain, kTime, LogLevel::kWarn, "peer_dead",
                          {{"peer", "b"}, {"members", 3}}),
            "2026-12-06T04:01:02.123Z WARN peer_dead peer=b members=3");
  EXPECT_EQ(FormatLogLine(LogFormat::kPlain, kTime, LogLevel::kInfo, "started", {}),
            "2026-12-06T04:01:02.123Z INFO started");
  EXPECT_EQ(FormatLogLine(LogFormat::kPlain, kTime, LogLevel::kError, "e", {{"x", -1}}),
            "2026-12-06T04:01:02.123Z ERROR e x=-1");
}

TEST(LogFormatTest, PlainValuesAreQuotedWhenTheyWouldBeMisread) {
  const std::string line = FormatLogLine(LogFormat::kPlain, kTime, LogLevel::kInfo, "e",
                                         {{"a", "two words"},
                                          {"b", ""},
                                          {"c", "k=v"},
                                          {"d", "say \"hi\""},
                                          {"e", "line\nbreak"},
                                          {"f", "plain-value_1.2:3/x"},
                                          {"g", true},
                                          {"h", 1.5},
                                          {"i", uint64_t{18446744073709551615u}},
                                          {"j", absl::Milliseconds(1500)}});
  EXPECT_EQ(line,
            "2026-12-06T04:01:02.123Z INFO e a=\"two words\" b=\"\" c=\"k=v\" "
            "d=\"say \\\"hi\\\"\" e=\"line\\nbreak\" f=plain-value_1.2:3/x g=true h=1.5 "
            "i=18446744073709551615 j=1.5s");
}

TEST(LogFormatTest, JsonLineIsOneObjectWithEscapedStrings) {
  EXPECT_EQ(FormatLogLine(LogFormat::kJson, kTime, LogLevel::kWarn, "peer_dead",
                          {{"peer", "b"}, {"members", 3}}),
            "{\"ts\":\"2026-12-06T04:01:02.123Z\",\"level\":\"warn\",\"event\":\"peer_dead\","
            "\"peer\":\"b\",\"members\":3}");
  EXPECT_EQ(
      FormatLogLine(LogFormat::kJson, kTime, LogLevel::kError, "e",
                    {{"q", "a\"b\\c\n\x01"}, {"ok", false}, {"n", int64_t{-7}}, {"bad", "\xff"}}),
      "{\"ts\":\"2026-12-06T04:01:02.123Z\",\"level\":\"error\",\"event\":\"e\","
      "\"q\":\"a\\\"b\\\\c\\n\\u0001\",\"ok\":false,\"n\":-7,\"bad\":\"\xef\xbf\xbd\"}");
}

TEST(LogFormatTest, ParsesLevelsAndFormats) {
  LogLevel level = LogLevel::kInfo;
  EXPECT_TRUE(ParseLogLevel("warn", &level));
  EXPECT_EQ(level, LogLevel::kWarn);
  EXPECT_TRUE(ParseLogLevel("error", &level));
  EXPECT_EQ(level, LogLevel::kError);
  EXPECT_FALSE(ParseLogLevel("WARN", &level));
  EXPECT_FALSE(ParseLogLevel("debug", &level));
  LogFormat format = LogFormat::kPlain;
  EXPECT_TRUE(ParseLogFormat("json", &format));
  EXPECT_EQ(format, LogFormat::kJson);
  EXPECT_FALSE(ParseLogFormat("text", &format));
}

TEST(LogTest, WritesAtOrAboveTheLevelInTheChosenFormat) {
  LogCapture capture;
  Log(LogLevel::kInfo, "one", {{"k", "v"}});
  SetLogLevel(LogLevel::kWarn);
  EXPECT_FALSE(LogEnabled(LogLevel::kInfo));
  Log(LogLevel::kInfo, "hidden");
  Log(LogLevel::kWarn, "two");
  SetLogFormat(LogFormat::kJson);
  Log(LogLevel::kError, "three", {{"n", 1}});
  SetLogFormat(LogFormat::kPlain);
  SetLogLevel(LogLevel::kInfo);
  const std::vector<std::string> lines = capture.lines();
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_THAT(lines[0], testing::EndsWith("Z INFO one k=v"));
  EXPECT_THAT(lines[1], testing::EndsWith("Z WARN two"));
  EXPECT_THAT(lines[2], HasSubstr("\"level\":\"error\",\"event\":\"three\",\"n\":1}"));
  EXPECT_EQ(capture.Events("two").size(), 1u);
  EXPECT_EQ(capture.Events("three").size(), 1u);
  EXPECT_TRUE(capture.Events("hidden").empty());
}

TEST(RateLimitedLogTest, EventsSayHowManyWereSuppressed) {
  int64_t now = 0;
  std::vector<std::string> lines;
  RateLimitedLog log(/*burst=*/1, /*interval_ns=*/100, [&] { return now; },
                     [&](std::string_view line) { lines.emplace_back(line); });
  EXPECT_TRUE(log.Log(LogLevel::kWarn, "bad_peer", {{"from", "10.0.0.1:5"}}));
  EXPECT_FALSE(log.Log(LogLevel::kWarn, "bad_peer", {{"from", "10.0.0.1:6"}}));
  EXPECT_FALSE(log.Log(LogLevel::kWarn, "bad_peer", {{"from", "10.0.0.1:7"}}));
  now = 100;
  EXPECT_TRUE(log.Log(LogLevel::kError, "bad_peer", {{"from", "x y"}}));
  EXPECT_THAT(lines, ElementsAre("WARN bad_peer from=10.0.0.1:5",
                                 "ERROR bad_peer from=\"x y\" suppressed=2"));
}

TEST(RateLimitedLogTest, DefaultSinkIsTheServersLog) {
  LogCapture capture;
  RateLimitedLog log;
  log.Log(LogLevel::kWarn, "ev", {{"a", 1}});
  log.Log("a bare line");
  const std::vector<std::string> lines = capture.lines();
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_THAT(lines[0], testing::EndsWith("Z WARN ev a=1"));
  EXPECT_THAT(lines[1], testing::EndsWith("Z WARN message msg=\"a bare line\""));
}

}  // namespace
}  // namespace floodgate::common
