#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "floodgate/decision.h"
#include "floodgate/limit.h"

namespace floodgate {

// One step of a Store transaction: `hits` against the state of `key_hash` under `spec`.
struct StoreOp {
  enum class Kind : uint8_t { kCheck, kRelease };
  uint64_t key_hash = 0;  // from KeyHasher; identifies domain + descriptor + limit
  LimitSpec spec;
  uint64_t hits = 1;
  Kind kind = Kind::kCheck;
  // kRelease only: the lease token, the `now_ns` of the Apply whose kCheck acquired the slots
  // being released (see core::Release).
  int64_t acquired_at_ns = 0;
  // A shadow-mode op is evaluated and consumed when it passes, but its refusal does not abort
  // the transaction.
  bool shadow = false;
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

// A concurrent map from key hash to algorithm state, applying decisions atomically.
//
// Apply() evaluates every op at `now_ns`. If every non-shadow kCheck op is allowed, all states
// are committed; otherwise no state changes (a request under several limits consumes from none
// when one refuses). decisions[i] receives op i's decision; in a refused transaction the ops that
// would have passed report allowed == true with nothing consumed. Returns whether the
// transaction committed.
//
// Thread-safety: every method may be called from any number of threads at once. Ops touching
// different shards run in parallel; a transaction locks its shards in a fixed order.
// Memory: state that is back to fresh (expiry_ns <= now) is reclaimed, so idle keys cost nothing.
class Store {
 public:
  virtual ~Store() = default;
  virtual bool Apply(absl::Span<const StoreOp> ops, int64_t now_ns,
                     absl::Span<Decision> decisions) = 0;
  // Returns the sum of every shard's stats.
  virtual StoreStats GetStats() const = 0;
  // Drops every expired entry now (the store also does this incrementally on its own).
  virtual void ReclaimExpired(int64_t now_ns) = 0;
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
absl::StatusOr<std::unique_ptr<Store>> NewShardedStore(const StoreOptions& options);

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
