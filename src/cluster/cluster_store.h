#pragma once

// Cluster mode: a Store that decides every key on its owner node (docs/cluster.md).
//
// ClusterStore sits between the limiter and the local ShardedStore. For each op it picks the
// key's owner among the live members (membership.h): its own keys it applies locally and
// replicates to the next R-1 members; other keys it forwards to their owner and returns the
// owner's decisions. A call to a dead owner is retried on the next one. Limits with
// `consistency: local`, and every limit while this node cannot see a majority or reach an owner,
// are decided by the limit's failure mode (open, closed, or local: limit / N on this node).
//
// The network is behind PeerTransport (peer_transport.h): Start() uses our own TCP transport
// (tcp_peer_transport.h), tests an in-process fake. ClusterStore answers the other members as
// the transport's PeerHandler; Gossip (gossip.h) sends heartbeats and spreads config.
//
// Thread-safety: all public methods are thread-safe.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "floodgate/clock.h"
#include "floodgate/store.h"
#include "src/cluster/gossip.h"
#include "src/cluster/membership.h"
#include "src/cluster/peer_transport.h"
#include "src/core/top_keys.h"
#include "src/net/tls.h"

namespace floodgate::cluster {

struct ClusterOptions {
  std::string self_id;
  // Every member, self included (ParsePeers); with discovery, this node alone at first.
  std::vector<Member> members;
  // Members come from discovery (SetMembers) rather than a fixed --peers list: peer
  // connections from nodes this node has not heard of yet are accepted when they prove the
  // cluster key.
  bool dynamic_members = false;
  std::string listen_address;  // this node's peer listener, host:port (port 0: a free one)
  int replicas = 2;            // R: owner + R-1 replicas
  absl::Duration heartbeat = absl::Milliseconds(200);
  absl::Duration dead_after = absl::Seconds(1);
  absl::Duration forward_timeout = absl::Milliseconds(500);
  // How long replication and consistency: local reports gather before they leave for a member
  // (--peer-batch-delay; TcpPeerTransportOptions::background_delay). Forwards never wait.
  absl::Duration background_delay = absl::Microseconds(500);
  // The secret every peer connection proves (--cluster-key); "" only with --insecure-peers.
  std::string cluster_key;
  // Peer TLS (--peer-tls-*): this member's certificate and key and the members' CA; unset: plain
  // (tcp_peer_transport.h).
  std::optional<net::TlsCredentials> peer_tls;
  // Test hook: when false, no heartbeat thread runs and Start does not wait for a majority; the
  // test runs rounds with HeartbeatRound().
  bool heartbeat_thread = true;
  const Clock* clock = SystemClock::Get();
};

// One member as this node sees it: the link's counters (peer_transport.h) and its liveness.
struct PeerStats : PeerLinkStats {
  std::string id;
  std::string address;
  bool alive = false;
  bool self = false;
  int64_t last_contact_ns = 0;
  double ownership_share = 0;   // fraction of the hash space it owns in this node's view
  bool config_differs = false;  // it has served another config for several heartbeats
};

// Where the members come from, as the discovery source says (filled in by the server).
struct DiscoveryInfo {
  std::string source;  // "static" (--peers), "etcd" or "dns"
  bool connected = true;
  std::string last_error;
  uint64_t errors = 0;
  uint64_t reconnects = 0;
  uint64_t updates = 0;
  int64_t revision = 0;
};

// What a graceful leave did (ClusterStore::Leave).
struct LeaveResult {
  uint64_t states = 0;  // states handed over (acknowledged by their new owners)
  uint64_t bytes = 0;   // their size on the wire
  absl::Duration took;
};

struct ClusterStats {
  std::string self_id;
  bool quorum = false;
  int members = 0;                  // current members (this node included unless leaving)
  uint64_t joins = 0;               // members that joined since start
  uint64_t leaves = 0;              // members that left (deregistered or removed) since start
  bool leaving = false;             // this node is leaving (graceful leave under way)
  uint64_t handed_over_states = 0;  // states handed to new owners by this node's leave
  uint64_t handed_over_bytes = 0;
  uint64_t adopted_states = 0;  // states other members handed to this node when they left
  DiscoveryInfo discovery;
  uint64_t config_fingerprint = 0;   // this node's (ConfigSync::Fingerprint)
  int config_mismatched = 0;         // members flagged for serving another config
  uint64_t deaths = 0;               // members seen going dead
  uint64_t failovers = 0;            // forwarded checks retried on another owner
  uint64_t failure_mode_ops = 0;     // ops decided by a failure mode (no owner reachable, or shed)
  uint64_t shed_ops = 0;             // of those, ops a front end shed past its in-flight bounds
  uint64_t local_share_ops = 0;      // ops decided locally (consistency: local)
  uint64_t local_share_refills = 0;  // local-consistency checks sent to the owner: share spent
  uint64_t owned_ops = 0;            // ops this node decided as owner
  uint64_t warmup_fetches = 0;       // keys fetched from replicas after a (re)start
  uint64_t config_pushes = 0;        // config changes received from peers and applied
  PeerAuthStats auth_failures;       // peer handshakes refused, by reason
  std::vector<PeerStats> peers;
};

// The descriptors refused most over the last minute, cluster-wide (ClusterStore::TopRefused).
struct ClusterTopRefused {
  std::vector<std::string> nodes;    // members whose refusals `top` counts, this node first
  std::vector<std::string> missing;  // members whose refusals it lacks: dead, or no answer in time
  core::TopSnapshot top;             // every answer summed per key (counts and errors alike)
};

class ClusterStore final : public Store, private PeerHandler {
 public:
  // Starts the peer listener (tcp_peer_transport.h) and heartbeats. `local` must outlive the store.
  static absl::StatusOr<std::unique_ptr<ClusterStore>> Start(ClusterOptions options,
                                                             LocalStore* local);
  // Same, over `transport` (built for this node's index in the sorted members).
  static absl::StatusOr<std::unique_ptr<ClusterStore>> Start(
      ClusterOptions options, LocalStore* local, std::unique_ptr<PeerTransport> transport);
  ~ClusterStore() override;

