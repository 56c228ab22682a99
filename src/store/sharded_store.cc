// The sharded in-memory Store: 2^k shards picked by the top bits of the mixed key hash, each an
// absl::Mutex over one StateTable (src/store/state_table.h). docs/store.md has the design.
//
// Transaction invariants (Apply):
// - A transaction locks the distinct shards of its ops in ascending shard order and holds them
//   all until it has decided and committed, so concurrent transactions cannot deadlock and see
//   each other's effects all or nothing.
// - Ops on the same key are evaluated in op order, each against the tentative state the
//   previous one left; ops on different keys are independent, so grouping the ops by key (a sort
//   by (mixed key, op index)) evaluates exactly what op order would.
// - The state read for a key is the stored one, or fresh when missing or dead (expiry_ns <= now).
// - Commit writes only each key's last tentative state; dead results are erased, not stored.
//   hits == 0 checks are reads and never write (the algorithms return an equivalent state, which
//   for a missing key could otherwise be inserted and cost memory).
// - Nothing else writes: a refused transaction leaves every table as it was (apart from the
//   incremental sweep, which only drops entries that already read as fresh).
// - ApplyAndCapture is Apply instantiated with capture on (ApplyOne<true>, ApplyMany<true>):
//   the same locks held over the same steps, plus copying each key's final state out before
//   unlocking. Apply instantiates them with capture off: the same work as before (its
//   single-op path compiles to the same instructions).
// - MergeStates and GetState touch one key under its shard's lock. A merge commits like an
//   insert (Commit: dead results erased, the memory cap, sweeping) and never lowers a state:
//   core::Merge admits no more than the stored state would.

#include <algorithm>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "floodgate/store.h"
#include "src/core/algorithms.h"
#include "src/store/state_table.h"

