#include "src/server/startup_log.h"

#include "gtest/gtest.h"

namespace floodgate::server {
namespace {

TEST(StartupLogTest, RedactsTheUrlsPasswordOnly) {
  EXPECT_EQ(RedactUrl("memory"), "memory");
  EXPECT_EQ(RedactUrl("redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0");
  EXPECT_EQ(RedactUrl("redis://:s3cret@10.0.0.1:6379"), "redis://:***@10.0.0.1:6379");
  EXPECT_EQ(RedactUrl("rediss://app:p@ss:w0rd@cache:6380/2"), "rediss://app:***@cache:6380/2");
  EXPECT_EQ(RedactUrl("redis://app@cache:6379"), "redis://app@cache:6379");
  EXPECT_EQ(RedactUrl("redis-sentinel://:pw@s1:26379,s2:26379/mymaster"),
            "redis-sentinel://:***@s1:26379,s2:26379/mymaster");
}

}  // namespace
}  // namespace floodgate::server
