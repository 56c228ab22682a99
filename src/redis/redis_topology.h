#pragma once

// The two clients that find their Redis nodes at run time, behind the same Client interface
// (redis_client.h):
//  - Sentinel: asks the sentinels for the master of `master_name`, checks it with ROLE, sends
//    every command to one Node for it, and follows failovers (the sentinels' +switch-master
//    messages on a subscription, and a re-query when the master's commands fail).
//  - Cluster: a table from hash slot to master Node (CLUSTER SLOTS of any known node), MOVED and
//    ASK followed, TRYAGAIN and CLUSTERDOWN retried, the table refreshed on redirects, on
//    connection failures and periodically.
// Both hold commands that have no route yet (before the first answer, while no master is
// known) until a route appears or their timeout, so Send works as soon as the client exists.
//
// This header is for the client's own files and its tests; callers use NewClient.
// Thread-safety: as Client. The helpers in topology_internal are pure functions, or (Parking)
// say so.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "src/redis/redis_client.h"
#include "src/redis/redis_client_internal.h"  // the one-argument factories (defaults)

namespace floodgate::redis {

// How the topology is followed; the defaults suit production, tests shorten them.
struct TopologyOptions {
  // Re-reads the topology this often even when nothing failed (Sentinel: asks the sentinels;
  // Cluster: CLUSTER SLOTS).
  int64_t refresh_interval_ms = 5000;
  // A refresh triggered by a failure or a redirect runs at most this often; after refreshes
  // that failed in a row (nothing reachable, no master named) the gap doubles, up to
  // max_refresh_backoff_ms.
  int64_t min_refresh_interval_ms = 100;
  int64_t max_refresh_backoff_ms = 1000;
  // Cluster: MOVED/ASK followed per command at most; past it the command fails (Unavailable).
  int max_redirects = 5;
  // Cluster: the pause before a command answered TRYAGAIN or CLUSTERDOWN, or with no node for
  // its slot yet, is tried again (always within its own timeout).
  int64_t retry_delay_ms = 20;
  // Sentinel: the timeout of the queries to the sentinels (their connections are separate from
  // the master's and not bound by ClientOptions::timeout_ms).
  int64_t sentinel_timeout_ms = 1000;
};

// Starts a Sentinel client (options.mode kSentinel: endpoints are the sentinels, master_name the
// master). InvalidArgument for bad options. The sentinels are queried without AUTH and db 0 (a
// sentinel has no databases); the master with the options' AUTH and db.
absl::StatusOr<std::unique_ptr<Client>> NewSentinelClient(const ClientOptions& options,
                                                          const TopologyOptions& topology);

// Starts a Cluster client (options.mode kCluster: endpoints are seed nodes; db must be 0).
// InvalidArgument for bad options.
absl::StatusOr<std::unique_ptr<Client>> NewClusterClient(const ClientOptions& options,
                                                         const TopologyOptions& topology);

namespace topology_internal {

inline constexpr int kSlots = 16384;

// Returns the least time between two refreshes after `failures` failed ones in a row:
// min_refresh_interval_ms doubled per failure, at most max(min, max_refresh_backoff_ms).
int64_t RefreshGapMs(const TopologyOptions& topology, int failures);

// Returns "host:port" (the key nodes are kept under).
std::string EndpointKey(const Endpoint& endpoint);

// A redirect from a Cluster node: `-MOVED <slot> <host>:<port>` or `-ASK ...`.
struct Redirect {
  enum class Kind : uint8_t { kMoved, kAsk };
  Kind kind = Kind::kMoved;
  uint16_t slot = 0;
  Endpoint endpoint;
};
// Parses an error reply's text (with or without its leading '-'). An empty host ("MOVED 1 :7001",
// Redis 7's unknown endpoint) means `replying_host`, the host the command went to. nullopt when
// the text is no redirect or is malformed.
std::optional<Redirect> ParseRedirect(std::string_view error, std::string_view replying_host);

// One range of CLUSTER SLOTS: slots first..last (inclusive) served by `master`.
struct SlotRange {
  uint16_t first = 0;
  uint16_t last = 0;
  Endpoint master;
};
// Parses a CLUSTER SLOTS reply. A NULL or empty endpoint means `queried_host` (the node that
// answered); ranges whose endpoint is "?" (unknown to the node) are left out. InvalidArgument
// for a reply of the wrong shape.
absl::StatusOr<std::vector<SlotRange>> ParseClusterSlots(const Reply& reply,
                                                         std::string_view queried_host);

// Parses the reply of SENTINEL get-master-addr-by-name: [host, port]. NotFound for a nil reply
// (the sentinel does not know the master), InvalidArgument for anything else malformed.
absl::StatusOr<Endpoint> ParseMasterAddr(const Reply& reply);

// Returns whether a ROLE reply says "master".
bool IsMasterRole(const Reply& reply);

// Parses a pub/sub push ["message", "+switch-master", "<name> <old-ip> <old-port> <new-ip>
// <new-port>"]; returns the new address when it is about `master_name`.
std::optional<Endpoint> ParseSwitchMaster(const Reply& push, std::string_view master_name);

using SteadyTime = std::chrono::steady_clock::time_point;

// One command on its way: its own copy of the arguments (it may be sent again), its callback
// and its deadline. The callback runs once, through Complete, whichever path gets there first.
// Thread-safety: Complete may race from any thread; the rest is touched by whoever holds the
// command at the time (a Node's callback, a timer, the parking lot), one at a time.
struct PendingCommand {
  PendingCommand(absl::Span<const std::string_view> arguments, uint16_t hash_slot,
                 Client::Callback cb, SteadyTime command_deadline);