namespace floodgate {
namespace {

using store::StateTable;

constexpr size_t kMaxShards = size_t{1} << 16;
// Transactions up to this many ops run on stack arrays (no heap allocation).
constexpr size_t kInlineOps = 8;

// One shard: a lock and the table it guards, on its own cache lines so that shards used by
// different cores do not false-share.
struct alignas(64) Shard {
  absl::Mutex mu;
  StateTable table ABSL_GUARDED_BY(mu);
};

// Evaluates one op against `state`, returning the decision and the tentative next state.
// A kRelease frees the slots of `lease`, the live lease its token names on this key (nullptr:
// unknown, already released or expired, so nothing is freed and the decision is not allowed);
// its decision reads the state after the release. kRelease ops never block a transaction.
core::Outcome Evaluate(const StoreOp& op, const core::KeyState& state, int64_t now_ns,
                       const core::Lease* lease) {
  if (op.kind == StoreOp::Kind::kRelease) {
    core::Outcome out;
    out.next = lease != nullptr ? core::ReleaseLease(op.spec, state, now_ns, *lease) : state;
    out.decision = core::Decide(op.spec, out.next, now_ns, 0).decision;
    out.decision.allowed = lease != nullptr;
    out.decision.retry_after_ns = 0;
    return out;
  }
  core::Outcome out = core::Decide(op.spec, state, now_ns, op.hits);
  if (op.hits == 0) {
    out.next = state;  // a read never writes (see the invariants above)
  }
  return out;
}

// Returns whether `op`, decided `d` and committed, acquired concurrency slots under a lease.
bool AcquiresLease(const StoreOp& op, const Decision& d) {
  return op.kind == StoreOp::Kind::kCheck && op.lease != 0 && op.hits > 0 && d.allowed &&
         op.spec.algorithm == Algorithm::kConcurrency;
}

// Returns the live lease a kRelease op names on `key` (nullptr for other ops).
const core::Lease* LeaseOf(const StateTable& table, uint64_t key, const StoreOp& op,
                           int64_t now_ns) {
  return op.kind == StoreOp::Kind::kRelease ? table.FindLease(key, op.lease, now_ns) : nullptr;
}

// Returns whether a refusal of `op` aborts the transaction.
bool Blocks(const StoreOp& op, const Decision& d) {
  return !d.allowed && !op.shadow && op.kind == StoreOp::Kind::kCheck;
}

// The decision reported for an op that passed in a transaction that did not commit: a read of
// the stored state, marked allowed.
Decision UnconsumedDecision(const StoreOp& op, const core::KeyState& stored, int64_t now_ns) {
  Decision d = core::Decide(op.spec, stored, now_ns, 0).decision;
  d.allowed = true;
  d.retry_after_ns = 0;
  return d;
}

// What a transaction reads for `key` (see the invariants above): where it is in the table, and
// its stored state when live, else fresh (KeyState{}).
struct LiveLookup {
  StateTable::Probe probe;
  core::KeyState state;
  bool live = false;
};

LiveLookup FindLive(const StateTable& table, uint64_t key, int64_t now_ns) {
  LiveLookup found{.probe = table.Find(key)};
  if (found.probe.found && !store::IsDead(table.StateAt(found.probe.slot), now_ns)) {
    found.state = table.StateAt(found.probe.slot);
    found.live = true;
  }
  return found;
}

// Writes `state` (the key's state once the transaction is over) to `record` for ApplyAndCapture,
// with KeyState{} for a state that is dead at now_ns, as the store would hold it.
// `released`: a release in the transaction freed slots of this key, whose state before it was
// `before` (the record is then `lowered`, see StateRecord).
void Capture(const StoreOp& op, const core::KeyState& state, int64_t now_ns, StateRecord& record,
             bool released = false, const core::KeyState& before = {}) {
  const bool dead = store::IsDead(state, now_ns);
  record.key_hash = op.key_hash;
  record.spec = op.spec;
  record.expiry_ns = dead ? 0 : state.expiry_ns;
  record.data = dead ? 0 : state.data;
  record.lowered = released;
  record.before_expiry_ns = released ? before.expiry_ns : 0;
  record.before_data = released ? before.data : 0;
}

// Returns whether `op`, decided `d` and committed, freed the slots of a lease.
bool Releases(const StoreOp& op, const Decision& d) {
  return op.kind == StoreOp::Kind::kRelease && d.allowed;
}

// The state MergeStates stores for `record` over `stored` (fresh when missing or dead).
core::KeyState MergeRecord(const StateRecord& record, const core::KeyState& stored,
                           int64_t now_ns) {
  const core::KeyState incoming{.expiry_ns = record.expiry_ns, .data = record.data};
  if (record.lowered) {
    const core::KeyState before{.expiry_ns = record.before_expiry_ns, .data = record.before_data};
    if (core::Merge(record.spec, stored, before, now_ns) == before) {
      return incoming;  // this copy saw nothing the releasing owner had not: take the release
    }
  }
  return core::Merge(record.spec, stored, incoming, now_ns);
}

class ShardedStore final : public LocalStore {
 public:
  ShardedStore(int shard_bits, size_t max_capacity_per_shard)
      : shard_bits_(shard_bits), shards_(new Shard[size_t{1} << shard_bits]) {
    for (size_t i = 0; i < num_shards(); ++i) {
      absl::MutexLock lock(&shards_[i].mu);
      shards_[i].table.Configure(shard_bits, max_capacity_per_shard);
    }
  }

  // Sizes every shard for its share of `entries`. Returns false when an allocation failed.
  bool Reserve(size_t entries) {
    const size_t per_shard = entries / num_shards() + (entries % num_shards() != 0 ? 1 : 0);
    for (size_t i = 0; i < num_shards(); ++i) {
      absl::MutexLock lock(&shards_[i].mu);
      if (!shards_[i].table.Reserve(per_shard)) {
        return false;
      }
    }
    return true;
  }

  bool Apply(absl::Span<const StoreOp> ops, int64_t now_ns,
             absl::Span<Decision> decisions) override {
    assert(decisions.size() >= ops.size());
    if (decisions.size() < ops.size()) {
      return false;  // caller bug: nowhere to report; consume nothing
    }
    if (ops.size() == 1) {
      return ApplyOne<false>(ops[0], now_ns, decisions[0], nullptr);
    }
    if (ops.empty()) {
      return true;
    }
    return ApplyMany<false>(ops, now_ns, decisions, {});
  }

  bool ApplyAndCapture(absl::Span<const StoreOp> ops, int64_t now_ns,
                       absl::Span<Decision> decisions, absl::Span<StateRecord> after) override {
    assert(decisions.size() >= ops.size() && after.size() >= ops.size());
    if (decisions.size() < ops.size() || after.size() < ops.size()) {
      return false;  // caller bug: nowhere to report; consume nothing
    }
    if (ops.size() == 1) {
      return ApplyOne<true>(ops[0], now_ns, decisions[0], &after[0]);
    }
    if (ops.empty()) {
      return true;
    }
    return ApplyMany<true>(ops, now_ns, decisions, after);
  }

