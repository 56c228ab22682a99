#pragma once

// Server metrics and the Prometheus text exporter. One exporter renders everything: per-rule
// counters from the limiter and the service counters, under our `floodgate_*` names and under
// the names envoyproxy/ratelimit's Prometheus mapping gives them (docs/metrics.md), latency
// histograms, store size, config version and reloads. The StatsD sink (statsd.h) pushes the
// same values under envoyproxy/ratelimit's StatsD names.

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "floodgate/store.h"
#include "src/limiter/limiter.h"

namespace floodgate::service {

// A fixed-bucket latency histogram. Thread-safe, lock-free.
class LatencyHistogram {
 public:
  // Upper bounds in seconds (Prometheus `le`), ending with +Inf implicitly.
  static constexpr std::array<double, 14> kBoundsSeconds = {
      0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
      0.0025,  0.005,    0.01,    0.025,  0.05,    0.1,    1.0};
  void Record(int64_t nanos);
  // Appends the Prometheus lines for metric `name` with extra `labels` (may be empty,
  // e.g. `frontend="grpc"`).
  void Render(const std::string& name, const std::string& labels, std::string& out) const;
  // Returns the samples counted in each bucket so far (not cumulative; the last is +Inf).
  std::array<uint64_t, kBoundsSeconds.size() + 1> BucketCounts() const;

 private:
  std::array<std::atomic<uint64_t>, kBoundsSeconds.size() + 1> buckets_{};
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_ns_{0};
};

struct FrontendMetrics {
  std::atomic<uint64_t> requests{0};
  std::atomic<uint64_t> over_limit{0};
  std::atomic<uint64_t> bad_requests{0};
  std::atomic<uint64_t> errors{0};
  std::atomic<uint64_t> shed{0};  // refused at once because the server was over its bounds
  // Checks of a domain the config does not define (answered with no configured limit).
  std::atomic<uint64_t> unknown_domain{0};
  LatencyHistogram latency;
};

struct ConfigStats {
  uint64_t version = 0;
  uint64_t reload_success = 0;
  uint64_t reload_failure = 0;
  std::string last_error;
};

// Counts per domain name, for domains a caller can make up (checks of unknown domains): at most
// kMaxDomains names are kept; past them, further new names count under kOtherDomains, so a flood
// of made-up names costs bounded memory. Thread-safe.
class DomainCounts {
 public:
  static constexpr size_t kMaxDomains = 1000;
  static constexpr char kOtherDomains[] = "_other_";

  void Add(std::string_view domain);
  // Calls `fn(domain, count)` for every name counted, in no order.
  void ForEach(const std::function<void(const std::string&, uint64_t)>& fn) const;

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, uint64_t> counts_ ABSL_GUARDED_BY(mu_);
};

struct ServerMetrics {
  FrontendMetrics grpc;
  FrontendMetrics http;
  std::atomic<uint64_t> http_connections{0};
  // Envoy answers turned from OVER_LIMIT into OK by the global shadow mode (EnvoyCompat).
  std::atomic<uint64_t> global_shadow_mode{0};
  // The StatsD sink (statsd.h): datagrams sent, and datagrams lost to a send error.
  std::atomic<uint64_t> statsd_datagrams{0};
  std::atomic<uint64_t> statsd_send_errors{0};
  // Checks of each domain the config does not define: envoyproxy/ratelimit's
  // `<domain>.domain_not_found`.
  DomainCounts domain_not_found;
  // Checks shed (the front end past its bounds) per configured domain; other names count under
  // _other_ (floodgate_domain_shed_total).
  DomainCounts domain_shed;
};

// Returns envoyproxy/ratelimit's stat name for a rule's stats key: ':' and '|' become '_', so
// do the dots of anything shaped like an IPv4 address, as Envoy's sanitizer does; control
// characters (a newline from a request's value under detailed_metric) also become '_', so that
// a name never breaks a StatsD line.
std::string EnvoyStatName(std::string_view stats_key);

// Renders all metrics in Prometheus text format 0.0.4.
std::string RenderPrometheus(const limiter::Limiter& limiter, const ServerMetrics& metrics,
                             const ConfigStats& config);

}  // namespace floodgate::service
