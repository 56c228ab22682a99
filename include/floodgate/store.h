#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <utility>

#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "floodgate/decision.h"
#include "floodgate/limit.h"
#include "floodgate/routing.h"

// The event loop an asynchronous apply resumes on (ApplyAsync); only named here.
namespace boost::asio {
class io_context;
}  // namespace boost::asio

namespace floodgate {

// One step of a Store transaction: `hits` against the state of `key_hash` under `spec`.
struct StoreOp {
  enum class Kind : uint8_t { kCheck, kRelease };
  uint64_t key_hash = 0;  // from KeyHasher; identifies domain + descriptor + limit
  LimitSpec spec;
  uint64_t hits = 1;
  Kind kind = Kind::kCheck;
  // Concurrency only: the lease token. On a kCheck that acquires slots (hits > 0), the store
  // records them under it (0: no lease, the slots can only age out); a kRelease frees the slots
  // recorded under it on this key, once, and frees nothing for a token that is unknown,
  // already released or expired, which its decision reports as allowed == false.
  // See core::LeaseBook.
  uint64_t lease = 0;
  // A shadow-mode op is evaluated and consumed when it passes, but its refusal does not abort
  // the transaction.
  bool shadow = false;
  // Cluster routing, from the limit's rule; a single node's store ignores them (docs/cluster.md).
  Consistency consistency = Consistency::kExact;
  FailureMode failure_mode = FailureMode::kLocal;
  // Set when the front end is past its in-flight bounds: a key another node owns is decided
  // here by failure_mode at once instead of waiting for the owner; a key this node owns is
  // still decided exactly. A single node's store ignores it.
  bool shed = false;
  // Set only for a store that asks for them (Store::WantsStateKeys): the bytes that name this
  // op's state, the same on every node (src/limiter/state_key.h: the descriptor part, then the
  // rule's suffix; a block_duration's block adds one byte 'B'), valid until Apply or ApplyAsync
  // returns, and how many leading bytes are the descriptor part, which one descriptor's limits
  // share. A store whose state lives outside this process (Redis) names its keys with them:
  // key_hash's secret seed differs from node to node.
  std::string_view state_key;
  uint32_t descriptor_size = 0;
};

// A key's raw state, as the store holds it (the layout of core::KeyState), with the limit it is
// kept under: what cluster nodes ship to each other to replicate and hand over keys.
struct StateRecord {
  uint64_t key_hash = 0;
  LimitSpec spec;
  int64_t expiry_ns = 0;  // core::KeyState::expiry_ns
  uint64_t data = 0;      // core::KeyState::data
  // Set by ApplyAndCapture when a concurrency release freed slots: the state before the
  // transaction was (before_expiry_ns, before_data). MergeStates lets such a record lower a
  // copy that holds nothing `before` does not (a replica in step with its owner), so a release
  // sticks on the replicas; a copy that saw more (an acting owner's admissions) is merged as
  // usual and never lowered. A key's records must therefore be merged once each, in the order
  // they were captured (a stale lowered record could lower a newer copy with the same counts):
  // the peer transport keeps one replication batch in flight per peer and coalesces a key's
  // queued records from the first `before`.
  bool lowered = false;
  int64_t before_expiry_ns = 0;
  uint64_t before_data = 0;
};

struct StoreStats {
  uint64_t keys = 0;          // live entries
  uint64_t bytes = 0;         // memory held by the tables
  uint64_t reclaimed = 0;     // entries dropped because their state was back to fresh
  uint64_t evicted = 0;       // entries dropped by the memory cap
  uint64_t refused_full = 0;  // inserts refused because the cap was reached and nothing could go
  StoreStats& operator+=(const StoreStats& o) {
    keys += o.keys;
    bytes += o.bytes;
    reclaimed += o.reclaimed;
    evicted += o.evicted;
    refused_full += o.refused_full;
    return *this;
  }
};

// What the limiter decides against: applies transactions atomically, wherever the state lives
// (this process's ShardedStore, or a cluster that decides each key on its owner node).
//
// Apply() evaluates every op at `now_ns`. If every non-shadow kCheck op is allowed, all states
// are committed; otherwise no state changes (a request under several limits consumes from none
// when one refuses). decisions[i] receives op i's decision; in a refused transaction the ops that
// would have passed report allowed == true with nothing consumed. Returns whether the
// transaction committed. (A cluster only promises this per owner: see docs/cluster.md.)
//
// ApplyAsync is Apply without waiting, for callers on an event loop: a store whose state lives on
// other nodes (a cluster) suspends the transaction while it asks them and resumes it on the
// caller's loop, instead of blocking the caller's thread. MaySuspend says whether a store ever
// does; a store that decides in this process (every LocalStore) never does, and its ApplyAsync is
// Apply followed by `done`, inline.
//
// Thread-safety: every method may be called from any number of threads at once.
class Store {
 public:
  // Gets Apply's result: whether the transaction committed.
  using ApplyDone = absl::AnyInvocable<void(bool committed) &&>;

