#pragma once

// The `serve` flags that choose where the limits' state lives: --store (memory, or a Redis URL)
// and the Redis keys' options, each with its FLOODGATE_* variable (docs/backends.md). flags.cc
// calls these while it parses `serve`; envoyproxy/ratelimit's REDIS_* variables reach them
// through envoy_env.cc.

#include <string>

#include "absl/status/status.h"
#include "src/server/server.h"

namespace CLI {
class App;
}  // namespace CLI

namespace floodgate::server {

// The text of the store flags as CLI11 collected it; checked by ToStore.
struct StoreText {
  explicit StoreText(const ServerOptions& defaults)
      : store(defaults.store), key_prefix(defaults.store_key_prefix) {}
  std::string store, key_prefix, envoy_prefix;
  bool envoy_keys = false;
};

// Adds the flags of `text` to `serve`.
void AddStoreFlags(CLI::App* serve, StoreText* text);

// Checks `text` (a Redis URL is parsed in full) and writes it into `options`; InvalidArgument
// naming the flag otherwise, also for a Redis store with cluster mode (--peers, --etcd,
// --peers-dns): Redis nodes share state through Redis, not with each other.
absl::Status ToStore(const StoreText& text, ServerOptions* options);

}  // namespace floodgate::server
