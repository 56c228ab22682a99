#pragma once

// The per-shard hash table of the sharded store. Private to src/store.
//
// Invariants (docs/store.md has the reasoning):
// - Open addressing with linear probing over `capacity_` slots of 24 bytes, any capacity (not
//   just powers of two): a key's home slot is fastrange(key << index_shift_, capacity_), i.e.
//   the high bits of the product, so the shard-selecting top bits of the key are shifted out
//   first.
// - Slot key 0 means empty. Stored keys are MixKey(key_hash), never 0.
// - No tombstones: Erase shifts the following run of the cluster back (Knuth's algorithm R), so
//   every key is reachable from its home slot without crossing an empty slot.
// - At least one slot is always empty (size_ <= grow_at_ < capacity_), so probes terminate.
// - A stored state is never dead (expired or all zero) at the time it was written; dead states
//   are dropped when touched, by the incremental sweep, by full sweeps and by rehashing.
// - min_expiry_ is a lower bound on the expiry_ns of every stored state (exact after a full
//   sweep or rehash, lowered by every write), so a sweep at now < min_expiry_ can be skipped.
// - leases_ holds a LeaseBook only for stored keys (concurrency keys whose slots were acquired
//   with a lease token): every erase of an entry (EraseAt, sweeps, rehashing, eviction) drops
//   its book, so a book never outlives the state counting its slots. A book's leases are live
//   no longer than the state (a lease's expiry is at most its key's), so dropping a dead key's
//   book loses nothing; SweepAll also prunes dead leases from live keys' books.

#include <cstddef>
#include <cstdint>
#include <limits>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/types/span.h"
#include "src/core/algorithms.h"
#include "src/core/leases.h"

namespace floodgate::store {

// One slot: 24 bytes, so a 64-byte cache line holds 2.67 of them.
struct Entry {
  uint64_t key = 0;  // MixKey(key_hash); 0 = empty
  core::KeyState state;
};
static_assert(sizeof(Entry) == 24);

// What a memory cap budgets per slot for the eviction marks on top of the slot itself: up to
// 3/16 of the slots are marked or remembered (StateTable::Protect, Remark) in hash sets of
// about 10 bytes per element, up to twice that just after a set grows.
inline constexpr size_t kMarkBytesPerSlot = 4;

// Returns whether `state` is equivalent to fresh at `now_ns` and so need not be stored.
inline bool IsDead(const core::KeyState& state, int64_t now_ns) {
  return state.expiry_ns <= now_ns || (state.expiry_ns == 0 && state.data == 0);
}

// Returns the key under which the store files `key_hash`: a bijective mix (multiplication by an
// odd constant) so that even sequential test hashes spread over shards and slots. KeyHasher
// output is already uniform; the mix costs one multiply. key_hash 0 (never produced by
// KeyHasher) is filed as if it were kZeroKeyStandIn, so it cannot look like an empty slot.
inline constexpr uint64_t kZeroKeyStandIn = 0x8000000000000000ULL;
// The inverse of MixKey (for key_hash != 0): the multiplicative inverse of its odd constant.
inline uint64_t UnmixKey(uint64_t mixed) { return mixed * 0xF1DE83E19937733DULL; }
inline uint64_t MixKey(uint64_t key_hash) {
  const uint64_t k = key_hash != 0 ? key_hash : kZeroKeyStandIn;
  return k * 0x9E3779B97F4A7C15ULL;  // odd, so a bijection; nonzero in, nonzero out
}

// Returns the shard of a mixed key among 2^shard_bits shards: its top bits.
inline size_t ShardOfMixed(uint64_t mixed, int shard_bits) {
  return shard_bits == 0 ? 0 : static_cast<size_t>(mixed >> (64 - shard_bits));
}

// Tuning constants; docs/store.md explains the choices.
inline constexpr size_t kMinCapacity = 16;            // first allocation of a table
inline constexpr size_t kMaxLoadPercent = 85;         // grow (or evict) above this load
inline constexpr size_t kGrowPercent = 130;           // new capacity = old * 1.3
inline constexpr size_t kKeepAfterSweepPercent = 75;  // grow anyway if a sweep left more
inline constexpr size_t kShrinkBelowPercent = 15;     // shrink a table this sparse...
inline constexpr size_t kShrinkToLoadPercent = 50;    // ...to this load
inline constexpr size_t kInitialLoadPercent = 80;     // load a table is sized for by Reserve
inline constexpr size_t kSweepEvery = 16;             // every 16th Apply on a shard...
inline constexpr size_t kSweepSlots = 16;             // ...sweeps 16 slots (1 per Apply)
inline constexpr size_t kCapSweepSlots = 32;          // slots swept before evicting
inline constexpr size_t kEvictScanSlots = 16;         // slots scanned for an eviction victim
// Largest capacity we allocate: keeps capacity * sizeof(Entry) and the percent arithmetic far
// from overflow (2^40 entries = 24 TiB).
inline constexpr size_t kMaxCapacity = size_t{1} << 40;

// Counters of one table (StoreStats without the sums).
struct TableCounters {
  uint64_t reclaimed = 0;
  uint64_t evicted = 0;
  uint64_t refused_full = 0;
};

// An open-addressing map from mixed key to KeyState. Not thread-safe: the owning shard's mutex
// guards every call. Neither copyable nor movable: it owns its slots.
class StateTable {
 public:
  // Where a probe for a key ended: the key's slot (found), or the empty slot where it would be
  // inserted. `slot` is meaningless while capacity() == 0. Valid until the table next changes.
  struct Probe {
    bool found = false;
    size_t slot = 0;
  };

