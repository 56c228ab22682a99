#include "src/store/state_table.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace floodgate::store {
namespace {

// Tables from 1 MiB up are mapped directly: the kernel hands out zeroed pages lazily (no memset
// of the whole table) and we can ask for transparent huge pages, which removes most TLB misses
// of random lookups in a multi-GB store. Smaller tables come from calloc.
constexpr size_t kMmapThresholdBytes = size_t{1} << 20;

Entry* AllocateSlots(size_t capacity) {
  const size_t bytes = capacity * sizeof(Entry);
  if (bytes >= kMmapThresholdBytes) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      return nullptr;
    }
#ifdef MADV_HUGEPAGE
    madvise(p, bytes, MADV_HUGEPAGE);  // advisory: failure only costs TLB misses
#endif
    return static_cast<Entry*>(p);
  }
  return static_cast<Entry*>(std::calloc(capacity, sizeof(Entry)));
}

void FreeSlots(Entry* slots, size_t capacity) {
  if (slots == nullptr) {
    return;
  }
  const size_t bytes = capacity * sizeof(Entry);
  if (bytes >= kMmapThresholdBytes) {
    munmap(slots, bytes);
  } else {
    std::free(slots);
  }
}

size_t GrowAt(size_t capacity) {
  if (capacity == 0) {
    return 0;
  }
  return std::min(capacity - 1, capacity * kMaxLoadPercent / 100);
}

bool Contains(absl::Span<const uint64_t> sorted_keys, uint64_t key) {
  return std::binary_search(sorted_keys.begin(), sorted_keys.end(), key);
}

}  // namespace

size_t CapacityForEntries(size_t entries, size_t load_percent) {
  if (entries == 0) {
    return 0;
  }
  const size_t clamped = std::min(entries, kMaxCapacity);
  const size_t capacity = (clamped * 100 + load_percent - 1) / load_percent;
  return std::clamp(capacity, kMinCapacity, kMaxCapacity);
}

StateTable::~StateTable() { FreeSlots(slots_, capacity_); }

void StateTable::SetCapacity(Entry* slots, size_t capacity) {
  FreeSlots(slots_, capacity_);
  slots_ = slots;
  capacity_ = capacity;
  grow_at_ = GrowAt(capacity);
  cursor_ = 0;
}

bool StateTable::Reserve(size_t entries) {
  const size_t capacity = std::min(CapacityForEntries(entries, kInitialLoadPercent), MaxCapacity());
  if (capacity <= capacity_) {
    return true;
  }
  // Nothing is dead yet in a table being reserved at start; any `now` works.
  return Rehash(capacity, std::numeric_limits<int64_t>::min());
}

void StateTable::EraseAt(size_t slot) {
  Lapse(slots_[slot].key);
  // Knuth's algorithm R: walk the rest of the cluster; an entry whose home is not cyclically in
  // (hole, j] may move back into the hole, which then moves to j.
  size_t hole = slot;
  size_t j = slot;
  while (true) {
    if (++j == capacity_) {
      j = 0;
    }
    const uint64_t k = slots_[j].key;
    if (k == 0) {
      break;
    }
    const size_t home = Home(k);
    const bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
    if (!stays) {
      slots_[hole] = slots_[j];
      hole = j;
    }
  }
  slots_[hole] = Entry{};
  --size_;
}

void StateTable::Sweep(size_t slots, int64_t now_ns) {
  for (size_t visited = 0; visited < slots && capacity_ != 0; ++visited) {
    const Entry& e = slots_[cursor_];
    if (e.key != 0 && IsDead(e.state, now_ns)) {
      // The shift may have moved a later entry into this slot: look at it again next.
      EraseAt(cursor_);
      ++counters_.reclaimed;
      continue;
    }
    if (++cursor_ == capacity_) {
      cursor_ = 0;
      // A full pass is done: the table may have become sparse since it was sized.
      MaybeShrink(now_ns);
      return;
    }
  }
}

