#include "src/service/request_limits.h"

#include <gtest/gtest.h>

namespace floodgate::service {
namespace {

limiter::CheckRequest Valid() {
  limiter::CheckRequest r;
  r.domain = "api";
  r.descriptors.push_back({{{"user", "alice"}}, std::nullopt, std::nullopt});
  return r;
}

TEST(RequestLimitsTest, AcceptsOrdinaryRequest) {
  EXPECT_TRUE(ValidateRequest(Valid(), RequestLimits{}).ok());
}

TEST(RequestLimitsTest, RefusesEachOversizedPartWithItsName) {
  RequestLimits limits;
  limits.max_descriptors = 2;
  limits.max_entries = 2;
  limits.max_key_bytes = 4;
  limits.max_value_bytes = 5;
  limits.max_domain_bytes = 3;

  auto r = Valid();
  r.descriptors.resize(3, r.descriptors[0]);
  EXPECT_NE(ValidateRequest(r, limits).message().find("too many descriptors"), std::string::npos);

  r = Valid();
  r.descriptors[0].entries.resize(3, {"a", "b"});
  EXPECT_NE(ValidateRequest(r, limits).message().find("too many entries"), std::string::npos);

  r = Valid();
  r.descriptors[0].entries[0].key = "longkey";
  EXPECT_NE(ValidateRequest(r, limits).message().find("key is longer"), std::string::npos);

  r = Valid();
  r.descriptors[0].entries[0].value = "toolong";
  EXPECT_NE(ValidateRequest(r, limits).message().find("value is longer"), std::string::npos);

  r = Valid();
  r.domain = "domain";
  EXPECT_NE(ValidateRequest(r, limits).message().find("domain is longer"), std::string::npos);

  r = Valid();
  r.hits_addend = limits.max_hits + 1;
  EXPECT_EQ(ValidateRequest(r, limits).code(), absl::StatusCode::kInvalidArgument);
}

TEST(RequestLimitsTest, RefusesEmptyParts) {
  auto r = Valid();
  r.domain.clear();
  EXPECT_EQ(ValidateRequest(r, {}).code(), absl::StatusCode::kInvalidArgument);
  r = Valid();
  r.descriptors.clear();
  EXPECT_EQ(ValidateRequest(r, {}).code(), absl::StatusCode::kInvalidArgument);
  r = Valid();
  r.descriptors[0].entries.clear();
  EXPECT_EQ(ValidateRequest(r, {}).code(), absl::StatusCode::kInvalidArgument);
  r = Valid();
  r.descriptors[0].entries[0].key.clear();
  EXPECT_EQ(ValidateRequest(r, {}).code(), absl::StatusCode::kInvalidArgument);
}

TEST(RequestLimitsTest, Utf8) {
  auto r = Valid();
  r.descriptors[0].entries[0].value = "bad\xfe";
  EXPECT_NE(ValidateRequest(r, {}).message().find("UTF-8"), std::string::npos);
}

}  // namespace
}  // namespace floodgate::service
