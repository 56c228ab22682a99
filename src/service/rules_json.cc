#include "src/service/rules_json.h"

#include <string_view>

#include "absl/strings/str_cat.h"
#include "floodgate/limit.h"
#include "floodgate/routing.h"
#include "src/common/json.h"

namespace floodgate::service {
namespace {

const char* ConsistencyName(Consistency c) { return c == Consistency::kLocal ? "local" : "exact"; }

const char* FailureModeName(FailureMode mode) {
  switch (mode) {
    case FailureMode::kOpen:
      return "open";
    case FailureMode::kClosed:
      return "closed";
    case FailureMode::kLocal:
      break;
  }
  return "local";
}

void AppendRule(const std::string& path, const core::RateLimitRule& rule, std::string& out) {
  out += "{\"descriptor\":";
  common::AppendJsonString(path, out);
  out += ",\"name\":";
  common::AppendJsonString(rule.name, out);
  out += ",\"algorithm\":";
  common::AppendJsonString(AlgorithmName(rule.spec.algorithm), out);
  absl::StrAppend(&out, ",\"limit\":", rule.spec.requests_per_period, ",\"period_seconds\":");
  common::AppendJsonDouble(static_cast<double>(rule.spec.period_ns) / 1e9, out);
  absl::StrAppend(&out, ",\"burst\":", rule.spec.burst,
                  ",\"unlimited\":", rule.unlimited ? "true" : "false",
                  ",\"shadow_mode\":", rule.shadow_mode ? "true" : "false",
                  ",\"quota_mode\":", rule.quota_mode ? "true" : "false", ",\"consistency\":\"",
                  ConsistencyName(rule.consistency), "\",\"failure_mode\":\"",
                  FailureModeName(rule.failure_mode), "\",\"block_duration_seconds\":");
  common::AppendJsonDouble(static_cast<double>(rule.block_duration_ns) / 1e9, out);
  out += ",\"stats_key\":";
  common::AppendJsonString(rule.stats_key, out);
  out += ",\"file\":";
  common::AppendJsonString(rule.file, out);
  absl::StrAppend(&out, ",\"line\":", rule.line, "}");
}

void AppendNode(const core::DescriptorNode& node, const std::string& parent, bool* first,
                std::string& out) {
  std::string path = parent.empty() ? parent : absl::StrCat(parent, ",");
  absl::StrAppend(&path, node.key, node.value.empty() ? "" : "=", node.value);
  for (const core::RateLimitRule& rule : node.limits) {
    out += *first ? "" : ",";
    *first = false;
    AppendRule(path, rule, out);
  }
  for (const core::DescriptorNode& child : node.children) {
    AppendNode(child, path, first, out);
  }
}

}  // namespace

std::string RulesJson(const core::Config& config) {
  std::string out = absl::StrCat("{\"version\":", config.version, ",\"domains\":[");
  bool first_domain = true;
  for (const auto& [name, domain] : config.domains) {
    out += first_domain ? "{\"domain\":" : ",{\"domain\":";
    first_domain = false;
    common::AppendJsonString(name, out);
    out += ",\"rules\":[";
    bool first = true;
    if (domain != nullptr) {
      for (const core::DescriptorNode& node : domain->root.children) {
        AppendNode(node, "", &first, out);
      }
    }
    out += "]}";
  }
  out += "]}";
  return out;
}

}  // namespace floodgate::service
