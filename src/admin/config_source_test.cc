#include "src/admin/config_source.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "testing/temp_dir.h"

namespace floodgate::admin {
namespace {

using core::Config;
using core::DescriptorEntry;
using core::DescriptorNode;
using core::DomainConfig;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr int64_t kSecondNs = 1'000'000'000;

// Returns the only limit of the node a request matches (UINT64_MAX when nothing or several match).
uint64_t LimitOf(const DomainConfig& config,
                 std::vector<std::pair<std::string, std::string>> entries) {
  std::vector<DescriptorEntry> request;
  for (auto& [key, value] : entries) {
    request.push_back({key, value});
  }
  const DescriptorNode* node = config.Match(request);
  if (node == nullptr || node->limits.size() != 1) {
    return UINT64_MAX;
  }
  return node->limits[0].requests_per_unit;
}

using floodgate::testing::TempDir;

constexpr absl::string_view kApiYaml = R"(domain: api
descriptors:
  - key: user
    rate_limit: {unit: second, requests_per_unit: 10}
)";
constexpr absl::string_view kWebYaml = R"(domain: web
descriptors:
  - key: path
    value: /login
    rate_limit: {unit: minute, requests_per_unit: 5}
)";

TEST(ConfigSourceTest, DirectoryOfYamlFiles) {
  TempDir dir;
  std::string api = dir.Write("b_api.yaml", kApiYaml);
  std::string web = dir.Write("a_web.yml", kWebYaml);
  dir.Write("notes.txt", "not: yaml: at all: [");
  dir.Write(".hidden.yaml", "broken: [");
  std::filesystem::create_directory(dir.path() + "/sub.yaml");
  dir.Write("sub.yaml/nested.yaml", "domain: nested\n");

  absl::StatusOr<std::shared_ptr<const Config>> config = LoadConfigSource(dir.path());
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ((*config)->domains.size(), 2u);
  const DomainConfig* api_domain = (*config)->FindDomain("api");
  ASSERT_NE(api_domain, nullptr);
  EXPECT_EQ(api_domain->file, api);
  EXPECT_EQ(api_domain->source, kApiYaml);
  EXPECT_EQ(api_domain->root.children[0].limits[0].file, api);
  ASSERT_NE((*config)->FindDomain("web"), nullptr);
  EXPECT_EQ((*config)->FindDomain("web")->file, web);
  EXPECT_EQ((*config)->FindDomain("nested"), nullptr);
  EXPECT_NE((*config)->version, 0u);

  // The version is a content fingerprint: the same files give the same version, a change
  // gives another.
  absl::StatusOr<std::shared_ptr<const Config>> again = LoadConfigSource(dir.path());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->version, (*config)->version);
  dir.Write("b_api.yaml", absl::StrCat(kApiYaml, "# changed\n"));
  absl::StatusOr<std::shared_ptr<const Config>> changed = LoadConfigSource(dir.path());
  ASSERT_TRUE(changed.ok());
  EXPECT_NE((*changed)->version, (*config)->version);
}

TEST(ConfigSourceTest, SingleFile) {
  TempDir dir;
  std::string file = dir.Write("limits.conf", kApiYaml);  // an explicit file needs no suffix
  absl::StatusOr<std::shared_ptr<const Config>> config = LoadConfigSource(file);
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ((*config)->domains.size(), 1u);
  EXPECT_EQ((*config)->FindDomain("api")->file, file);
}

TEST(ConfigSourceTest, DuplicateDomainNamesBothFiles) {
  TempDir dir;
  std::string first = dir.Write("1.yaml", kApiYaml);
  std::string second = dir.Write("2.yaml", kApiYaml);
  absl::StatusOr<std::shared_ptr<const Config>> config = LoadConfigSource(dir.path());
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(config.status().message(),
              HasSubstr(absl::StrCat(second, ": duplicate domain 'api' (also in ", first, ")")));
}