  void MergeStates(absl::Span<const StateRecord> records, int64_t now_ns) override {
    for (const StateRecord& record : records) {
      const core::KeyState incoming{.expiry_ns = record.expiry_ns, .data = record.data};
      if (store::IsDead(incoming, now_ns) && !record.lowered) {
        continue;  // reads as fresh: merging it changes nothing
      }
      const uint64_t key = store::MixKey(record.key_hash);
      Shard& shard = ShardFor(key);
      absl::MutexLock lock(&shard.mu);
      StateTable& table = shard.table;
      const LiveLookup stored = FindLive(table, key, now_ns);
      // Commit writes only when the result differs, and erases a found-but-dead entry if the
      // result is dead too. No other key of this call is pinned: records are independent.
      table.Commit(key, stored.probe, MergeRecord(record, stored.state, now_ns), now_ns, {});
      table.Tick(now_ns);
    }
  }

  bool GetState(uint64_t key_hash, int64_t now_ns, StateRecord* out) const override {
    const uint64_t key = store::MixKey(key_hash);
    Shard& shard = ShardFor(key);
    absl::ReaderMutexLock lock(&shard.mu);
    const LiveLookup found = FindLive(shard.table, key, now_ns);
    if (!found.live) {
      return false;
    }
    out->key_hash = key_hash;
    out->expiry_ns = found.state.expiry_ns;
    out->data = found.state.data;
    return true;
  }

  void ForEachLive(int64_t now_ns, absl::FunctionRef<void(const StateRecord&)> fn) const override {
    for (size_t i = 0; i < num_shards(); ++i) {
      Shard& shard = shards_[i];
      absl::ReaderMutexLock lock(&shard.mu);
      shard.table.ForEachLive(now_ns, [&](uint64_t key, const core::KeyState& state) {
        StateRecord record;
        record.key_hash = store::UnmixKey(key);
        record.expiry_ns = state.expiry_ns;
        record.data = state.data;
        fn(record);
      });
    }
  }

  StoreStats GetStats() const override {
    StoreStats total;
    for (size_t i = 0; i < num_shards(); ++i) {
      Shard& shard = shards_[i];
      absl::ReaderMutexLock lock(&shard.mu);
      StoreStats s;
      s.keys = shard.table.size();
      s.bytes = shard.table.bytes();
      s.reclaimed = shard.table.counters().reclaimed;
      s.evicted = shard.table.counters().evicted;
      s.refused_full = shard.table.counters().refused_full;
      total += s;
    }
    return total;
  }

  void ReclaimExpired(int64_t now_ns) override {
    // One shard at a time, each swept whole under its lock: a full sweep must not be
    // interleaved with other writers, which could shift unvisited entries behind the sweep.
    for (size_t i = 0; i < num_shards(); ++i) {
      absl::MutexLock lock(&shards_[i].mu);
      shards_[i].table.SweepAll(now_ns);
    }
  }

 private:
  size_t num_shards() const { return size_t{1} << shard_bits_; }
  Shard& ShardFor(uint64_t mixed) const { return shards_[store::ShardOfMixed(mixed, shard_bits_)]; }

  // The common case: one op, one shard, no allocation, one probe. With kCapture, also writes
  // the key's state after the transaction to *after (unused otherwise).
  template <bool kCapture>
  bool ApplyOne(const StoreOp& op, int64_t now_ns, Decision& decision, StateRecord* after) {
    const uint64_t key = store::MixKey(op.key_hash);
    Shard& shard = ShardFor(key);
    absl::MutexLock lock(&shard.mu);
    StateTable& table = shard.table;
    const LiveLookup found = FindLive(table, key, now_ns);
    const StateTable::Probe& probe = found.probe;
    const core::KeyState& state = found.state;
    const core::Outcome out = Evaluate(op, state, now_ns, LeaseOf(table, key, op, now_ns));
    decision = out.decision;
    const bool commit = !Blocks(op, out.decision);
    if (commit) {
      // A found-but-dead entry is erased here when the result is dead too.
      table.Commit(key, probe, out.next, now_ns, {});
      CommitLease(table, key, op, out, now_ns);
      if (table.capped() && op.hits > 0) {
        if (state == core::KeyState{}) {
          table.Remark(key);  // the first hit of a key that was established before
        } else if (!table.IsProtected(key)) {
          table.Protect(key);  // hit again while live: established, kept through floods
        }
      }
    } else if (probe.found && op.hits > 0) {
      table.Protect(key);  // over its limit: never evicted by the memory cap
    }
    if constexpr (kCapture) {
      Capture(op, commit ? out.next : state, now_ns, *after, commit && Releases(op, decision),
              state);
    }
    table.Tick(now_ns);
    return commit;
  }

