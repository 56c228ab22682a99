#pragma once

// What the pieces of the Redis client share and callers of redis_client.h need not see: the
// factories of the Sentinel and Cluster clients (redis_sentinel.cc, redis_cluster.cc), which
// NewClient calls for those modes, and the TLS context every Node dials with.
//
// Each factory gets options already checked by NewClient (endpoints non-empty, timeouts and
// counts positive, the TLS files loadable) and returns a Client that owns its io threads and
// Nodes (redis_node.h), with the contract of redis_client.h.

#include <memory>

#include "absl/status/statusor.h"
#include "src/net/tls.h"
#include "src/redis/redis_client.h"

namespace floodgate::redis {

// Mode::kSentinel: the master that options.master_name names, found through options.endpoints.
absl::StatusOr<std::unique_ptr<Client>> NewSentinelClient(const ClientOptions& options);

// Mode::kCluster: slot routing over the cluster that options.endpoints seed.
absl::StatusOr<std::unique_ptr<Client>> NewClusterClient(const ClientOptions& options);

// Returns the dialling-side TLS context for options.tls: verifies the server against
// tls_ca_file, presents tls_cert_file / tls_key_file when given. InvalidArgument naming the
// file (as the URL's query parameter: tls_ca, tls_cert, tls_key) otherwise.
absl::StatusOr<std::unique_ptr<net::TlsContext>> MakeRedisTlsContext(const ClientOptions& options);

}  // namespace floodgate::redis
