#include "src/core/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace floodgate::core {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr int64_t kSecondNs = 1'000'000'000LL;

// Test YAML is written as R"(
// domain: ...)" so that line 1 is the first line after the opening quote.
std::string Yaml(std::string_view text) {
  if (!text.empty() && text.front() == '\n') {
    text.remove_prefix(1);
  }
  return std::string(text);
}

std::shared_ptr<const DomainConfig> MustParse(std::string_view text) {
  absl::StatusOr<std::shared_ptr<const DomainConfig>> config =
      ParseDomainConfig(Yaml(text), "test.yaml");
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? *config : std::make_shared<const DomainConfig>();
}

// Returns the error message, expecting InvalidArgument.
std::string ErrorOf(std::string_view text) {
  absl::StatusOr<std::shared_ptr<const DomainConfig>> config =
      ParseDomainConfig(Yaml(text), "test.yaml");
  if (config.ok()) {
    ADD_FAILURE() << "expected an error for:\n" << text;
    return "";
  }
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << config.status();
  return std::string(config.status().message());
}

const DescriptorNode* Match(const DomainConfig& config,
                            std::vector<std::pair<std::string, std::string>> entries) {
  std::vector<DescriptorEntry> request;
  for (auto& [key, value] : entries) {
    request.push_back({key, value});
  }
  return config.Match(request);
}

// Returns the only limit of the node a request matches ("" when nothing or several match).
uint64_t LimitOf(const DomainConfig& config,
                 std::vector<std::pair<std::string, std::string>> entries) {
  const DescriptorNode* node = Match(config, std::move(entries));
  if (node == nullptr || node->limits.size() != 1) {
    return UINT64_MAX;
  }
  return node->limits[0].requests_per_unit;
}
constexpr uint64_t kNoMatch = UINT64_MAX;

TEST(TimeUnitTest, LengthsAndNamesAsEnvoy) {
  EXPECT_EQ(TimeUnitNs(TimeUnit::kSecond), kSecondNs);
  EXPECT_EQ(TimeUnitNs(TimeUnit::kMinute), 60 * kSecondNs);
  EXPECT_EQ(TimeUnitNs(TimeUnit::kHour), 3600 * kSecondNs);
  EXPECT_EQ(TimeUnitNs(TimeUnit::kDay), 86400 * kSecondNs);
  EXPECT_EQ(TimeUnitNs(TimeUnit::kWeek), 7 * 86400 * kSecondNs);
  EXPECT_EQ(TimeUnitNs(TimeUnit::kMonth), 30 * 86400 * kSecondNs);
  EXPECT_EQ(TimeUnitNs(TimeUnit::kYear), 365 * 86400 * kSecondNs);
  EXPECT_EQ(TimeUnitNs(TimeUnit::kUnknown), 0);
  EXPECT_EQ(TimeUnitName(TimeUnit::kSecond), "second");
  EXPECT_EQ(TimeUnitName(TimeUnit::kWeek), "week");
  EXPECT_EQ(TimeUnitName(TimeUnit::kMonth), "month");
  EXPECT_EQ(TimeUnitName(TimeUnit::kYear), "year");
  EXPECT_EQ(TimeUnitName(TimeUnit::kUnknown), "");
}

// README example 1.
TEST(ConfigParseTest, SimpleDomainBuildsRules) {
  auto config = MustParse(R"(
domain: mongo_cps
descriptors:
  - key: database
    value: users
    rate_limit:
      unit: second
      requests_per_unit: 500

  - key: database
    value: default
    rate_limit:
      unit: second
      requests_per_unit: 500
)");
  EXPECT_EQ(config->domain, "mongo_cps");
  EXPECT_EQ(config->file, "test.yaml");
  EXPECT_THAT(config->source, HasSubstr("requests_per_unit: 500"));
  ASSERT_EQ(config->root.children.size(), 2u);
  const DescriptorNode& users = config->root.children[0];
  EXPECT_EQ(users.key, "database");
  EXPECT_EQ(users.value, "users");
  EXPECT_EQ(users.line, 3);
  ASSERT_EQ(users.limits.size(), 1u);
  const RateLimitRule& rule = users.limits[0];
  EXPECT_EQ(rule.spec.algorithm, Algorithm::kFixedWindow);
  EXPECT_EQ(rule.spec.requests_per_period, 500u);
  EXPECT_EQ(rule.spec.period_ns, kSecondNs);
  EXPECT_EQ(rule.spec.burst, 0u);
  EXPECT_EQ(rule.unit, TimeUnit::kSecond);
  EXPECT_EQ(rule.requests_per_unit, 500u);
  EXPECT_EQ(rule.stats_key, "mongo_cps.database_users");
  EXPECT_EQ(rule.file, "test.yaml");
  EXPECT_EQ(rule.line, 5);
  EXPECT_EQ(rule.slot, 0u);
  EXPECT_FALSE(rule.unlimited);
  EXPECT_FALSE(rule.shadow_mode);
  EXPECT_FALSE(rule.detailed_metric);
  EXPECT_EQ(rule.block_duration_ns, 0);
  EXPECT_EQ(rule.consistency, Consistency::kExact);
  EXPECT_EQ(rule.failure_mode, FailureMode::kLocal);
  EXPECT_EQ(config->root.children[1].limits[0].stats_key, "mongo_cps.database_default");

  EXPECT_EQ(Match(*config, {{"database", "users"}}), &users);
  EXPECT_EQ(Match(*config, {{"database", "default"}}), &config->root.children[1]);
  EXPECT_EQ(Match(*config, {{"database", "other"}}), nullptr);
  EXPECT_EQ(Match(*config, {{"Database", "users"}}), nullptr);  // case-sensitive
  EXPECT_EQ(Match(*config, {}), nullptr);
}

// README example 2: nested descriptors and a key without a value.
TEST(ConfigMatchTest, NestedAndKeyOnly) {
  auto config = MustParse(R"(
domain: messaging
descriptors:
  # Only allow 5 marketing messages a day
  - key: message_type
    value: marketing
    descriptors:
      - key: to_number
        rate_limit:
          unit: day
          requests_per_unit: 5

  # Only allow 100 messages a day to any unique phone number
  - key: to_number
    rate_limit:
      unit: day
      requests_per_unit: 100
)");
  EXPECT_EQ(LimitOf(*config, {{"message_type", "marketing"}, {"to_number", "2061111111"}}), 5u);
  EXPECT_EQ(LimitOf(*config, {{"message_type", "marketing"}, {"to_number", "2062222222"}}), 5u);
  EXPECT_EQ(LimitOf(*config, {{"to_number", "2061111111"}}), 100u);
  // The placeholder level has no limit of its own.
  EXPECT_EQ(Match(*config, {{"message_type", "marketing"}}), nullptr);
  EXPECT_EQ(Match(*config, {{"message_type", "transactional"}, {"to_number", "1"}}), nullptr);
  const DescriptorNode* nested =
      Match(*config, {{"message_type", "marketing"}, {"to_number", "1"}});
  ASSERT_NE(nested, nullptr);
  EXPECT_EQ(nested->limits[0].stats_key, "messaging.message_type_marketing.to_number");
  EXPECT_EQ(nested->limits[0].unit, TimeUnit::kDay);
  EXPECT_EQ(nested->limits[0].line, 8);
  EXPECT_EQ(config->root.children[1].limits[0].stats_key, "messaging.to_number");
}

// README example 3: key/value is tried before the key alone, whatever the file order.
TEST(ConfigMatchTest, ExactValueBeatsKeyOnlyDefault) {
  auto config = MustParse(R"(
domain: edge_proxy_per_ip
descriptors:
  - key: remote_address
    rate_limit:
      unit: second
      requests_per_unit: 10

  # Black list IP
  - key: remote_address
    value: 50.0.0.5
    rate_limit:
      unit: second
      requests_per_unit: 0
)");
  EXPECT_EQ(LimitOf(*config, {{"remote_address", "50.0.0.1"}}), 10u);
  EXPECT_EQ(LimitOf(*config, {{"remote_address", "50.0.0.5"}}), 0u);
  EXPECT_EQ(LimitOf(*config, {{"remote_address", ""}}), 10u);
  EXPECT_EQ(config->root.children[1].value, "50.0.0.5");
}

