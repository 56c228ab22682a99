// Unit tests: the --store URL and Redis Cluster's hash slot.

#include <gtest/gtest.h>

#include <string>

#include "src/redis/redis_client.h"

namespace floodgate::redis {
namespace {

using Mode = ClientOptions::Mode;

// Returns the error message ParseStoreUrl gives `url` ("" when it parses).
std::string ErrorOf(std::string_view url) {
  absl::StatusOr<ClientOptions> options = ParseStoreUrl(url);
  if (options.ok()) {
    return "";
  }
  EXPECT_EQ(options.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(options.status().message());
}

TEST(ParseStoreUrlTest, Single) {
  absl::StatusOr<ClientOptions> options = ParseStoreUrl("redis://127.0.0.1:6380");
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->mode, Mode::kSingle);
  ASSERT_EQ(options->endpoints.size(), 1u);
  EXPECT_EQ(options->endpoints[0].host, "127.0.0.1");
  EXPECT_EQ(options->endpoints[0].port, 6380);
  EXPECT_EQ(options->db, 0);
  EXPECT_FALSE(options->tls);
  EXPECT_TRUE(options->password.empty());

  options = ParseStoreUrl("redis://redis.internal");
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->endpoints[0].host, "redis.internal");
  EXPECT_EQ(options->endpoints[0].port, 6379);

  options = ParseStoreUrl("redis://[::1]:7000/5");
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->endpoints[0].host, "::1");
  EXPECT_EQ(options->endpoints[0].port, 7000);
  EXPECT_EQ(options->db, 5);
}

TEST(ParseStoreUrlTest, CredentialsArePercentDecoded) {
  absl::StatusOr<ClientOptions> options = ParseStoreUrl("redis://fg%40app:p%3Ass@w%2Fo:rd@h:1/2");
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->username, "fg@app");
  EXPECT_EQ(options->password, "p:ss@w/o:rd");
  EXPECT_EQ(options->endpoints[0].host, "h");
  EXPECT_EQ(options->db, 2);

  options = ParseStoreUrl("redis://:secret@h:1");
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->username, "");
  EXPECT_EQ(options->password, "secret");
}

TEST(ParseStoreUrlTest, TlsAndQuery) {
  absl::StatusOr<ClientOptions> options = ParseStoreUrl(
      "rediss://h:6380?tls_ca=/etc/ca.pem&tls_cert=/c.pem&tls_key=/k%20.pem&timeout_ms=20&"
      "connect_timeout_ms=300&connections=4&max_pending=100");
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_TRUE(options->tls);
  EXPECT_EQ(options->tls_ca_file, "/etc/ca.pem");
  EXPECT_EQ(options->tls_cert_file, "/c.pem");
  EXPECT_EQ(options->tls_key_file, "/k .pem");
  EXPECT_EQ(options->timeout_ms, 20);
  EXPECT_EQ(options->connect_timeout_ms, 300);
  EXPECT_EQ(options->connections_per_node, 4);
  EXPECT_EQ(options->max_pending_per_node, 100);
}

// tls=true asks for TLS where the scheme cannot (Sentinel, Cluster): envoyproxy/ratelimit's
// REDIS_TLS maps to it.
TEST(ParseStoreUrlTest, TlsParameter) {
  absl::StatusOr<ClientOptions> cluster =
      ParseStoreUrl("redis-cluster://a:1,b:2?tls=true&tls_ca=/ca.pem");
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  EXPECT_TRUE(cluster->tls);
  EXPECT_EQ(cluster->tls_ca_file, "/ca.pem");
  absl::StatusOr<ClientOptions> plain = ParseStoreUrl("redis://h:1?tls=false");
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_FALSE(plain->tls);
  EXPECT_NE(ErrorOf("rediss://h:1?tls=false&tls_ca=/ca.pem").find("tls=false contradicts it"),
            std::string::npos);
  EXPECT_NE(ErrorOf("redis://h:1?tls=yes").find("tls=yes is not true or false"), std::string::npos);
  EXPECT_NE(ErrorOf("redis-sentinel://s:1/m?tls=true").find("TLS (rediss:// or tls=true) needs"),
            std::string::npos);
}

TEST(ParseStoreUrlTest, Sentinel) {
  absl::StatusOr<ClientOptions> options =
      ParseStoreUrl("redis-sentinel://:pw@s1:26379,s2,s3:26380/my%20master/4?timeout_ms=30");
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->mode, Mode::kSentinel);
  ASSERT_EQ(options->endpoints.size(), 3u);
  EXPECT_EQ(options->endpoints[1].host, "s2");
  EXPECT_EQ(options->endpoints[1].port, 26379);  // Sentinel's default port
  EXPECT_EQ(options->endpoints[2].port, 26380);
  EXPECT_EQ(options->master_name, "my master");
  EXPECT_EQ(options->db, 4);
  EXPECT_EQ(options->password, "pw");
  EXPECT_EQ(options->timeout_ms, 30);
}