  // Store: Apply decides each op on its key's owner (or by failure mode); GetStats and
  // ReclaimExpired are about this node's own tables. ApplyAsync routes alike and decides what
  // this node can at once (its own keys, local shares, failure modes); a transaction that needs
  // another owner is sent with PeerTransport::ForwardAsync and resumed on `loop` when it answers
  // (or fails over, by the same rules as Apply). MaySuspend is true.
  bool Apply(absl::Span<const StoreOp> ops, int64_t now_ns,
             absl::Span<Decision> decisions) override;
  void ApplyAsync(absl::Span<const StoreOp> ops, int64_t now_ns, absl::Span<Decision> decisions,
                  boost::asio::io_context& loop, ApplyDone done) override;
  bool MaySuspend() const override { return true; }
  StoreStats GetStats() const override;
  void ReclaimExpired(int64_t now_ns) override;

  // Makes `members` the member set (discovery's latest list; this node stays a member): joins
  // and leaves are logged and counted, and the transport follows. Returns what changed.
  MembershipChange SetMembers(const std::vector<Member>& members);
  // Graceful leave: this node stops owning keys (it forwards every check to the members that
  // stay), then hands over what its replicas may lack (the replication queued, acknowledged),
  // waiting at most `timeout`. With --replicas 1 (no replicas) it also sends every state it
  // owned to the key's next owner (PeerTransport::HandOver), within the same timeout. The
  // caller then deregisters it and shuts it down.
  LeaveResult Leave(absl::Duration timeout);
  // How /v1/cluster and metrics learn the discovery source's state, and how to ask it to look
  // again when a member dies (DNS re-resolves at once). Either may be null.
  void SetDiscovery(std::function<DiscoveryInfo()> info, std::function<void()> refresh);

  // Sets how config changes are exchanged; call before traffic. May be null.
  void SetConfigSync(ConfigSync* sync);
  // Sends a local admin change to every live member now (others catch up through heartbeats).
  void BroadcastConfig(const std::vector<peer::v1::ConfigChange>& changes);
  // Runs one heartbeat round now (see Gossip::RunRound); for tests without the thread.
  void HeartbeatRound();

  // Sets where this node's top refused keys come from (service::TopRefused, wired by the
  // server); call before serving. Unset: this node answers none.
  void SetTopRefusedSource(std::function<core::TopSnapshot()> source);
  // Asks every live member at once for its top refused keys, waits at most `timeout` for them,
  // and returns this node's and theirs merged, the `limit` largest (ClusterTopRefused).
  ClusterTopRefused TopRefused(absl::Duration timeout, size_t limit);

