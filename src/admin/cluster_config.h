#pragma once

// Spreads admin config changes over the cluster (docs/cluster.md, "Config everywhere").
//
// Every domain has a version (a Lamport counter, and the id of the node that made the change to
// break ties); a change with a higher (version, origin) wins on every node, so two concurrent
// changes resolve the same way everywhere. An admin PUT/DELETE on any node takes the next version
// and is pushed to every live node at once; heartbeats carry each node's versions, so a node that
// was down or missed a push pulls what is newer when it is back. Domains read from files at start
// have version 0. Deleted domains are remembered (a tombstone) so a delete also spreads.
//
// Thread-safe.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "floodgate/peer/v1/peer.pb.h"
#include "src/admin/config_manager.h"
#include "src/cluster/gossip.h"
#include "src/limiter/limiter.h"

namespace floodgate::admin {

class ClusterConfigSync final : public cluster::ConfigSync {
 public:
  // Pointers must outlive this object.
  ClusterConfigSync(std::string self_id, ConfigManager* config, limiter::Limiter* limiter)
      : self_id_(std::move(self_id)), config_(config), limiter_(limiter) {}

  // An admin change to `domain` was applied here: versions it and returns the change to push.
  std::vector<peer::v1::ConfigChange> LocalChange(const std::string& domain);

  std::vector<peer::v1::DomainVersion> Versions() override;
  std::vector<peer::v1::ConfigChange> Get(const std::vector<std::string>& domains) override;
  int Apply(const std::vector<peer::v1::ConfigChange>& changes) override;

 private:
  peer::v1::DomainVersion VersionOf(const std::string& domain) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string self_id_;
  ConfigManager* const config_;
  limiter::Limiter* const limiter_;
  absl::Mutex mu_;  // serializes changes, so versions and the applied config agree
  absl::flat_hash_map<std::string, peer::v1::DomainVersion> versions_ ABSL_GUARDED_BY(mu_);
  uint64_t clock_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace floodgate::admin