void StateTable::SweepAll(int64_t now_ns) {
  if (capacity_ == 0) {
    return;
  }
  if (now_ns >= min_expiry_) {
    // One pass in linear time. Erasing dead entries one by one (EraseAt) would shift the rest
    // of the cluster each time: quadratic in the cluster length, 10 ms per shard at 85% load
    // with half the keys dead. Instead, starting just after an empty slot (so every cluster is
    // seen whole), drop dead entries and move each live entry that follows a hole in its
    // cluster to the first empty slot from its home. That slot is at or before the entry's own
    // slot, which is emptied first, and everything before it in the cluster has already been
    // placed, so the result is what inserting the live entries in order would give.
    size_t r = 0;
    while (slots_[r].key != 0) {
      ++r;  // an empty slot exists: size_ <= grow_at_ < capacity_
    }
    int64_t min_expiry = std::numeric_limits<int64_t>::max();
    bool hole_in_cluster = false;
    for (size_t visited = 0; visited < capacity_; ++visited) {
      if (++r == capacity_) {
        r = 0;
      }
      Entry& slot = slots_[r];
      if (slot.key == 0) {
        hole_in_cluster = false;  // a new cluster starts after this slot
        continue;
      }
      if (IsDead(slot.state, now_ns)) {
        if (!leases_.empty()) {
          leases_.erase(slot.key);
        }
        slot = Entry{};
        --size_;
        ++counters_.reclaimed;
        hole_in_cluster = true;
        continue;
      }
      min_expiry = std::min(min_expiry, slot.state.expiry_ns);
      if (hole_in_cluster) {
        const Entry moved = slot;
        slot = Entry{};
        size_t q = Home(moved.key);
        while (slots_[q].key != 0) {
          if (++q == capacity_) {
            q = 0;
          }
        }
        slots_[q] = moved;
      }
    }
    min_expiry_ = min_expiry;
    cursor_ = 0;
  }
  // Live keys' books may still list leases that have aged out (released never, or by a key that
  // has not been touched since): drop them, and the books left empty.
  for (auto it = leases_.begin(); it != leases_.end();) {
    it->second.Prune(now_ns);
    if (it->second.empty()) {
      leases_.erase(it++);
    } else {
      ++it;
    }
  }
  if (leases_.empty() && leases_.capacity() != 0) {
    leases_ = {};  // frees the table: no key holds leases
  }
  MaybeShrink(now_ns);
}

size_t StateTable::leases() const {
  size_t n = 0;
  for (const auto& [key, book] : leases_) {
    n += book.size();
  }
  return n;
}

size_t StateTable::bytes() const {
  size_t lease_bytes = leases_.capacity() * (sizeof(uint64_t) + sizeof(core::LeaseBook) + 1);
  for (const auto& [key, book] : leases_) {
    lease_bytes += book.heap_bytes();
  }
  return capacity_ * sizeof(Entry) +
         (protected_.capacity() + lapsed_new_.capacity() + lapsed_old_.capacity()) * 9 +
         lease_bytes;
}

void StateTable::MaybeShrink(int64_t now_ns) {
  if (size_ == 0) {
    SetCapacity(nullptr, 0);
    leases_ = {};
    min_expiry_ = std::numeric_limits<int64_t>::max();
    return;
  }
  if (capacity_ <= kMinCapacity || size_ * 100 >= capacity_ * kShrinkBelowPercent) {
    return;
  }
  const size_t target = CapacityForEntries(size_, kShrinkToLoadPercent);
  if (target < capacity_) {
    Rehash(target, now_ns);  // on allocation failure keep the big table: nothing is lost
  }
}

