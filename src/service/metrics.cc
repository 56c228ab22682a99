#include "src/service/metrics.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"

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

}  // namespace

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

  // Per-rule counters, as envoyproxy/ratelimit names them
  // (ratelimit.service.rate_limit.<domain>.<descriptor>.<stat>).
  struct Rule {
    std::string labels;
    uint64_t values[5];
  };
  std::vector<Rule> rules;
  limiter.ForEachRuleCounters([&](const std::string& key, const limiter::RuleCounters& c) {
    const size_t dot = key.find('.');
    Rule r;
    r.labels = absl::StrCat("domain=\"", EscapeLabel(key.substr(0, dot)), "\",key=\"",
                            EscapeLabel(key), "\"");
    r.values[0] = c.total_hits.load(std::memory_order_relaxed);
    r.values[1] = c.over_limit.load(std::memory_order_relaxed);
    r.values[2] = c.near_limit.load(std::memory_order_relaxed);
    r.values[3] = c.within_limit.load(std::memory_order_relaxed);
    r.values[4] = c.shadow_mode.load(std::memory_order_relaxed);
    rules.push_back(std::move(r));
  });
  static constexpr const char* kStats[5] = {"total_hits", "over_limit", "near_limit",
                                            "within_limit", "shadow_mode"};
  for (int s = 0; s < 5; ++s) {
    const std::string name = absl::StrCat("ratelimit_service_rate_limit_", kStats[s]);
    Header(out, name, "counter", absl::StrCat("Hits per rule: ", kStats[s], "."));
    for (const Rule& r : rules) {
      absl::StrAppend(&out, name, "{", r.labels, "} ", r.values[s], "\n");
    }
  }

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
  Header(out, "floodgate_decision_latency_seconds", "histogram",
         "Time from request parsed to decision made.");
  metrics.grpc.latency.Render("floodgate_decision_latency_seconds", "frontend=\"grpc\"", out);
  metrics.http.latency.Render("floodgate_decision_latency_seconds", "frontend=\"http\"", out);
  Scalar(out, "floodgate_http_connections", "gauge", "Open HTTP connections.",
         metrics.http_connections.load());

  const StoreStats store = limiter.store()->GetStats();
  Scalar(out, "floodgate_store_keys", "gauge", "Keys with live state.", store.keys);
  Scalar(out, "floodgate_store_bytes", "gauge", "Memory held by the state tables.", store.bytes);
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
  return out;
}

}  // namespace floodgate::service