  StateTable() = default;
  ~StateTable();
  StateTable(const StateTable&) = delete;
  StateTable& operator=(const StateTable&) = delete;

  // Sets the bits of the key used by the shard (shifted out of the index) and the largest
  // capacity the memory cap allows (0 = unbounded). Call once, while empty.
  void Configure(int index_shift, size_t max_capacity) {
    index_shift_ = index_shift;
    max_capacity_ = max_capacity;
  }

  // Sizes the table for `entries` keys at kInitialLoadPercent (clamped to the cap).
  // Returns false when the allocation failed.
  bool Reserve(size_t entries);

  // Returns where `key` is, or where it would go.
  // Calls fn(key, state) for every entry live at now_ns (key: MixKey of its key_hash).
  template <typename Fn>
  void ForEachLive(int64_t now_ns, Fn fn) const {
    for (size_t i = 0; i < capacity_; ++i) {
      if (slots_[i].key != 0 && !IsDead(slots_[i].state, now_ns)) {
        fn(slots_[i].key, slots_[i].state);
      }
    }
  }

  Probe Find(uint64_t key) const {
    if (capacity_ == 0) {
      return Probe{false, 0};
    }
    size_t i = Home(key);
    while (true) {
      const uint64_t k = slots_[i].key;
      if (k == key) {
        return Probe{true, i};
      }
      if (k == 0) {
        return Probe{false, i};
      }
      if (++i == capacity_) {
        i = 0;
      }
    }
  }

  // Starts loading the cache lines where `key` is probably stored, so that several keys of a
  // transaction miss the cache in parallel rather than one after the other.
  void Prefetch(uint64_t key) const {
    // Unconditional: with no table this prefetches address 0, which is harmless (prefetches
    // never fault), and GCC 12 drops a __builtin_prefetch guarded by a branch here.
    __builtin_prefetch(slots_ + Home(key));
  }

  // Returns the state stored at a slot from a successful Find.
  const core::KeyState& StateAt(size_t slot) const { return slots_[slot].state; }

  // Makes `next` the state of `key`, given `probe` = Find(key) with no change since: erases the
  // entry when `next` is dead at `now_ns`, overwrites it, or inserts it (growing, sweeping or
  // evicting as needed). An insert never evicts a key listed in `pinned` (the sorted keys of
  // the current transaction); when nothing else can go, the insert is refused and counted.
  void Commit(uint64_t key, Probe probe, const core::KeyState& next, int64_t now_ns,
              absl::Span<const uint64_t> pinned) {
    if (probe.found) {
      Entry& e = slots_[probe.slot];
      if (IsDead(next, now_ns)) {
        EraseAt(probe.slot);
        ++counters_.reclaimed;
      } else if (e.state != next) {
        e.state = next;
        NoteExpiry(next.expiry_ns);
      }
      return;
    }
    if (IsDead(next, now_ns)) {
      return;
    }
    if (size_ < grow_at_) {
      slots_[probe.slot] = Entry{key, next};
      ++size_;
      NoteExpiry(next.expiry_ns);
      return;
    }
    InsertSlow(key, next, now_ns, pinned);
  }

  // Called once per Apply that touched this table: every kSweepEvery calls, sweeps kSweepSlots
  // slots from the sweep cursor (when anything can have expired).
  void Tick(int64_t now_ns) {
    if (now_ns >= min_expiry_ && ++ticks_ % kSweepEvery == 0) {
      Sweep(kSweepSlots, now_ns);
    }
  }

  // Drops every dead entry, then shrinks the table if it is sparse (frees it when empty).
  void SweepAll(int64_t now_ns);

  // Marks the entry of `key` (which must be stored) as one the memory cap never evicts: a key
  // over its limit (so nobody can reset their own limit by flooding the store with new keys),
  // or an established one, hit again while its state was live (so a flood of one-hit keys
  // does not push out the users who are really there). The mark goes with the entry. At most
  // 1/16 of the capped capacity is marked (about 0.6 bytes per slot at most); beyond that,
  // marks are not taken (the eviction order, soonest-fresh first, still applies). Only under a
  // memory cap, where eviction happens.
  void Protect(uint64_t key) {
    if (max_capacity_ != 0 && protected_.size() < max_capacity_ / 16) {
      protected_.insert(key);
    }
  }
  bool capped() const { return max_capacity_ != 0; }
  bool IsProtected(uint64_t key) const { return protected_.contains(key); }
  // Marks `key` again if its entry was marked when it was last erased (its state lapsed back to
  // fresh at the end of a window, say) and it is stored now: an established user's first hit
  // of a new window is then as safe from eviction as the rest. The memory of erased marks is
  // two generations of at most 1/16 of the capped capacity each; the older generation is
  // forgotten when the newer one fills.
  void Remark(uint64_t key) {
    if (lapsed_new_.empty() && lapsed_old_.empty()) {
      return;
    }
    if (lapsed_new_.erase(key) + lapsed_old_.erase(key) > 0 && Find(key).found) {
      Protect(key);
    }
  }

