#pragma once

// Turns the RateLimitConfig resources a Rate Limit Config xDS server pushes
// (proto/ratelimit/config/ratelimit/v3/rls_conf.proto) into the YAML our one loader reads
// (core::ParseDomainConfig, docs/config.md "Format"), so that a pushed config meets exactly the
// checks and errors a file does. Fields Floodgate does not support (quota_mode, metadata) are
// written out as given, and the loader refuses them by name. Pure functions; safe from any
// thread.

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "envoy/service/discovery/v3/discovery.pb.h"
#include "ratelimit/config/ratelimit/v3/rls_conf.pb.h"
#include "src/admin/config_source.h"

namespace floodgate::admin {

// The type URL of the resources (as envoyproxy/ratelimit subscribes to them).
inline constexpr std::string_view kRateLimitConfigTypeUrl =
    "type.googleapis.com/ratelimit.config.ratelimit.v3.RateLimitConfig";

// Returns `text` as a YAML double-quoted scalar that reads back as exactly `text`: quotes,
// backslashes, control characters and the characters YAML reads as line breaks or refuses
// (U+0085, U+2028, U+2029, U+FEFF, ...) are escaped; other UTF-8 is kept as it is.
std::string YamlQuote(std::string_view text);

// Returns one domain's config file text for `config`.
std::string RateLimitConfigToYaml(const ratelimit::config::ratelimit::v3::RateLimitConfig& config);

// Returns the name a pushed resource goes by in errors and in DomainConfig::file:
// "xds:<resource name>", or "xds:<domain>" when the resource has no name.
std::string XdsResourceLabel(const ratelimit::config::ratelimit::v3::RateLimitConfig& config);

// Decodes every resource of `response` and converts it (one ConfigFile each, path =
// XdsResourceLabel). InvalidArgument when a resource is of another type or does not decode.
absl::StatusOr<std::vector<ConfigFile>> XdsResponseToConfigFiles(
    const envoy::service::discovery::v3::DiscoveryResponse& response);

}  // namespace floodgate::admin
