#pragma once

// The over-limit fast path: once a key is refused, later checks of it are refused from here,
// without touching the store or the cluster, until the time it may pass again.
//
// A direct-mapped table of (key hash, refused-until) slots, each guarded by a sequence counter
// (a seqlock): readers never block or write, a writer that finds its slot busy skips the write
// (this is a cache: a missed entry only means the store is asked). A slot holds one key; another
// key mapping to the same slot replaces it. Clear() invalidates every entry at once (a config
// change can raise a limit, which would make cached refusals wrong).
//
// Thread-safety: every method may be called from any thread.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace floodgate::limiter {

class RefusalCache {
 public:
  // `slots` is rounded up to a power of two (minimum 64).
  explicit RefusalCache(size_t slots) {
    size_t n = 64;
    while (n < slots) {
      n <<= 1;
    }
    mask_ = n - 1;
    slots_ = std::make_unique<Slot[]>(n);
  }

  // Returns until when `key_hash` is known to be refused, or 0 when it is not (or no longer).
  int64_t RefusedUntil(uint64_t key_hash, int64_t now_ns) const {
    const Slot& slot = slots_[Index(key_hash)];
    const uint32_t before = slot.seq.load(std::memory_order_acquire);
    if (before & 1) {
      return 0;  // being written
    }
    const uint64_t key = slot.key.load(std::memory_order_relaxed);
    const int64_t until = slot.until.load(std::memory_order_relaxed);
    const uint32_t generation = slot.generation.load(std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (slot.seq.load(std::memory_order_relaxed) != before) {
      return 0;
    }
    if (key != key_hash || generation != generation_.load(std::memory_order_relaxed) ||
        until <= now_ns) {
      return 0;
    }
    return until;
  }

  // The current generation: read it before deciding, and pass it to Refuse, so that a decision
  // made under a config older than the last Clear() is never cached.
  uint32_t generation() const { return generation_.load(std::memory_order_acquire); }

  // Records that `key_hash` is refused until `until_ns`, as decided in `generation`.
  void Refuse(uint64_t key_hash, int64_t until_ns, uint32_t generation) {
    Slot& slot = slots_[Index(key_hash)];
    uint32_t seq = slot.seq.load(std::memory_order_relaxed);
    if ((seq & 1) || !slot.seq.compare_exchange_strong(seq, seq + 1, std::memory_order_acquire)) {
      return;  // another writer has the slot
    }
    std::atomic_thread_fence(std::memory_order_release);
    slot.key.store(key_hash, std::memory_order_relaxed);
    slot.until.store(until_ns, std::memory_order_relaxed);
    slot.generation.store(generation, std::memory_order_relaxed);
    slot.seq.store(seq + 2, std::memory_order_release);
  }

  // Forgets every entry.
  void Clear() { generation_.fetch_add(1, std::memory_order_acq_rel); }

  size_t slots() const { return mask_ + 1; }

 private:
  struct Slot {
    std::atomic<uint32_t> seq{0};
    std::atomic<uint32_t> generation{0};
    std::atomic<uint64_t> key{0};
    std::atomic<int64_t> until{0};
  };

  size_t Index(uint64_t key_hash) const {
    return static_cast<size_t>((key_hash * 0x9E3779B97F4A7C15ULL) >> 32) & mask_;
  }

  size_t mask_ = 0;
  std::unique_ptr<Slot[]> slots_;
  // Starts at 1 so that never-written slots (generation 0) never match.
  std::atomic<uint32_t> generation_{1};
};

}  // namespace floodgate::limiter
