// TEMPORARY: stands in for redis_sentinel.cc and redis_cluster.cc until they are merged; the
// merger deletes this file (and its line in CMakeLists.txt).

#include "src/redis/redis_client_internal.h"

namespace floodgate::redis {

absl::StatusOr<std::unique_ptr<Client>> NewSentinelClient(const ClientOptions&) {
  return absl::UnimplementedError("redis-sentinel:// is not implemented yet");
}

absl::StatusOr<std::unique_ptr<Client>> NewClusterClient(const ClientOptions&) {
  return absl::UnimplementedError("redis-cluster:// is not implemented yet");
}

}  // namespace floodgate::redis
