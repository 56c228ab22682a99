#include "src/admin/xds_config.h"

#include <gtest/gtest.h>

namespace floodgate::admin {
namespace {

XdsOptions Backoff(absl::Duration initial, absl::Duration max, double jitter) {
  XdsOptions options;
  options.initial_backoff = initial;
  options.max_backoff = max;
  options.jitter = jitter;
  return options;
}

TEST(XdsBackoffTest, DoublesFromInitialUpToMax) {
  const XdsOptions options = Backoff(absl::Seconds(1), absl::Seconds(10), 0.0);
  EXPECT_EQ(XdsBackoff(options, 1, 0.7), absl::Seconds(1));
  EXPECT_EQ(XdsBackoff(options, 2, 0.7), absl::Seconds(2));
  EXPECT_EQ(XdsBackoff(options, 3, 0.7), absl::Seconds(4));
  EXPECT_EQ(XdsBackoff(options, 4, 0.7), absl::Seconds(8));
  EXPECT_EQ(XdsBackoff(options, 5, 0.7), absl::Seconds(10));
  EXPECT_EQ(XdsBackoff(options, 1'000'000, 0.7), absl::Seconds(10));  // no overflow
  EXPECT_EQ(XdsBackoff(options, 0, 0.7), absl::Seconds(1));
}

TEST(XdsBackoffTest, JitterDrawsBelowTheStep) {
  const XdsOptions options = Backoff(absl::Seconds(4), absl::Seconds(60), 0.5);
  EXPECT_EQ(XdsBackoff(options, 1, 0.0), absl::Seconds(4));
  EXPECT_EQ(XdsBackoff(options, 1, 0.5), absl::Seconds(3));
  EXPECT_EQ(XdsBackoff(options, 2, 1.0), absl::Seconds(4));                   // 8 s * (1 - 0.5)
  EXPECT_EQ(XdsBackoff(options, 2, 7.0), absl::Seconds(4));                   // random clamped to 1
  EXPECT_EQ(XdsBackoff(options, 2, -1.0), absl::Seconds(8));                  // and to 0
  const XdsOptions full = Backoff(absl::Seconds(4), absl::Seconds(60), 3.0);  // clamped to 1
  EXPECT_EQ(XdsBackoff(full, 1, 0.25), absl::Seconds(3));
}

TEST(XdsBackoffTest, OtherMultiplierAndInitialAboveMax) {
  XdsOptions options = Backoff(absl::Milliseconds(100), absl::Seconds(1), 0.0);
  options.backoff_multiplier = 3.0;
  EXPECT_EQ(XdsBackoff(options, 2, 0.0), absl::Milliseconds(300));
  EXPECT_EQ(XdsBackoff(options, 3, 0.0), absl::Milliseconds(900));
  EXPECT_EQ(XdsBackoff(options, 4, 0.0), absl::Seconds(1));
  options.backoff_multiplier = 0.5;  // below 1: treated as 1, never shrinking
  EXPECT_EQ(XdsBackoff(options, 4, 0.0), absl::Milliseconds(100));
  const XdsOptions upside_down = Backoff(absl::Seconds(5), absl::Seconds(2), 0.0);
  EXPECT_EQ(XdsBackoff(upside_down, 1, 0.0), absl::Seconds(2));
}

TEST(XdsNodeTest, CarriesIdClusterAndMetadata) {
  XdsOptions options;
  options.node_id = "envoy-gateway-ratelimit";
  options.node_cluster = "c1";
  options.node_metadata = {{"team", "edge"}, {"zone", "eu:1"}};
  const envoy::config::core::v3::Node node = XdsNode(options);
  EXPECT_EQ(node.id(), "envoy-gateway-ratelimit");
  EXPECT_EQ(node.cluster(), "c1");
  EXPECT_EQ(node.user_agent_name(), "floodgate");
  ASSERT_EQ(node.metadata().fields_size(), 2);
  EXPECT_EQ(node.metadata().fields().at("team").string_value(), "edge");
  EXPECT_EQ(node.metadata().fields().at("zone").string_value(), "eu:1");
  EXPECT_EQ(XdsNode(XdsOptions{}).id(), "default");
}

TEST(XdsNodeMetadataTest, ParsesEnvoysFormat) {
  auto parsed = ParseXdsNodeMetadata("team=edge,zone=eu=1, spaced = kept ");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, (std::map<std::string, std::string>{
                         {"team", "edge"}, {"zone", "eu=1"}, {" spaced ", " kept "}}));
  EXPECT_TRUE(ParseXdsNodeMetadata("")->empty());
  EXPECT_EQ(*ParseXdsNodeMetadata("k="), (std::map<std::string, std::string>{{"k", ""}}));
  EXPECT_EQ(ParseXdsNodeMetadata("team:edge").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseXdsNodeMetadata("a=1,,b=2").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseXdsNodeMetadata("=v").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace floodgate::admin
