#include "src/service/metrics.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "src/service/process_metrics.h"

namespace floodgate::service {
namespace {

std::string EscapeLabel(absl::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\' || c == '"') {
      out.push_back('\\');
      out.push_back(c);
    } else if (c == '\n') {
      out.append("\\n");
    } else {
      out.push_back(c);
    }
  }
  return out;
}

void Header(std::string& out, absl::string_view name, absl::string_view type,
            absl::string_view help) {
  absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

// One metric with a single unlabelled sample.
void Scalar(std::string& out, absl::string_view name, absl::string_view type,
            absl::string_view help, uint64_t value) {
  Header(out, name, type, help);
  absl::StrAppend(&out, name, " ", value, "\n");
}

void Frontend(std::string& out, absl::string_view metric, absl::string_view help,
              const std::atomic<uint64_t>& grpc, const std::atomic<uint64_t>& http) {
  Header(out, metric, "counter", help);
  absl::StrAppend(&out, metric, "{frontend=\"grpc\"} ", grpc.load(), "\n", metric,
                  "{frontend=\"http\"} ", http.load(), "\n");
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Returns the end of the IPv4-shaped run (four groups of 1 to 3 digits joined by dots) that
// starts at `group_start`, or npos. Greedy with backtracking, so "1234.5.6.7" does not match at
// 0 but does at 1, as a regular expression engine would find it.
size_t Ipv4RunEnd(std::string_view s, size_t group_start, int group) {
  size_t digits = 0;
  while (digits < 3 && group_start + digits < s.size() && IsDigit(s[group_start + digits])) {
    ++digits;
  }
  for (; digits >= 1; --digits) {
    const size_t end = group_start + digits;
    if (group == 3) {
      return end;
    }
    if (end < s.size() && s[end] == '.') {
      if (size_t run = Ipv4RunEnd(s, end + 1, group + 1); run != std::string_view::npos) {
        return run;
      }
    }
  }
  return std::string_view::npos;
}

// The labels envoyproxy/ratelimit's Prometheus mapping gives a rule: the first two parts of the
// stats name after the domain (key2 only when there is one); we keep the whole key as well.
std::string RuleLabels(const std::string& stats_key) {
  const size_t dot = stats_key.find('.');
  std::string labels = absl::StrCat("domain=\"", EscapeLabel(stats_key.substr(0, dot)), "\",key=\"",
                                    EscapeLabel(stats_key), "\"");
  const std::string name = EnvoyStatName(stats_key);
  std::vector<absl::string_view> parts = absl::StrSplit(name, '.');
  if (parts.size() >= 2) {
    absl::StrAppend(&labels, ",key1=\"", EscapeLabel(parts[1]), "\"");
  }
  if (parts.size() >= 3) {
    absl::StrAppend(&labels, ",key2=\"", EscapeLabel(parts[2]), "\"");
  }
  return labels;
}

}  // namespace

void DomainCounts::Add(std::string_view domain) {
  absl::MutexLock lock(&mu_);
  auto it = counts_.find(absl::string_view(domain.data(), domain.size()));
  if (it == counts_.end()) {
    it = counts_.size() < kMaxDomains ? counts_.emplace(std::string(domain), 0).first
                                      : counts_.try_emplace(kOtherDomains, 0).first;
  }
  ++it->second;
}

void DomainCounts::ForEach(const std::function<void(const std::string&, uint64_t)>& fn) const {
  absl::MutexLock lock(&mu_);
  for (const auto& [domain, count] : counts_) {
    fn(domain, count);
  }
}

std::string EnvoyStatName(std::string_view stats_key) {
  std::string out(stats_key);
  for (char& c : out) {
    if (c == ':' || c == '|' || static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      c = '_';
    }
  }
  for (size_t i = 0; i < out.size();) {
    const size_t end = IsDigit(out[i]) ? Ipv4RunEnd(out, i, 0) : std::string_view::npos;
    if (end == std::string_view::npos) {
      ++i;
      continue;
    }
    for (size_t j = i; j < end; ++j) {
      if (out[j] == '.') {
        out[j] = '_';
      }
    }
    i = end;
  }
  return out;
}

std::array<uint64_t, LatencyHistogram::kBoundsSeconds.size() + 1> LatencyHistogram::BucketCounts()
    const {
  std::array<uint64_t, kBoundsSeconds.size() + 1> counts;
  for (size_t i = 0; i < counts.size(); ++i) {
    counts[i] = buckets_[i].load(std::memory_order_relaxed);
  }
  return counts;
}

void LatencyHistogram::Record(int64_t nanos) {
  if (nanos < 0) {
    nanos = 0;
  }
  const double seconds = static_cast<double>(nanos) / 1e9;
  size_t i = 0;
  while (i < kBoundsSeconds.size() && seconds > kBoundsSeconds[i]) {
    ++i;
  }
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_ns_.fetch_add(static_cast<uint64_t>(nanos), std::memory_order_relaxed);
}

void LatencyHistogram::Render(const std::string& name, const std::string& labels,
                              std::string& out) const {
  const std::string sep = labels.empty() ? "" : ",";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < kBoundsSeconds.size(); ++i) {
    cumulative += buckets_[i].load(std::memory_order_relaxed);
    absl::StrAppend(&out, name, "_bucket{", labels, sep, "le=\"",
                    absl::StrFormat("%g", kBoundsSeconds[i]), "\"} ", cumulative, "\n");
  }
  cumulative += buckets_[kBoundsSeconds.size()].load(std::memory_order_relaxed);
  absl::StrAppend(&out, name, "_bucket{", labels, sep, "le=\"+Inf\"} ", cumulative, "\n");
  absl::StrAppend(&out, name, "_sum{", labels, "} ",
                  absl::StrFormat("%.9f", sum_ns_.load(std::memory_order_relaxed) / 1e9), "\n");
  absl::StrAppend(&out, name, "_count{", labels, "} ", count_.load(std::memory_order_relaxed),
                  "\n");
}