bool StateTable::Rehash(size_t new_capacity, int64_t now_ns) {
  if (new_capacity == 0) {
    SetCapacity(nullptr, 0);
    leases_ = {};
    size_ = 0;
    return true;
  }
  Entry* fresh = AllocateSlots(new_capacity);
  if (fresh == nullptr) {
    return false;
  }
  Entry* old = slots_;
  const size_t old_capacity = capacity_;
  // Home() reads capacity_, so switch before inserting; free the old slots only after the move.
  slots_ = fresh;
  capacity_ = new_capacity;
  grow_at_ = GrowAt(new_capacity);
  cursor_ = 0;
  size_ = 0;
  int64_t min_expiry = std::numeric_limits<int64_t>::max();
  for (size_t s = 0; s < old_capacity; ++s) {
    const Entry& e = old[s];
    if (e.key == 0) {
      continue;
    }
    if (IsDead(e.state, now_ns)) {
      ++counters_.reclaimed;
      Lapse(e.key);
      continue;
    }
    size_t i = Home(e.key);
    while (slots_[i].key != 0) {
      if (++i == capacity_) {
        i = 0;
      }
    }
    slots_[i] = e;
    ++size_;
    min_expiry = std::min(min_expiry, e.state.expiry_ns);
  }
  min_expiry_ = min_expiry;
  FreeSlots(old, old_capacity);
  return true;
}

bool StateTable::EvictOne(uint64_t key, int64_t now_ns, absl::Span<const uint64_t> pinned) {
  if (capacity_ == 0) {
    return false;
  }
  // The sample is the run of slots starting at the new key's home: pseudo-random (the key is a
  // keyed hash), already in cache for the insert that follows, and at 85% load ~13 entries.
  size_t victim = capacity_;
  int64_t victim_expiry = std::numeric_limits<int64_t>::max();
  size_t i = Home(key);
  for (size_t n = 0; n < kEvictScanSlots && n < capacity_; ++n) {
    const Entry& e = slots_[i];
    if (e.key != 0 && !Contains(pinned, e.key)) {
      if (IsDead(e.state, now_ns)) {
        EraseAt(i);
        ++counters_.reclaimed;
        return true;
      }
      if (e.state.expiry_ns < victim_expiry && !IsProtected(e.key)) {
        victim = i;
        victim_expiry = e.state.expiry_ns;
      }
    }
    if (++i == capacity_) {
      i = 0;
    }
  }
  if (victim == capacity_) {
    return false;
  }
  EraseAt(victim);
  ++counters_.evicted;
  return true;
}

void StateTable::InsertSlow(uint64_t key, const core::KeyState& next, int64_t now_ns,
                            absl::Span<const uint64_t> pinned) {
  const size_t max_capacity = MaxCapacity();
  if (capacity_ < max_capacity) {
    // Reclaim before growing. Growing anyway when the sweep freed little keeps the cost of these
    // full sweeps amortized O(1) per insert: after a sweep that did not grow, at least
    // (85% - 75%) of the capacity must be inserted before the next one.
    if (now_ns >= min_expiry_) {
      SweepAll(now_ns);
    }
    if (size_ >= grow_at_ || size_ * 100 >= capacity_ * kKeepAfterSweepPercent) {
      const size_t grown =
          capacity_ == 0 ? kMinCapacity : std::max(capacity_ + 1, capacity_ * kGrowPercent / 100);
      // On allocation failure fall through: eviction may still make room.
      Rehash(std::min(grown, max_capacity), now_ns);
    }
  } else if (size_ >= grow_at_ && now_ns >= min_expiry_) {
    // At the cap: a bounded sweep only, so that a full table costs O(1) per insert.
    Sweep(kCapSweepSlots, now_ns);
  }
  if (size_ >= grow_at_ && !EvictOne(key, now_ns, pinned)) {
    ++counters_.refused_full;
    return;
  }
  const Probe probe = Find(key);
  slots_[probe.slot] = Entry{key, next};
  ++size_;
  NoteExpiry(next.expiry_ns);
}

}  // namespace floodgate::store
