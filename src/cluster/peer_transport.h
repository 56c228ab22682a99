#pragma once

// The seam between the cluster's logic and the network: what ClusterStore and Gossip need from
// the other members (PeerTransport), and what the network needs from this node to answer them
// (PeerHandler). tcp_peer_transport.h implements it over our own framed protocol (peer.proto
// messages, authenticated connections); testing/fake_peer_transport.h implements it in process
// for tests.
//
// Members are named by their slot (Membership: this node's index for a member, stable while the
// process runs); the transport is built for one node (`self`) and never calls itself. When the
// members change at run time the cluster tells the transport with SetMember.
//
// Errors: a member that cannot be reached, or did not answer in time, gives kUnavailable or
// kDeadlineExceeded (the caller may treat it as dead and fail over); anything else (a protocol
// version mismatch, a malformed answer) is not its death.
//
// Thread-safety: every PeerTransport method may be called from any number of threads at once.
// The transport calls PeerHandler methods from its own threads, several at once.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "floodgate/decision.h"
#include "floodgate/peer/v1/peer.pb.h"
#include "floodgate/store.h"
#include "src/core/top_keys.h"

namespace floodgate::cluster {

// A heartbeat: what a node tells about itself, both in a ping and in its answer.
struct PingInfo {
  std::string node_id;                          // set in answers
  int64_t started_at_ns = 0;                    // when the node started (its clock)
  std::vector<peer::v1::DomainVersion> config;  // its config domains' versions
  uint64_t config_fingerprint = 0;              // ConfigSync::Fingerprint (0: none)
  uint64_t keys_held = 0;                       // key states it holds (in answers)
};

// How the link to one member is doing, for /v1/cluster and metrics.
struct PeerLinkStats {
  int64_t replication_lag_ns = 0;  // last batch: oldest state queued to acknowledged
  uint64_t forwarded_txns = 0;
  uint64_t forward_batches = 0;
  uint64_t forward_errors = 0;
  uint64_t replicated_states = 0;
};

// Peer connections refused in the handshake, by reason (peer_auth.h), both as the accepting and
// as the connecting side: the floodgate_cluster_peer_auth_failures_total metric.
struct PeerAuthStats {
  uint64_t bad_key = 0;     // the other side does not hold --cluster-key
  uint64_t not_member = 0;  // its node id is not in --peers (or not the member dialled)
  uint64_t version = 0;     // another peer protocol version
  uint64_t malformed = 0;   // not our handshake, a frame before it, or a bad frame
};

// This node's side of the peer protocol: the transport calls it for what other members ask, and
// for what their answers tell. Implemented by ClusterStore (which hands config to Gossip).
class PeerHandler {
 public:
  virtual ~PeerHandler() = default;
  // Member `member` was heard from (a valid request from it, or a forward it answered).
  virtual void RecordContact(int member) = 0;
  // Decides a transaction forwarded to this node as the keys' owner at `now_ns` (or, for hits
  // another node admitted from its local share, counts them: the answer is then ignored).
  // Returns whether it committed.
  virtual bool HandleForward(absl::Span<const StoreOp> ops, int64_t now_ns,
                             absl::Span<Decision> decisions) = 0;
  // Whether HandleForward of `ops` at `now_ns` may wait on another member (a warm-up fetch of a
  // key's state). The server then calls HandleForward off its io threads, which must never wait
  // on a peer.
  virtual bool ForwardMayWait(absl::Span<const StoreOp> ops, int64_t now_ns) { return false; }
  // Merges states an owner replicated here, at max(this node's now, `sender_now_ns`). Returns
  // the records where this copy admits less than what was sent (the sender merges them back).
  virtual std::vector<StateRecord> HandleReplicate(absl::Span<const StateRecord> records,
                                                   int64_t sender_now_ns) = 0;
  // Keeps states a leaving owner handed over (spec unknown: left default) until the keys' next
  // checks here, which merge them under their limits. `sender_now_ns` as for HandleReplicate.
  virtual void HandleAdopt(absl::Span<const StateRecord> states, int64_t sender_now_ns) {}
  // Merges a replica's corrections to states this node replicated.
  virtual void HandleCorrections(absl::Span<const StateRecord> corrections) = 0;
  // Returns the live states held here of the given keys at `now_ns` (spec left default: the
  // asker knows it).
  virtual std::vector<StateRecord> HandleFetch(absl::Span<const uint64_t> key_hashes,
                                               int64_t now_ns) = 0;
  // Returns this node's heartbeat answer.
  virtual PingInfo HandlePing() = 0;
  // Applies config changes pushed by another member.
  virtual void HandlePushConfig(const std::vector<peer::v1::ConfigChange>& changes) = 0;
  // Returns the given domains' config here.
  virtual std::vector<peer::v1::ConfigChange> HandleGetConfig(
      const std::vector<std::string>& domains) = 0;
  // Returns the descriptors this node refused most over the last minute (GET /v1/top).
  virtual core::TopSnapshot HandleTopRefused() { return {}; }
};

// This node's calls to the other members. The transport owns its connections and threads;
// Shutdown() stops the listener, destruction waits for calls still in flight.
class PeerTransport {
 public:
  virtual ~PeerTransport() = default;

