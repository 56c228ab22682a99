#include <google/protobuf/stubs/logging.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "src/common/host_port.h"
#include "src/common/in_flight.h"
#include "src/common/json.h"
#include "src/common/protobuf_log.h"
#include "src/common/rate_limited_log.h"
#include "src/common/text.h"

namespace floodgate::common {
namespace {

TEST(TextTest, Utf8) {
  EXPECT_TRUE(IsValidUtf8("plain"));
  EXPECT_TRUE(IsValidUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xff"));
  EXPECT_FALSE(IsValidUtf8("\xc3"));              // truncated
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));          // overlong '/'
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // above U+10FFFF
}

TEST(JsonTest, StringEscaping) {
  std::string out;
  AppendJsonString("a\"b\\c\nd\te\x01 caf\xC3\xA9 \xF0\x9F\x98\x80", out);
  EXPECT_EQ(out, "\"a\\\"b\\\\c\\nd\\te\\u0001 caf\xC3\xA9 \xF0\x9F\x98\x80\"");
  out.clear();
  // Bytes that are not UTF-8 (a lone continuation, a truncated sequence, an overlong form).
  AppendJsonString("x\x80y\xC3z\xC0\xAF", out);
  EXPECT_EQ(out, "\"x\xEF\xBF\xBDy\xEF\xBF\xBDz\xEF\xBF\xBD\xEF\xBF\xBD\"");
  EXPECT_EQ(ErrorJson("bad \"x\""), "{\"error\":\"bad \\\"x\\\"\"}");
}

TEST(JsonTest, Doubles) {
  auto print = [](double v) {
    std::string out;
    AppendJsonDouble(v, out);
    return out;
  };
  EXPECT_EQ(print(0), "0");
  EXPECT_EQ(print(60), "60");
  EXPECT_EQ(print(1.5), "1.5");
  EXPECT_EQ(print(0.1), "0.1");
  EXPECT_EQ(print(-1), "-1");
  EXPECT_EQ(print(0.732342062), "0.732342062");
  EXPECT_EQ(print(1e-05), "1e-05");
  EXPECT_EQ(print(1.0 / 3), "0.3333333333333333");
  EXPECT_EQ(print(std::numeric_limits<double>::infinity()), "\"Infinity\"");
  EXPECT_EQ(print(std::nan("")), "\"NaN\"");
}

TEST(SplitHostPortTest, Forms) {
  std::string host;
  uint16_t port = 1;
  ASSERT_TRUE(SplitHostPort("127.0.0.1:8080", host, port).ok());
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, 8080);
  ASSERT_TRUE(SplitHostPort("[::1]:0", host, port).ok());
  EXPECT_EQ(host, "::1");
  EXPECT_EQ(port, 0);
  ASSERT_TRUE(SplitHostPort(":9000", host, port).ok());
  EXPECT_EQ(host, "");
  EXPECT_EQ(port, 9000);
  ASSERT_TRUE(SplitHostPort("localhost:1", host, port).ok());
  EXPECT_EQ(host, "localhost");
  for (std::string_view bad : {"", "127.0.0.1", "127.0.0.1:", "host:65536", "host:-1", "host:8x",
                               "::1:80", "[::1]80", "[::1"}) {
    EXPECT_EQ(SplitHostPort(bad, host, port).code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(RateLimitedLogTest, WritesABurstPerIntervalAndCountsTheRest) {
  int64_t now = 1000;
  std::vector<std::string> lines;
  RateLimitedLog log(/*burst=*/2, /*interval_ns=*/100, [&] { return now; },
                     [&](std::string_view line) { lines.emplace_back(line); });
  EXPECT_TRUE(log.Log("a"));
  EXPECT_TRUE(log.Log("b"));
  for (int i = 0; i < 1000; ++i) {
    EXPECT_FALSE(log.Log("flood"));
  }
  EXPECT_EQ(lines.size(), 2u);
  EXPECT_EQ(log.suppressed_total(), 1000u);

  now += 99;  // same window
  EXPECT_FALSE(log.Log("still muted"));
  now += 1;  // next window: the first line says how many were dropped
  EXPECT_TRUE(log.Log("c"));
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[2], "c (1001 earlier lines suppressed)");
  EXPECT_TRUE(log.Log("d"));
  EXPECT_EQ(lines[3], "d");

  now -= 1'000'000;  // a clock stepping back starts a new window instead of muting the log
  EXPECT_TRUE(log.Log("e"));
}

TEST(ProtobufLogTest, ProtobufsLinesGoThroughTheRateLimitedLog) {
  int64_t now = 0;
  std::vector<std::string> lines;
  RateLimitedLog log(/*burst=*/3, /*interval_ns=*/100, [&] { return now; },
                     [&](std::string_view line) { lines.emplace_back(line); });
  RouteProtobufLog(&log);
  for (int i = 0; i < 50; ++i) {
    GOOGLE_LOG(ERROR) << "bad input " << i;
  }
  GOOGLE_LOG(INFO) << "dropped";
  now = 100;
  GOOGLE_LOG(WARNING) << "later";
  RouteProtobufLog(nullptr);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0], "ERROR protobuf msg=\"bad input 0\"");
  EXPECT_EQ(lines[2], "ERROR protobuf msg=\"bad input 2\"");
  EXPECT_EQ(lines[3], "WARN protobuf msg=later suppressed=47");
}

}  // namespace
}  // namespace floodgate::common

namespace floodgate::common {
namespace {

TEST(InFlightLimitTest, TakesUpToMaxAndGivesBack) {
  InFlightLimit limit(2);
  EXPECT_TRUE(limit.TryBegin());
  EXPECT_TRUE(limit.TryBegin());
  EXPECT_FALSE(limit.TryBegin());  // full: nothing taken
  EXPECT_EQ(limit.in_flight(), 2u);
  limit.End();
  EXPECT_TRUE(limit.TryBegin());
  EXPECT_FALSE(limit.TryBegin());
}

}  // namespace
TEST(JsonTest, ReadsStringLiteralsAndRefusesBadOnes) {
  std::string out;
  size_t pos = 0;
  const std::string text = R"("a\"b\\c\n\u00e9\ud83d\ude00\ud800x" rest)";
  ASSERT_TRUE(ReadJsonString(text, pos, out));
  EXPECT_EQ(out, "a\"b\\c\n\xc3\xa9\xf0\x9f\x98\x80\xef\xbf\xbdx");
  EXPECT_EQ(text.substr(pos), " rest");
  // Round trip with the writer.
  std::string written;
  AppendJsonString("tab\there \"quoted\" \xe2\x82\xac", written);
  std::string back;
  pos = 0;
  ASSERT_TRUE(ReadJsonString(written, pos, back));
  EXPECT_EQ(back, "tab\there \"quoted\" \xe2\x82\xac");
  for (std::string_view bad : {"", "x", "\"open", "\"a\\q\"", "\"\\u12\"", "\"raw\nline\""}) {
    std::string ignored;
    size_t at = 0;
    EXPECT_FALSE(ReadJsonString(bad, at, ignored)) << bad;
  }
}

}  // namespace floodgate::common