  // Several ops: sort by key, lock shards in order, evaluate, then commit all or nothing.
  // Thread-safety analysis cannot follow a run-time set of locks; the lock/unlock pairing is
  // local to this function and every table access happens between them.
  template <bool kCapture>
  bool ApplyMany(absl::Span<const StoreOp> ops, int64_t now_ns, absl::Span<Decision> decisions,
                 absl::Span<StateRecord> after) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    const size_t n = ops.size();
    struct Ref {
      uint64_t key;    // MixKey(op.key_hash)
      uint32_t index;  // op index
    };
    absl::InlinedVector<Ref, kInlineOps> refs(n);
    absl::InlinedVector<uint64_t, kInlineOps> keys(n);        // sorted mixed keys (pinned set)
    absl::InlinedVector<core::KeyState, kInlineOps> base(n);  // stored state, per op index
    absl::InlinedVector<core::KeyState, kInlineOps> next(n);  // tentative state, per op index
    absl::InlinedVector<Shard*, kInlineOps> locked;
    for (size_t i = 0; i < n; ++i) {
      refs[i] = Ref{store::MixKey(ops[i].key_hash), static_cast<uint32_t>(i)};
    }
    std::sort(refs.begin(), refs.end(), [](const Ref& a, const Ref& b) {
      return a.key != b.key ? a.key < b.key : a.index < b.index;
    });
    // Ascending keys give ascending shards (the shard is the key's top bits): the lock order.
    for (size_t i = 0; i < n; ++i) {
      keys[i] = refs[i].key;
      Shard* shard = &ShardFor(refs[i].key);
      if (locked.empty() || locked.back() != shard) {
        shard->mu.Lock();
        locked.push_back(shard);
      }
    }

    for (size_t i = 0; i < n; ++i) {
      ShardFor(refs[i].key).table.Prefetch(refs[i].key);
    }

    // Evaluate, one key group at a time. A lease is released by at most one op of a group
    // (the same token twice on one key frees it once).
    bool commit = true;
    for (size_t g = 0; g < n;) {
      const uint64_t key = refs[g].key;
      const StateTable& table = ShardFor(key).table;
      const core::KeyState stored = FindLive(table, key, now_ns).state;
      core::KeyState state = stored;
      size_t end = g;
      for (; end < n && refs[end].key == key; ++end) {
        const uint32_t i = refs[end].index;
        const core::Lease* lease = LeaseOf(table, key, ops[i], now_ns);
        for (size_t j = g; j < end && lease != nullptr; ++j) {
          const StoreOp& earlier = ops[refs[j].index];
          if (earlier.kind == StoreOp::Kind::kRelease && earlier.lease == ops[i].lease) {
            lease = nullptr;  // already taken by an earlier op of this transaction
          }
        }
        const core::Outcome out = Evaluate(ops[i], state, now_ns, lease);
        decisions[i] = out.decision;
        base[i] = stored;
        next[i] = out.next;
        state = out.next;
        if (Blocks(ops[i], out.decision)) {
          commit = false;
        }
      }
      g = end;
    }

    if (commit) {
      // Write each key's last tentative state (the last ref of each group). Probe again: an
      // earlier commit in this transaction may have grown, swept or evicted in the same table.
      for (size_t g = 0; g < n; ++g) {
        if (g + 1 < n && refs[g + 1].key == refs[g].key) {
          continue;
        }
        StateTable& table = ShardFor(refs[g].key).table;
        table.Commit(refs[g].key, table.Find(refs[g].key), next[refs[g].index], now_ns,
                     absl::MakeConstSpan(keys));
        if (table.capped() && ops[refs[g].index].hits > 0) {
          if (base[refs[g].index] == core::KeyState{}) {
            table.Remark(refs[g].key);  // established before (see ApplyOne)
          } else if (!table.IsProtected(refs[g].key) && table.Find(refs[g].key).found) {
            table.Protect(refs[g].key);  // hit again while live: established (see ApplyOne)
          }
        }
      }
      // Then the lease books, now that every key holds its final state.
      for (size_t i = 0; i < n; ++i) {
        const uint64_t key = store::MixKey(ops[i].key_hash);
        CommitLease(ShardFor(key).table, key, ops[i],
                    core::Outcome{.decision = decisions[i], .next = next[i]}, now_ns);
      }
    } else {
      for (size_t i = 0; i < n; ++i) {
        if (decisions[i].allowed) {
          decisions[i] = UnconsumedDecision(ops[i], base[i], now_ns);
        } else if (Blocks(ops[i], decisions[i]) && ops[i].hits > 0) {
          // Over its limit: never evicted by the memory cap (when it is stored at all).
          const uint64_t key = store::MixKey(ops[i].key_hash);
          StateTable& table = ShardFor(key).table;
          if (table.Find(key).found) {
            table.Protect(key);
          }
        }
      }
    }

