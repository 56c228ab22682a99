#pragma once

// GET /v1/rules: every rule of the config in force, flattened, for the web console's Limits
// view (ui/app.js) and for scripts. One object per rule, in file order:
//   {"descriptor":"user=*,path","name":"","algorithm":"token_bucket","limit":10,
//    "period_seconds":60,"burst":20,"unlimited":false,"shadow_mode":false,"quota_mode":false,
//    "consistency":"exact","failure_mode":"local","block_duration_seconds":0,
//    "stats_key":"api.user.path","file":"api.yaml","line":4}
// `descriptor` is the path of descriptor entries that leads to the rule: `key=value`, or `key`
// where the config matches the key alone. `stats_key` joins the rule to its counters in
// /metrics (the `key` label of ratelimit_service_rate_limit_*).

#include <string>

#include "src/core/config.h"

namespace floodgate::service {

// Returns {"version":N,"domains":[{"domain":"api","rules":[...]}]}, domains by name.
std::string RulesJson(const core::Config& config);

}  // namespace floodgate::service