// README example 4: the request must be exactly as deep as the config.
TEST(ConfigMatchTest, DepthMustMatch) {
  auto shallow = MustParse(R"(
domain: example4
descriptors:
  - key: key
    value: value
    rate_limit:
      requests_per_unit: 300
      unit: second
)");
  EXPECT_EQ(Match(*shallow, {{"key", "value"}, {"subkey", "subvalue"}}), nullptr);
  EXPECT_EQ(LimitOf(*shallow, {{"key", "value"}}), 300u);

  auto deep = MustParse(R"(
domain: example4
descriptors:
  - key: key
    value: value
    descriptors:
      - key: subkey
        rate_limit:
          requests_per_unit: 300
          unit: second
)");
  EXPECT_EQ(LimitOf(*deep, {{"key", "value"}, {"subkey", "subvalue"}}), 300u);
  EXPECT_EQ(Match(*deep, {{"key", "value"}}), nullptr);
  EXPECT_EQ(Match(*deep, {{"key", "value"}, {"subkey", "x"}, {"third", "y"}}), nullptr);
}

TEST(ConfigMatchTest, LimitsAtEveryLevel) {
  auto config = MustParse(R"(
domain: levels
descriptors:
  - key: a
    rate_limit: {unit: second, requests_per_unit: 1}
    descriptors:
      - key: b
        value: x
        rate_limit: {unit: second, requests_per_unit: 2}
        descriptors:
          - key: c
            rate_limit: {unit: second, requests_per_unit: 3}
)");
  EXPECT_EQ(LimitOf(*config, {{"a", "1"}}), 1u);
  EXPECT_EQ(LimitOf(*config, {{"a", "1"}, {"b", "x"}}), 2u);
  EXPECT_EQ(LimitOf(*config, {{"a", "1"}, {"b", "x"}, {"c", "z"}}), 3u);
  EXPECT_EQ(Match(*config, {{"a", "1"}, {"b", "y"}}), nullptr);
  EXPECT_EQ(Match(*config, {{"a", "1"}, {"b", "x"}, {"c", "z"}, {"d", "w"}}), nullptr);
  EXPECT_EQ(Match(*config, {{"b", "x"}}), nullptr);  // levels are not skipped
}

// README example 5.
TEST(ConfigParseTest, Unlimited) {
  auto config = MustParse(R"(
domain: internal
descriptors:
  - key: ldap
    rate_limit:
      unlimited: true

  - key: azure
    rate_limit:
      unit: minute
      requests_per_unit: 100
)");
  const DescriptorNode* ldap = Match(*config, {{"ldap", "anything"}});
  ASSERT_NE(ldap, nullptr);
  ASSERT_EQ(ldap->limits.size(), 1u);
  EXPECT_TRUE(ldap->limits[0].unlimited);
  EXPECT_EQ(ldap->limits[0].unit, TimeUnit::kUnknown);
  EXPECT_EQ(ldap->limits[0].stats_key, "internal.ldap");
  const DescriptorNode* azure = Match(*config, {{"azure", "x"}});
  ASSERT_NE(azure, nullptr);
  EXPECT_FALSE(azure->limits[0].unlimited);
  EXPECT_EQ(azure->limits[0].spec.period_ns, 60 * kSecondNs);
}

// README example 6.
TEST(ConfigParseTest, ShadowModeComesFromTheDescriptor) {
  auto config = MustParse(R"(
domain: example6
descriptors:
  - key: service
    descriptors:
      - key: user
        value: user-a
        rate_limit:
          requests_per_unit: 10
          unit: second
        shadow_mode: true
      - key: user
        value: user-b
        rate_limit:
          requests_per_unit: 20
          unit: second
)");
  const DescriptorNode* a = Match(*config, {{"service", "auth-service"}, {"user", "user-a"}});
  ASSERT_NE(a, nullptr);
  EXPECT_TRUE(a->shadow_mode);
  EXPECT_TRUE(a->limits[0].shadow_mode);
  const DescriptorNode* b = Match(*config, {{"service", "auth-service"}, {"user", "user-b"}});
  ASSERT_NE(b, nullptr);
  EXPECT_FALSE(b->limits[0].shadow_mode);
  EXPECT_EQ(b->limits[0].requests_per_unit, 20u);
  EXPECT_EQ(Match(*config, {{"service", "auth-service"}, {"user", "user-c"}}), nullptr);
  EXPECT_EQ(b->limits[0].stats_key, "example6.service.user_user-b");
}

// README example 7.
TEST(ConfigParseTest, NamesAndReplaces) {
  auto config = MustParse(R"(
domain: example7
descriptors:
  - key: key_1
    value: value_1
    descriptors:
      - key: user
        value: bkthomps
        rate_limit:
          name: specific_limit
          requests_per_unit: 5
          unit: second
  - key: key_2
    value: value_2
    descriptors:
      - key: user
        value: bkthomps
        rate_limit:
          replaces:
            - name: specific_limit
          requests_per_unit: 10
          unit: second
)");
  const DescriptorNode* one = Match(*config, {{"key_1", "value_1"}, {"user", "bkthomps"}});
  ASSERT_NE(one, nullptr);
  EXPECT_EQ(one->limits[0].name, "specific_limit");
  EXPECT_THAT(one->limits[0].replaces, IsEmpty());
  const DescriptorNode* two = Match(*config, {{"key_2", "value_2"}, {"user", "bkthomps"}});
  ASSERT_NE(two, nullptr);
  EXPECT_EQ(two->limits[0].name, "");
  EXPECT_THAT(two->limits[0].replaces, ElementsAre("specific_limit"));
  EXPECT_EQ(two->limits[0].requests_per_unit, 10u);
}

// README example 8.
TEST(ConfigParseTest, DetailedMetric) {
  auto config = MustParse(R"(
domain: example8
descriptors:
  - key: key1
    detailed_metric: true
    rate_limit:
      unit: minute
      requests_per_unit: 10
  - key: key1
    value: value1
    rate_limit:
      unit: minute
      requests_per_unit: 20
)");
  const DescriptorNode* any = Match(*config, {{"key1", "unspecified_value"}});
  ASSERT_NE(any, nullptr);
  EXPECT_TRUE(any->detailed_metric);
  EXPECT_TRUE(any->limits[0].detailed_metric);
  EXPECT_EQ(any->limits[0].stats_key, "example8.key1");
  EXPECT_EQ(any->limits[0].requests_per_unit, 10u);
  const DescriptorNode* one = Match(*config, {{"key1", "value1"}});
  ASSERT_NE(one, nullptr);
  EXPECT_FALSE(one->limits[0].detailed_metric);
  EXPECT_EQ(one->limits[0].stats_key, "example8.key1_value1");
}

// README example 9.
TEST(ConfigMatchTest, WildcardPrefix) {
  auto config = MustParse(R"(
domain: example9
descriptors:
  - key: key1
    value: value*
    rate_limit:
      unit: minute
      requests_per_unit: 20
)");
  EXPECT_EQ(LimitOf(*config, {{"key1", "value_1"}}), 20u);
  EXPECT_EQ(LimitOf(*config, {{"key1", "value_2"}}), 20u);
  EXPECT_EQ(LimitOf(*config, {{"key1", "value"}}), 20u);
  EXPECT_EQ(LimitOf(*config, {{"key1", "valu"}}), kNoMatch);
  EXPECT_EQ(LimitOf(*config, {{"key1", "xvalue"}}), kNoMatch);
  EXPECT_EQ(LimitOf(*config, {{"key2", "value_1"}}), kNoMatch);
  EXPECT_EQ(config->root.wildcards.size(), 1u);
  EXPECT_EQ(config->root.children[0].limits[0].stats_key, "example9.key1_value*");
}