  ClusterStats GetClusterStats() const;
  const Membership& membership() const { return *membership_; }
  // The port the peer listener is bound to (the one picked when asked for port 0).
  int peer_port() const { return transport_->port(); }
  // Stops heartbeats and the listener; later checks are decided locally by failure mode.
  void Shutdown();

 private:
  ClusterStore(ClusterOptions options, LocalStore* local, int self);

  // PeerHandler
  void RecordContact(int member) override;
  bool HandleForward(absl::Span<const StoreOp> ops, int64_t now_ns,
                     absl::Span<Decision> decisions) override;
  bool ForwardMayWait(absl::Span<const StoreOp> ops, int64_t now_ns) override;
  std::vector<StateRecord> HandleReplicate(absl::Span<const StateRecord> records,
                                           int64_t sender_now_ns) override;
  void HandleCorrections(absl::Span<const StateRecord> corrections) override;
  void HandleAdopt(absl::Span<const StateRecord> states, int64_t sender_now_ns) override;
  std::vector<StateRecord> HandleFetch(absl::Span<const uint64_t> key_hashes,
                                       int64_t now_ns) override;
  PingInfo HandlePing() override;
  void HandlePushConfig(const std::vector<peer::v1::ConfigChange>& changes) override;
  std::vector<peer::v1::ConfigChange> HandleGetConfig(
      const std::vector<std::string>& domains) override;
  core::TopSnapshot HandleTopRefused() override;

  // Applies a transaction on keys this node owns (forwarded work too): fetches state from
  // replicas for keys it lacks while warming up, decides, and replicates what changed.
  bool ApplyOwned(absl::Span<const StoreOp> ops, int64_t now_ns, absl::Span<Decision> decisions);
  // consistency: local: decides from this node's share and reports the hits to the owners;
  // once the share is spent, asks the owner (exact against every node's reported hits).
  bool ApplyLocalConsistency(absl::Span<const StoreOp> ops, int64_t now_ns,
                             absl::Span<Decision> decisions);
  // ApplyLocalConsistency's first part: returns whether the share's decision committed, or
  // nullopt when the share is spent and the owner must be asked (with `flush`, this node's
  // reports to it flushed, waiting; without, the caller flushes them with FlushReportsAsync):
  // the caller then applies the ops again with consistency exact.
  std::optional<bool> DecideFromShare(absl::Span<const StoreOp> ops, int64_t now_ns,
                                      absl::Span<Decision> decisions, bool flush = true);
  // The owners a spent share's ops go to (this node and shed ops left out), each once.
  absl::InlinedVector<int, 4> RefillOwners(absl::Span<const StoreOp> ops) const;
  // Reports hits admitted from this node's shares to each key's owner.
  void ReportShareHits(absl::Span<const StoreOp> ops, int64_t now_ns, uint64_t mask);
  // Decides ops that could not be sent to an owner, by each op's failure mode.
  void ApplyFailureMode(absl::Span<const StoreOp> ops, int64_t now_ns,
                        absl::Span<Decision> decisions, bool local_consistency);
  // Forwards a transaction to `owner`, retrying on the next owner when it is found dead.
  bool ForwardOrFail(int owner, absl::Span<const StoreOp> ops, int64_t now_ns,
                     absl::Span<Decision> decisions);
  // What a forward that failed with `status` leads to (shared by Apply and ApplyAsync): a
  // failure-mode decision, the whole transaction routed again (its ops now have different
  // owners), the ops applied on route `target` (this node, a share, a failure mode), or the
  // forward retried on member `target`. Records the owner's death when the status says so.
  struct Failover {
    enum class Next { kFailureMode, kReapply, kRouted, kForward };
    Next next = Next::kFailureMode;
    int target = 0;
  };
  Failover AfterForwardFailure(int owner, const absl::Status& status,
                               absl::Span<const StoreOp> ops);
  // ApplyAsync's parts: ApplyRouted, ApplySplit and ForwardOrFail without waiting.
  struct PendingForward;
  void ApplyRoutedAsync(int target, absl::Span<const StoreOp> ops, int64_t now_ns,
                        absl::Span<Decision> decisions, boost::asio::io_context& loop,
                        ApplyDone done);
  void ApplySplitAsync(absl::Span<const StoreOp> ops, int64_t now_ns,
                       absl::Span<Decision> decisions, uint64_t mask, boost::asio::io_context& loop,
                       ApplyDone done);
  void SendForward(std::unique_ptr<PendingForward> forward);
  void OnForwardDone(std::unique_ptr<PendingForward> forward, const absl::Status& status,
                     bool committed);
  // Apply for ops that all have the same route.
  bool ApplyRouted(int target, absl::Span<const StoreOp> ops, int64_t now_ns,
                   absl::Span<Decision> decisions);
  // Apply for ops with different routes: each route's part on its own.
  bool ApplySplit(absl::Span<const StoreOp> ops, int64_t now_ns, absl::Span<Decision> decisions,
                  uint64_t mask);
  int Route(const StoreOp& op, uint64_t mask) const;
  // Returns the route all ops share, or nullopt when they have different ones.
  std::optional<int> CommonRoute(absl::Span<const StoreOp> ops, uint64_t mask) const;
  // Returns the ops' indexes grouped by route, in order of first appearance (ApplySplit).
  struct RouteGroup {
    int route = 0;
    absl::InlinedVector<size_t, 4> index;
  };
  std::vector<RouteGroup> GroupByRoute(absl::Span<const StoreOp> ops, uint64_t mask) const;
  // Whether a transaction on owned keys fetches state first: this node is warming up (it
  // joined a running cluster) and the check is not shed.
  bool Warming(absl::Span<const StoreOp> ops, int64_t now_ns) const;
  // Whether `op`'s key may have state elsewhere that this node lacks.
  bool NeedsFetch(const StoreOp& op, int64_t now_ns) const;
  // Fetches from the keys' other owners and replicas the states this node lacks.
  void WarmUp(absl::Span<const StoreOp> ops, int64_t now_ns, uint64_t mask);
  // A member went dead (heartbeat thread): asks discovery to look again.
  void OnMemberDeath();
  // Merges the states handed over for `ops`' keys (HandleAdopt) under the ops' limits, once.
  void MergeAdopted(absl::Span<const StoreOp> ops, int64_t now_ns);
  // Leave's hand-over without replicas: every live state this node owned, to its next owner.
  void HandOverOwned(absl::Time deadline);
  // Sends committed states to the keys' replicas.
  void ReplicateStates(absl::Span<const StateRecord> after, uint64_t mask);

