#pragma once

// Heavy hitters over a sliding minute: which keys occurred most, in bounded memory whatever the
// number of distinct keys. The server feeds it the descriptors it refuses (GET /v1/top).
//
// SpaceSaving is Metwally, Agrawal and El Abbadi's Space-Saving sketch ("Efficient Computation
// of Frequent and Top-k Elements in Data Streams", 2005) with k counters. Each tracked key has a
// `count` and an `error`: when a new key arrives and all k counters are taken, it replaces the
// key with the smallest count m and starts at count m + 1 with error m. Guarantees, for a stream
// of N additions:
//   - count - error <= true count <= count, for every tracked key;
//   - the smallest count is at most N / k, so every key that occurred more than N / k times is
//     tracked (an untracked key occurred at most min count <= N / k times).
//
// WindowedTopKeys keeps one SpaceSaving per slot of kSlotNs (10 s) in a ring of kSlots (6), so
// a snapshot covers the last 50 to 60 seconds; a slot older than that is cleared when its turn
// comes again. Time is the caller's (`now_ns`): no clock is read. A snapshot sums each key's
// count and error over the live slots, so the bounds above hold for the window with N the
// window's additions and a key missing from a slot counted 0 there (it occurred at most that
// slot's N_slot / k times: the snapshot's count may undercount by that much per slot; its
// count - error still never overcounts).
//
// Memory: at most kSlots * k keys of at most kMaxKeyBytes each (the caller truncates).
//
// Thread-safety: none; callers lock (service/top_refused.h).

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace floodgate::core {

// One tracked key: its estimated count, an overestimate of at most `error`.
struct TopKey {
  std::string key;
  uint64_t count = 0;
  uint64_t error = 0;
  friend bool operator==(const TopKey&, const TopKey&) = default;
};

// The window's heavy hitters, by count (largest first), and every addition counted.
struct TopSnapshot {
  std::vector<TopKey> keys;
  uint64_t total = 0;
};

class SpaceSaving {
 public:
  // `capacity` (k) counters; at least 1.
  explicit SpaceSaving(size_t capacity);

  // Counts one occurrence of `key`. O(log k) when `key` is new and the counters are full.
  void Add(std::string_view key);
  // Forgets every key.
  void Clear();
  // Returns the tracked keys, in no order.
  std::vector<TopKey> Entries() const;
  uint64_t total() const { return total_; }
  size_t size() const { return counters_.size(); }
  size_t capacity() const { return capacity_; }

 private:
  struct Counter {
    uint64_t count = 0;
    uint64_t error = 0;
  };
  // Returns the key holding the smallest count (the first found among equals).
  std::string_view SmallestKey() const;

  size_t capacity_;
  uint64_t total_ = 0;
  absl::flat_hash_map<std::string, Counter> counters_;
};

// Sums `parts` key by key (count and error alike: the bounds add up) and returns them sorted by
// count, largest first (ties by key), at most `limit` of them; totals add up too.
TopSnapshot MergeTopSnapshots(const std::vector<TopSnapshot>& parts, size_t limit);

class WindowedTopKeys {
 public:
  static constexpr int kSlots = 6;
  static constexpr int64_t kSlotNs = 10'000'000'000;  // 10 s
  static constexpr int64_t kWindowSeconds = kSlots * kSlotNs / 1'000'000'000;
  static constexpr size_t kDefaultCapacity = 128;
  // Keys are cut to this many bytes by the caller (TruncateKey).
  static constexpr size_t kMaxKeyBytes = 256;

  explicit WindowedTopKeys(size_t capacity_per_slot = kDefaultCapacity);

  // Counts one occurrence of `key` at `now_ns`.
  void Add(std::string_view key, int64_t now_ns);
  // Returns the keys of the slots live at `now_ns` (the last kSlots slots), merged.
  TopSnapshot Snapshot(int64_t now_ns) const;

 private:
  // The slot index (now_ns / kSlotNs) and its place in the ring.
  struct Slot {
    int64_t index = -1;  // -1: never used
    SpaceSaving sketch;
  };
  static int64_t SlotIndex(int64_t now_ns);

  std::vector<Slot> ring_;
};

// Returns `key` cut to at most `max_bytes`, never inside a UTF-8 sequence.
std::string_view TruncateKey(std::string_view key, size_t max_bytes);

}  // namespace floodgate::core