TEST(ConfigSourceTest, OneBadFileRefusesEverything) {
  TempDir dir;
  dir.Write("a.yaml", kApiYaml);
  std::string bad = dir.Write("b.yaml", "domain: b\ndescriptors:\n  - key: x\n    valu: y\n");
  absl::StatusOr<std::shared_ptr<const Config>> config = LoadConfigSource(dir.path());
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(config.status().message(), HasSubstr(absl::StrCat(bad, ":4: unknown field 'valu'")));
}

TEST(ConfigSourceTest, EmptyAndMissing) {
  TempDir dir;
  // An empty folder reads as no files, but a one-shot load of it (validate, check) is refused.
  absl::StatusOr<std::vector<ConfigFile>> files = ReadConfigSource(dir.path());
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_THAT(*files, IsEmpty());
  absl::StatusOr<std::shared_ptr<const Config>> empty = LoadConfigSource(dir.path());
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(empty.status().message(), HasSubstr("no config files (*.yaml or *.yml)"));
  absl::StatusOr<std::shared_ptr<const Config>> missing = LoadConfigSource(dir.path() + "/nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("/nope"));
}

// The shipped examples (what `make run` loads) must stay valid and mean what they say.
TEST(ConfigSourceTest, ShippedExamples) {
  std::filesystem::path examples =
      std::filesystem::path(__FILE__).parent_path().parent_path().parent_path() / "examples";
  std::error_code error;
  if (!std::filesystem::is_directory(examples, error)) {
    GTEST_SKIP() << "no examples directory at " << examples;
  }
  absl::StatusOr<std::shared_ptr<const Config>> config = LoadConfigSource(examples.string());
  ASSERT_TRUE(config.ok()) << config.status();

  const DomainConfig* api = (*config)->FindDomain("api");
  ASSERT_NE(api, nullptr);
  const DescriptorNode* user = api->Match({{"user_id", "alice"}});
  ASSERT_NE(user, nullptr);
  ASSERT_EQ(user->limits.size(), 3u);
  EXPECT_EQ(user->limits[0].spec.period_ns, kSecondNs);
  EXPECT_EQ(user->limits[1].spec.period_ns, 60 * kSecondNs);
  EXPECT_EQ(user->limits[2].spec.period_ns, 3600 * kSecondNs);
  const DescriptorNode* health = api->Match({{"user_id", "health-checker"}});
  ASSERT_NE(health, nullptr);
  EXPECT_TRUE(health->limits[0].unlimited);
  const DescriptorNode* search = api->Match({{"path", "/v1/search/books"}});
  ASSERT_NE(search, nullptr);
  EXPECT_EQ(search->limits[0].spec.algorithm, Algorithm::kSlidingWindow);
  const DescriptorNode* upload = api->Match({{"path", "/v1/upload"}});
  ASSERT_NE(upload, nullptr);
  EXPECT_EQ(upload->limits[0].spec,
            (LimitSpec{Algorithm::kTokenBucket, 5, kSecondNs, /*burst=*/20}));
  const DescriptorNode* v2 = api->Match({{"path", "/v2/orders"}});
  ASSERT_NE(v2, nullptr);
  EXPECT_TRUE(v2->limits[0].shadow_mode);
  EXPECT_EQ(api->Match({{"path", "/v3/other"}}), nullptr);
  const DescriptorNode* tenant_user = api->Match({{"tenant", "acme"}, {"user_id", "bob"}});
  ASSERT_NE(tenant_user, nullptr);
  EXPECT_EQ(tenant_user->limits[0].requests_per_unit, 50u);

  const DomainConfig* edge = (*config)->FindDomain("edge_proxy");
  ASSERT_NE(edge, nullptr);
  EXPECT_EQ(LimitOf(*edge, {{"remote_address", "50.0.0.1"}}), 10u);
  EXPECT_EQ(LimitOf(*edge, {{"remote_address", "50.0.0.5"}}), 0u);
  EXPECT_EQ(LimitOf(*edge, {{"message_type", "marketing"}, {"to_number", "2061111111"}}), 5u);
  EXPECT_EQ(LimitOf(*edge, {{"to_number", "2061111111"}}), 100u);
  EXPECT_EQ(LimitOf(*edge, {{"path", "/api/users"}}), 1000u);
}

}  // namespace
}  // namespace floodgate::admin
