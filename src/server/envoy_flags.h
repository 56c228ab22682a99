#pragma once

// envoyproxy/ratelimit's switches as `serve` flags of ours (--shadow-mode, --xds-server,
// --statsd, --grpc-tls-cert, ...), each with its FLOODGATE_* variable, and the step that gives
// the flags nobody set the values of Envoy's own variables (envoy_env.h), at the lowest
// precedence. docs/config.md, "Envoy's switches". flags.cc calls these while it parses `serve`;
// nothing here is shared between threads.

#include <string>

#include "absl/status/status.h"
#include "src/server/envoy_env.h"
#include "src/server/server.h"

namespace CLI {
class App;
}  // namespace CLI

namespace floodgate::server {

// The text of the Envoy switches' flags as CLI11 collected it; converted and checked by ToEnvoy.
struct EnvoyText {
  explicit EnvoyText(const ServerOptions& defaults)
      : near_limit_ratio(absl::StrCat(defaults.near_limit_ratio)),
        refusal_cache_slots(absl::StrCat(defaults.refusal_cache_slots)),
        limit_header(defaults.envoy.limit_header),
        remaining_header(defaults.envoy.remaining_header),
        reset_header(defaults.envoy.reset_header),
        xds_node_id(defaults.xds_node_id),
        xds_initial_backoff(absl::FormatDuration(defaults.xds_initial_backoff)),
        xds_max_backoff(absl::FormatDuration(defaults.xds_max_backoff)),
        xds_backoff_jitter(absl::StrCat(defaults.xds_backoff_jitter)),
        statsd_flush_interval(absl::FormatDuration(defaults.statsd_flush_interval)) {}

  std::string near_limit_ratio, refusal_cache_slots, limit_header, remaining_header, reset_header,
      xds_server, xds_node_id, xds_node_metadata, xds_initial_backoff, xds_max_backoff,
      xds_backoff_jitter, xds_tls_ca, xds_tls_cert, xds_tls_key, xds_tls_server_name, statsd,
      statsd_flush_interval, grpc_tls_cert, grpc_tls_key, grpc_tls_client_ca, grpc_tls_client_san;
  bool shadow_mode = false, quota_mode = false, response_dynamic_metadata = false,
       limit_headers = false, healthy_with_config = false, xds_tls = false;
};

// Adds the flags of `text` to `serve`.
void AddEnvoyFlags(CLI::App* serve, EnvoyText* text);

// Gives every `serve` flag that neither the command line nor its FLOODGATE_* variable set the
// value of its Envoy variables, if any, as if CLI11 had read it. InvalidArgument naming the
// variable for a value its flag does not take.
absl::Status ApplyEnvoyEnv(CLI::App* serve, const EnvGetter& env);

// Checks `text` and writes it into `options`; InvalidArgument naming the flag otherwise.
absl::Status ToEnvoy(const EnvoyText& text, ServerOptions* options);

}  // namespace floodgate::server
