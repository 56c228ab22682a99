#include "src/admin/xds_yaml.h"

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "src/core/config.h"

namespace floodgate::admin {
namespace {

namespace rls = ::ratelimit::config::ratelimit::v3;

// Converts `config` and parses the YAML with the one loader; a test failure when it is refused.
std::shared_ptr<const core::DomainConfig> RoundTrip(const rls::RateLimitConfig& config) {
  const std::string yaml = RateLimitConfigToYaml(config);
  auto parsed = core::ParseDomainConfig(yaml, XdsResourceLabel(config));
  EXPECT_TRUE(parsed.ok()) << parsed.status() << "\n" << yaml;
  return parsed.ok() ? *parsed : nullptr;
}

// The loader's error for `config`'s YAML ("" when it is accepted).
std::string LoaderError(const rls::RateLimitConfig& config) {
  auto parsed = core::ParseDomainConfig(RateLimitConfigToYaml(config), XdsResourceLabel(config));
  return parsed.ok() ? "" : std::string(parsed.status().message());
}

TEST(XdsYamlTest, EveryFieldReachesTheLoadedConfig) {
  rls::RateLimitConfig config;
  config.set_name("rls-a");
  config.set_domain("mongo_cps");
  rls::RateLimitDescriptor* database = config.add_descriptors();
  database->set_key("database");
  database->set_value("users");
  database->set_shadow_mode(true);
  database->set_detailed_metric(true);
  rls::RateLimitPolicy* policy = database->mutable_rate_limit();
  policy->set_unit(rls::MINUTE);
  policy->set_requests_per_unit(500);
  policy->set_name("users_limit");
  policy->add_replaces()->set_name("other_limit");
  policy->add_replaces()->set_name("third");
  rls::RateLimitDescriptor* nested = database->add_descriptors();
  nested->set_key("user");
  rls::RateLimitDescriptor* deeper = nested->add_descriptors();
  deeper->set_key("path");
  deeper->set_value("/health*");
  deeper->mutable_rate_limit()->set_unlimited(true);
  rls::RateLimitDescriptor* plain = config.add_descriptors();
  plain->set_key("client");
  plain->mutable_rate_limit()->set_unit(rls::SECOND);
  plain->mutable_rate_limit()->set_requests_per_unit(0);  // 0 refuses every request

  auto domain = RoundTrip(config);
  ASSERT_NE(domain, nullptr);
  EXPECT_EQ(domain->domain, "mongo_cps");
  EXPECT_EQ(domain->file, "xds:rls-a");
  ASSERT_EQ(domain->root.children.size(), 2u);
  const core::DescriptorNode& db = domain->root.children[0];
  EXPECT_EQ(db.key, "database");
  EXPECT_EQ(db.value, "users");
  EXPECT_TRUE(db.shadow_mode);
  EXPECT_TRUE(db.detailed_metric);
  ASSERT_EQ(db.limits.size(), 1u);
  const core::RateLimitRule& rule = db.limits[0];
  EXPECT_EQ(rule.unit, core::TimeUnit::kMinute);
  EXPECT_EQ(rule.requests_per_unit, 500u);
  EXPECT_EQ(rule.name, "users_limit");
  EXPECT_EQ(rule.replaces, (std::vector<std::string>{"other_limit", "third"}));
  EXPECT_TRUE(rule.shadow_mode);
  EXPECT_TRUE(rule.detailed_metric);
  EXPECT_FALSE(rule.unlimited);
  ASSERT_EQ(db.children.size(), 1u);
  EXPECT_EQ(db.children[0].key, "user");
  EXPECT_EQ(db.children[0].value, "");
  EXPECT_TRUE(db.children[0].limits.empty());
  ASSERT_EQ(db.children[0].children.size(), 1u);
  const core::DescriptorNode& path = db.children[0].children[0];
  EXPECT_EQ(path.value, "/health*");
  ASSERT_EQ(path.limits.size(), 1u);
  EXPECT_TRUE(path.limits[0].unlimited);
  EXPECT_FALSE(path.shadow_mode);
  const core::DescriptorNode& client = domain->root.children[1];
  ASSERT_EQ(client.limits.size(), 1u);
  EXPECT_EQ(client.limits[0].unit, core::TimeUnit::kSecond);
  EXPECT_EQ(client.limits[0].requests_per_unit, 0u);
}

TEST(XdsYamlTest, EveryUnitMapsToTheSameUnit) {
  // rls_conf.proto numbers its units as Envoy's RLS response does, and so does core::TimeUnit.
  for (rls::RateLimitUnit unit :
       {rls::SECOND, rls::MINUTE, rls::HOUR, rls::DAY, rls::WEEK, rls::MONTH, rls::YEAR}) {
    rls::RateLimitConfig config;
    config.set_domain("d");
    rls::RateLimitDescriptor* d = config.add_descriptors();
    d->set_key("k");
    d->mutable_rate_limit()->set_unit(unit);
    d->mutable_rate_limit()->set_requests_per_unit(3);
    auto domain = RoundTrip(config);
    ASSERT_NE(domain, nullptr) << unit;
    EXPECT_EQ(static_cast<int>(domain->root.children[0].limits[0].unit), static_cast<int>(unit));
  }
}

TEST(XdsYamlTest, OddStringsReadBackExactly) {
  const std::vector<std::string> odd = {"say \"hi\"",
                                        "it's",
                                        "a: b",
                                        "key: value, other: x",
                                        "*",
                                        "prefix*",
                                        "  leading spaces",
                                        "trailing  ",
                                        "#not a comment",
                                        "- not a list",
                                        "[1, 2]",
                                        "{a: b}",
                                        "&anchor",
                                        "*alias",
                                        "!tag",
                                        "%directive",
                                        "@at",
                                        "`tick`",
                                        "|",
                                        ">",
                                        "true",
                                        "no",
                                        "~",
                                        "null",
                                        "0x1F",
                                        "1e3",
                                        "50.0.0.5",
                                        "back\\slash",
                                        "new\nline",
                                        "tab\there",
                                        "cr\rhere",
                                        "nul\x01"
                                        "ctl\x7f",
                                        "ünïcødé",
                                        "日本語",
                                        "emoji \xF0\x9F\x9A\x80",
                                        "nel\xC2\x85",
                                        "ls\xE2\x80\xA8ps\xE2\x80\xA9",
                                        "bom\xEF\xBB\xBF",
                                        "---",
                                        "...",
                                        "?",
                                        "a #b",
                                        "'single'"};
  for (const std::string& value : odd) {
    rls::RateLimitConfig config;
    config.set_name(value);
    config.set_domain("domain " + value);
    rls::RateLimitDescriptor* d = config.add_descriptors();
    d->set_key("key " + value);
    d->set_value(value);
    d->mutable_rate_limit()->set_unit(rls::HOUR);
    d->mutable_rate_limit()->set_requests_per_unit(1);
    d->mutable_rate_limit()->set_name("limit " + value);
    d->mutable_rate_limit()->add_replaces()->set_name("other " + value);
    auto domain = RoundTrip(config);
    ASSERT_NE(domain, nullptr) << value;
    EXPECT_EQ(domain->domain, "domain " + value);
    EXPECT_EQ(domain->file, "xds:" + value);
    const core::DescriptorNode& node = domain->root.children[0];
    EXPECT_EQ(node.key, "key " + value);
    EXPECT_EQ(node.value, value);
    EXPECT_EQ(node.limits[0].name, "limit " + value);
    EXPECT_EQ(node.limits[0].replaces, std::vector<std::string>{"other " + value});
  }
}

TEST(XdsYamlTest, QuoteEscapesWhatYamlWouldReadOtherwise) {
  EXPECT_EQ(YamlQuote("plain"), "\"plain\"");
  EXPECT_EQ(YamlQuote("a\"b\\c"), "\"a\\\"b\\\\c\"");
  EXPECT_EQ(YamlQuote("\n\t\x01"), "\"\\n\\t\\x01\"");
  EXPECT_EQ(YamlQuote("\xC2\x85"), "\"\\x85\"");
  EXPECT_EQ(YamlQuote("\xE2\x80\xA8"), "\"\\L\"");
  EXPECT_EQ(YamlQuote("\xEF\xBB\xBF"), "\"\\uFEFF\"");
  EXPECT_EQ(YamlQuote("日本"), "\"日本\"");
}

TEST(XdsYamlTest, InvalidValuesGetTheLoadersErrors) {
  rls::RateLimitConfig config;
  config.set_name("bad");
  config.set_domain("d");
  rls::RateLimitDescriptor* d = config.add_descriptors();
  d->set_key("k");
  d->mutable_rate_limit()->set_requests_per_unit(5);  // no unit
  EXPECT_NE(LoaderError(config).find("xds:bad:4: rate limit needs a 'unit'"), std::string::npos)
      << LoaderError(config);

  d->mutable_rate_limit()->set_unit(static_cast<rls::RateLimitUnit>(42));
  EXPECT_NE(LoaderError(config).find("invalid unit '42'"), std::string::npos)
      << LoaderError(config);

  d->mutable_rate_limit()->set_unit(rls::SECOND);
  d->mutable_rate_limit()->set_unlimited(true);
  EXPECT_NE(LoaderError(config).find("an unlimited rate limit takes no 'unit'"), std::string::npos)
      << LoaderError(config);

  d->mutable_rate_limit()->set_unlimited(false);
  d->mutable_rate_limit()->add_replaces();  // an empty name
  EXPECT_NE(LoaderError(config), "");

  d->mutable_rate_limit()->clear_replaces();
  EXPECT_EQ(LoaderError(config), "");
  // quota_mode and metadata load as the file fields of the same names.
  d->set_quota_mode(true);
  auto& fields = *d->mutable_metadata()->mutable_fields();
  fields["team"].set_string_value("a: \"b\"");
  fields["weight"].set_number_value(2.5);
  (*fields["nested"].mutable_struct_value()->mutable_fields())["on"].set_bool_value(true);
  EXPECT_EQ(LoaderError(config), "");
  std::shared_ptr<const core::DomainConfig> loaded = RoundTrip(config);
  ASSERT_NE(loaded, nullptr);
  const core::RateLimitRule& rule = loaded->root.children[0].limits[0];
  EXPECT_TRUE(rule.quota_mode);
  ASSERT_NE(rule.metadata, nullptr);
  std::map<std::string, const core::MetadataValue*> by_name;
  for (const auto& [name, value] : rule.metadata->fields) {
    by_name[name] = &value;
  }
  ASSERT_EQ(by_name.size(), 3u);
  EXPECT_EQ(by_name["team"]->string, "a: \"b\"");
  EXPECT_EQ(by_name["weight"]->number, 2.5);
  ASSERT_EQ(by_name["nested"]->fields.size(), 1u);
  EXPECT_TRUE(by_name["nested"]->fields[0].second.boolean);
}

TEST(XdsYamlTest, EmptyConfigHasNoDescriptors) {
  rls::RateLimitConfig config;
  config.set_domain("empty");
  auto domain = RoundTrip(config);
  ASSERT_NE(domain, nullptr);
  EXPECT_TRUE(domain->root.children.empty());
  EXPECT_EQ(domain->file, "xds:empty");  // no name: the domain labels it
}

TEST(XdsYamlTest, ResponseResourcesAreDecodedInOrder) {
  envoy::service::discovery::v3::DiscoveryResponse response;
  rls::RateLimitConfig a;
  a.set_name("a");
  a.set_domain("da");
  rls::RateLimitConfig b;
  b.set_domain("db");
  response.add_resources()->PackFrom(a);
  response.add_resources()->PackFrom(b);
  auto files = XdsResponseToConfigFiles(response);
  ASSERT_TRUE(files.ok()) << files.status();
  ASSERT_EQ(files->size(), 2u);
  EXPECT_EQ((*files)[0].path, "xds:a");
  EXPECT_EQ((*files)[0].text, RateLimitConfigToYaml(a));
  EXPECT_EQ((*files)[1].path, "xds:db");

  // Another type: refused, naming it.
  response.add_resources()->PackFrom(response.resources(0));  // an Any inside an Any
  files = XdsResponseToConfigFiles(response);
  EXPECT_EQ(files.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(files.status().message().find("resource 2 has type 'type.googleapis.com/"
                                          "google.protobuf.Any'"),
            std::string::npos)
      << files.status();

  // The right type with bytes that do not decode.
  response.mutable_resources(2)->set_type_url(std::string(kRateLimitConfigTypeUrl));
  response.mutable_resources(2)->set_value("\xff\xff\xff");
  files = XdsResponseToConfigFiles(response);
  EXPECT_EQ(files.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(files.status().message().find("resource 2 does not decode"), std::string::npos)
      << files.status();
}

}  // namespace
}  // namespace floodgate::admin