    if constexpr (kCapture) {
      // Every op of a key group reports the group's final state: its last tentative state if
      // committed, else the stored one (base is the same for the whole group).
      for (size_t g = 0; g < n;) {
        size_t end = g + 1;
        while (end < n && refs[end].key == refs[g].key) {
          ++end;
        }
        const core::KeyState& final_state =
            commit ? next[refs[end - 1].index] : base[refs[g].index];
        bool released = false;
        for (size_t j = g; j < end; ++j) {
          released = released || (commit && Releases(ops[refs[j].index], decisions[refs[j].index]));
        }
        for (size_t j = g; j < end; ++j) {
          const uint32_t i = refs[j].index;
          Capture(ops[i], final_state, now_ns, after[i], released, base[refs[g].index]);
        }
        g = end;
      }
    }

    for (auto it = locked.rbegin(); it != locked.rend(); ++it) {
      (*it)->table.Tick(now_ns);
      (*it)->mu.Unlock();
    }
    return commit;
  }

  // After `op` committed with outcome `out` on `key`: forgets the lease a release freed, records
  // the lease an acquire took. Only for a key the table holds: a state the memory cap kept out
  // has no slots to name (its acquire then gets no lease; the slots age out).
  static void CommitLease(StateTable& table, uint64_t key, const StoreOp& op,
                          const core::Outcome& out, int64_t now_ns) {
    if (op.kind == StoreOp::Kind::kRelease) {
      if (out.decision.allowed) {
        table.RemoveLease(key, op.lease);
      }
    } else if (AcquiresLease(op, out.decision) && table.Find(key).found) {
      table.AddLease(key, op.lease, op.hits, out.next.expiry_ns, now_ns);
    }
  }

  const int shard_bits_;
  const std::unique_ptr<Shard[]> shards_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<LocalStore>> NewShardedStore(const StoreOptions& options) {
  size_t shards = options.shards;
  if (shards == 0) {
    const size_t threads = std::max(1u, std::thread::hardware_concurrency());
    shards = std::max<size_t>(16, 4 * threads);
  }
  if (shards > kMaxShards) {
    return absl::InvalidArgumentError(
        absl::StrCat("StoreOptions.shards is ", shards, "; at most ", kMaxShards));
  }
  int shard_bits = 0;
  while ((size_t{1} << shard_bits) < shards) {
    ++shard_bits;
  }
  shards = size_t{1} << shard_bits;

  size_t max_capacity_per_shard = 0;
  if (options.max_memory_bytes != 0) {
    constexpr size_t kSlotBytes = sizeof(store::Entry) + store::kMarkBytesPerSlot;
    max_capacity_per_shard = options.max_memory_bytes / shards / kSlotBytes;
    // A table needs a few slots to make progress (one stays empty; eviction needs candidates).
    constexpr size_t kMinEntriesPerShard = 8;
    if (max_capacity_per_shard < kMinEntriesPerShard) {
      return absl::InvalidArgumentError(absl::StrCat(
          "StoreOptions.max_memory_bytes is ", options.max_memory_bytes, ": with ", shards,
          " shards that is fewer than ", kMinEntriesPerShard, " entries of ", kSlotBytes,
          " bytes per shard; need at least ", shards * kMinEntriesPerShard * kSlotBytes));
    }
    max_capacity_per_shard = std::min(max_capacity_per_shard, store::kMaxCapacity);
  }
  if (options.initial_capacity > store::kMaxCapacity) {
    return absl::InvalidArgumentError(absl::StrCat("StoreOptions.initial_capacity is ",
                                                   options.initial_capacity, "; at most ",
                                                   store::kMaxCapacity));
  }

  auto result = std::make_unique<ShardedStore>(shard_bits, max_capacity_per_shard);
  if (!result->Reserve(options.initial_capacity)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "cannot allocate tables for StoreOptions.initial_capacity ", options.initial_capacity));
  }
  return std::unique_ptr<LocalStore>(std::move(result));
}

}  // namespace floodgate
