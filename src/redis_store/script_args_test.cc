#include "src/redis_store/script_args.h"

#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "floodgate/store.h"
#include "src/core/config.h"
#include "src/limiter/state_key.h"

namespace floodgate::redis_store {
namespace {

constexpr int64_t kSecondNs = 1'000'000'000;
constexpr int64_t kNowNs = 1'765'000'000'123'456'789;  // December 2025

struct Key {
  std::string bytes;
  uint32_t descriptor_size = 0;
};

Key MakeKey(std::string_view domain, std::vector<core::DescriptorEntry> entries,
            const LimitSpec& spec, bool block = false) {
  Key key;
  key.descriptor_size =
      static_cast<uint32_t>(limiter::PutDescriptorPart(key.bytes, domain, entries));
  core::RateLimitRule rule;
  rule.spec = spec;
  limiter::PutRulePart(key.bytes.data() + key.descriptor_size, rule);
  if (block) {
    key.bytes.push_back('B');
  }
  return key;
}

LimitSpec Spec(Algorithm algorithm, uint64_t count, int64_t period_ns, uint64_t burst = 0) {
  return LimitSpec{
      .algorithm = algorithm, .requests_per_period = count, .period_ns = period_ns, .burst = burst};
}

TEST(ChooseUnitTest, MicrosecondsForOrdinaryLimits) {
  for (Algorithm a : {Algorithm::kFixedWindow, Algorithm::kSlidingWindow, Algorithm::kTokenBucket,
                      Algorithm::kLeakyBucket, Algorithm::kConcurrency}) {
    EXPECT_EQ(ChooseUnitNs(Spec(a, 100, kSecondNs), kNowNs), 1'000) << AlgorithmName(a);
    EXPECT_EQ(ChooseUnitNs(Spec(a, 1'000'000, 3600 * kSecondNs), kNowNs), 1'000);
    EXPECT_TRUE(ValidateRedisLimit(Spec(a, 100, kSecondNs)).ok());
  }
}

TEST(ChooseUnitTest, CoarserUnitsWhenProductsGrow) {
  // 1e9 per day as a bucket: period * capacity in µs is 8.6e19, in ms 8.6e16, in s 8.6e13.
  EXPECT_EQ(ChooseUnitNs(Spec(Algorithm::kTokenBucket, 1'000'000'000, 86400 * kSecondNs), kNowNs),
            1'000'000'000);
  EXPECT_EQ(ChooseUnitNs(Spec(Algorithm::kTokenBucket, 1'000'000, 86400 * kSecondNs), kNowNs),
            1'000'000);
  // Fixed windows and concurrency form no products: microseconds even for a year.
  EXPECT_EQ(ChooseUnitNs(Spec(Algorithm::kFixedWindow, 1'000'000'000'000, 365 * 86400 * kSecondNs),
                         kNowNs),
            1'000);
}

TEST(ChooseUnitTest, UnitMustDivideThePeriod) {
  EXPECT_EQ(ChooseUnitNs(Spec(Algorithm::kFixedWindow, 10, 1'500'000), kNowNs), 1'000);
  EXPECT_EQ(ChooseUnitNs(Spec(Algorithm::kFixedWindow, 10, 1'500), kNowNs), 0);
  EXPECT_FALSE(ValidateRedisLimit(Spec(Algorithm::kFixedWindow, 10, 1'500)).ok());
}

TEST(ChooseUnitTest, RefusesWhatNoUnitHolds) {
  const LimitSpec huge =
      Spec(Algorithm::kTokenBucket, 1'000'000'000'000, 100LL * 365 * 86400 * kSecondNs);
  EXPECT_EQ(ChooseUnitNs(huge, kNowNs), 0);
  const absl::Status status = ValidateRedisLimit(huge);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("Redis"), std::string_view::npos) << status;
}

TEST(KeysTest, OneDescriptorSharesAHashTagAndKeysNeverCollide) {
  const LimitSpec a = Spec(Algorithm::kFixedWindow, 10, kSecondNs);
  const LimitSpec b = Spec(Algorithm::kTokenBucket, 10, 60 * kSecondNs);
  const Key k1 = MakeKey("api", {{"user", "alice"}}, a);
  const Key k2 = MakeKey("api", {{"user", "alice"}}, b);
  const Key k3 = MakeKey("api", {{"user", "alic"}}, a);
  const Key k4 = MakeKey("api", {{"use", "ralice"}}, a);
  const std::string r1 = StateRedisKey("fg:", k1.bytes, k1.descriptor_size);
  const std::string r2 = StateRedisKey("fg:", k2.bytes, k2.descriptor_size);
  const std::string r3 = StateRedisKey("fg:", k3.bytes, k3.descriptor_size);
  const std::string r4 = StateRedisKey("fg:", k4.bytes, k4.descriptor_size);
  ASSERT_EQ(r1.substr(0, 4), "fg:{");
  EXPECT_EQ(r1[20], '}');
  EXPECT_EQ(r1.substr(0, 21), r2.substr(0, 21));  // same descriptor: same hash tag
  EXPECT_NE(r1, r2);
  EXPECT_NE(r1, r3);
  EXPECT_NE(r1, r4);
  EXPECT_NE(r3, r4);
  EXPECT_EQ(r1.substr(21), k1.bytes);  // the raw state key follows the tag
  // The lease book shares the tag and cannot be a state key.
  const std::string lease = LeaseRedisKey("fg:", k1.bytes, k1.descriptor_size);
  EXPECT_EQ(lease.substr(0, 21), r1.substr(0, 21));
  EXPECT_NE(lease, r1);
  // The same on every node: a fixed seed.
  EXPECT_EQ(DescriptorHash("abc"), DescriptorHash("abc"));
}

TEST(KeysTest, EnvoyKeyIsEnvoysCacheKey) {
  const LimitSpec minute = Spec(Algorithm::kFixedWindow, 10, 60 * kSecondNs);
  const Key k = MakeKey("api", {{"user", "alice"}, {"path", "/x"}}, minute);
  const int64_t now_s = kNowNs / kSecondNs;
  const absl::StatusOr<std::string> key = EnvoyRedisKey(
      "pre_", std::string_view(k.bytes).substr(0, k.descriptor_size), minute.period_ns, kNowNs);
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_EQ(*key, "pre_api_user_alice_path_/x_" + std::to_string(now_s / 60 * 60));

  StoreOp op{.spec = minute, .state_key = k.bytes, .descriptor_size = k.descriptor_size};
  EXPECT_TRUE(UsesEnvoyLayout(op));
  const Key block = MakeKey("api", {{"user", "alice"}}, minute, /*block=*/true);
  op.state_key = block.bytes;
  op.descriptor_size = block.descriptor_size;
  EXPECT_FALSE(UsesEnvoyLayout(op));  // a block_duration's block stays in our layout
  op.state_key = k.bytes;
  op.descriptor_size = k.descriptor_size;
  op.spec.period_ns = 120 * kSecondNs;
  EXPECT_FALSE(UsesEnvoyLayout(op));  // not one of Envoy's units
  for (int64_t s : {1, 60, 3600, 86400, 86400 * 7, 86400 * 30, 86400 * 365}) {
    EXPECT_TRUE(IsEnvoyPeriod(s * kSecondNs)) << s;
  }
  EXPECT_FALSE(EnvoyRedisKey("", "\x05", kSecondNs, kNowNs).ok());  // truncated
}

TEST(EncodeTest, ArgumentsAndKeysPerOp) {
  const LimitSpec spec = Spec(Algorithm::kConcurrency, 3, kSecondNs);
  const Key k = MakeKey("api", {{"user", "alice"}}, spec);
  std::vector<StoreOp> ops(2);
  ops[0] = StoreOp{.spec = spec,
                   .hits = 1000,
                   .lease = 42,
                   .state_key = k.bytes,
                   .descriptor_size = k.descriptor_size};
  ops[1] = StoreOp{.spec = spec, .state_key = {}, .descriptor_size = 0};  // no state key
  const ScriptOptions options;
  std::vector<PlannedOp> plans = {PlanOp(ops[0], kNowNs, options), PlanOp(ops[1], kNowNs, options)};
  EXPECT_EQ(plans[0].code, OpCode::kAcquire);
  EXPECT_EQ(plans[1].code, OpCode::kRefuse);
  std::vector<std::string> keys;
  std::vector<std::string> args;
  const uint32_t which[] = {0, 1};
  EncodeTransaction(ops, plans, which, kNowNs, keys, args);
  ASSERT_EQ(args.size(), kArgsPerTransaction + 2 * kArgsPerOp);
  EXPECT_EQ(keys.size(), 2u);  // state and lease book of op 0; none for the refused one
  EXPECT_EQ(args[0], "2");
  EXPECT_EQ(args[1], std::to_string(kNowNs / 1'000));
  EXPECT_EQ(args[4], "8");  // 2 * kAcquire
  EXPECT_EQ(args[5], "4");  // hits capped at limit + 1
  EXPECT_EQ(args[6], "1000000");
  const int64_t now_us = kNowNs / 1'000;
  EXPECT_EQ(args[9], std::to_string(now_us - now_us % 1'000'000 + 1'000'000));
  EXPECT_EQ(args[11], "42");
  EXPECT_EQ(args[12], "14");  // 2 * kRefuse
}

redis::Reply Int(int64_t v) {
  return redis::Reply{.type = redis::Reply::Type::kInteger, .integer = v};
}

TEST(DecodeTest, ScalesDurationsAndRejectsMalformedReplies) {
  const LimitSpec spec = Spec(Algorithm::kTokenBucket, 10, kSecondNs, 20);
  const Key k = MakeKey("api", {}, spec);
  std::vector<StoreOp> ops = {
      StoreOp{.spec = spec, .state_key = k.bytes, .descriptor_size = k.descriptor_size}};
  std::vector<PlannedOp> plans = {PlanOp(ops[0], kNowNs, ScriptOptions{})};
  const uint32_t which[] = {0};
  std::vector<Decision> decisions(1);
  bool committed = true;
  redis::Reply reply{.type = redis::Reply::Type::kArray};
  reply.elements = {Int(0), Int(0), Int(3), Int(-1), Int(7), Int(0)};
  ASSERT_TRUE(
      DecodeTransaction(reply, ops, plans, which, absl::MakeSpan(decisions), &committed).ok());
  EXPECT_FALSE(committed);
  EXPECT_FALSE(decisions[0].allowed);
  EXPECT_EQ(decisions[0].limit, 20u);
  EXPECT_EQ(decisions[0].remaining, 3u);
  EXPECT_EQ(decisions[0].retry_after_ns, Decision::kNever);
  EXPECT_EQ(decisions[0].reset_after_ns, 7'000);

  redis::Reply bad = reply;
  bad.elements.pop_back();
  EXPECT_FALSE(
      DecodeTransaction(bad, ops, plans, which, absl::MakeSpan(decisions), &committed).ok());
  bad = reply;
  bad.elements[2] = redis::Reply{.type = redis::Reply::Type::kString, .str = "x"};
  EXPECT_FALSE(
      DecodeTransaction(bad, ops, plans, which, absl::MakeSpan(decisions), &committed).ok());
  bad = reply;
  bad.elements[0] = Int(5);
  EXPECT_FALSE(
      DecodeTransaction(bad, ops, plans, which, absl::MakeSpan(decisions), &committed).ok());
  bad = reply;
  bad.elements[2] = Int(-4);
  EXPECT_FALSE(
      DecodeTransaction(bad, ops, plans, which, absl::MakeSpan(decisions), &committed).ok());
  const redis::Reply error{.type = redis::Reply::Type::kError, .str = "ERR boom"};
  EXPECT_FALSE(
      DecodeTransaction(error, ops, plans, which, absl::MakeSpan(decisions), &committed).ok());
  EXPECT_FALSE(
      DecodeTransaction(redis::Reply{}, ops, plans, which, absl::MakeSpan(decisions), &committed)
          .ok());
}

}  // namespace
}  // namespace floodgate::redis_store
