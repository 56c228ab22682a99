#include "src/service/shed_watch.h"

#include <atomic>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "src/common/log.h"

namespace floodgate::service {
namespace {

using ::testing::HasSubstr;

TEST(ShedWatchTest, LogsTheStartAndTheStopOfEachFrontEndOnce) {
  common::LogCapture log;
  std::atomic<uint64_t> http{5};  // shed before the watch began: not news
  std::atomic<uint64_t> grpc{0};
  ShedWatch watch({{"http", &http}, {"grpc", &grpc}}, absl::Seconds(1));
  absl::Time now = absl::FromUnixSeconds(1000);
  watch.Poll(now);
  EXPECT_TRUE(log.lines().empty());

  http += 3;
  now += absl::Milliseconds(250);
  watch.Poll(now);
  ASSERT_EQ(log.Events("shed_started").size(), 1u);
  EXPECT_THAT(log.Events("shed_started")[0], HasSubstr("frontend=http shed=3"));
  for (int i = 0; i < 3; ++i) {  // still shedding: nothing new
    http += 10;
    now += absl::Milliseconds(250);
    watch.Poll(now);
  }
  now += absl::Milliseconds(750);  // quiet, but not for 1 s yet
  watch.Poll(now);
  EXPECT_TRUE(log.Events("shed_stopped").empty());
  now += absl::Milliseconds(250);
  watch.Poll(now);
  ASSERT_EQ(log.Events("shed_stopped").size(), 1u);
  EXPECT_THAT(log.Events("shed_stopped")[0], HasSubstr("frontend=http shed=33 lasted=750ms"));
  now += absl::Seconds(5);
  watch.Poll(now);
  EXPECT_EQ(log.lines().size(), 2u);

  grpc += 1;  // the other front end, on its own
  now += absl::Seconds(1);
  watch.Poll(now);
  EXPECT_THAT(log.Events("shed_started").back(), HasSubstr("frontend=grpc shed=1"));
  EXPECT_EQ(log.Events("shed_started").size(), 2u);
}

}  // namespace
}  // namespace floodgate::service