// Envoy's current schema: wildcards anywhere, share_threshold, quota_mode, value_to_metric,
// metadata (docs/config.md).

// Returns the stats key and state entries of a request under the one limit it matches.
struct Matched {
  std::string stats_key;
  std::vector<DescriptorEntry> state;
};
std::optional<Matched> MatchFull(const DomainConfig& config,
                                 std::vector<std::pair<std::string, std::string>> entries) {
  std::vector<DescriptorEntry> request;
  for (auto& [key, value] : entries) {
    request.push_back({key, value});
  }
  MatchPath path;
  const DescriptorNode* node = config.Match(request, &path);
  if (node == nullptr) {
    return std::nullopt;
  }
  EXPECT_EQ(path.size(), request.size());
  return Matched{RequestStatsKey(config.domain, request, path, node->limits[0]),
                 StateEntries(request, path)};
}

TEST(WildcardTest, PartsMatchInOrderWithoutOverlap) {
  auto parts = [](const char* value) {
    return std::vector<std::string>(absl::StrSplit(value, '*'));
  };
  EXPECT_TRUE(WildcardMatches(parts("foo*"), "foo"));
  EXPECT_TRUE(WildcardMatches(parts("foo*"), "foobar"));
  EXPECT_FALSE(WildcardMatches(parts("foo*"), "fo"));
  EXPECT_TRUE(WildcardMatches(parts("*bar"), "bar"));
  EXPECT_TRUE(WildcardMatches(parts("*bar"), "foobar"));
  EXPECT_FALSE(WildcardMatches(parts("*bar"), "barx"));
  EXPECT_TRUE(WildcardMatches(parts("bar*b"), "barb"));
  EXPECT_TRUE(WildcardMatches(parts("bar*b"), "barxyzb"));
  EXPECT_FALSE(WildcardMatches(parts("bar*b"), "bar"));  // "b" may not overlap "bar"
  EXPECT_FALSE(WildcardMatches(parts("bar*b"), "barbx"));
  EXPECT_TRUE(WildcardMatches(parts("foo*bar*baz"), "foobarbaz"));
  EXPECT_TRUE(WildcardMatches(parts("foo*bar*baz"), "foo-1-bar-2-baz"));
  EXPECT_FALSE(WildcardMatches(parts("foo*bar*baz"), "foo-1-baz"));
  EXPECT_FALSE(WildcardMatches(parts("foo*bar*baz"), "foobaz"));
  EXPECT_FALSE(WildcardMatches(parts("a*ba*a"), "aba"));  // the parts may not share letters
  EXPECT_TRUE(WildcardMatches(parts("a*ba*a"), "abaa"));
  EXPECT_TRUE(WildcardMatches(parts("*"), ""));
  EXPECT_TRUE(WildcardMatches(parts("*"), "anything"));
  EXPECT_TRUE(WildcardMatches(parts("**"), "x"));
  EXPECT_TRUE(WildcardMatches(parts("*mid*"), "amidb"));
  EXPECT_FALSE(WildcardMatches(parts("*mid*"), "amib"));
}

