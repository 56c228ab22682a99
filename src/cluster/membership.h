#pragma once

// Who is in the cluster, who is alive, and who owns a key.
//
// Members are given at start (--peers) and may change at run time (discovery: SetMembers). Each
// member has a slot, its index everywhere in this node (transport links, masks); a member keeps
// its slot for as long as this process runs, even while it is away, so a node that leaves and
// comes back gets its slot back. Slot numbers are this node's own: the wire names members by id.
//
// A member is alive while this node has heard from it (a heartbeat answered, or any message
// from it) within dead_after_ns; a failed call marks it dead at once, until it is heard from
// again. This node is always alive to itself, unless it is leaving (SetLeaving). The quorum
// counts the current members, not every node that ever was.
//
// Ownership is rendezvous hashing: every member scores each key (a mix of the key hash and the
// member's seed); the alive member with the highest score owns the key, the next R-1 alive ones
// replicate it. When a member leaves or joins, only the keys it owns (about 1/N) move, and a dead
// owner's keys go to the node that was replicating them.
//
// Changes of the alive set are logged (common/log.h) as they happen, never per heartbeat:
// `peer_dead` (silent too long, or a call failed) and `peer_alive` (heard from again), and
// `quorum_lost` / `quorum_reached` when this node stops or starts seeing a majority alive.
// Joins and leaves are the caller's to log (SetMembers returns them).
//
// Thread-safety: every method may be called from any thread; the member and alive sets are
// atomic words and the seeds atomics, so routing takes no lock.

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
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

// What a SetMembers call changed.
struct MembershipChange {
  std::vector<std::string> joined;  // ids that became members
  std::vector<std::string> left;    // ids that stopped being members
  std::vector<int> slots;           // slots whose member or address changed (transport links)
  std::string error;                // members that could not be taken (more than kMaxMembers)
  bool empty() const { return joined.empty() && left.empty() && slots.empty(); }
};

class Membership {
 public:
  // `members` sorted by id (ParsePeers) take slots 0..n-1; `self` indexes this node in it.
  Membership(std::vector<Member> members, int self, const Clock* clock, int64_t dead_after_ns);

  int self() const { return self_; }
  // The number of current members (this node included unless it is leaving).
  int size() const;
  // Slots used so far: every slot index is below it (loops over members go to here).
  int slots() const { return slots_used_.load(std::memory_order_acquire); }
  // The member in slot `i` (id "" for a slot never used), and whether it is a member now.
  Member member(int i) const;
  bool is_member(int i) const { return ((member_mask() >> i) & 1) != 0; }
  // The current members, by slot.
  std::vector<Member> members() const;
  // The slot of member `id`, or -1.
  int SlotOf(std::string_view id) const;

  // Bit i set: slot i holds a current member.
  uint64_t member_mask() const { return members_mask_.load(std::memory_order_acquire); }
  // Bit i set: member i is alive. Always includes self (unless leaving); a subset of
  // member_mask().
  uint64_t alive_mask() const { return alive_.load(std::memory_order_acquire); }
  // Whether `mask` holds a majority of `members` members.
  static bool HasQuorum(uint64_t mask, int members);
  // Whether this node sees a majority of the current members alive.
  bool HasQuorum() const { return HasQuorum(alive_mask(), size()); }

  // Makes `members` the member set (discovery's latest list): members not in it leave, new ones
  // join (alive at once: discovery says they are up; they die like any member if silent), known
  // ones keep their slots (an address change is reported in `slots`). This node stays a member
  // even when the list lacks it (it may not be registered yet).
  // `on_slot(slot, member)` runs, under this object's lock, for each slot whose member or
  // address changes, before that member can own a key (the transport's links follow it).
  using SlotChanged = std::function<void(int slot, const Member& member)>;
  MembershipChange SetMembers(const std::vector<Member>& members,
                              const SlotChanged& on_slot = nullptr);
  // This node is leaving (graceful leave): it stops counting itself as a member, so it owns no
  // key and forwards everything to the members that stay.
  void SetLeaving();
  bool leaving() const { return leaving_.load(std::memory_order_acquire); }

  // A message from member `i` arrived now. Returns whether that made it alive (it was dead).
  bool RecordContact(int i);
  // A call to member `i` failed: treat it as dead until it is heard from again.
  void RecordFailure(int i);
  // Marks dead every member not heard from within dead_after_ns. Call periodically.
  void Tick();

  // Last contact with member i (clock ns; 0 = never) and deaths seen so far.
  int64_t last_contact_ns(int i) const;
  uint64_t deaths() const { return deaths_.load(std::memory_order_relaxed); }
  uint64_t joins() const { return joins_.load(std::memory_order_relaxed); }
  uint64_t leaves() const { return leaves_.load(std::memory_order_relaxed); }

  // Writes to `out` the members alive in `mask`, best first, for a key: out[0] is the owner,
  // out[1..] its replicas. Returns how many were written (at most out.size()).
  int Rank(uint64_t key_hash, uint64_t mask, absl::Span<int> out) const;
  // The owner of a key among the members alive in `mask` (-1 if the mask is empty).
  int Owner(uint64_t key_hash, uint64_t mask) const;

 private:
  // What a call changed in the alive set, gathered under mu_ and logged once it is released.
  struct AliveChanges {
    std::vector<std::string> died;      // ids of members that died
    std::vector<std::string> returned;  // ids of members heard from again
    int quorum = 0;                     // +1 reached, -1 lost, 0 unchanged
    int alive = 0;
    int members = 0;
  };
  // Sets member i's alive bit; records the transition in `changes` when given.
  void SetAlive(int i, bool alive, AliveChanges* changes = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records in `changes` whether the quorum came or went since the last call.
  void NoteQuorum(AliveChanges& changes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static void LogChanges(const AliveChanges& changes, std::string_view why);
  MembershipChange ApplyMembers(const std::vector<Member>& members, const SlotChanged& on_slot,
                                AliveChanges& changes) ABSL_LOCKS_EXCLUDED(mu_);

  const int self_;
  const Clock* const clock_;
  const int64_t dead_after_ns_;
  std::array<std::atomic<uint64_t>, kMaxMembers> seeds_{};
  std::atomic<int> slots_used_{0};
  std::atomic<uint64_t> members_mask_{0};
  std::atomic<uint64_t> alive_{0};
  std::atomic<bool> leaving_{false};
  std::atomic<uint64_t> deaths_{0};
  std::atomic<uint64_t> joins_{0};
  std::atomic<uint64_t> leaves_{0};
  mutable absl::Mutex mu_;
  std::array<Member, kMaxMembers> slot_ ABSL_GUARDED_BY(mu_);
  std::array<int64_t, kMaxMembers> last_contact_ns_ ABSL_GUARDED_BY(mu_){};
  std::array<int64_t, kMaxMembers> left_at_ns_ ABSL_GUARDED_BY(mu_){};
  bool quorum_ ABSL_GUARDED_BY(mu_) = false;  // as last logged
};

}  // namespace floodgate::cluster
