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
  EXPECT_EQ(ValidateRequest(r, limits).message(),
            "too many descriptors: `descriptors` has 3; at most 2 are allowed");

  r = Valid();
  r.descriptors[0].entries.resize(3, {"a", "b"});
  EXPECT_EQ(ValidateRequest(r, limits).message(),
            "`descriptors[0].entries` has 3 entries; at most 2 are allowed");

  r = Valid();
  r.descriptors[0].entries[0].key = "longkey";
  EXPECT_EQ(ValidateRequest(r, limits).message(),
            "`descriptors[0].entries[0].key` is 7 bytes long; at most 4 are allowed");

  r = Valid();
  r.descriptors[0].entries[0].value = "toolong";
  EXPECT_EQ(ValidateRequest(r, limits).message(),
            "`descriptors[0].entries[0].value` is 7 bytes long; at most 5 are allowed");
  EXPECT_EQ(ValidateRequest(r, limits, FieldNames::kQuery).message(),
            "query parameter `user`: its value is 7 bytes long; at most 5 are allowed");

  r = Valid();
  r.domain = "domain";
  EXPECT_EQ(ValidateRequest(r, limits).message(),
            "`domain` is 6 bytes long; at most 3 are allowed");
}

// The hits field is named as the caller wrote it (`hits` in our API, `hits_addend` in Envoy's),
// never by the limiter's internal name, with the value given and the range allowed.
TEST(RequestLimitsTest, HitsAreNamedInTheCallersTerms) {
  RequestLimits limits;
  limits.max_hits = 100;
  auto r = Valid();
  r.hits_addend = 101;
  EXPECT_EQ(ValidateRequest(r, limits).message(),
            "`hits` must be a whole number from 0 to 100, got 101");
  EXPECT_EQ(ValidateRequest(r, limits, FieldNames::kQuery).message(),
            "query parameter `hits` must be a whole number from 0 to 100, got 101");
  EXPECT_EQ(ValidateRequest(r, limits, FieldNames::kEnvoy).message(),
            "`hits_addend` must be a whole number from 0 to 100, got 101");
  r = Valid();
  r.descriptors[0].hits_addend = 500;
  EXPECT_EQ(ValidateRequest(r, limits).message(),
            "`descriptors[0].hits` must be a whole number from 0 to 100, got 500");
  EXPECT_EQ(ValidateRequest(r, limits, FieldNames::kEnvoy).message(),
            "`descriptors[0].hits_addend` must be a whole number from 0 to 100, got 500");
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
  EXPECT_EQ(ValidateRequest(r, {}).message(), "`descriptors[0].entries[0].key` must not be empty");
  EXPECT_EQ(ValidateRequest(r, {}, FieldNames::kQuery).message(),
            "query parameter 1: its key must not be empty");
}

TEST(RequestLimitsTest, Utf8) {
  auto r = Valid();
  r.descriptors[0].entries[0].value = "bad\xfe";
  EXPECT_NE(ValidateRequest(r, {}).message().find("UTF-8"), std::string::npos);
}

}  // namespace
}  // namespace floodgate::service