TEST(ConfigMatchTest, WildcardsAnywhereFirstInFileOrder) {
  auto config = MustParse(R"(
domain: wild
descriptors:
  - key: path
    value: /api/*/users
    rate_limit: {unit: second, requests_per_unit: 1}
  - key: path
    value: "*.png"
    rate_limit: {unit: second, requests_per_unit: 2}
  - key: path
    value: /api/*/users/*/posts*
    rate_limit: {unit: second, requests_per_unit: 3}
  - key: path
    value: /api/*
    rate_limit: {unit: second, requests_per_unit: 4}
  - key: path
    rate_limit: {unit: second, requests_per_unit: 5}
)");
  EXPECT_EQ(config->root.wildcards.size(), 4u);
  EXPECT_EQ(LimitOf(*config, {{"path", "/api/v1/users"}}), 1u);
  EXPECT_EQ(LimitOf(*config, {{"path", "/img/logo.png"}}), 2u);
  // "/api/*/users" must end the value: this one goes on to the next wildcard in file order.
  EXPECT_EQ(LimitOf(*config, {{"path", "/api/v1/users/7/posts/9"}}), 3u);
  EXPECT_EQ(LimitOf(*config, {{"path", "/api/v1/orders"}}), 4u);
  EXPECT_EQ(LimitOf(*config, {{"path", "/health"}}), 5u);
  // The literal pattern is an exact value too.
  EXPECT_EQ(LimitOf(*config, {{"path", "/api/*/users/*/posts*"}}), 3u);
}

TEST(ConfigParseTest, ShareThresholdSharesOneCounterPerWildcard) {
  auto config = MustParse(R"(
domain: share
descriptors:
  - key: files
    value: /foo*
    share_threshold: true
    rate_limit: {unit: hour, requests_per_unit: 10}
  - key: path
    value: /api/*/v*
    rate_limit: {unit: hour, requests_per_unit: 20}
  - key: tenant
    value: t*
    share_threshold: true
    descriptors:
      - key: user
        rate_limit: {unit: hour, requests_per_unit: 30}
)");
  std::optional<Matched> a = MatchFull(*config, {{"files", "/foo/a"}});
  std::optional<Matched> b = MatchFull(*config, {{"files", "/foo/b"}});
  ASSERT_TRUE(a.has_value() && b.has_value());
  ASSERT_EQ(a->state.size(), 1u);
  EXPECT_EQ(a->state[0].value, "/foo*");  // both values count on the pattern's state
  EXPECT_EQ(b->state[0].value, "/foo*");
  EXPECT_EQ(a->stats_key, "share.files_/foo*");
  // Without share_threshold, each value keeps its own state.
  std::optional<Matched> c = MatchFull(*config, {{"path", "/api/x/v1"}});
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->state[0].value, "/api/x/v1");
  EXPECT_FALSE(config->root.children[1].limits[0].shares_threshold);
  // A share_threshold level above the limit shares too; the levels below keep their values.
  std::optional<Matched> d = MatchFull(*config, {{"tenant", "t1"}, {"user", "alice"}});
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->state[0].value, "t*");
  EXPECT_EQ(d->state[1].value, "alice");
  EXPECT_TRUE(config->root.children[2].children[0].limits[0].shares_threshold);
}

TEST(ConfigParseTest, ValueToMetricAndDetailedMetricStatsKeys) {
  auto config = MustParse(R"(
domain: vtm
descriptors:
  - key: route
    value_to_metric: true
    descriptors:
      - key: method
        value_to_metric: true
        rate_limit: {unit: minute, requests_per_unit: 10}
  - key: path
    value: /api/*
    value_to_metric: true
    rate_limit: {unit: minute, requests_per_unit: 20}
  - key: client
    detailed_metric: true
    descriptors:
      - key: zone
        value: z*
        share_threshold: true
        detailed_metric: true
        rate_limit: {unit: minute, requests_per_unit: 30}
  - key: user
    detailed_metric: true
    rate_limit: {unit: minute, requests_per_unit: 40}
  - key: plain
    rate_limit: {unit: minute, requests_per_unit: 50}
)");
  EXPECT_EQ(MatchFull(*config, {{"route", "/a"}, {"method", "GET"}})->stats_key,
            "vtm.route_/a.method_GET");
  EXPECT_EQ(MatchFull(*config, {{"path", "/api/x"}})->stats_key, "vtm.path_/api/x");
  EXPECT_EQ(MatchFull(*config, {{"client", "c1"}, {"zone", "z9"}})->stats_key,
            "vtm.client_c1.zone_z*");
  EXPECT_EQ(MatchFull(*config, {{"user", "bob"}})->stats_key, "vtm.user_bob");
  EXPECT_EQ(MatchFull(*config, {{"plain", "p"}})->stats_key, "vtm.plain");
  EXPECT_TRUE(config->root.children[0].children[0].limits[0].request_stats_key);
  EXPECT_FALSE(config->root.children[4].limits[0].request_stats_key);
}

TEST(ConfigParseTest, QuotaModeAndMetadataComeFromTheDescriptor) {
  auto config = MustParse(R"(
domain: quota
descriptors:
  - key: plan
    value: free
    quota_mode: true
    metadata:
      tier: free
      retries: 3
      ratio: 0.5
      flags: [a, yes, ~]
      quoted: "42"
      nested: {deep: {x: 1}}
    rate_limit: {unit: day, requests_per_unit: 1000}
)");
  const DescriptorNode* node = Match(*config, {{"plan", "free"}});
  ASSERT_NE(node, nullptr);
  EXPECT_TRUE(node->quota_mode);
  const RateLimitRule& rule = node->limits[0];
  EXPECT_TRUE(rule.quota_mode);
  ASSERT_NE(rule.metadata, nullptr);
  const MetadataValue& m = *rule.metadata;
  ASSERT_EQ(m.kind, MetadataValue::Kind::kStruct);
  ASSERT_EQ(m.fields.size(), 6u);
  EXPECT_EQ(m.fields[0].first, "tier");
  EXPECT_EQ(m.fields[0].second.string, "free");
  EXPECT_EQ(m.fields[1].second.kind, MetadataValue::Kind::kNumber);
  EXPECT_EQ(m.fields[1].second.number, 3);
  EXPECT_EQ(m.fields[2].second.number, 0.5);
  ASSERT_EQ(m.fields[3].second.list.size(), 3u);
  EXPECT_EQ(m.fields[3].second.list[1].kind, MetadataValue::Kind::kBool);
  EXPECT_EQ(m.fields[3].second.list[2].kind, MetadataValue::Kind::kNull);
  EXPECT_EQ(m.fields[4].second.kind, MetadataValue::Kind::kString);  // quoted: a string
  EXPECT_EQ(m.fields[5].second.fields[0].second.fields[0].first, "x");
}

TEST(ConfigErrorTest, EnvoySchemaErrors) {
  EXPECT_EQ(ErrorOf(R"(
domain: d
descriptors:
  - key: k
    value: v
    share_threshold: true
    rate_limit: {unit: second, requests_per_unit: 1}
)"),
            "test.yaml:5: share_threshold can only be used with wildcard values (containing "
            "'*'), but found key 'k_v'");
  EXPECT_THAT(ErrorOf(R"(
domain: d
descriptors:
  - key: k
    metadata: [1, 2]
    rate_limit: {unit: second, requests_per_unit: 1}
)"),
              HasSubstr("test.yaml:4: 'metadata' must be a mapping"));
  EXPECT_THAT(ErrorOf(R"(
domain: d
descriptors:
  - key: k
    quota_mode: maybe
)"),
              HasSubstr("test.yaml:4: 'quota_mode' must be true or false"));
  // share_threshold: false needs no wildcard.
  MustParse(R"(
domain: d
descriptors:
  - key: k
    share_threshold: false
    rate_limit: {unit: second, requests_per_unit: 1}
)");
}

TEST(ConfigMatchTest, ExactThenWildcardsInFileOrderThenKeyOnly) {
  auto config = MustParse(R"(
domain: order
descriptors:
  - key: path
    rate_limit: {unit: second, requests_per_unit: 1}
  - key: path
    value: /api/*
    rate_limit: {unit: second, requests_per_unit: 2}
  - key: path
    value: /api/v1/*
    rate_limit: {unit: second, requests_per_unit: 3}
  - key: path
    value: /api/v1/login
    rate_limit: {unit: second, requests_per_unit: 4}
  - key: other
    value: "*"
    rate_limit: {unit: second, requests_per_unit: 5}
)");
  EXPECT_EQ(LimitOf(*config, {{"path", "/api/v1/login"}}), 4u);  // exact first
  // The first wildcard in file order wins, even when a later one is longer.
  EXPECT_EQ(LimitOf(*config, {{"path", "/api/v1/users"}}), 2u);
  EXPECT_EQ(LimitOf(*config, {{"path", "/api/x"}}), 2u);
  // A request whose value is literally a wildcard value matches it exactly.
  EXPECT_EQ(LimitOf(*config, {{"path", "/api/v1/*"}}), 3u);
  EXPECT_EQ(LimitOf(*config, {{"path", "/health"}}), 1u);  // key alone last
  // "*" alone matches every value of its key, the empty one too, and no other key.
  EXPECT_EQ(LimitOf(*config, {{"other", "anything"}}), 5u);
  EXPECT_EQ(LimitOf(*config, {{"other", ""}}), 5u);
  EXPECT_EQ(LimitOf(*config, {{"otherwise", "x"}}), kNoMatch);
  EXPECT_EQ(config->root.key_only.size(), 1u);
  EXPECT_EQ(config->root.wildcards.size(), 3u);
  EXPECT_EQ(config->root.exact.size(), 4u);
}

TEST(ConfigMatchTest, WildcardsAreLookedUpAtTheirOwnLevel) {
  auto config = MustParse(R"(
domain: levels
descriptors:
  - key: tenant
    value: acme
    descriptors:
      - key: path
        value: /api/*
        rate_limit: {unit: second, requests_per_unit: 7}
  - key: path
    value: /static/*
    rate_limit: {unit: second, requests_per_unit: 8}
)");
  EXPECT_EQ(LimitOf(*config, {{"tenant", "acme"}, {"path", "/api/a"}}), 7u);
  EXPECT_EQ(LimitOf(*config, {{"tenant", "acme"}, {"path", "/static/a"}}), kNoMatch);
  EXPECT_EQ(LimitOf(*config, {{"path", "/static/a"}}), 8u);
  EXPECT_EQ(LimitOf(*config, {{"path", "/api/a"}}), kNoMatch);
}

TEST(ConfigMatchTest, KeysMustBeEqualEvenWithUnderscores) {
  // Envoy joins key and value with '_' and compares strings; we also compare the key, so a key
  // containing '_' cannot select another key's descriptor.
  auto config = MustParse(R"(
domain: underscores
descriptors:
  - key: a_b
    value: c
    rate_limit: {unit: second, requests_per_unit: 1}
  - key: x
    value: "*"
    rate_limit: {unit: second, requests_per_unit: 2}
)");
  EXPECT_EQ(LimitOf(*config, {{"a_b", "c"}}), 1u);
  EXPECT_EQ(LimitOf(*config, {{"a", "b_c"}}), kNoMatch);
  EXPECT_EQ(LimitOf(*config, {{"x_y", "z"}}), kNoMatch);
}

TEST(ConfigMatchTest, DescriptorsWithoutLimitsOrChildrenMatchNothing) {
  auto config = MustParse(R"(
domain: whitelist
descriptors:
  - key: internal
  - key: api
    rate_limit: {unit: second, requests_per_unit: 1}
)");
  EXPECT_EQ(Match(*config, {{"internal", "x"}}), nullptr);
  EXPECT_EQ(Match(*config, {{"internal", "x"}, {"api", "y"}}), nullptr);
  EXPECT_EQ(LimitOf(*config, {{"api", "y"}}), 1u);
}

TEST(ConfigParseTest, EmptyAndNullDescriptors) {
  auto empty = MustParse(R"(
domain: nothing
descriptors: []
)");
  EXPECT_THAT(empty->root.children, IsEmpty());
  auto null = MustParse(R"(
domain: nothing
descriptors:
)");
  EXPECT_THAT(null->root.children, IsEmpty());
  auto bare = MustParse("domain: nothing\n");
  EXPECT_THAT(bare->root.children, IsEmpty());
  EXPECT_EQ(Match(*bare, {{"a", "b"}}), nullptr);
  // A null rate_limit is no rate limit, as in Envoy.
  auto no_limit = MustParse(R"(
domain: nothing
descriptors:
  - key: a
    rate_limit: ~
)");
  EXPECT_THAT(no_limit->root.children[0].limits, IsEmpty());
}

TEST(ConfigParseTest, ScalarsAreTypedAsEnvoyReadsThem) {
  auto config = MustParse(R"(
domain: 123
descriptors:
  - key: to_number
    value: 2061234567
    shadow_mode: yes
    detailed_metric: off
    rate_limit:
      unit: SECOND
      requests_per_unit: 1_000
  - key: "quoted"
    value: 'single'
    shadow_mode: True
    rate_limit:
      unit: Minute
      requests_per_unit: +7
      unlimited: false
  - key: flag
    value: true
    rate_limit: {unit: hour, requests_per_unit: 0}
)");
  EXPECT_EQ(config->domain, "123");
  const auto& children = config->root.children;
  ASSERT_EQ(children.size(), 3u);
  EXPECT_EQ(children[0].value, "2061234567");
  EXPECT_TRUE(children[0].limits[0].shadow_mode);
  EXPECT_FALSE(children[0].limits[0].detailed_metric);
  EXPECT_EQ(children[0].limits[0].unit, TimeUnit::kSecond);
  EXPECT_EQ(children[0].limits[0].requests_per_unit, 1000u);
  EXPECT_EQ(children[1].key, "quoted");
  EXPECT_EQ(children[1].value, "single");
  EXPECT_TRUE(children[1].shadow_mode);
  EXPECT_EQ(children[1].limits[0].unit, TimeUnit::kMinute);
  EXPECT_EQ(children[1].limits[0].requests_per_unit, 7u);
  EXPECT_EQ(children[2].value, "true");
  EXPECT_EQ(LimitOf(*config, {{"flag", "true"}}), 0u);
}

TEST(ConfigParseTest, EveryUnit) {
  auto config = MustParse(R"(
domain: units
descriptors:
  - {key: a, rate_limit: {unit: second, requests_per_unit: 1}}
  - {key: b, rate_limit: {unit: minute, requests_per_unit: 1}}
  - {key: c, rate_limit: {unit: hour, requests_per_unit: 1}}
  - {key: d, rate_limit: {unit: day, requests_per_unit: 1}}
  - {key: e, rate_limit: {unit: week, requests_per_unit: 1}}
  - {key: f, rate_limit: {unit: month, requests_per_unit: 1}}
  - {key: g, rate_limit: {unit: year, requests_per_unit: 1}}
)");
  const TimeUnit units[] = {TimeUnit::kSecond, TimeUnit::kMinute, TimeUnit::kHour, TimeUnit::kDay,
                            TimeUnit::kWeek,   TimeUnit::kMonth,  TimeUnit::kYear};
  ASSERT_EQ(config->root.children.size(), 7u);
  for (size_t i = 0; i < 7; ++i) {
    const RateLimitRule& rule = config->root.children[i].limits[0];
    EXPECT_EQ(rule.unit, units[i]);
    EXPECT_EQ(rule.spec.period_ns, TimeUnitNs(units[i]));
    EXPECT_EQ(rule.line, 3 + static_cast<int>(i));
  }
}

TEST(ConfigParseTest, Extensions) {
  auto config = MustParse(R"(
domain: ext
descriptors:
  - key: user
    rate_limit:
      window: 30s
      requests_per_unit: 100
      algorithm: sliding_window
      block_duration: 1m
      consistency: local
      failure_mode: closed
  - key: bucket
    rate_limit:
      algorithm: token_bucket
      unit: second
      requests_per_unit: 10
      burst: 50
      failure_mode: open
  - key: gcra
    rate_limit: {algorithm: GCRA, window: 500ms, requests_per_unit: 1}
  - key: leaky
    rate_limit: {algorithm: leaky_bucket, window: 1h30m, requests_per_unit: 5, burst: 3}
  - key: slots
    rate_limit: {algorithm: concurrency, window: 2h, requests_per_unit: 4}
  - key: fixed
    rate_limit: {algorithm: fixed_window, window: 1d, requests_per_unit: 9, consistency: exact}
  - key: weekly
    rate_limit: {window: 2w, requests_per_unit: 9, failure_mode: local}
)");
  const auto& c = config->root.children;
  ASSERT_EQ(c.size(), 7u);
  const RateLimitRule& user = c[0].limits[0];
  EXPECT_EQ(user.spec.algorithm, Algorithm::kSlidingWindow);
  EXPECT_EQ(user.spec.period_ns, 30 * kSecondNs);
  EXPECT_EQ(user.spec.requests_per_period, 100u);
  EXPECT_EQ(user.unit, TimeUnit::kUnknown);  // given as a window
  EXPECT_EQ(user.requests_per_unit, 100u);
  EXPECT_EQ(user.block_duration_ns, 60 * kSecondNs);
  EXPECT_EQ(user.consistency, Consistency::kLocal);
  EXPECT_EQ(user.failure_mode, FailureMode::kClosed);

  const RateLimitRule& bucket = c[1].limits[0];
  EXPECT_EQ(bucket.spec,
            (LimitSpec{Algorithm::kTokenBucket, /*requests_per_period=*/10, kSecondNs, 50}));
  EXPECT_EQ(bucket.unit, TimeUnit::kSecond);
  EXPECT_EQ(bucket.failure_mode, FailureMode::kOpen);

  EXPECT_EQ(c[2].limits[0].spec.algorithm, Algorithm::kTokenBucket);
  EXPECT_EQ(c[2].limits[0].spec.period_ns, 500'000'000);
  EXPECT_EQ(c[3].limits[0].spec,
            (LimitSpec{Algorithm::kLeakyBucket, 5, 5400 * kSecondNs, /*burst=*/3}));
  EXPECT_EQ(c[4].limits[0].spec, (LimitSpec{Algorithm::kConcurrency, 4, 7200 * kSecondNs, 0}));
  EXPECT_EQ(c[5].limits[0].spec.period_ns, 86400 * kSecondNs);
  EXPECT_EQ(c[5].limits[0].consistency, Consistency::kExact);
  EXPECT_EQ(c[6].limits[0].spec.period_ns, 14 * 86400 * kSecondNs);
  EXPECT_EQ(c[6].limits[0].failure_mode, FailureMode::kLocal);
}

