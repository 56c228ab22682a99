#pragma once

// A StatsD sink that pushes the server's stats under envoyproxy/ratelimit's StatsD names
// (docs/metrics.md), so that dashboards and alerts built on them keep working:
//
//   ratelimit.service.rate_limit.<stats key>.total_hits:3|c     per rule, deltas since the last
//   ratelimit.service.config_load_success:1|c                   flush (zero deltas are not sent)
//   ratelimit_server.ShouldRateLimit.response_time:0.25|ms|@0.5 timer samples
//   floodgate.store.keys:120|g                                   our own gauges, every flush
//
// Each flush reads the counters (limiter::Limiter::ForEachRuleCounters, ServerMetrics and the
// config's load counts), formats one line per stat and sends them over UDP in datagrams of at
// most StatsdOptions::max_datagram_bytes. It never blocks a check: it reads atomics and the
// limiter's counter map (a short lock, as a Prometheus scrape does), and the socket is
// non-blocking. A failed send loses that datagram: it is counted (ServerMetrics::
// statsd_send_errors) and logged through a RateLimitedLog, never fatal.
//
// Thread-safety: Flush may be called from any thread (flushes are serialized); Start and Stop
// from the owner's thread. The sources must outlive the sink.

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "floodgate/clock.h"
#include "src/common/rate_limited_log.h"
#include "src/limiter/limiter.h"
#include "src/service/metrics.h"

namespace floodgate::service {

struct StatsdOptions {
  // Where to send: "host:port" (a name is resolved once, at NewStatsdSink; an empty host is
  // localhost, as envoyproxy/ratelimit's STATSD_HOST default).
  std::string address;
  // How often the production thread flushes (envoyproxy/ratelimit's STATS_FLUSH_INTERVAL).
  absl::Duration flush_interval = absl::Seconds(10);
  // Lines are packed into datagrams of at most this many bytes (a line longer than this goes
  // alone); the default fits an Ethernet MTU with IPv6 and UDP headers to spare.
  size_t max_datagram_bytes = 1432;
  // Times the send-error log's window; null: the system clock.
  const Clock* clock = nullptr;
  // Where the send-error lines go (at most one a minute); null: stderr.
  common::RateLimitedLog::Sink log_sink;
};

// What a flush reads. `limiter` and `metrics` must outlive the sink; the sink also counts its
// own datagrams and send errors in `metrics`.
struct StatsdSources {
  const limiter::Limiter* limiter = nullptr;
  ServerMetrics* metrics = nullptr;
  // Returns the config's load counts (config_load_success / config_load_error); may be empty.
  std::function<ConfigStats()> config_stats;
};

// Where the datagrams go. Implementations must be safe to call from one thread at a time.
class DatagramSender {
 public:
  virtual ~DatagramSender() = default;
  // Sends one datagram without blocking. Unavailable (with the reason) when it was not sent.
  virtual absl::Status Send(std::string_view datagram) = 0;
};

// Returns a sender over a connected, non-blocking UDP socket to `address` ("host:port").
// InvalidArgument for a malformed address, NotFound when the host does not resolve,
// Unavailable when the socket cannot be made.
absl::StatusOr<std::unique_ptr<DatagramSender>> NewUdpSender(std::string_view address);

// Returns `lines` (each ending in '\n') packed in order into datagrams of at most `max_bytes`;
// a line longer than `max_bytes` is a datagram of its own.
std::vector<std::string> PackDatagrams(const std::vector<std::string>& lines, size_t max_bytes);

class StatsdSink {
 public:
  // Uses `sender` (tests pass a fake; NewStatsdSink a UDP socket).
  StatsdSink(StatsdOptions options, StatsdSources sources, std::unique_ptr<DatagramSender> sender);
  // Stops the thread (with a last flush) if it runs.
  ~StatsdSink();
  StatsdSink(const StatsdSink&) = delete;
  StatsdSink& operator=(const StatsdSink&) = delete;

  // Starts the thread that flushes every flush_interval. Call at most once.
  void Start();
  // Stops the thread promptly (it waits on a condition variable, not in a sleep) and flushes
  // what was counted since the last flush. Idempotent; a sink never started just flushes.
  void Stop();

  // Sends every stat that changed since the last flush (counters as deltas, timer samples for
  // the new latencies) and every gauge. Returns the lines sent or attempted, each ending in '\n'.
  std::vector<std::string> Flush();

 private:
  using Buckets = std::array<uint64_t, LatencyHistogram::kBoundsSeconds.size() + 1>;

  // Appends "name:delta|c\n" when `value` moved since the last flush, and remembers it.
  void Counter(const std::string& name, uint64_t value, std::vector<std::string>& lines)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(flush_mu_);
  // Appends one timer sample per latency bucket that gained samples (sample rate 1/n).
  void Timer(const std::string& name, const LatencyHistogram& histogram,
             std::vector<std::string>& lines) ABSL_EXCLUSIVE_LOCKS_REQUIRED(flush_mu_);
  void Run();

  const StatsdOptions options_;
  const StatsdSources sources_;
  common::RateLimitedLog log_;

  absl::Mutex flush_mu_;
  std::unique_ptr<DatagramSender> sender_ ABSL_GUARDED_BY(flush_mu_);
  absl::flat_hash_map<std::string, uint64_t> last_ ABSL_GUARDED_BY(flush_mu_);
  Buckets last_latency_ ABSL_GUARDED_BY(flush_mu_) = {};

  absl::Mutex run_mu_;
  absl::CondVar run_cv_;
  bool stopping_ ABSL_GUARDED_BY(run_mu_) = false;
  std::thread thread_;
  bool stopped_ = false;
};

// Returns a sink sending to options.address over UDP, not yet started. The errors of
// NewUdpSender; InvalidArgument for a flush interval that is not positive.
absl::StatusOr<std::unique_ptr<StatsdSink>> NewStatsdSink(StatsdOptions options,
                                                          StatsdSources sources);

}  // namespace floodgate::service