TEST(ParseStoreUrlTest, Cluster) {
  absl::StatusOr<ClientOptions> options = ParseStoreUrl("redis-cluster://a:7000,b:7001");
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->mode, Mode::kCluster);
  ASSERT_EQ(options->endpoints.size(), 2u);
  EXPECT_EQ(options->endpoints[1].host, "b");
  EXPECT_EQ(options->endpoints[1].port, 7001);
}

TEST(ParseStoreUrlTest, ErrorsNameTheProblem) {
  EXPECT_NE(ErrorOf("127.0.0.1:6379").find("no scheme"), std::string::npos);
  EXPECT_NE(ErrorOf("http://h:1").find("unknown scheme 'http://'"), std::string::npos);
  EXPECT_NE(ErrorOf("redis://a:1,b:2").find("one address"), std::string::npos);
  EXPECT_NE(ErrorOf("redis://h:99999").find("bad address"), std::string::npos);
  EXPECT_NE(ErrorOf("redis://h:0").find("port 0"), std::string::npos);
  EXPECT_NE(ErrorOf("redis://").find("empty host"), std::string::npos);
  EXPECT_NE(ErrorOf("redis://h:1/x").find("database 'x'"), std::string::npos);
  EXPECT_NE(ErrorOf("redis://h:1/-1").find("database"), std::string::npos);
  EXPECT_NE(ErrorOf("redis://h:1/1/2").find("/DB alone"), std::string::npos);
  EXPECT_NE(ErrorOf("redis://user@h:1").find("USER:PASSWORD"), std::string::npos);
  EXPECT_NE(ErrorOf("redis://user:@h:1").find("without a password"), std::string::npos);
  EXPECT_NE(ErrorOf("redis://:p%zz@h:1").find("percent escape in the password"), std::string::npos);
  EXPECT_NE(ErrorOf("redis://h:1?timeout_ms=0").find("timeout_ms=0"), std::string::npos);
  EXPECT_NE(ErrorOf("redis://h:1?timeout_ms=abc").find("timeout_ms=abc"), std::string::npos);
  EXPECT_NE(ErrorOf("redis://h:1?connections=1000").find("connections"), std::string::npos);
  EXPECT_NE(ErrorOf("redis://h:1?bogus=1").find("unknown query parameter 'bogus'"),
            std::string::npos);
  EXPECT_NE(ErrorOf("redis://h:1?timeout_ms").find("no value"), std::string::npos);
  EXPECT_NE(ErrorOf("redis://h:1?tls_ca=/ca").find("rediss://"), std::string::npos);
  EXPECT_NE(ErrorOf("rediss://h:1").find("tls_ca"), std::string::npos);
  EXPECT_NE(ErrorOf("rediss://h:1?tls_ca=/a&tls_cert=/c").find("go together"), std::string::npos);
  EXPECT_NE(ErrorOf("redis-sentinel://s:1").find("master's name"), std::string::npos);
  EXPECT_NE(ErrorOf("redis-sentinel://s:1/m/x").find("database"), std::string::npos);
  EXPECT_NE(ErrorOf("redis-cluster://a:1/3").find("database 0 only"), std::string::npos);
  EXPECT_NE(ErrorOf("redis://h:1#x").find("fragment"), std::string::npos);
  EXPECT_NE(ErrorOf("redis://a:1,,b:2").find("empty host"), std::string::npos);
}

TEST(NewClientTest, RefusesBadOptions) {
  ClientOptions options;
  EXPECT_EQ(NewClient(options).status().code(), absl::StatusCode::kInvalidArgument);
  options.endpoints = {Endpoint{"127.0.0.1", 1}};
  options.timeout_ms = 0;
  EXPECT_EQ(NewClient(options).status().code(), absl::StatusCode::kInvalidArgument);
  options.timeout_ms = 50;
  options.tls = true;
  options.tls_ca_file = "/nonexistent/ca.pem";
  absl::Status status = NewClient(options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("/nonexistent/ca.pem"), std::string::npos) << status;
}

// Values from the Redis Cluster specification and redis-cli's CLUSTER KEYSLOT.
TEST(HashSlotTest, MatchesRedis) {
  EXPECT_EQ(HashSlot("123456789"), 0x31C3);  // the CRC16-XMODEM check value
  EXPECT_EQ(HashSlot("foo"), 12182);
  EXPECT_EQ(HashSlot("bar"), 5061);
  EXPECT_EQ(HashSlot("hello"), 866);
  EXPECT_EQ(HashSlot(""), 0);
}

TEST(HashSlotTest, HashTags) {
  EXPECT_EQ(HashSlot("{user1000}.following"), HashSlot("user1000"));
  EXPECT_EQ(HashSlot("{user1000}.followers"), HashSlot("user1000"));
  EXPECT_NE(HashSlot("foo{}{bar}"), HashSlot("bar"));  // empty tag: the whole key
  EXPECT_EQ(HashSlot("foo{{bar}}zap"), HashSlot("{bar"));
  EXPECT_EQ(HashSlot("foo{bar}{zap}"), HashSlot("bar"));
  EXPECT_EQ(HashSlot("{bar"), HashSlot(std::string("{bar")));  // no closing brace: whole key
  EXPECT_NE(HashSlot("{bar"), HashSlot("bar"));
}

}  // namespace
}  // namespace floodgate::redis