TEST(ConfigParseTest, SeveralLimitsOnOneDescriptorGetSlots) {
  auto config = MustParse(R"(
domain: multi
descriptors:
  - key: user_id
    shadow_mode: true
    rate_limits:
      - unit: second
        requests_per_unit: 10
      - unit: minute
        requests_per_unit: 100
        name: per_minute
      - window: 1s
        requests_per_unit: 20
      - unit: second
        requests_per_unit: 5
        algorithm: token_bucket
      - window: 60s
        requests_per_unit: 200
)");
  const DescriptorNode* node = Match(*config, {{"user_id", "alice"}});
  ASSERT_NE(node, nullptr);
  ASSERT_EQ(node->limits.size(), 5u);
  std::vector<uint32_t> slots;
  std::vector<int> lines;
  for (const RateLimitRule& rule : node->limits) {
    slots.push_back(rule.slot);
    lines.push_back(rule.line);
    EXPECT_EQ(rule.stats_key, "multi.user_id");
    EXPECT_TRUE(rule.shadow_mode);
  }
  // Same algorithm and period as an earlier limit: next slot. Different algorithm: own slot.
  EXPECT_THAT(slots, ElementsAre(0, 0, 1, 0, 1));
  EXPECT_THAT(lines, ElementsAre(6, 8, 11, 13, 16));
  EXPECT_EQ(node->limits[1].name, "per_minute");
}

