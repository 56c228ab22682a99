#include "src/server/store_flags.h"

#include <CLI/CLI.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "floodgate/status_macros.h"
#include "src/redis/redis_client.h"
#include "src/server/flag_helpers.h"

namespace floodgate::server {

void AddStoreFlags(CLI::App* serve, StoreText* text) {
  AddFlag(serve, "--store", &text->store, "memory|URL",
          "Where the limits' state lives: memory (this process; with --peers, the cluster), or "
          "Redis: redis://[USER:PASS@]HOST:PORT[/DB], rediss://... (TLS), "
          "redis-sentinel://HOST:PORT[,HOST:PORT...]/MASTER[/DB], "
          "redis-cluster://HOST:PORT[,HOST:PORT...] (docs/backends.md).");
  AddFlag(serve, "--store-key-prefix", &text->key_prefix, "TEXT",
          "With a Redis store: what every key of ours starts with.");
  AddSwitch(serve, "--store-envoy-keys", &text->envoy_keys,
            "With a Redis store: fixed windows are counted under envoyproxy/ratelimit's keys, so "
            "a deployment switches to Floodgate on the same Redis without resetting counters.");
  AddFlag(serve, "--store-envoy-prefix", &text->envoy_prefix, "TEXT",
          "With --store-envoy-keys: envoyproxy/ratelimit's CACHE_KEY_PREFIX.");
}

absl::Status ToStore(const StoreText& text, ServerOptions* options) {
  options->store = text.store;
  options->store_key_prefix = text.key_prefix;
  options->store_envoy_keys = text.envoy_keys;
  options->store_envoy_prefix = text.envoy_prefix;
  if (text.store == "memory") {
    if (text.envoy_keys || !text.envoy_prefix.empty()) {
      return absl::InvalidArgumentError(
          "--store-envoy-keys and --store-envoy-prefix need a Redis store (--store redis://...)");
    }
    return absl::OkStatus();
  }
  if (absl::StatusOr<redis::ClientOptions> url = redis::ParseStoreUrl(text.store); !url.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--store must be memory or a Redis URL (redis://, rediss://, "
                     "redis-sentinel://, redis-cluster://): ",
                     url.status().message()));
  }
  if (!text.envoy_keys && !text.envoy_prefix.empty()) {
    return absl::InvalidArgumentError("--store-envoy-prefix needs --store-envoy-keys");
  }
  if (options->cluster()) {
    return absl::InvalidArgumentError(
        "--store with Redis and cluster mode (--peers, --etcd, --peers-dns) do not go together: "
        "nodes on one Redis share their limits through it and need no peers");
  }
  return absl::OkStatus();
}

}  // namespace floodgate::server