std::string RenderPrometheus(const limiter::Limiter& limiter, const ServerMetrics& metrics,
                             const ConfigStats& config) {
  std::string out;
  out.reserve(8192);

  // Per-rule counters under the names envoyproxy/ratelimit's Prometheus mapping gives its StatsD
  // stats (ratelimit.service.rate_limit.<stats key>.<stat>); docs/metrics.md.
  static constexpr int kRuleStats = 6;
  struct Rule {
    std::string labels;
    uint64_t values[kRuleStats];
  };
  std::vector<Rule> rules;
  limiter.ForEachRuleCounters([&](const std::string& key, const limiter::RuleCounters& c) {
    Rule r;
    r.labels = RuleLabels(key);
    r.values[0] = c.total_hits.load(std::memory_order_relaxed);
    r.values[1] = c.over_limit.load(std::memory_order_relaxed);
    r.values[2] = c.near_limit.load(std::memory_order_relaxed);
    r.values[3] = c.within_limit.load(std::memory_order_relaxed);
    r.values[4] = c.shadow_mode.load(std::memory_order_relaxed);
    r.values[5] = c.over_limit_with_local_cache.load(std::memory_order_relaxed);
    rules.push_back(std::move(r));
  });
  static constexpr const char* kStats[kRuleStats] = {"total_hits",  "over_limit",
                                                     "near_limit",  "within_limit",
                                                     "shadow_mode", "over_limit_with_local_cache"};
  for (int s = 0; s < kRuleStats; ++s) {
    const std::string name = absl::StrCat("ratelimit_service_rate_limit_", kStats[s]);
    Header(out, name, "counter", absl::StrCat("Hits per rule: ", kStats[s], "."));
    for (const Rule& r : rules) {
      absl::StrAppend(&out, name, "{", r.labels, "} ", r.values[s], "\n");
    }
  }

  // envoyproxy/ratelimit's service counters, under its Prometheus names.
  Scalar(out, "ratelimit_service_config_load_success", "counter", "Config loads applied.",
         config.reload_success);
  Scalar(out, "ratelimit_service_config_load_error", "counter", "Config loads refused.",
         config.reload_failure);
  const uint64_t shadowed = metrics.global_shadow_mode.load(std::memory_order_relaxed);
  Scalar(out, "ratelimit_service_global_shadow_mode", "counter",
         "Envoy answers turned from OVER_LIMIT into OK by the global shadow mode.", shadowed);
  Scalar(out, "floodgate_envoy_global_shadow_mode_total", "counter",
         "Envoy answers turned from OVER_LIMIT into OK by the global shadow mode.", shadowed);
  Header(out, "ratelimit_service_rate_limit_domain_not_found", "counter",
         "Checks of a domain the config does not define, per domain (at most 1000 names; the "
         "rest under _other_).");
  metrics.domain_not_found.ForEach([&out](const std::string& domain, uint64_t count) {
    absl::StrAppend(&out, "ratelimit_service_rate_limit_domain_not_found{domain=\"",
                    EscapeLabel(domain), "\"} ", count, "\n");
  });
  Header(out, "ratelimit_service_should_rate_limit_error", "counter",
         "Calls failed: redis_error, the store or cluster failed; service_error, the request was "
         "refused (no domain, no descriptors).");
  absl::StrAppend(&out, "ratelimit_service_should_rate_limit_error{err_type=\"redis_error\"} ",
                  metrics.grpc.errors.load() + metrics.http.errors.load(), "\n",
                  "ratelimit_service_should_rate_limit_error{err_type=\"service_error\"} ",
                  metrics.grpc.bad_requests.load() + metrics.http.bad_requests.load(), "\n");
  Header(out, "ratelimit_service_total_requests", "counter", "gRPC calls received.");
  absl::StrAppend(&out, "ratelimit_service_total_requests{grpc_method=\"ShouldRateLimit\"} ",
                  metrics.grpc.requests.load(), "\n");
  Header(out, "ratelimit_service_response_time_seconds", "histogram",
         "Time from gRPC request parsed to decision made.");
  metrics.grpc.latency.Render("ratelimit_service_response_time_seconds",
                              "grpc_method=\"ShouldRateLimit\"", out);

  Frontend(out, "floodgate_requests_total", "Checks received.", metrics.grpc.requests,
           metrics.http.requests);
  Frontend(out, "floodgate_over_limit_total", "Checks answered over limit.",
           metrics.grpc.over_limit, metrics.http.over_limit);
  Frontend(out, "floodgate_bad_requests_total", "Requests refused as malformed.",
           metrics.grpc.bad_requests, metrics.http.bad_requests);
  Frontend(out, "floodgate_errors_total", "Requests failed by an internal error.",
           metrics.grpc.errors, metrics.http.errors);
  Frontend(out, "floodgate_shed_total",
           "Connections closed at accept past a connection cap, and checks shed past a queue "
           "bound (decided at once, waiting for no other node).",
           metrics.grpc.shed, metrics.http.shed);
  Frontend(out, "floodgate_unknown_domain_total",
           "Checks of a domain the config does not define (a typo?), answered with no "
           "configured limit.",
           metrics.grpc.unknown_domain, metrics.http.unknown_domain);
  Header(out, "floodgate_shed_checks_total", "counter",
         "Checks shed past a queue bound, per domain the config defines (other names under "
         "_other_).");
  metrics.shed_checks.ForEach([&out](const std::string& domain, uint64_t count) {
    absl::StrAppend(&out, "floodgate_shed_checks_total{domain=\"", EscapeLabel(domain), "\"} ",
                    count, "\n");
  });
  Header(out, "floodgate_decision_latency_seconds", "histogram",
         "Time from request parsed to decision made.");
  metrics.grpc.latency.Render("floodgate_decision_latency_seconds", "frontend=\"grpc\"", out);
  metrics.http.latency.Render("floodgate_decision_latency_seconds", "frontend=\"http\"", out);
  Scalar(out, "floodgate_http_connections", "gauge", "Open HTTP connections.",
         metrics.http_connections.load());

  const StoreStats store = limiter.store()->GetStats();
  Scalar(out, "floodgate_store_keys", "gauge", "Keys with live state.", store.keys);
  Scalar(out, "floodgate_store_bytes", "gauge", "Memory held by the state tables.", store.bytes);
  Scalar(out, "floodgate_store_max_bytes", "gauge",
         "Memory the state tables may hold before the store evicts (0: no cap).",
         metrics.store_max_bytes);
  Scalar(out, "floodgate_max_memory_bytes", "gauge",
         "The process's memory budget, --max-memory (0: no cap).", metrics.max_memory_bytes);
  Scalar(out, "floodgate_store_reclaimed_total", "counter", "States dropped once back to full.",
         store.reclaimed);
  Scalar(out, "floodgate_store_evicted_total", "counter", "States dropped by the memory cap.",
         store.evicted);
  Scalar(out, "floodgate_store_refused_full_total", "counter",
         "New keys not stored because the memory cap was reached and nothing could go.",
         store.refused_full);
  Scalar(out, "floodgate_fast_refusals_total", "counter",
         "Checks refused from the over-limit cache, without the store or the cluster.",
         limiter.GetStats().fast_refusals);

  Scalar(out, "floodgate_config_version", "gauge", "Version of the config in force.",
         config.version);
  Scalar(out, "floodgate_config_reload_success_total", "counter", "Config changes applied.",
         config.reload_success);
  Scalar(out, "floodgate_config_reload_failure_total", "counter", "Config changes refused.",
         config.reload_failure);
  Scalar(out, "floodgate_config_last_reload_successful", "gauge",
         "1 unless the last config change (file reload, admin change, xDS push, cluster sync) was "
         "refused; the previous version then stays in force.",
         config.last_error.empty() ? 1 : 0);
  Scalar(out, "floodgate_statsd_datagrams_total", "counter", "StatsD datagrams sent.",
         metrics.statsd_datagrams.load());
  Scalar(out, "floodgate_statsd_send_errors_total", "counter",
         "StatsD datagrams lost to a send error.", metrics.statsd_send_errors.load());
  RenderProcessPrometheus(out);
  return out;
}

}  // namespace floodgate::service