  // Runs the callback with `result` unless the command was completed already; returns whether
  // this call completed it.
  bool Complete(absl::StatusOr<Reply> result);
  bool done() const { return done_.load(std::memory_order_acquire); }

  std::string storage;                 // the arguments' bytes, back to back
  std::vector<std::string_view> args;  // views into storage
  uint16_t slot = 0;
  SteadyTime deadline;
  int redirects = 0;
  bool deadline_timer_armed = false;

 private:
  Client::Callback callback_;
  std::atomic<bool> done_{false};
};

// Where commands wait without a route (no master known; no node for their slot; TRYAGAIN), each
// until it is woken (WakeAll, or its own wake time) or its deadline passes (DeadlineExceeded).
// Bounded: Park refuses past `max_parked`.
// Thread-safety: every method from any thread; `on_wake` runs on `io`'s thread, outside the lock.
class Parking {
 public:
  using WakeFn = std::function<void(std::shared_ptr<PendingCommand>)>;
  Parking(boost::asio::io_context& io, size_t max_parked, WakeFn on_wake);

  // Parks `command` until WakeAll, `wake_at` (if not nullopt) or its deadline. Returns false
  // (nothing parked) when full.
  bool Park(std::shared_ptr<PendingCommand> command, std::optional<SteadyTime> wake_at);
  // Wakes every parked command (on_wake for each, on the io thread).
  void WakeAll();
  // Completes every parked command with `status` on the calling thread (for Stop, after the io
  // threads are gone).
  void FailAll(const absl::Status& status);
  size_t size() const;

 private:
  struct Entry {
    std::shared_ptr<PendingCommand> command;
    SteadyTime wake_at;  // deadline when it has no wake time of its own
  };
  void ArmLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnTimer();

  boost::asio::io_context& io_;
  const size_t max_parked_;
  const WakeFn on_wake_;
  mutable absl::Mutex mu_;
  std::vector<Entry> entries_ ABSL_GUARDED_BY(mu_);
  boost::asio::steady_timer timer_ ABSL_GUARDED_BY(mu_);
  std::optional<SteadyTime> armed_at_ ABSL_GUARDED_BY(mu_);
};

}  // namespace topology_internal
}  // namespace floodgate::redis
