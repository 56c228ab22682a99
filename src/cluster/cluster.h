#pragma once

// Cluster mode: a Store that decides every key on its owner node (docs/cluster.md).
//
// ClusterStore sits between the limiter and the local ShardedStore. For each op it picks the
// key's owner among the live members (membership.h): its own keys it applies locally and
// replicates to the next R-1 members; other keys it forwards to their owner in batches and
// returns the owner's decisions. A call to a dead owner is retried on the next one. Limits with
// `consistency: local`, and every limit while this node cannot see a majority or reach an owner,
// are decided by the limit's failure mode (open, closed, or local: limit / N on this node).
//
// PeerService answers the other nodes (Forward, Replicate, Fetch, Ping, config exchange). A
// background thread sends heartbeats and marks silent members dead.
//
// Thread-safety: all public methods are thread-safe.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "floodgate/clock.h"
#include "floodgate/store.h"
#include "src/cluster/membership.h"

namespace floodgate::peer::v1 {
class DomainVersion;
class ConfigChange;
}  // namespace floodgate::peer::v1

namespace floodgate::cluster {

inline constexpr uint32_t kProtocolVersion = 1;

struct ClusterOptions {
  std::string self_id;
  std::vector<Member> members;  // every member, self included (ParsePeers)
  std::string listen_address;   // this node's peer listener, host:port
  int replicas = 2;             // R: owner + R-1 replicas
  absl::Duration heartbeat = absl::Milliseconds(200);
  absl::Duration dead_after = absl::Seconds(1);
  absl::Duration forward_timeout = absl::Milliseconds(500);
  absl::Duration batch_wait = absl::Microseconds(500);  // a batch waits at most this long
  int batch_max = 128;                                  // and goes early when this full
  int max_in_flight = 4;                                // batches in flight per peer
  // Test hook: when false, forwarded checks are sent one per RPC (to measure what batching buys).
  bool batching = true;
  const Clock* clock = SystemClock::Get();
};

struct PeerStats {
  std::string id;
  std::string address;
  bool alive = false;
  bool self = false;
  int64_t last_contact_ns = 0;
  double ownership_share = 0;      // fraction of the hash space it owns in this node's view
  int64_t replication_lag_ns = 0;  // last batch: oldest state queued to acknowledged
  uint64_t forwarded_txns = 0;
  uint64_t forward_batches = 0;
  uint64_t forward_errors = 0;
  uint64_t replicated_states = 0;
};

struct ClusterStats {
  std::string self_id;
  bool quorum = false;
  uint64_t deaths = 0;               // members seen going dead
  uint64_t failovers = 0;            // forwarded checks retried on another owner
  uint64_t failure_mode_ops = 0;     // ops decided by a failure mode (no owner reachable, or shed)
  uint64_t shed_ops = 0;             // of those, ops a front end shed past its in-flight bounds
  uint64_t local_share_ops = 0;      // ops decided locally (consistency: local)
  uint64_t local_share_refills = 0;  // local-consistency checks sent to the owner: share spent
  uint64_t owned_ops = 0;            // ops this node decided as owner
  uint64_t warmup_fetches = 0;       // keys fetched from replicas after a (re)start
  uint64_t config_pushes = 0;        // config changes received from peers and applied
  std::vector<PeerStats> peers;
};

// How config changes travel (implemented by the server's config layer).
class ConfigSync {
 public:
  virtual ~ConfigSync() = default;
  // This node's domain versions.
  virtual std::vector<peer::v1::DomainVersion> Versions() = 0;
  // Returns the given domains' current YAML and versions.
  virtual std::vector<peer::v1::ConfigChange> Get(const std::vector<std::string>& domains) = 0;
  // Applies changes that are newer than what this node has. Returns how many were applied.
  virtual int Apply(const std::vector<peer::v1::ConfigChange>& changes) = 0;
};

// Whether config version `a` wins over `b`: the higher Lamport version, then the higher origin
// id, so that every node resolves concurrent changes the same way.
bool IsNewerConfig(const peer::v1::DomainVersion& a, const peer::v1::DomainVersion& b);

class PeerClient;
class PeerServer;

class ClusterStore final : public Store {
 public:
  // Starts the peer listener and heartbeats. `local` must outlive the store.
  static absl::StatusOr<std::unique_ptr<ClusterStore>> Start(ClusterOptions options,
                                                             LocalStore* local);
  ~ClusterStore() override;