  // Returns the live lease `token` of `key` (nullptr when unknown, released or expired).
  // Valid until the table next changes.
  const core::Lease* FindLease(uint64_t key, uint64_t token, int64_t now_ns) const {
    if (leases_.empty()) {
      return nullptr;
    }
    const auto it = leases_.find(key);
    return it == leases_.end() ? nullptr : it->second.Find(token, now_ns);
  }
  // Records a lease on `key`, which must be stored (see core::LeaseBook::Add).
  void AddLease(uint64_t key, uint64_t token, uint64_t count, int64_t expiry_ns, int64_t now_ns) {
    leases_[key].Add(token, count, expiry_ns, now_ns);
  }
  // Forgets lease `token` of `key` (released).
  void RemoveLease(uint64_t key, uint64_t token) {
    const auto it = leases_.find(key);
    if (it != leases_.end() && it->second.Remove(token) && it->second.empty()) {
      leases_.erase(it);
    }
  }
  // Returns the number of leases held (live or not yet pruned).
  size_t leases() const;

  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }
  // The slots, the eviction marks' sets (a slot of 8 bytes and a control byte each) and the
  // lease books (a slot of 8 + 32 bytes and a control byte per key, plus spilled leases).
  size_t bytes() const;
  const TableCounters& counters() const { return counters_; }

 private:
  size_t Home(uint64_t key) const {
    return static_cast<size_t>((static_cast<unsigned __int128>(key << index_shift_) * capacity_) >>
                               64);
  }
  size_t MaxCapacity() const { return max_capacity_ != 0 ? max_capacity_ : kMaxCapacity; }
  void NoteExpiry(int64_t expiry_ns) {
    if (expiry_ns < min_expiry_) {
      min_expiry_ = expiry_ns;
    }
  }

  void InsertSlow(uint64_t key, const core::KeyState& next, int64_t now_ns,
                  absl::Span<const uint64_t> pinned);
  // Removes the entry at `slot`, shifting later members of its cluster back.
  void EraseAt(size_t slot);
  // Visits up to `slots` slots from the cursor, erasing dead entries; on wrap-around, shrinks
  // a sparse table.
  void Sweep(size_t slots, int64_t now_ns);
  // Frees the table if empty, or rehashes a sparse one to kShrinkToLoadPercent.
  void MaybeShrink(int64_t now_ns);
  // Moves every live entry into a new table of `new_capacity` slots (0 frees the table).
  // Returns false, leaving the table unchanged, when the allocation fails.
  bool Rehash(size_t new_capacity, int64_t now_ns);
  // Erases one entry to make room for `key`: a dead one if the sample has one, else the one
  // with the smallest expiry_ns. Returns false when the sample holds only pinned keys.
  bool EvictOne(uint64_t key, int64_t now_ns, absl::Span<const uint64_t> pinned);
  void SetCapacity(Entry* slots, size_t capacity);

  Entry* slots_ = nullptr;
  size_t capacity_ = 0;
  size_t size_ = 0;
  size_t grow_at_ = 0;  // most entries before an insert must grow, sweep or evict
  size_t cursor_ = 0;   // next slot the incremental sweep visits
  uint64_t ticks_ = 0;
  int64_t min_expiry_ = std::numeric_limits<int64_t>::max();
  int index_shift_ = 0;
  size_t max_capacity_ = 0;  // 0 = unbounded
  TableCounters counters_;
  // Forgets the mark and the leases of an erased entry, keeping the mark in lapsed_new_ for
  // Remark.
  void Lapse(uint64_t key) {
    if (!leases_.empty()) {
      leases_.erase(key);
    }
    if (protected_.empty() || protected_.erase(key) == 0) {
      return;
    }
    if (lapsed_new_.size() >= max_capacity_ / 16) {
      lapsed_old_ = std::move(lapsed_new_);
      lapsed_new_.clear();
    }
    lapsed_new_.insert(key);
  }

  // Stored keys marked by Protect; only kept under a memory cap, where eviction happens.
  absl::flat_hash_set<uint64_t> protected_;
  // Keys whose marked entry was erased, newer and older generation (see Remark).
  absl::flat_hash_set<uint64_t> lapsed_new_;
  absl::flat_hash_set<uint64_t> lapsed_old_;
  // The lease books of stored concurrency keys (see the invariants above).
  absl::flat_hash_map<uint64_t, core::LeaseBook> leases_;
};

// Returns the number of slots a table needs for `entries` keys at `load_percent`.
size_t CapacityForEntries(size_t entries, size_t load_percent);

}  // namespace floodgate::store
