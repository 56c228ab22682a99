#pragma once

// Heartbeats and config sync between cluster members (docs/cluster.md, "Failure detection" and
// "Config everywhere").
//
// Gossip pings every other member each heartbeat through the PeerTransport, records who answered
// in Membership and marks the silent ones dead (Membership::Tick). Pings carry this node's config
// versions; a member that holds a newer version of a domain is asked for it (anti-entropy). An
// admin change made here is pushed to every live member at once (BroadcastConfig). The first
// round that some peer answers also tells whether this node joined an already running cluster
// (warming_up(): ClusterStore then fetches the state of keys it lacks).
//
// Thread-safety: all public methods are thread-safe.

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "floodgate/peer/v1/peer.pb.h"
#include "src/cluster/membership.h"
#include "src/cluster/peer_transport.h"

namespace floodgate::cluster {

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
  // A hash of every domain served here (names and YAML), the same on every node and build for
  // the same config; 0 when unknown.
  virtual uint64_t Fingerprint() { return 0; }
};

// Whether config version `a` wins over `b`: the higher Lamport version, then the higher origin
// id, so that every node resolves concurrent changes the same way.
bool IsNewerConfig(const peer::v1::DomainVersion& a, const peer::v1::DomainVersion& b);

struct GossipOptions {
  std::string self_id;
  int64_t started_at_ns = 0;  // when this node started (the cluster's clock)
  absl::Duration heartbeat = absl::Milliseconds(200);
  // Runs on the heartbeat thread after a round in which a member went dead (discovery may look
  // again at once: DNS). May be null.
  std::function<void()> on_death;
};

class Gossip {
 public:
  // `membership` and `transport` must outlive this object.
  Gossip(GossipOptions options, Membership* membership, PeerTransport* transport);
  ~Gossip();

  // Starts the heartbeat thread: a round every `heartbeat`.
  void Start();
  // Stops the heartbeat thread (idempotent).
  void Stop();
  // Runs one heartbeat round now: pings every other member (waiting at most 2 heartbeats for the
  // answers), pulls newer config, then marks the silent members dead.
  void RunRound();
  // Waits until a round has seen a majority alive, at most `timeout`. Returns whether it has.
  bool WaitForQuorum(absl::Duration timeout);
  // Whether this node joined a running cluster and so should fetch state it lacks; true until
  // the first round that some peer answers tells.
  bool warming_up() const { return warming_up_.load(std::memory_order_relaxed); }

  // Sets how config changes are exchanged; call before traffic. May be null.
  void SetConfigSync(ConfigSync* sync) { config_sync_.store(sync); }
  // Sends a local admin change to every live member now (others catch up through heartbeats).
  void BroadcastConfig(const std::vector<peer::v1::ConfigChange>& changes);

  // For PeerHandler: this node's heartbeat answer, config pushed here, config asked of here.
  PingInfo OurPing() const;
  void ApplyPushed(const std::vector<peer::v1::ConfigChange>& changes);
  std::vector<peer::v1::ConfigChange> GetConfig(const std::vector<std::string>& domains);

  // Config changes received from peers and applied.
  uint64_t config_pushes() const { return config_pushes_.load(std::memory_order_relaxed); }
  // Whether member `i` has served a config other than this node's for kConfigMismatchRounds
  // heartbeats in a row (flagged: two nodes enforcing different limits for one key is a bypass).
  bool config_differs(int i) const {
    return i >= 0 && i < kMaxMembers &&
           mismatch_rounds_[i].load(std::memory_order_relaxed) >= kConfigMismatchRounds;
  }
  uint64_t config_fingerprint() const;
  static constexpr int kConfigMismatchRounds = 3;

 private:
  using Answers = std::vector<std::pair<int, PingInfo>>;

  void HeartbeatLoop();
  // Pings every other member; returns the answers that came within 2 heartbeats.
  Answers PingAll(const PingInfo& ours);
  // Notes a majority seen, and from the first answered round whether this node is warming up.
  void NoteRound(const Answers& answers);
  // Anti-entropy: pulls every domain a peer holds a newer version of.
  void PullNewerConfig(ConfigSync* sync, const Answers& answers,
                       std::vector<peer::v1::DomainVersion> ours);

  const GossipOptions options_;
  Membership* const membership_;
  PeerTransport* const transport_;

  std::atomic<ConfigSync*> config_sync_{nullptr};
  std::atomic<bool> warming_up_{true};
  std::atomic<bool> first_round_done_{false};
  absl::Notification quorum_seen_;
  std::atomic<uint64_t> config_pushes_{0};
  uint64_t deaths_seen_ = 0;
  std::array<std::atomic<int>, kMaxMembers>
      mismatch_rounds_{};  // RunRound's: the deaths counted when it last ran on_death

  absl::Mutex stop_mu_;
  bool stopping_ ABSL_GUARDED_BY(stop_mu_) = false;
  std::thread heartbeat_;
};

}  // namespace floodgate::cluster
