#pragma once

// The `started` event: one line, once the node serves, saying what it serves and where
// (docs/operations.md, "Logs"). Secrets never appear: not the admin token, not the cluster key,
// not a Redis URL's password.

#include <string>
#include <string_view>

#include "src/core/config.h"
#include "src/server/server.h"

namespace floodgate::server {

// Returns `url` with the password of its user part (scheme://user:password@host) replaced by
// "***"; other text unchanged.
std::string RedactUrl(std::string_view url);

// Returns the number of limits in `config` (every rule of every domain).
size_t CountLimits(const core::Config& config);

// Logs `started` for a server started with `options` and listening on the given ports.
void LogStarted(const ServerOptions& options, Server& server, std::string_view version);

}  // namespace floodgate::server
