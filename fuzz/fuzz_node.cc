#include "fuzz/fuzz_node.h"

#include <cstdio>
#include <cstdlib>

#include "src/core/config.h"

namespace floodgate::fuzz {
namespace {

// Every algorithm, nested descriptors, a value-specific rule, shadow mode and a failure mode:
// the paths a check can take through the limiter.
constexpr char kConfigYaml[] = R"(domain: api
descriptors:
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 5}
    descriptors:
      - key: path
        value: /login
        rate_limit: {algorithm: sliding_window, unit: second, requests_per_unit: 2}
  - key: ip
    rate_limit: {algorithm: token_bucket, unit: second, requests_per_unit: 10, burst: 20}
  - key: queue
    rate_limit: {algorithm: leaky_bucket, unit: second, requests_per_unit: 3, burst: 5}
  - key: conc
    rate_limit: {algorithm: concurrency, unit: minute, requests_per_unit: 2}
  - key: shadow
    shadow_mode: true
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: zero
    rate_limit: {unit: second, requests_per_unit: 0}
)";

void Die(const absl::Status& status) {
  std::fprintf(stderr, "fuzz node: %s\n", status.ToString().c_str());
  std::abort();
}

}  // namespace

Node& Node::Get() {
  static Node* node = new Node();  // never destroyed: libFuzzer exits without unwinding
  return *node;
}

Node::Node() {
  clock_.Set(1'700'000'040LL * 1'000'000'000LL);
  StoreOptions store_options;
  store_options.shards = 4;
  store_options.max_memory_bytes = 64 << 20;  // peer inputs name any key: the cap evicts
  auto store = NewShardedStore(store_options);
  if (!store.ok()) {
    Die(store.status());
  }
  store_ = *std::move(store);
  auto domain = core::ParseDomainConfig(kConfigYaml, "api.yaml");
  if (!domain.ok()) {
    Die(domain.status());
  }
  auto config = core::BuildConfig({*domain}, 1);
  if (!config.ok()) {
    Die(config.status());
  }
  limiter::LimiterOptions limiter_options;
  limiter_options.clock = &clock_;
  limiter_ =
      std::make_unique<limiter::Limiter>(store_.get(), KeyHasher(1, 2), *config, limiter_options);
  service::RequestLimits limits;
  limits.max_body_bytes = 16 * 1024;
  service_ = service::NewRateLimitService(limiter_.get(), limits, &metrics_);
  // No config manager: admin calls answer as a node without one (the YAML has its own target).
  admin_ = std::make_unique<admin::NodeAdmin>(nullptr, limiter_.get(), &metrics_);
  handlers_ = std::make_unique<frontends::HttpHandlers>("fuzz-token", service_.get(), admin_.get(),
                                                        &metrics_.http);
}

}  // namespace floodgate::fuzz
