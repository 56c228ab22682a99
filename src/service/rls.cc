#include "src/service/rls.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "floodgate/limit.h"

namespace floodgate::service {
namespace {

namespace rls = ::envoy::service::ratelimit::v3;
constexpr int64_t kNsPerSecond = 1'000'000'000;

uint32_t SaturateU32(uint64_t v) {
  return static_cast<uint32_t>(std::min<uint64_t>(v, std::numeric_limits<uint32_t>::max()));
}

int64_t CeilSeconds(int64_t ns) { return ns <= 0 ? 0 : (ns + kNsPerSecond - 1) / kNsPerSecond; }

// An sf-string (RFC 8941): printable ASCII with '"' and '\' escaped; anything else becomes '_'.
std::string SfString(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (c >= 0x20 && c <= 0x7e) {
      out.push_back(c);
    } else {
      out.push_back('_');
    }
  }
  out.push_back('"');
  return out;
}

std::string PolicyName(const core::RateLimitRule& rule) {
  return rule.name.empty() ? rule.stats_key : rule.name;
}

bool Refused(const limiter::LimitResult& r) { return !r.decision.allowed && !r.shadow; }

// Refused by the limit itself, not by a counter that could not be asked.
bool RefusedByLimit(const limiter::LimitResult& r) { return Refused(r) && !r.decision.unavailable; }

bool AnyRefusedByLimit(const limiter::DescriptorStatus& d) {
  for (const limiter::LimitResult& r : d.limits) {
    if (RefusedByLimit(r)) {
      return true;
    }
  }
  return false;
}

bool IsBucket(const core::RateLimitRule& rule) {
  return rule.spec.algorithm == Algorithm::kTokenBucket ||
         rule.spec.algorithm == Algorithm::kLeakyBucket;
}

// The most constraining limit of the whole response: a refusing one first, else least remaining.
const limiter::LimitResult* Tightest(const limiter::CheckResponse& response) {
  const limiter::LimitResult* best = nullptr;
  for (const limiter::DescriptorStatus& d : response.descriptors) {
    for (const limiter::LimitResult& r : d.limits) {
      if (best == nullptr || (Refused(r) && !Refused(*best)) ||
          (Refused(r) == Refused(*best) && r.decision.remaining < best->decision.remaining)) {
        best = &r;
      }
    }
  }
  return best;
}

}  // namespace

absl::StatusOr<limiter::CheckRequest> FromEnvoy(const rls::RateLimitRequest& request) {
  limiter::CheckRequest out;
  out.domain = request.domain();
  out.hits_addend = request.hits_addend();
  out.descriptors.reserve(request.descriptors_size());
  for (int i = 0; i < request.descriptors_size(); ++i) {
    const auto& d = request.descriptors(i);
    limiter::DescriptorRequest desc;
    desc.entries.reserve(d.entries_size());
    for (const auto& e : d.entries()) {
      desc.entries.push_back(core::DescriptorEntry{e.key(), e.value()});
    }
    if (d.has_limit()) {
      const int unit = d.limit().unit();
      if (unit < 1 || unit > 7) {
        return absl::InvalidArgumentError(
            absl::StrCat("`descriptors[", i,
                         "].limit.unit` must be one of SECOND, MINUTE, HOUR, "
                         "DAY, MONTH, YEAR, WEEK (1 to 7), got ",
                         unit));
      }
      desc.limit =
          limiter::LimitOverride{d.limit().requests_per_unit(), static_cast<core::TimeUnit>(unit)};
    }
    if (d.has_hits_addend()) {
      desc.hits_addend = d.hits_addend().value();
    }
    out.descriptors.push_back(std::move(desc));
  }
  return out;
}