  const ClusterOptions options_;
  LocalStore* const local_;
  const int64_t started_at_ns_;
  std::unique_ptr<Membership> membership_;
  std::unique_ptr<PeerTransport> transport_;
  std::unique_ptr<Gossip> gossip_;

  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> failovers_{0};
  std::atomic<uint64_t> failure_mode_ops_{0};
  std::atomic<uint64_t> shed_ops_{0};
  std::atomic<uint64_t> local_share_ops_{0};
  std::atomic<uint64_t> local_share_refills_{0};
  std::atomic<uint64_t> owned_ops_{0};
  std::atomic<uint64_t> warmup_fetches_{0};
  std::atomic<uint64_t> handed_over_states_{0};
  std::atomic<uint64_t> handed_over_bytes_{0};
  std::atomic<uint64_t> adopted_states_{0};
  // States handed over by a leaving owner, by key, waiting for the key's next check here (the
  // limit to merge them under comes with it). Bounded by what the leaver held; expired ones are
  // dropped by ReclaimExpired.
  struct AdoptedState {
    int64_t expiry_ns = 0;
    uint64_t data = 0;
  };
  std::atomic<bool> has_adopted_{false};
  absl::Mutex adopted_mu_;
  absl::flat_hash_map<uint64_t, AdoptedState> adopted_ ABSL_GUARDED_BY(adopted_mu_);
  mutable absl::Mutex discovery_mu_;
  std::function<DiscoveryInfo()> discovery_info_ ABSL_GUARDED_BY(discovery_mu_);
  std::function<void()> discovery_refresh_ ABSL_GUARDED_BY(discovery_mu_);
  mutable absl::Mutex top_mu_;
  std::function<core::TopSnapshot()> top_source_ ABSL_GUARDED_BY(top_mu_);
};

}  // namespace floodgate::cluster
