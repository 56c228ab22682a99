#pragma once

// The rate limit service over a real limiter and in-memory store on a fake clock, for the
// service's unit tests (src/service/*_test.cc); and Envoy requests built from entry lists.
// Test-only.

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "envoy/service/ratelimit/v3/rls.pb.h"
#include "floodgate/store.h"
#include "src/limiter/limiter.h"
#include "src/service/rate_limit_service.h"
#include "testing/fake_clock.h"
#include "testing/limiter_helpers.h"

namespace floodgate::testing {

using EnvoyEntries = std::vector<std::pair<std::string, std::string>>;

// Returns an Envoy request to `domain` with one descriptor per entry list; `hits` 0 is Envoy's
// default of one hit.
inline envoy::service::ratelimit::v3::RateLimitRequest EnvoyRequest(
    const std::string& domain, const std::vector<EnvoyEntries>& descriptors, uint32_t hits = 0) {
  envoy::service::ratelimit::v3::RateLimitRequest request;
  request.set_domain(domain);
  request.set_hits_addend(hits);
  for (const EnvoyEntries& entries : descriptors) {
    auto* descriptor = request.add_descriptors();
    for (const auto& [key, value] : entries) {
      auto* entry = descriptor->add_entries();
      entry->set_key(key);
      entry->set_value(value);
    }
  }
  return request;
}

// Mix into a test fixture: StartService builds the service; the members are the fixture's.
class ServiceHarness {
 protected:
  // (Re)builds the store, the limiter over the one domain in `yaml` (clock at kMinuteStartNs)
  // and the service with `envoy`'s switches.
  void StartService(const char* yaml, service::EnvoyCompat envoy = {},
                    limiter::LimiterOptions options = {}) {
    service_.reset();
    limiter_.reset();
    store_ = *NewShardedStore({});
    clock_.Set(kMinuteStartNs);
    options.clock = &clock_;
    limiter_ = std::make_unique<limiter::Limiter>(store_.get(), KeyHasher(1, 2), MakeConfig(yaml),
                                                  options);
    service_ = service::NewRateLimitService(limiter_.get(), service::RequestLimits(), &metrics_,
                                            std::move(envoy));
  }

  FakeClock clock_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<limiter::Limiter> limiter_;
  service::ServerMetrics metrics_;
  std::unique_ptr<service::RateLimitService> service_;
};

}  // namespace floodgate::testing