TEST(ConfigErrorTest, YamlSyntax) {
  EXPECT_THAT(ErrorOf(R"(
domain: bad
descriptors:
  - key: a
    value: [unclosed
  - key: b
)"),
              HasSubstr("YAML syntax error"));
  std::string message = ErrorOf(R"(
domain: bad
descriptors:
  - key: a
   value: misaligned
)");
  EXPECT_THAT(message, HasSubstr("test.yaml:4: YAML syntax error"));
  EXPECT_THAT(ErrorOf("domain: a\n  bad: indentation\n"), HasSubstr("test.yaml:2: YAML syntax"));
  EXPECT_THAT(ErrorOf("domain: a\ndescriptors: *undefined\n"),
              HasSubstr("test.yaml:2: YAML syntax error"));
  EXPECT_THAT(ErrorOf("domain: \"a\xff\"\n"), HasSubstr("test.yaml:1: YAML syntax error"));
}

TEST(ConfigErrorTest, UnknownFieldsListTheAllowedOnes) {
  EXPECT_THAT(ErrorOf(R"(
domain: a
descriptor:
  - key: a
)"),
              HasSubstr("test.yaml:2: unknown field 'descriptor' in the top level (allowed: "
                        "domain, descriptors)"));
  EXPECT_THAT(ErrorOf(R"(
domain: a
descriptors:
  - key: a
    values: b
)"),
              HasSubstr("test.yaml:4: unknown field 'values' in a descriptor (allowed: key, "
                        "value, rate_limit, rate_limits, descriptors, shadow_mode, "
                        "quota_mode, detailed_metric, value_to_metric, share_threshold, "
                        "metadata)"));
  // Envoy accepts a misplaced field and ignores it; we refuse it.
  EXPECT_THAT(ErrorOf(R"(
domain: a
descriptors:
  - key: a
    rate_limit:
      unit: second
      requests_per_unit: 1
      shadow_mode: true
)"),
              HasSubstr("test.yaml:7: unknown field 'shadow_mode' in a rate limit (allowed: "
                        "unit, requests_per_unit, unlimited, name, replaces, window, algorithm, "
                        "burst, block_duration, consistency, failure_mode)"));
  EXPECT_THAT(ErrorOf(R"(
domain: a
descriptors:
  - key: a
    rate_limit:
      unit: second
      requests_per_unit: 1
      replaces:
        - name: x
          nam: y
)"),
              HasSubstr("test.yaml:9: unknown field 'nam' in replaces (allowed: name)"));
  EXPECT_THAT(ErrorOf(R"(
domain: a
descriptors:
  - key: a
    descriptors:
      - key: b
        unit: second
)"),
              HasSubstr("test.yaml:6: unknown field 'unit' in a descriptor"));
  EXPECT_THAT(ErrorOf("domain: a\n[1]: b\n"),
              HasSubstr("test.yaml:2: field names in the top level must be strings"));
}

TEST(ConfigErrorTest, DuplicateMappingKeys) {
  EXPECT_THAT(ErrorOf(R"(
domain: a
descriptors:
  - key: a
    rate_limit:
      unit: second
      requests_per_unit: 1
      unit: minute
)"),
              HasSubstr("test.yaml:7: duplicate field 'unit' (first at line 5)"));
  EXPECT_THAT(ErrorOf("domain: a\ndomain: b\n"),
              HasSubstr("test.yaml:2: duplicate field 'domain' (first at line 1)"));
}

TEST(ConfigErrorTest, DuplicateDescriptors) {
  EXPECT_THAT(ErrorOf(R"(
domain: a
descriptors:
  - key: database
    value: users
    rate_limit: {unit: second, requests_per_unit: 1}
  - key: database
    value: default
    rate_limit: {unit: second, requests_per_unit: 1}
  - key: database
    value: users
    rate_limit: {unit: minute, requests_per_unit: 1}
)"),
              HasSubstr("test.yaml:9: duplicate descriptor 'database_users' at this level "
                        "(first at line 3)"));
  EXPECT_THAT(ErrorOf(R"(
domain: a
descriptors:
  - key: database
  - key: other
    descriptors:
      - key: x
      - key: x
)"),
              HasSubstr("test.yaml:7: duplicate descriptor 'x' at this level (first at line 6)"));
  // Envoy refuses keys that join to the same "key_value" too.
  EXPECT_THAT(ErrorOf(R"(
domain: a
descriptors:
  - key: a_b
  - key: a
    value: b
)"),
              HasSubstr("test.yaml:4: duplicate descriptor 'a_b'"));
  // The same descriptor under different parents is fine.
  MustParse(R"(
domain: a
descriptors:
  - key: p
    value: "1"
    descriptors:
      - {key: x, rate_limit: {unit: second, requests_per_unit: 1}}
  - key: p
    value: "2"
    descriptors:
      - {key: x, rate_limit: {unit: second, requests_per_unit: 1}}
)");
}

TEST(ConfigErrorTest, MissingDomainOrKey) {
  EXPECT_THAT(ErrorOf(R"(
descriptors:
  - key: a
)"),
              HasSubstr("test.yaml:1: missing 'domain'"));
  EXPECT_THAT(ErrorOf("domain:\n"), HasSubstr("test.yaml:1: missing 'domain'"));
  EXPECT_THAT(ErrorOf("domain: ''\n"), HasSubstr("test.yaml:1: 'domain' must not be empty"));
  EXPECT_THAT(ErrorOf(""), HasSubstr("test.yaml:1: missing 'domain'"));
  EXPECT_THAT(ErrorOf("# only a comment\n"), HasSubstr("test.yaml:1: missing 'domain'"));
  EXPECT_THAT(ErrorOf("- domain: a\n"), HasSubstr("test.yaml:1: the top level must be a mapping"));
  EXPECT_THAT(ErrorOf(R"(
domain: a
descriptors:
  - key: a
  - value: b
    rate_limit: {unit: second, requests_per_unit: 1}
)"),
              HasSubstr("test.yaml:4: descriptor has no 'key'"));
  EXPECT_THAT(ErrorOf(R"(
domain: a
descriptors:
  - key: ""
)"),
              HasSubstr("test.yaml:3: descriptor has an empty 'key'"));
}

TEST(ConfigErrorTest, BadUnit) {
  EXPECT_THAT(ErrorOf(R"(
domain: a
descriptors:
  - key: a
    rate_limit:
      unit: fortnight
      requests_per_unit: 1
)"),
              HasSubstr("test.yaml:5: invalid unit 'fortnight' (allowed: second, minute, hour, "
                        "day, week, month, year)"));
  EXPECT_THAT(ErrorOf(R"(
domain: a
descriptors:
  - key: a
    rate_limit:
      unit: unknown
      requests_per_unit: 1
)"),
              HasSubstr("test.yaml:5: invalid unit 'unknown'"));
  EXPECT_THAT(ErrorOf(R"(
domain: a
descriptors:
  - key: a
    rate_limit:
      unit: [second]
      requests_per_unit: 1
)"),
              HasSubstr("test.yaml:5: 'unit' must be a string"));
}

TEST(ConfigErrorTest, RequestsPerUnit) {
  auto with = [](absl::string_view value) {
    return ErrorOf(absl::StrCat("domain: a\ndescriptors:\n  - key: a\n    rate_limit:\n",
                                "      unit: second\n      requests_per_unit: ", value, "\n"));
  };
  EXPECT_THAT(with("-1"), HasSubstr("test.yaml:6: 'requests_per_unit' must be a non-negative "
                                    "integer, got '-1'"));
  EXPECT_THAT(with("1.5"), HasSubstr("test.yaml:6: 'requests_per_unit' must be a non-negative"));
  EXPECT_THAT(with("lots"), HasSubstr("test.yaml:6: 'requests_per_unit' must be a non-negative"));
  EXPECT_THAT(with("\"5\""), HasSubstr("test.yaml:6: 'requests_per_unit' must be a non-negative"));
  EXPECT_THAT(with("[5]"), HasSubstr("test.yaml:6: 'requests_per_unit' must be a non-negative"));
  EXPECT_THAT(with("010"), HasSubstr("test.yaml:6: 'requests_per_unit' has a leading zero"));
  EXPECT_THAT(with("1000000000001"), HasSubstr("test.yaml:6: 'requests_per_unit' is too large"));
  EXPECT_THAT(with("99999999999999999999999"),
              HasSubstr("test.yaml:6: 'requests_per_unit' is too large"));
  EXPECT_THAT(ErrorOf(R"(
domain: a
descriptors:
  - key: a
    rate_limit:
      unit: second
)"),
              HasSubstr("test.yaml:4: rate limit needs 'requests_per_unit'"));
  // Sliding windows count in 32 bits: ValidateLimitSpec refuses, with our location.
  EXPECT_THAT(ErrorOf(R"(
domain: a
descriptors:
  - key: a
    rate_limits:
      - unit: second
        requests_per_unit: 1
      - unit: second
        algorithm: sliding_window
        requests_per_unit: 5000000000
)"),
              HasSubstr("test.yaml:7: sliding_window"));
}

TEST(ConfigErrorTest, Windows) {
  auto with = [](absl::string_view fields) {
    return ErrorOf(absl::StrCat("domain: a\ndescriptors:\n  - key: a\n    rate_limit:\n",
                                "      requests_per_unit: 1\n", fields));
  };
  EXPECT_THAT(with("      unit: second\n      window: 1s\n"),
              HasSubstr("test.yaml:7: give either 'unit' or 'window', not both"));
  EXPECT_THAT(with("      window: 0s\n"),
              HasSubstr("test.yaml:6: 'window' must be longer than zero"));
  EXPECT_THAT(with("      window: 0\n"), HasSubstr("test.yaml:6: 'window' must be longer"));
  EXPECT_THAT(with("      window: -5s\n"), HasSubstr("test.yaml:6: 'window' must not be negative"));
  EXPECT_THAT(with("      window: 30\n"), HasSubstr("test.yaml:6: 'window' needs a unit"));
  EXPECT_THAT(with("      window: 30x\n"), HasSubstr("test.yaml:6: 'window' has an unknown unit "
                                                     "'x'"));
  EXPECT_THAT(with("      window: 1.5s\n"),
              HasSubstr("test.yaml:6: 'window' must be whole numbers"));
  EXPECT_THAT(with("      window: s\n"), HasSubstr("test.yaml:6: 'window' must be whole numbers"));
  EXPECT_THAT(with("      window: 1h 30m\n"), HasSubstr("test.yaml:6: 'window' must be whole"));
  EXPECT_THAT(with("      window: 40000d\n"), HasSubstr("test.yaml:6: 'window' is too long"));
  EXPECT_THAT(with("      window: 99999999999999999999999s\n"),
              HasSubstr("test.yaml:6: 'window' is too long"));
  EXPECT_THAT(with("      window: 5000w5000w\n"), HasSubstr("test.yaml:6: 'window' is too long"));
  EXPECT_THAT(with(""), HasSubstr("test.yaml:4: rate limit needs a 'unit' (or a 'window')"));
  EXPECT_THAT(with("      window: {a: b}\n"), HasSubstr("test.yaml:6: 'window' must be a string"));
  EXPECT_THAT(with("      unit: second\n      block_duration: -1s\n"),
              HasSubstr("test.yaml:7: 'block_duration' must not be negative"));
  // The longest window allowed is accepted.
  auto config = MustParse(R"(
domain: a
descriptors:
  - key: a
    rate_limit: {window: 36600d, requests_per_unit: 1, block_duration: 0}
)");
  EXPECT_EQ(config->root.children[0].limits[0].spec.period_ns, kMaxPeriodNs);
}

TEST(ConfigErrorTest, Unlimited) {
  EXPECT_THAT(ErrorOf(R"(
domain: a
descriptors:
  - key: a
    rate_limit:
      unlimited: true
      unit: second
)"),
              HasSubstr("test.yaml:6: an unlimited rate limit takes no 'unit' or 'window'"));
  EXPECT_THAT(ErrorOf(R"(
domain: a
descriptors:
  - key: a
    rate_limit:
      unlimited: maybe
)"),
              HasSubstr("test.yaml:5: 'unlimited' must be true or false"));
}

TEST(ConfigErrorTest, Replaces) {
  EXPECT_THAT(ErrorOf(R"(
domain: a
descriptors:
  - key: a
    rate_limit:
      unit: second
      requests_per_unit: 1
      replaces:
        - name: x
        - name: ""
)"),
              HasSubstr("test.yaml:9: 'replaces' entry has no 'name'"));
  EXPECT_THAT(ErrorOf(R"(
domain: a
descriptors:
  - key: a
    rate_limit:
      unit: second
      requests_per_unit: 1
      replaces:
        - {}
)"),
              HasSubstr("test.yaml:8: 'replaces' entry has no 'name'"));
  EXPECT_THAT(ErrorOf(R"(
domain: a
descriptors:
  - key: a
    rate_limit:
      name: self
      unit: second
      requests_per_unit: 1
      replaces:
        - name: self
)"),
              HasSubstr("test.yaml:9: rate limit 'self' replaces itself"));
  EXPECT_THAT(ErrorOf(R"(
domain: a
descriptors:
  - key: a
    rate_limit:
      unit: second
      requests_per_unit: 1
      replaces: other
)"),
              HasSubstr("test.yaml:7: 'replaces' must be a list"));
  EXPECT_THAT(ErrorOf(R"(
domain: a
descriptors:
  - key: a
    rate_limit:
      unit: second
      requests_per_unit: 1
      replaces:
        - other
)"),
              HasSubstr("test.yaml:8: each entry of 'replaces' must be a mapping"));
}

TEST(ConfigErrorTest, WrongTypes) {
  EXPECT_THAT(ErrorOf("domain: a\ndescriptors:\n  key: a\n"),
              HasSubstr("test.yaml:3: 'descriptors' must be a list"));
  EXPECT_THAT(ErrorOf("domain: [a]\n"), HasSubstr("test.yaml:1: 'domain' must be a string"));
  EXPECT_THAT(ErrorOf("domain: a\ndescriptors:\n  - a\n"),
              HasSubstr("test.yaml:3: each entry of 'descriptors' must be a mapping"));
  EXPECT_THAT(ErrorOf("domain: a\ndescriptors:\n  - key: {a: b}\n"),
              HasSubstr("test.yaml:3: 'key' must be a string"));
  EXPECT_THAT(ErrorOf("domain: a\ndescriptors:\n  - key: a\n    value: [b]\n"),
              HasSubstr("test.yaml:4: 'value' must be a string"));
  EXPECT_THAT(ErrorOf("domain: a\ndescriptors:\n  - key: a\n    shadow_mode: \"true\"\n"),
              HasSubstr("test.yaml:4: 'shadow_mode' must be true or false"));
  EXPECT_THAT(ErrorOf("domain: a\ndescriptors:\n  - key: a\n    detailed_metric: 1\n"),
              HasSubstr("test.yaml:4: 'detailed_metric' must be true or false"));
  EXPECT_THAT(ErrorOf("domain: a\ndescriptors:\n  - key: a\n    rate_limit: 5/second\n"),
              HasSubstr("test.yaml:4: a rate limit must be a mapping"));
  EXPECT_THAT(ErrorOf("domain: a\ndescriptors:\n  - key: a\n    rate_limits: {unit: second}\n"),
              HasSubstr("test.yaml:4: 'rate_limits' must be a list"));
  EXPECT_THAT(ErrorOf("domain: a\ndescriptors:\n  - key: a\n    rate_limits: [second]\n"),
              HasSubstr("test.yaml:4: each entry of 'rate_limits' must be a mapping"));
  EXPECT_THAT(ErrorOf("domain: a\ndescriptors:\n  - key: a\n    descriptors: b\n"),
              HasSubstr("test.yaml:4: 'descriptors' must be a list"));
}

TEST(ConfigErrorTest, ExtensionValues) {
  auto with = [](absl::string_view fields) {
    return ErrorOf(absl::StrCat("domain: a\ndescriptors:\n  - key: a\n    rate_limit:\n",
                                "      unit: second\n      requests_per_unit: 1\n", fields));
  };
  EXPECT_THAT(with("      algorithm: magic\n"),
              HasSubstr("test.yaml:7: unknown algorithm 'magic' (allowed: fixed_window, "
                        "sliding_window, token_bucket, gcra, leaky_bucket, concurrency)"));
  EXPECT_THAT(with("      burst: 5\n"),
              HasSubstr("test.yaml:7: 'burst' applies only to token_bucket and leaky_bucket, not "
                        "fixed_window"));
  EXPECT_THAT(with("      algorithm: token_bucket\n      burst: -5\n"),
              HasSubstr("test.yaml:8: 'burst' must be a non-negative integer"));
  EXPECT_THAT(with("      consistency: eventual\n"),
              HasSubstr("test.yaml:7: invalid consistency 'eventual' (allowed: exact, local)"));
  EXPECT_THAT(with("      failure_mode: maybe\n"),
              HasSubstr("test.yaml:7: invalid failure_mode 'maybe' (allowed: open, closed, "
                        "local)"));
  EXPECT_THAT(ErrorOf(R"(
domain: a
descriptors:
  - key: a
    rate_limit: {unit: second, requests_per_unit: 1}
    rate_limits:
      - {unit: minute, requests_per_unit: 1}
)"),
              HasSubstr("test.yaml:5: give either 'rate_limit' or 'rate_limits', not both"));
  // A token bucket whose refill time exceeds the bounds: ValidateLimitSpec's message, located.
  EXPECT_THAT(ErrorOf(R"(
domain: a
descriptors:
  - key: a
    rate_limits:
      - algorithm: token_bucket
        unit: year
        requests_per_unit: 1
        burst: 1000
)"),
              HasSubstr("test.yaml:5: token_bucket"));
}

TEST(ConfigErrorTest, OneDocumentPerFile) {
  EXPECT_THAT(ErrorOf("domain: a\n---\ndomain: b\n"),
              HasSubstr("test.yaml:3: a config file holds one YAML document"));
  MustParse("---\ndomain: a\n...\n");
}

TEST(ConfigErrorTest, NestingIsBounded) {
  std::string yaml = "domain: deep\ndescriptors:\n";
  std::string indent = "  ";
  for (int level = 0; level < 70; ++level) {
    absl::StrAppend(&yaml, indent, "- key: k\n", indent, "  descriptors:\n");
    indent += "    ";
  }
  absl::StrAppend(&yaml, indent, "- key: leaf\n");
  EXPECT_THAT(ErrorOf(yaml), HasSubstr("descriptors are nested too deeply (at most 64 levels)"));
  // A recursive alias is refused before the loader follows it.
  EXPECT_THAT(ErrorOf("domain: a\ndescriptors: &d\n  - key: k\n    descriptors: *d\n"),
              HasSubstr("test.yaml:2: an alias refers to a node that contains it"));
}

// The hostile file of issue 11, point 8: each level's descriptors use the level below twice (once
// where it is anchored, once by alias), so `levels` levels stand for 2^levels leaves, each with a
// 5000-byte key. About 7 KB of YAML; it used to take gigabytes (or bad_alloc) to load.
std::string AliasBomb(int levels) {
  std::string below = absl::StrCat("[{key: ", std::string(5000, 'k'),
                                   ", rate_limit: {unit: second, requests_per_unit: 1}}]");
  for (int level = 1; level <= levels; ++level) {
    below = absl::StrCat("[{key: l", level, ", value: a, descriptors: &l", level, " ", below,
                         "},\n {key: l", level, ", value: b, descriptors: *l", level, "}]");
  }
  return absl::StrCat("domain: bomb\ndescriptors: ", below, "\n");
}

TEST(ConfigErrorTest, AliasesAreCountedAsExpanded) {
  const std::string bomb = AliasBomb(30);
  EXPECT_LT(bomb.size(), 8u * 1024);
  const std::string error = ErrorOf(bomb);
  // Names the file and line, the limit, and how big the YAML there is once expanded.
  EXPECT_THAT(error, HasSubstr("test.yaml:"));
  EXPECT_THAT(error, HasSubstr(" bytes once its aliases are expanded"));
  EXPECT_THAT(error, HasSubstr(absl::StrCat("at most ", kMaxExpandedYamlBytes, " bytes of text")));

  // Nodes are bounded too: short keys, many copies.
  std::string wide = "[{key: k}]";
  for (int level = 1; level <= 24; ++level) {
    wide = absl::StrCat("[{key: l", level, ", value: a, descriptors: &w", level, " ", wide,
                        "}, {key: l", level, ", value: b, descriptors: *w", level, "}]");
  }
  EXPECT_THAT(ErrorOf(absl::StrCat("domain: w\ndescriptors: ", wide, "\n")),
              HasSubstr(absl::StrCat("at most ", kMaxExpandedYamlNodes, " nodes")));

  // A few levels of the same shape are fine: aliases as such are allowed.
  auto small = MustParse(AliasBomb(3));
  EXPECT_EQ(small->root.children.size(), 2u);
}

TEST(ConfigErrorTest, FileSizeAndLoadedSizeAreBounded) {
  std::string big = absl::StrCat("domain: big\n# ", std::string(kMaxConfigFileBytes, 'x'), "\n");
  EXPECT_THAT(ErrorOf(big), HasSubstr(absl::StrCat("test.yaml: is ", big.size(),
                                                   " bytes; a config file may hold at most ",
                                                   kMaxConfigFileBytes, " bytes")));
  // 60 levels of 15 KB keys: under the expansion bounds, but every limit's stats key repeats the
  // keys above it.
  std::string deep = "domain: deep\ndescriptors: ";
  std::string close;
  for (int level = 0; level < 60; ++level) {
    absl::StrAppend(&deep, "[{key: ", std::string(15000, 'a' + level % 26), ", rate_limits: [",
                    "{unit: second, requests_per_unit: 1}, {unit: minute, requests_per_unit: 1},",
                    "{unit: hour, requests_per_unit: 1}, {unit: day, requests_per_unit: 1}],",
                    " descriptors: ");
    close += "}]";
  }
  absl::StrAppend(&deep, "[{key: leaf}]", close, "\n");
  ASSERT_LT(deep.size(), kMaxConfigFileBytes);
  EXPECT_THAT(ErrorOf(deep), HasSubstr("bytes once loaded"));
}

TEST(ConfigErrorTest, InlineSourcesAreLabelled) {
  absl::StatusOr<std::shared_ptr<const DomainConfig>> config =
      ParseDomainConfig("domain: a\nbogus: 1\n", "");
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(), HasSubstr("<inline>:2: unknown field 'bogus'"));
  config = ParseDomainConfig(
      "domain: a\ndescriptors:\n  - {key: a, rate_limit: {unit: second, "
      "requests_per_unit: 1}}\n",
      "");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ((*config)->file, "");
  EXPECT_EQ((*config)->root.children[0].limits[0].file, "");
}

