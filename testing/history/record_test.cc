#include "testing/history/record.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"

namespace floodgate::history {
namespace {

using ::testing::HasSubstr;

std::string TempPath() {
  char path[] = "/tmp/fg-history-test-XXXXXX";
  const int fd = mkstemp(path);
  close(fd);
  return path;
}

TEST(RecordTest, JsonLineRoundTripsIncludingEscapes) {
  const Record record{"n\"1\\", "user=al\tice\n\x01", 1'700'000'000'123'456'789, true};
  const std::string line = ToJsonLine(record);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  absl::StatusOr<Record> parsed = ParseJsonLine(line);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, record);
}

TEST(RecordTest, JsonLineHasTheDocumentedShape) {
  EXPECT_EQ(ToJsonLine({"n1", "k", 42, false}),
            R"({"node":"n1","key":"k","time_ns":42,"allowed":false})");
}

TEST(RecordTest, ParsesAnyFieldOrderAndIgnoresUnknownScalars) {
  absl::StatusOr<Record> parsed =
      ParseJsonLine(R"( { "allowed" : true, "extra": "x", "latency_ns": 12, "time_ns":-5,)"
                    R"( "n": null, "key":"caf\u00e9", "node":"a"} )");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, (Record{"a", "caf\xc3\xa9", -5, true}));
}

TEST(RecordTest, RejectsMalformedLines) {
  for (const char* bad : {
           "",
           "{",
           R"({"node":"a","key":"k","time_ns":1})",                   // missing allowed
           R"({"node":"a","key":"k","time_ns":1.5,"allowed":true})",  // not an integer
           R"({"node":"a","key":"k","time_ns":1,"allowed":1})",
           R"({"node":"a","key":"k","time_ns":1,"allowed":true} x)",
           R"({"node":"a" "key":"k"})",
           R"({"node":"a\q","key":"k","time_ns":1,"allowed":true})",
           R"({"node":"a,"key":"k","time_ns":1,"allowed":true)",
       }) {
    EXPECT_FALSE(ParseJsonLine(bad).ok()) << bad;
  }
}

TEST(RecordTest, FileRoundTripsAndSkipsBlankLines) {
  const std::string path = TempPath();
  const std::vector<Record> records = {{"n0", "k1", 1, true}, {"n1", "k2", 2, false}};
  ASSERT_TRUE(WriteJsonLines(path, records).ok());
  std::ofstream(path, std::ios::app) << "\n  \n";
  absl::StatusOr<std::vector<Record>> read = ReadJsonLines(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, records);
  std::remove(path.c_str());
}

TEST(RecordTest, ReadNamesTheBadLineAndMissingFiles) {
  const std::string path = TempPath();
  std::ofstream(path) << ToJsonLine({"n0", "k", 1, true}) << "\nnot json\n";
  absl::StatusOr<std::vector<Record>> read = ReadJsonLines(path);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(read.status().message(), HasSubstr(":2:"));
  std::remove(path.c_str());
  EXPECT_EQ(ReadJsonLines(path).status().code(), absl::StatusCode::kNotFound);
}

TEST(RecorderTest, RecordsFromManyThreads) {
  Recorder recorder;
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&recorder, t] {
      for (int i = 0; i < 1000; ++i) {
        recorder.Record(absl::StrCat("n", t), "k", i, i % 2 == 0);
      }
    });
  }
  for (std::thread& t : threads) {
    t.join();
  }
  EXPECT_EQ(recorder.size(), 8000u);
  const std::vector<Record> all = recorder.Snapshot();
  EXPECT_EQ(std::count_if(all.begin(), all.end(), [](const Record& r) { return r.allowed; }), 4000);
}

TEST(RecorderTest, RecordCallUsesTheMidpointWithoutOverflow) {
  Recorder recorder;
  recorder.RecordCall("n", "k", 100, 201, true);
  recorder.RecordCall("n", "k", INT64_MAX - 1, INT64_MAX, true);
  const std::vector<Record> all = recorder.Snapshot();
  EXPECT_EQ(all[0].time_ns, 150);
  EXPECT_EQ(all[1].time_ns, INT64_MAX - 1);
}

TEST(RecorderTest, WritesJsonLines) {
  Recorder recorder;
  recorder.Record("n0", "k", 7, true);
  const std::string path = TempPath();
  ASSERT_TRUE(recorder.WriteJsonLines(path).ok());
  absl::StatusOr<std::vector<Record>> read = ReadJsonLines(path);
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(*read, recorder.Snapshot());
  std::remove(path.c_str());
}

}  // namespace
}  // namespace floodgate::history
