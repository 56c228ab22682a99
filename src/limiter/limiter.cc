#include "src/limiter/limiter.h"

#include <algorithm>
#include <cstring>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "floodgate/status_macros.h"

namespace floodgate::limiter {

struct Limiter::Snapshot {
  std::shared_ptr<const core::Config> config;
  // Counters of every rule without detailed_metric, resolved once per config swap so the hot
  // path does no string hashing for stats.
  absl::flat_hash_map<const core::RateLimitRule*, RuleCounters*> counters;
};

// One store op's bookkeeping: which descriptor and rule it came from.
struct Limiter::Planned {
  size_t descriptor = 0;
  const core::RateLimitRule* rule = nullptr;
  RuleCounters* counters = nullptr;
  uint64_t hits = 0;
};

namespace {

void AppendField(std::string& out, std::string_view field) {
  // Length-prefixed, so no choice of key or value can make two different descriptors collide.
  uint32_t len = static_cast<uint32_t>(field.size());
  out.append(reinterpret_cast<const char*>(&len), sizeof(len));
  out.append(field);
}

template <typename Fn>
void ForEachRule(const core::DescriptorNode& node, Fn&& fn) {
  for (const core::RateLimitRule& rule : node.limits) {
    fn(rule);
  }
  for (const core::DescriptorNode& child : node.children) {
    ForEachRule(child, fn);
  }
}

}  // namespace

std::string StateKey(std::string_view domain, absl::Span<const core::DescriptorEntry> entries,
                     const core::RateLimitRule& rule) {
  std::string key;
  key.reserve(domain.size() + 16 + entries.size() * 24);
  AppendField(key, domain);
  for (const core::DescriptorEntry& entry : entries) {
    AppendField(key, entry.key);
    AppendField(key, entry.value);
  }
  // Algorithm, period and slot, but not the count: lowering 100/min to 50/min keeps the usage.
  key.push_back(static_cast<char>(rule.spec.algorithm));
  key.append(reinterpret_cast<const char*>(&rule.spec.period_ns), sizeof(rule.spec.period_ns));
  key.append(reinterpret_cast<const char*>(&rule.slot), sizeof(rule.slot));
  return key;
}

Limiter::Limiter(Store* store, KeyHasher hasher, std::shared_ptr<const core::Config> config,
                 LimiterOptions options)
    : store_(store), hasher_(hasher), options_(options) {
  SetConfig(std::move(config));
}

RuleCounters* Limiter::CountersFor(const std::string& stats_key) {
  absl::MutexLock lock(&counters_mu_);
  return &counters_[stats_key];
}

void Limiter::SetConfig(std::shared_ptr<const core::Config> config) {
  if (config == nullptr) {
    config = std::make_shared<const core::Config>();
  }
  auto snap = std::make_shared<Snapshot>();
  snap->config = config;
  for (const auto& [name, domain] : config->domains) {
    ForEachRule(domain->root, [&](const core::RateLimitRule& rule) {
      if (!rule.detailed_metric) {
        snap->counters[&rule] = CountersFor(rule.stats_key);
      }
    });
  }
  absl::MutexLock lock(&snapshot_mu_);
  snapshot_ = std::move(snap);
}

std::shared_ptr<const Limiter::Snapshot> Limiter::snapshot() const {
  absl::MutexLock lock(&snapshot_mu_);
  return snapshot_;
}

std::shared_ptr<const core::Config> Limiter::config() const { return snapshot()->config; }

RuleCounters* Limiter::CountersForRule(const Snapshot& snap, const core::RateLimitRule* rule,
                                       const DescriptorRequest& desc) {
  if (!rule->detailed_metric) {
    auto it = snap.counters.find(rule);
    if (it != snap.counters.end()) {
      return it->second;
    }
    return CountersFor(rule->stats_key);  // override rules
  }
  // detailed_metric: Envoy appends the request's values to the stats key.
  std::string key = rule->stats_key;
  for (const core::DescriptorEntry& entry : desc.entries) {
    absl::StrAppend(&key, "|", entry.key, "_", entry.value);
  }
  return CountersFor(key);
}

absl::Status Limiter::Plan(const CheckRequest& request, const Snapshot& snap,
                           CheckResponse& response, std::vector<Planned>& planned,
                           std::vector<StoreOp>& ops) const {
  if (request.domain.empty()) {
    return absl::InvalidArgumentError("rate limit domain must not be empty");
  }
  if (request.descriptors.empty()) {
    return absl::InvalidArgumentError("rate limit descriptor list must not be empty");
  }
  for (size_t i = 0; i < request.descriptors.size(); ++i) {
    const DescriptorRequest& desc = request.descriptors[i];
    if (desc.entries.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("descriptor ", i, " has no entries"));
    }
    for (const core::DescriptorEntry& entry : desc.entries) {
      if (entry.key.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("descriptor ", i, " has an entry with no key"));
      }
    }
  }
  response.descriptors.resize(request.descriptors.size());
  const core::DomainConfig* domain = snap.config->FindDomain(request.domain);

  // Match every descriptor first: `replaces` works across the whole request.
  std::vector<const core::DescriptorNode*> matched(request.descriptors.size(), nullptr);
  absl::flat_hash_set<std::string_view> replaced;
  for (size_t i = 0; i < request.descriptors.size(); ++i) {
    const DescriptorRequest& desc = request.descriptors[i];
    if (desc.limit.has_value()) {
      continue;  // the caller's override wins over the config
    }
    if (domain == nullptr) {
      continue;
    }
    matched[i] = domain->Match(desc.entries);
    if (matched[i] == nullptr) {
      continue;
    }
    for (const core::RateLimitRule& rule : matched[i]->limits) {
      for (const std::string& name : rule.replaces) {
        replaced.insert(name);
      }
    }
  }

  const uint64_t request_hits = request.hits_addend == 0 ? 1 : request.hits_addend;
  for (size_t i = 0; i < request.descriptors.size(); ++i) {
    const DescriptorRequest& desc = request.descriptors[i];
    const uint64_t hits = desc.hits_addend.has_value() ? *desc.hits_addend : request_hits;
    std::vector<const core::RateLimitRule*> rules;
    if (desc.limit.has_value()) {
      auto rule = std::make_unique<core::RateLimitRule>();
      rule->spec.algorithm = Algorithm::kFixedWindow;
      rule->spec.requests_per_period = desc.limit->requests_per_unit;
      rule->spec.period_ns = core::TimeUnitNs(desc.limit->unit);
      rule->unit = desc.limit->unit;
      rule->requests_per_unit = desc.limit->requests_per_unit;
      rule->stats_key = request.domain;
      for (const core::DescriptorEntry& entry : desc.entries) {
        absl::StrAppend(&rule->stats_key, ".", entry.key, "_", entry.value);
      }
      FG_RETURN_IF_ERROR(ValidateLimitSpec(rule->spec));
      rules.push_back(rule.get());
      response.override_rules.push_back(std::move(rule));
    } else if (matched[i] != nullptr) {
      for (const core::RateLimitRule& rule : matched[i]->limits) {
        if (!rule.name.empty() && replaced.contains(rule.name)) {
          continue;
        }
        if (rule.unlimited) {
          response.descriptors[i].unlimited = true;
          continue;
        }
        rules.push_back(&rule);
      }
    }
    for (const core::RateLimitRule* rule : rules) {
      if (ops.size() >= options_.max_limits_per_request) {
        return absl::InvalidArgumentError(
            absl::StrCat("request has more than ", options_.max_limits_per_request, " limits"));
      }
      StoreOp op;
      op.key_hash = hasher_.Hash(StateKey(request.domain, desc.entries, *rule));
      op.spec = rule->spec;
      op.hits = hits;
      op.shadow = rule->shadow_mode;
      ops.push_back(op);
      planned.push_back(Planned{i, rule, nullptr, hits});
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<CheckResponse> Limiter::Check(const CheckRequest& request) {
  std::shared_ptr<const Snapshot> snap = snapshot();
  CheckResponse response;
  response.config = snap->config;
  std::vector<Planned> planned;
  std::vector<StoreOp> ops;
  FG_RETURN_IF_ERROR(Plan(request, *snap, response, planned, ops));
  checks_.fetch_add(1, std::memory_order_relaxed);
  if (ops.empty()) {
    return response;
  }

  std::vector<Decision> decisions(ops.size());
  const bool committed = store_->Apply(ops, options_.clock->NowNs(), absl::MakeSpan(decisions));

  for (size_t k = 0; k < ops.size(); ++k) {
    const Planned& p = planned[k];
    DescriptorStatus& status = response.descriptors[p.descriptor];
    LimitResult result;
    result.rule = p.rule;
    result.decision = decisions[k];
    if (!result.decision.allowed && p.rule->shadow_mode) {
      result.shadow = true;
    } else if (!result.decision.allowed) {
      status.code = Code::kOverLimit;
      response.overall = Code::kOverLimit;
    }
    status.limits.push_back(result);

    RuleCounters* counters = CountersForRule(*snap, p.rule, request.descriptors[p.descriptor]);
    counters->total_hits.fetch_add(p.hits, std::memory_order_relaxed);
    if (!result.decision.allowed) {
      counters->over_limit.fetch_add(p.hits, std::memory_order_relaxed);
      if (result.shadow) {
        counters->shadow_mode.fetch_add(p.hits, std::memory_order_relaxed);
      }
    } else if (committed) {
      counters->within_limit.fetch_add(p.hits, std::memory_order_relaxed);
      const uint64_t limit = result.decision.limit;
      const uint64_t used = limit - std::min(limit, result.decision.remaining);
      if (limit > 0 && static_cast<double>(used) > options_.near_limit_ratio * limit) {
        counters->near_limit.fetch_add(p.hits, std::memory_order_relaxed);
      }
    }
  }
  if (response.overall == Code::kOverLimit) {
    over_limit_checks_.fetch_add(1, std::memory_order_relaxed);
  }
  for (DescriptorStatus& status : response.descriptors) {
    for (size_t k = 0; k < status.limits.size(); ++k) {
      const LimitResult& r = status.limits[k];
      if (status.primary < 0) {
        status.primary = static_cast<int>(k);
        continue;
      }
      const LimitResult& best = status.limits[status.primary];
      const bool refused = !r.decision.allowed && !r.shadow;
      const bool best_refused = !best.decision.allowed && !best.shadow;
      if (best_refused) {
        continue;
      }
      if (refused || r.decision.remaining < best.decision.remaining) {
        status.primary = static_cast<int>(k);
      }
    }
  }
  return response;
}

absl::Status Limiter::Release(const CheckRequest& request) {
  std::shared_ptr<const Snapshot> snap = snapshot();
  CheckResponse response;
  std::vector<Planned> planned;
  std::vector<StoreOp> ops;
  FG_RETURN_IF_ERROR(Plan(request, *snap, response, planned, ops));
  std::vector<StoreOp> releases;
  for (StoreOp& op : ops) {
    if (op.spec.algorithm == Algorithm::kConcurrency) {
      op.kind = StoreOp::Kind::kRelease;
      releases.push_back(op);
    }
  }
  if (releases.empty()) {
    return absl::OkStatus();
  }
  std::vector<Decision> decisions(releases.size());
  store_->Apply(releases, options_.clock->NowNs(), absl::MakeSpan(decisions));
  return absl::OkStatus();
}

void Limiter::ForEachRuleCounters(
    const std::function<void(const std::string&, const RuleCounters&)>& fn) const {
  absl::MutexLock lock(&counters_mu_);
  for (const auto& [key, counters] : counters_) {
    fn(key, counters);
  }
}

LimiterStats Limiter::GetStats() const {
  LimiterStats stats;
  stats.checks = checks_.load(std::memory_order_relaxed);
  stats.over_limit_checks = over_limit_checks_.load(std::memory_order_relaxed);
  stats.config_version = config()->version;
  return stats;
}

}  // namespace floodgate::limiter