  // Starts answering the other members through `handler`, which must outlive the transport.
  virtual absl::Status Start(PeerHandler* handler) = 0;
  // The port this node listens on for peers (the bound one when asked for port 0), 0 if none.
  virtual int port() const = 0;
  // Stops answering; calls to others fail from then on or soon after.
  virtual void Shutdown() = 0;

  // Sends one transaction to `member` (its keys' owner) and waits for its decisions: writes them
  // and sets *committed. The transport may batch it with other calls.
  virtual absl::Status Forward(int member, absl::Span<const StoreOp> ops,
                               absl::Span<Decision> decisions, bool* committed) = 0;
  // Forward without waiting. Sends one transaction to `member`; `done` runs exactly once, on a
  // thread running `loop` (the caller's io thread), with the status and whether it committed,
  // after writing `decisions` (which must stay valid until then). `ops` are copied before the
  // call returns. A transport that answers on the caller's loop needs no thread hand-off; this
  // default, for transports that cannot, blocks the caller in Forward and posts `done` to `loop`.
  using ForwardDone = absl::AnyInvocable<void(absl::Status status, bool committed) &&>;
  virtual void ForwardAsync(int member, absl::Span<const StoreOp> ops,
                            absl::Span<Decision> decisions, boost::asio::io_context& loop,
                            ForwardDone done) {
    bool committed = false;
    absl::Status status = Forward(member, ops, decisions, &committed);
    boost::asio::post(loop,
                      [done = std::move(done), status = std::move(status), committed]() mutable {
                        std::move(done)(std::move(status), committed);
                      });
  }
  // Queues a state for `member` to merge (a replica). The latest state of a key wins; the
  // member's corrections come back through PeerHandler::HandleCorrections.
  virtual void Replicate(int member, const StateRecord& record) = 0;
  // Queues hits admitted here from a local share, for `member` (the key's owner) to count.
  virtual void Report(int member, const StoreOp& op) = 0;
  // Sends the reports queued for `member` and waits (bounded) until every report queued before
  // the call is acknowledged.
  virtual void FlushReports(int member) = 0;
  // FlushReports without waiting: sends the reports queued for `member` and runs `done` once, on
  // a thread running `loop`, when every report queued before the call is acknowledged or given
  // up (bounded by the forward timeout). This default blocks in FlushReports, then posts `done`.
  using FlushDone = absl::AnyInvocable<void() &&>;
  virtual void FlushReportsAsync(int member, boost::asio::io_context& loop, FlushDone done) {
    FlushReports(member);
    boost::asio::post(loop, [done = std::move(done)]() mutable { std::move(done)(); });
  }
  // Hands states this node owned to `member`, their next owner (PeerHandler::HandleAdopt there),
  // in batches, waiting for each to be answered. Returns the bytes sent.
  virtual absl::StatusOr<uint64_t> HandOver(int member, absl::Span<const StateRecord> states) {
    return absl::UnimplementedError("this transport does not hand states over");
  }
  // Returns `member`'s live states of the given keys (spec left default).
  virtual absl::StatusOr<std::vector<StateRecord>> Fetch(int member,
                                                         absl::Span<const uint64_t> key_hashes) = 0;
  // Sends a heartbeat; `done` gets the member's answer or an error, maybe on another thread,
  // maybe before Ping returns.
  virtual void Ping(int member, const PingInfo& ours,
                    std::function<void(absl::StatusOr<PingInfo>)> done) = 0;
  // Returns the given domains' config on `member`.
  virtual absl::StatusOr<std::vector<peer::v1::ConfigChange>> GetConfig(
      int member, const std::vector<std::string>& domains) = 0;
  // Pushes config changes to `member`.
  virtual absl::Status PushConfig(int member,
                                  const std::vector<peer::v1::ConfigChange>& changes) = 0;
  virtual PeerLinkStats GetLinkStats(int member) const = 0;
  // `member` was heard from just now after being taken for dead (or it joined): a link that
  // waits out a reconnect backoff to it tries again at once. The default does nothing.
  virtual void PeerIsUp(int member) {}
  // Slot `member` now holds node `id` at `address` ("" id: nobody): a member joined, moved or
  // its slot was reused. Calls to the slot go to the new node from now on; the old node's links
  // close. The default (a transport with fixed members) ignores it.
  virtual void SetMember(int member, const std::string& id, const std::string& address) {}
  // Sends every replication batch queued now and waits, at most `timeout`, until each member
  // has acknowledged what was queued (a graceful leave hands its states over this way). Returns
  // the states acknowledged meanwhile, and their bytes on the wire.
  struct Flushed {
    uint64_t states = 0;
    uint64_t bytes = 0;
  };
  virtual Flushed FlushReplication(absl::Duration timeout) { return {}; }
  // Asks `member` for the descriptors it refused most over the last minute; `done` runs once,
  // maybe on another thread, maybe before TopRefused returns, with its answer or an error
  // (kDeadlineExceeded past `timeout`). The default: Unimplemented.
  using TopRefusedDone = absl::AnyInvocable<void(absl::StatusOr<core::TopSnapshot>) &&>;
  virtual void TopRefused(int member, absl::Duration timeout, TopRefusedDone done) {
    std::move(done)(absl::UnimplementedError("this transport cannot ask for top refused keys"));
  }
  // Returns the handshakes refused so far (none for a transport without authentication).
  virtual PeerAuthStats GetAuthStats() const { return {}; }
};

}  // namespace floodgate::cluster