void ToEnvoy(const limiter::CheckResponse& response, rls::RateLimitResponse* out) {
  out->set_overall_code(response.overall == limiter::Code::kOk
                            ? rls::RateLimitResponse::OK
                            : rls::RateLimitResponse::OVER_LIMIT);
  for (const limiter::DescriptorStatus& d : response.descriptors) {
    rls::RateLimitResponse::DescriptorStatus* status = out->add_statuses();
    status->set_code(d.code == limiter::Code::kOk ? rls::RateLimitResponse::OK
                                                  : rls::RateLimitResponse::OVER_LIMIT);
    if (d.primary < 0) {
      if (d.unlimited) {
        status->set_limit_remaining(std::numeric_limits<uint32_t>::max());
      }
      continue;
    }
    const limiter::LimitResult& r = d.limits[d.primary];
    auto* limit = status->mutable_current_limit();
    limit->set_requests_per_unit(SaturateU32(r.rule->requests_per_unit != 0
                                                 ? r.rule->requests_per_unit
                                                 : r.rule->spec.requests_per_period));
    limit->set_unit(static_cast<rls::RateLimitResponse::RateLimit::Unit>(r.rule->unit));
    limit->set_name(r.rule->name);
    status->set_limit_remaining(SaturateU32(r.decision.remaining));
    const int64_t reset = std::max<int64_t>(0, r.decision.reset_after_ns);
    status->mutable_duration_until_reset()->set_seconds(reset / kNsPerSecond);
    status->mutable_duration_until_reset()->set_nanos(static_cast<int32_t>(reset % kNsPerSecond));
  }
  for (const Header& h : RateLimitHeaders(response)) {
    auto* header = out->add_response_headers_to_add();
    header->set_key(h.first);
    header->set_value(h.second);
  }
}

limiter::CheckRequest FromNative(const floodgate::v1::CheckRequest& request) {
  limiter::CheckRequest out;
  out.domain = request.domain();
  out.hits_addend = request.hits();
  for (const auto& d : request.descriptors()) {
    limiter::DescriptorRequest desc;
    for (const auto& e : d.entries()) {
      desc.entries.push_back(core::DescriptorEntry{e.key(), e.value()});
    }
    if (d.has_hits()) {
      desc.hits_addend = d.hits();
    }
    out.descriptors.push_back(std::move(desc));
  }
  return out;
}

void ToNative(const limiter::CheckResponse& response, floodgate::v1::CheckResponse* out) {
  out->set_allowed(response.overall == limiter::Code::kOk);
  out->set_code(std::string(NativeCode(response)));
  for (const limiter::DescriptorStatus& d : response.descriptors) {
    auto* status = out->add_descriptors();
    status->set_code(std::string(NativeCode(d)));
    status->set_unlimited(d.unlimited);
    for (const limiter::LimitResult& r : d.limits) {
      auto* l = status->add_limits();
      l->set_name(PolicyName(*r.rule));
      l->set_algorithm(std::string(AlgorithmName(r.rule->spec.algorithm)));
      l->set_allowed(r.decision.allowed);
      l->set_shadow(r.shadow);
      l->set_limit(r.decision.limit);
      l->set_remaining(r.decision.remaining);
      l->set_window_seconds(static_cast<double>(r.rule->spec.period_ns) / kNsPerSecond);
      l->set_reset_after_seconds(static_cast<double>(r.decision.reset_after_ns) / kNsPerSecond);
      l->set_retry_after_seconds(r.decision.retry_after_ns < 0
                                     ? -1.0
                                     : static_cast<double>(r.decision.retry_after_ns) /
                                           kNsPerSecond);
      l->set_delay_seconds(static_cast<double>(r.decision.delay_ns) / kNsPerSecond);
    }
  }
  out->set_retry_after_seconds(static_cast<double>(RetryAfterSeconds(response)));
  out->set_lease(response.lease);
  out->set_unknown_domain(response.unknown_domain);
}

Refusal RefusalOf(const limiter::CheckResponse& response) {
  if (response.overall == limiter::Code::kOk) {
    return Refusal::kNone;
  }
  bool by_limit = false;
  for (const limiter::DescriptorStatus& d : response.descriptors) {
    for (const limiter::LimitResult& r : d.limits) {
      if (RefusedByLimit(r)) {
        if (r.decision.retry_after_ns == Decision::kNever) {
          return Refusal::kNever;
        }
        by_limit = true;
      }
    }
  }
  return by_limit ? Refusal::kOverLimit : Refusal::kUnavailable;
}

std::string_view NativeCode(const limiter::CheckResponse& response) {
  switch (RefusalOf(response)) {
    case Refusal::kNone:
      return "OK";
    case Refusal::kUnavailable:
      return "UNAVAILABLE";
    default:
      return "OVER_LIMIT";
  }
}

