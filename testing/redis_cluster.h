#pragma once

// A real Redis Cluster for integration tests: N masters with R replicas each, every node a
// RedisServer (redis_server.h) started with --cluster-enabled yes in its own folder, joined by
// `redis-cli --cluster create`. Start returns once every node says cluster_state:ok. Slot
// migration is offered step by step (the MIGRATING/IMPORTING window is where ASK lives).
//
// Thread-safety: one thread at a time. Waits poll the servers, bounded (no sleeps).

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "testing/redis_server.h"

namespace floodgate::testing {

struct RedisClusterOptions {
  int masters = 3;
  int replicas_per_master = 1;
  // cluster-node-timeout: how soon a dead master is failed over (about twice this).
  int node_timeout_ms = 1000;
  std::chrono::milliseconds timeout = std::chrono::seconds(30);  // for Start's waits
};

class RedisCluster {
 public:
  static absl::StatusOr<std::unique_ptr<RedisCluster>> Start(RedisClusterOptions options = {});

  size_t size() const { return nodes_.size(); }
  RedisServer& node(size_t i) { return *nodes_[i]; }
  const RedisServer& node(size_t i) const { return *nodes_[i]; }

  // Returns the node id (CLUSTER MYID) of node `i`.
  absl::StatusOr<std::string> NodeId(size_t i) const;

  // Returns the index of the node that masters `slot`, as the running nodes' CLUSTER NODES say
  // (the first running node that answers; a master flagged fail is skipped).
  absl::StatusOr<size_t> MasterOf(int slot) const;

  // Waits until every running node says cluster_state:ok and they all name the same master for
  // `slot` (pass -1 to skip that part), within `timeout`.
  absl::Status WaitOk(std::chrono::milliseconds timeout, int slot = -1) const;

  // Slot migration, step by step: `to` IMPORTING from `from`, `from` MIGRATING to `to`;
  // MIGRATE one key; then SETSLOT NODE to `to` on `to`, `from` and the other running nodes.
  absl::Status BeginMigration(int slot, size_t from, size_t to);
  absl::Status MigrateKey(const std::string& key, size_t from, size_t to);
  absl::Status FinishMigration(int slot, size_t from, size_t to);

 private:
  RedisCluster() = default;
  static absl::StatusOr<std::unique_ptr<RedisCluster>> StartOnce(
      const RedisClusterOptions& options);
  // Returns the first running node's index.
  absl::StatusOr<size_t> AnyRunning() const;

  std::vector<std::unique_ptr<RedisServer>> nodes_;
};

}  // namespace floodgate::testing
