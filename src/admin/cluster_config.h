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
// Versions never wrap: a change whose version is more than kMaxVersionLead ahead of this node's
// clock (a peer's bug, or a forged message: honest clocks differ by the changes a node missed)
// or above kMaxConfigVersion is refused and leaves the clock alone. Local versions stop at
// kMaxConfigVersion (an admin change is then refused, never answered 200 and lost); 2^62 changes
// would take 146,000 years at a million a second. An admin change is applied and versioned under
// one lock, so the content pushed is the content the admin sent.
//
// Thread-safe.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
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

  // The largest version taken or accepted, and how far ahead of ours a peer's may be.
  static constexpr uint64_t kMaxConfigVersion = uint64_t{1} << 62;
  static constexpr uint64_t kMaxVersionLead = uint64_t{1} << 32;

  // Applies an admin PUT (ConfigManager::PutDomain) or DELETE (`yaml` nullopt) here and versions
  // it; returns the change to push to every node, or the manager's error (nothing changed).
  absl::StatusOr<std::vector<peer::v1::ConfigChange>> LocalChange(
      const std::string& domain, std::optional<std::string_view> yaml);

  const std::string& self_id() const { return self_id_; }
  std::vector<peer::v1::DomainVersion> Versions() override;
  std::vector<peer::v1::ConfigChange> Get(const std::vector<std::string>& domains) override;
  // Applies changes from peers (source "cluster"): ApplyFrom(changes, "cluster").
  int Apply(const std::vector<peer::v1::ConfigChange>& changes) override;
  // Applies changes newer than this node's, logging each as `config_change` with `source`
  // ("cluster", "etcd"; "admin" for this node's own, which its front end logs) and each refusal
  // as `config_refused`. Returns how many were applied.
  int ApplyFrom(const std::vector<peer::v1::ConfigChange>& changes, std::string_view source);
  // FNV-1a over each served domain's name and YAML, in name order.
  uint64_t Fingerprint() override;

 private:
  peer::v1::DomainVersion VersionOf(const std::string& domain) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string self_id_;
  ConfigManager* const config_;
  limiter::Limiter* const limiter_;
  absl::Mutex mu_;  // serializes changes, so versions and the applied config agree
  absl::flat_hash_map<std::string, peer::v1::DomainVersion> versions_ ABSL_GUARDED_BY(mu_);
  uint64_t clock_ ABSL_GUARDED_BY(mu_) = 0;  // at most kMaxConfigVersion
};

}  // namespace floodgate::admin
