#pragma once

// Helpers shared by the limiter's tests (src/limiter/*_test.cc): configs from YAML text,
// requests, checks that must not fail, and the times the tests start at. Test-only.

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <string_view>
#include <utility>
#include <vector>

#include "src/core/config.h"
#include "src/limiter/limiter.h"

namespace floodgate::testing {

inline constexpr int64_t kSecond = 1'000'000'000;
inline constexpr int64_t kMinute = 60 * kSecond;
// The start of a minute, so that window arithmetic in tests is simple.
inline constexpr int64_t kMinuteStartNs = 1'700'000'040LL * kSecond;

// Returns the config of one domain given as YAML (file name "test.yaml"); a test failure when
// the YAML is refused.
inline std::shared_ptr<const core::Config> MakeConfig(const char* yaml, uint64_t version = 1) {
  auto domain = core::ParseDomainConfig(yaml, "test.yaml");
  EXPECT_TRUE(domain.ok()) << domain.status();
  auto config = core::BuildConfig({*domain}, version);
  EXPECT_TRUE(config.ok()) << config.status();
  return *config;
}

// Returns a request to `domain` with one descriptor per entry list; hits 0 means one hit.
inline limiter::CheckRequest MakeRequest(
    std::string_view domain, std::vector<std::vector<core::DescriptorEntry>> descriptors,
    uint64_t hits = 0) {
  limiter::CheckRequest request;
  request.domain = std::string(domain);
  request.hits_addend = hits;
  for (auto& entries : descriptors) {
    limiter::DescriptorRequest d;
    d.entries = std::move(entries);
    request.descriptors.push_back(std::move(d));
  }
  return request;
}

// Returns the response of a check that must not fail (a test failure otherwise).
inline limiter::CheckResponse CheckOk(limiter::Limiter& limiter,
                                      const limiter::CheckRequest& request) {
  auto response = limiter.Check(request);
  EXPECT_TRUE(response.ok()) << response.status();
  return std::move(*response);
}

// Returns the requests_per_period of the first limit under the first descriptor of `domain` in
// the limiter's config; 0 when the domain is not there.
inline uint64_t FirstLimit(const limiter::Limiter& limiter, std::string_view domain) {
  const core::DomainConfig* d = limiter.config()->FindDomain(domain);
  return d == nullptr ? 0 : d->root.children[0].limits[0].spec.requests_per_period;
}

}  // namespace floodgate::testing