  // Store
  bool Apply(absl::Span<const StoreOp> ops, int64_t now_ns,
             absl::Span<Decision> decisions) override;
  StoreStats GetStats() const override;
  void ReclaimExpired(int64_t now_ns) override;

  // Applies a transaction on keys this node owns (called for forwarded work too): fetches state
  // from replicas for keys it lacks while warming up, decides, and replicates what changed.
  bool ApplyOwned(absl::Span<const StoreOp> ops, int64_t now_ns, absl::Span<Decision> decisions);

  // Sets how config changes are exchanged; call before traffic. May be null.
  void SetConfigSync(ConfigSync* sync);
  // Sends a local admin change to every live member now (others catch up through heartbeats).
  void BroadcastConfig(const std::vector<peer::v1::ConfigChange>& changes);

  ClusterStats GetClusterStats() const;
  const Membership& membership() const { return *membership_; }
  int peer_port() const { return peer_port_; }
  // Stops heartbeats and the listener; later checks are decided locally by failure mode.
  void Shutdown();

 private:
  friend class PeerServer;
  ClusterStore(ClusterOptions options, LocalStore* local);

  // consistency: local: decides from this node's share and reports the hits to the owners;
  // once the share is spent, asks the owner (exact against every node's reported hits).
  bool ApplyLocalConsistency(absl::Span<const StoreOp> ops, int64_t now_ns,
                             absl::Span<Decision> decisions);
  // Decides ops that could not be sent to an owner, by each op's failure mode.
  void ApplyFailureMode(absl::Span<const StoreOp> ops, int64_t now_ns,
                        absl::Span<Decision> decisions, bool local_consistency);
  // Forwards a transaction to `owner`, retrying on the next owner when it is found dead.
  bool ForwardOrFail(int owner, absl::Span<const StoreOp> ops, int64_t now_ns,
                     absl::Span<Decision> decisions);
  // Apply for ops that all have the same route.
  bool ApplyRouted(int target, absl::Span<const StoreOp> ops, int64_t now_ns,
                   absl::Span<Decision> decisions);
  int Route(const StoreOp& op, uint64_t mask) const;
  void WarmUp(absl::Span<const StoreOp> ops, int64_t now_ns, uint64_t mask);
  void HeartbeatLoop();
  void PingAll();

  const ClusterOptions options_;
  LocalStore* const local_;
  std::unique_ptr<Membership> membership_;
  std::vector<std::unique_ptr<PeerClient>> clients_;  // by member index; null for self
  std::unique_ptr<PeerServer> server_;
  int peer_port_ = 0;
  const int64_t started_at_ns_;

  std::atomic<ConfigSync*> config_sync_{nullptr};
  // Whether this node joined a running cluster and so fetches state it lacks (see WarmUp); on
  // until the first heartbeat round tells.
  std::atomic<bool> warming_up_{true};
  std::atomic<bool> first_round_done_{false};
  absl::Notification quorum_seen_;

  absl::Mutex stop_mu_;
  bool stopping_ ABSL_GUARDED_BY(stop_mu_) = false;
  std::thread heartbeat_;

  std::atomic<uint64_t> failovers_{0};
  std::atomic<uint64_t> failure_mode_ops_{0};
  std::atomic<uint64_t> shed_ops_{0};
  std::atomic<uint64_t> local_share_ops_{0};
  std::atomic<uint64_t> local_share_refills_{0};
  std::atomic<uint64_t> owned_ops_{0};
  std::atomic<uint64_t> warmup_fetches_{0};
  std::atomic<uint64_t> config_pushes_{0};
};

}  // namespace floodgate::cluster
