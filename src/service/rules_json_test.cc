#include "src/service/rules_json.h"

#include <gtest/gtest.h>

#include "src/core/config.h"

namespace floodgate::service {
namespace {

std::shared_ptr<const core::Config> Build(const char* yaml) {
  auto domain = core::ParseDomainConfig(yaml, "api.yaml");
  EXPECT_TRUE(domain.ok()) << domain.status();
  auto config = core::BuildConfig({*domain}, 7);
  EXPECT_TRUE(config.ok()) << config.status();
  return *config;
}

TEST(RulesJsonTest, FlattensNestedRulesWithTheirPathsAndModes) {
  auto config = Build(R"(domain: api
descriptors:
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 100}
    descriptors:
      - key: path
        value: /login
        rate_limit:
          {unit: second, requests_per_unit: 5, algorithm: token_bucket, burst: 20,
           failure_mode: closed}
  - key: tenant
    value: "acme*"
    shadow_mode: true
    rate_limit: {unit: hour, requests_per_unit: 1000, algorithm: sliding_window}
)");
  const std::string json = RulesJson(*config);
  EXPECT_EQ(json.find("{\"version\":7,\"domains\":[{\"domain\":\"api\",\"rules\":[{"), 0u) << json;
  EXPECT_NE(json.find("\"descriptor\":\"user\",\"name\":\"\",\"algorithm\":\"fixed_window\","
                      "\"limit\":100,\"period_seconds\":60,"),
            std::string::npos)
      << json;
  EXPECT_NE(json.find("\"descriptor\":\"user,path=/login\",\"name\":\"\",\"algorithm\":"
                      "\"token_bucket\",\"limit\":5,\"period_seconds\":1,\"burst\":20,"),
            std::string::npos)
      << json;
  EXPECT_NE(json.find("\"failure_mode\":\"closed\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"descriptor\":\"tenant=acme*\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"algorithm\":\"sliding_window\",\"limit\":1000,\"period_seconds\":3600"),
            std::string::npos)
      << json;
  EXPECT_NE(json.find("\"shadow_mode\":true"), std::string::npos) << json;
  EXPECT_NE(json.find("\"stats_key\":\"api.user.path_/login\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"file\":\"api.yaml\",\"line\":"), std::string::npos) << json;
}

TEST(RulesJsonTest, NoDomainsIsAnEmptyList) {
  auto config = core::BuildConfig({}, 0);
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(RulesJson(**config), "{\"version\":0,\"domains\":[]}");
}

}  // namespace
}  // namespace floodgate::service