std::string_view NativeCode(const limiter::DescriptorStatus& status) {
  if (status.code == limiter::Code::kOk) {
    return "OK";
  }
  return AnyRefusedByLimit(status) ? "OVER_LIMIT" : "UNAVAILABLE";
}

int64_t RetryAfterSeconds(const limiter::CheckResponse& response) {
  const Refusal refusal = RefusalOf(response);
  if (refusal == Refusal::kNone) {
    return 0;
  }
  if (refusal == Refusal::kNever) {
    return kNeverSeconds;
  }
  int64_t wait_ns = 0;
  for (const limiter::DescriptorStatus& d : response.descriptors) {
    for (const limiter::LimitResult& r : d.limits) {
      if (Refused(r)) {
        wait_ns = std::max(wait_ns, r.decision.retry_after_ns);
      }
    }
  }
  return std::max<int64_t>(1, CeilSeconds(wait_ns));
}

std::vector<Header> RateLimitHeaders(const limiter::CheckResponse& response) {
  std::vector<Header> headers;
  std::string policy;
  for (const limiter::DescriptorStatus& d : response.descriptors) {
    for (const limiter::LimitResult& r : d.limits) {
      if (!policy.empty()) {
        policy.append(", ");
      }
      const core::RateLimitRule& rule = *r.rule;
      // A bucket's quota is its rate (q hits per w seconds); what it lets through at once is
      // its capacity, a parameter of our own (the draft asks for a vendor prefix).
      absl::StrAppend(&policy, SfString(PolicyName(rule)),
                      ";q=", IsBucket(rule) ? rule.spec.requests_per_period : r.decision.limit,
                      ";w=", std::max<int64_t>(1, CeilSeconds(rule.spec.period_ns)));
      if (IsBucket(rule)) {
        absl::StrAppend(&policy, ";floodgate-burst=", rule.spec.Capacity());
      }
    }
  }
  const limiter::LimitResult* tightest = Tightest(response);
  if (tightest == nullptr) {
    return headers;
  }
  headers.emplace_back("RateLimit-Policy", std::move(policy));
  headers.emplace_back("RateLimit", absl::StrCat(SfString(PolicyName(*tightest->rule)),
                                                 ";r=", tightest->decision.remaining, ";t=",
                                                 CeilSeconds(tightest->decision.reset_after_ns)));
  if (const int64_t retry = RetryAfterSeconds(response); retry > 0) {
    headers.emplace_back("Retry-After", absl::StrCat(retry));
  }
  return headers;
}