  virtual ~Store() = default;
  virtual bool Apply(absl::Span<const StoreOp> ops, int64_t now_ns,
                     absl::Span<Decision> decisions) = 0;
  // Applies like Apply and runs `done` exactly once with its result, after writing `decisions`:
  // before returning when the store can decide at once, otherwise later, on a thread running
  // `loop` (the caller's io thread), without blocking the caller meanwhile. `ops` are read
  // before the call returns (the caller may free them then); `decisions` must stay valid until
  // `done` runs. A suspended transaction is bounded by the store (a cluster: the peer
  // transport's forward timeout, then the limit's failure mode). The default calls Apply.
  virtual void ApplyAsync(absl::Span<const StoreOp> ops, int64_t now_ns,
                          absl::Span<Decision> decisions, boost::asio::io_context& /*loop*/,
                          ApplyDone done) {
    std::move(done)(Apply(ops, now_ns, decisions));
  }
  // Returns whether ApplyAsync may finish after it returns. False (the default): it always
  // finishes inline, so callers may skip the bookkeeping a suspended transaction needs.
  virtual bool MaySuspend() const { return false; }
  // Returns whether ops must carry state_key and descriptor_size (the limiter then keeps the
  // bytes for the call). False (the default): key_hash alone names a state.
  virtual bool WantsStateKeys() const { return false; }
  // Returns the sum of every shard's stats (of this process's tables).
  virtual StoreStats GetStats() const = 0;
  // Drops every expired entry now (the store also does this incrementally on its own).
  virtual void ReclaimExpired(int64_t now_ns) = 0;
};

// A concurrent map from key hash to algorithm state held in this process, applying decisions
// atomically (Store), whose raw states can also be captured, merged and read: what cluster nodes
// use to replicate keys and hand them over.
//
// Thread-safety: every method may be called from any number of threads at once. Ops touching
// different shards run in parallel; a transaction locks its shards in a fixed order.
// Memory: state that is back to fresh (expiry_ns <= now) is reclaimed, so idle keys cost nothing.
class LocalStore : public Store {
 public:
  // Apply, with the same atomicity and locking, and also writes to after[i] the state of
  // ops[i]'s key once the transaction is over, taken under the same locks: the committed state
  // (even if the memory cap kept the store from holding it), or the unchanged one when refused;
  // expiry 0 and data 0 when that state is fresh. Every op on one key reports the same final
  // state. key_hash and spec are copied from the op. after.size() must be >= ops.size()
  // (otherwise, like a short `decisions`, returns false and changes nothing).
  virtual bool ApplyAndCapture(absl::Span<const StoreOp> ops, int64_t now_ns,
                               absl::Span<Decision> decisions, absl::Span<StateRecord> after) = 0;
  // Merges each record into the stored state of its key (fresh when missing or dead) with
  // core::Merge under record.spec, so that the result never admits more than either side would
  // at now_ns or later (replicas never undercount; a merge never lowers a state). The one
  // exception is a `lowered` record (a release): it replaces a stored state that admits nothing
  // its `before` state does not (Merge(stored, before) == before). Each record is
  // merged atomically under its shard's lock; records are independent (no all-or-nothing across
  // them). Records that are dead at now_ns are ignored. Commits like an insert: a dead result is
  // erased, and a new key obeys the memory cap (it may evict, or be refused and counted in
  // refused_full). Every record.spec must have passed ValidateLimitSpec and be the spec the key
  // is used with.
  virtual void MergeStates(absl::Span<const StateRecord> records, int64_t now_ns) = 0;
  // Returns whether key_hash holds a live state at now_ns; if so, writes it to out->expiry_ns
  // and out->data and sets out->key_hash (out->spec is left as is: the store does not keep it).
  // A read under the key's shard lock; never writes.
  virtual bool GetState(uint64_t key_hash, int64_t now_ns, StateRecord* out) const = 0;
  // Calls fn for every state live at now_ns (key_hash, expiry_ns and data set; spec left
  // default), one shard at a time under its read lock: fn must not call back into the store.
  // What a node leaving the cluster hands over. Time linear in the tables' capacity.
  virtual void ForEachLive(int64_t now_ns,
                           absl::FunctionRef<void(const StateRecord&)> fn) const = 0;
};

struct StoreOptions {
  // Number of shards, rounded up to a power of two. 0 picks 4 x hardware threads (min 16).
  size_t shards = 0;
  // Upper bound on table memory in bytes; 0 means unbounded.
  size_t max_memory_bytes = 0;
  // Entries to size the tables for at start (avoids growth during a benchmark).
  size_t initial_capacity = 0;
};

// Returns a sharded in-memory store, or InvalidArgument for impossible options.
absl::StatusOr<std::unique_ptr<LocalStore>> NewShardedStore(const StoreOptions& options);

// Hashes limit keys with a secret seed (SipHash-1-3), so that an attacker who picks descriptor
// values cannot aim collisions at one slot or one shard. Immutable and thread-safe.
class KeyHasher {
 public:
  // A hasher with a random secret from the OS.
  static KeyHasher Random();
  KeyHasher(uint64_t k0, uint64_t k1) : k0_(k0), k1_(k1) {}
  // Returns the 64-bit keyed hash of `bytes`. Never returns 0 (0 marks an empty slot).
  uint64_t Hash(std::string_view bytes) const;

 private:
  uint64_t k0_;
  uint64_t k1_;
};

}  // namespace floodgate