TEST(ConfigParseTest, AliasesAreFollowed) {
  auto config = MustParse(R"(
domain: aliases
descriptors:
  - key: a
    rate_limit: &limit
      unit: second
      requests_per_unit: 3
  - key: b
    rate_limit: *limit
)");
  EXPECT_EQ(LimitOf(*config, {{"b", "x"}}), 3u);
}

TEST(BuildConfigTest, DomainsAndVersion) {
  auto a = MustParse("domain: a\n");
  auto b = MustParse("domain: b\n");
  absl::StatusOr<std::shared_ptr<const Config>> config = BuildConfig({a, b}, 42);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ((*config)->version, 42u);
  EXPECT_EQ((*config)->FindDomain("a"), a.get());
  EXPECT_EQ((*config)->FindDomain("b"), b.get());
  EXPECT_EQ((*config)->FindDomain("c"), nullptr);

  absl::StatusOr<std::shared_ptr<const Config>> duplicate =
      BuildConfig({a, MustParse("domain: a\n")}, 1);
  ASSERT_FALSE(duplicate.ok());
  EXPECT_EQ(duplicate.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(duplicate.status().message(),
              HasSubstr("test.yaml: duplicate domain 'a' (also in test.yaml)"));
  EXPECT_FALSE(BuildConfig({nullptr}, 1).ok());
  absl::StatusOr<std::shared_ptr<const Config>> empty = BuildConfig({}, 7);
  ASSERT_TRUE(empty.ok());
  EXPECT_THAT((*empty)->domains, IsEmpty());
}

}  // namespace
}  // namespace floodgate::core
