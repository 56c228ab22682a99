#pragma once

// Who is in the cluster, who is alive, and who owns a key.
//
// Members are fixed at start (--peers); liveness changes. A member is alive while this node has
// heard from it (a heartbeat answered, or any message from it) within dead_after_ns; a failed call
// marks it dead at once, until it is heard from again. This node is always alive to itself.
//
// Ownership is rendezvous hashing: every member scores each key (a mix of the key hash and the
// member's seed); the alive member with the highest score owns the key, the next R-1 alive ones
// replicate it. When a member leaves or joins, only the keys it owns (about 1/N) move, and a dead
// owner's keys go to the node that was replicating them.
//
// Thread-safety: every method may be called from any thread; the alive set is one atomic word.

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "floodgate/clock.h"

namespace floodgate::cluster {

inline constexpr int kMaxMembers = 64;

struct Member {
  std::string id;
  std::string address;  // host:port of its peer listener
  uint64_t seed = 0;    // NodeSeed(id)
};

// Returns the stable rendezvous seed of a node id (the same on every node and build).
uint64_t NodeSeed(std::string_view node_id);

// Returns member `member_seed`'s rendezvous score for a key.
uint64_t RendezvousScore(uint64_t key_hash, uint64_t member_seed);

// Parses "ID=HOST:PORT,ID=HOST:PORT,...": ids unique and non-empty, at most kMaxMembers.
// Returns members sorted by id.
absl::StatusOr<std::vector<Member>> ParsePeers(std::string_view spec);

class Membership {
 public:
  // `members` sorted by id (ParsePeers); `self` indexes this node in it.
  Membership(std::vector<Member> members, int self, const Clock* clock, int64_t dead_after_ns);

  const std::vector<Member>& members() const { return members_; }
  int self() const { return self_; }
  int size() const { return static_cast<int>(members_.size()); }

  // Bit i set: member i is alive. Always includes self.
  uint64_t alive_mask() const { return alive_.load(std::memory_order_acquire); }
  // Whether this node sees a majority of the members alive (itself included).
  static bool HasQuorum(uint64_t mask, int members);

  // A message from member `i` arrived now.
  void RecordContact(int i);
  // A call to member `i` failed: treat it as dead until it is heard from again.
  void RecordFailure(int i);
  // Marks dead every member not heard from within dead_after_ns. Call periodically.
  void Tick();

  // Last contact with member i (clock ns; 0 = never) and deaths seen so far.
  int64_t last_contact_ns(int i) const;
  uint64_t deaths() const { return deaths_.load(std::memory_order_relaxed); }

  // Writes to `out` the members alive in `mask`, best first, for a key: out[0] is the owner,
  // out[1..] its replicas. Returns how many were written (at most out.size()).
  int Rank(uint64_t key_hash, uint64_t mask, absl::Span<int> out) const;
  // The owner of a key among the members alive in `mask` (-1 if the mask is empty).
  int Owner(uint64_t key_hash, uint64_t mask) const;

 private:
  void SetAlive(int i, bool alive) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::vector<Member> members_;
  const int self_;
  const Clock* const clock_;
  const int64_t dead_after_ns_;
  std::atomic<uint64_t> alive_;
  std::atomic<uint64_t> deaths_{0};
  mutable absl::Mutex mu_;
  std::vector<int64_t> last_contact_ns_ ABSL_GUARDED_BY(mu_);
};

}  // namespace floodgate::cluster