namespace {

void PutMetadata(const core::MetadataValue& in, google::protobuf::Value* out) {
  using Kind = core::MetadataValue::Kind;
  switch (in.kind) {
    case Kind::kNull:
      out->set_null_value(google::protobuf::NULL_VALUE);
      return;
    case Kind::kBool:
      out->set_bool_value(in.boolean);
      return;
    case Kind::kNumber:
      out->set_number_value(in.number);
      return;
    case Kind::kString:
      out->set_string_value(in.string);
      return;
    case Kind::kList:
      for (const core::MetadataValue& item : in.list) {
        PutMetadata(item, out->mutable_list_value()->add_values());
      }
      out->mutable_list_value();
      return;
    case Kind::kStruct:
      out->mutable_struct_value();
      for (const auto& [name, value] : in.fields) {
        // A key written twice keeps its first value, as a YAML map read by Envoy cannot have
        // two (our loader refuses duplicate keys in mappings it checks, not inside metadata).
        auto& fields = *out->mutable_struct_value()->mutable_fields();
        if (!fields.contains(name)) {
          PutMetadata(value, &fields[name]);
        }
      }
      return;
  }
}

// Merges `src` into `dest` as envoyproxy/ratelimit does: new keys are added, structs under the
// same key merged, any other value already there kept.
void MergeStruct(const google::protobuf::Struct& src, google::protobuf::Struct* dest) {
  for (const auto& [name, value] : src.fields()) {
    auto it = dest->mutable_fields()->find(name);
    if (it == dest->mutable_fields()->end()) {
      (*dest->mutable_fields())[name] = value;
    } else if (it->second.has_struct_value() && value.has_struct_value()) {
      MergeStruct(value.struct_value(), it->second.mutable_struct_value());
    }
  }
}

bool InQuota(const limiter::DescriptorStatus& d, const EnvoyCompat& compat) {
  return compat.global_quota_mode || (!d.limits.empty() && d.limits.front().rule->quota_mode);
}

// envoyproxy/ratelimit's dynamic metadata: the domain, each descriptor's entries ("key=value"),
// its override and hits, the request's hits, and the merged `metadata` of the descriptors that
// passed.
void PutDynamicMetadata(const rls::RateLimitRequest& request,
                        const limiter::CheckResponse& response, google::protobuf::Struct* out) {
  auto& fields = *out->mutable_fields();
  fields["domain"].set_string_value(request.domain());
  auto* descriptors = fields["descriptors"].mutable_list_value();
  for (const auto& d : request.descriptors()) {
    auto& entry_fields = *descriptors->add_values()->mutable_struct_value()->mutable_fields();
    auto* entries = entry_fields["entries"].mutable_list_value();
    for (const auto& e : d.entries()) {
      entries->add_values()->set_string_value(absl::StrCat(e.key(), "=", e.value()));
    }
    if (d.has_limit()) {
      entry_fields["limit"].set_string_value(d.limit().ShortDebugString());
    }
    if (d.has_hits_addend()) {
      entry_fields["hitsAddend"].set_number_value(static_cast<double>(d.hits_addend().value()));
    }
  }
  if (request.hits_addend() != 0) {
    fields["hitsAddend"].set_number_value(static_cast<double>(request.hits_addend()));
  }
  google::protobuf::Struct passed;
  for (const limiter::DescriptorStatus& d : response.descriptors) {
    if (d.code == limiter::Code::kOverLimit || (d.unlimited && d.limits.empty()) ||
        d.limits.empty() || d.limits.front().rule->metadata == nullptr) {
      continue;
    }
    google::protobuf::Value value;
    PutMetadata(*d.limits.front().rule->metadata, &value);
    MergeStruct(value.struct_value(), &passed);
  }
  if (passed.fields_size() > 0) {
    *fields["metadata"].mutable_struct_value() = std::move(passed);
  }
}

// envoyproxy/ratelimit's limit headers: those of the descriptor closest to its limit (a
// refusing one not in quota mode first).
void PutLimitHeaders(const limiter::CheckResponse& response, const EnvoyCompat& compat,
                     rls::RateLimitResponse* out) {
  const rls::RateLimitResponse::DescriptorStatus* closest = nullptr;
  uint32_t least = std::numeric_limits<uint32_t>::max();
  for (int i = 0; i < out->statuses_size(); ++i) {
    const auto& status = out->statuses(i);
    if (status.has_current_limit() && status.limit_remaining() < least) {
      closest = &status;
      least = status.limit_remaining();
    }
    if (status.code() == rls::RateLimitResponse::OVER_LIMIT &&
        !InQuota(response.descriptors[i], compat)) {
      closest = &status;
      least = 0;
    }
  }
  out->clear_response_headers_to_add();
  if (closest == nullptr || !closest->has_current_limit()) {
    return;
  }
  auto add = [out](const std::string& name, std::string value) {
    auto* header = out->add_response_headers_to_add();
    header->set_key(name);
    header->set_value(std::move(value));
  };
  add(compat.limit_header, absl::StrCat(closest->current_limit().requests_per_unit()));
  add(compat.remaining_header, absl::StrCat(closest->limit_remaining()));
  const auto& reset = closest->duration_until_reset();
  add(compat.reset_header,
      absl::StrCat(CeilSeconds(reset.seconds() * kNsPerSecond + reset.nanos())));
}

}  // namespace

bool ToEnvoy(const rls::RateLimitRequest& request, const limiter::CheckResponse& response,
             const EnvoyCompat& compat, rls::RateLimitResponse* out) {
  ToEnvoy(response, out);
  if (compat.limit_headers) {
    PutLimitHeaders(response, compat, out);
  }
  if (compat.response_dynamic_metadata) {
    PutDynamicMetadata(request, response, out->mutable_dynamic_metadata());
  }
  if (compat.global_shadow_mode && out->overall_code() == rls::RateLimitResponse::OVER_LIMIT) {
    out->set_overall_code(rls::RateLimitResponse::OK);
    return true;
  }
  return false;
}

}  // namespace floodgate::service
