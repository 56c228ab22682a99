#include "src/core/top_keys.h"

#include <algorithm>
#include <utility>

namespace floodgate::core {

// Invariants (SpaceSaving):
//   I1. size() <= capacity_; the counts sum to total_ (every Add adds exactly 1 to one count:
//       a replaced key's count moves, plus one, to the newcomer).
//   I2. error <= count - 1 for every key (it arrived at least once while tracked), so
//       count - error >= 1.
//   I3. The smallest count is at most total_ / size() (I1), hence at most total_ / k once full.
// Finding the smallest count scans the k counters: a replacement happens only on a refusal of a
// key not tracked yet, k is 128, and the scan is ~100 ns; a stream-summary list would make it
// O(1) at the cost of code that is harder to check.

SpaceSaving::SpaceSaving(size_t capacity) : capacity_(std::max<size_t>(capacity, 1)) {
  counters_.reserve(capacity_);
}

void SpaceSaving::Add(std::string_view key) {
  ++total_;
  const absl::string_view lookup(key.data(), key.size());
  if (auto it = counters_.find(lookup); it != counters_.end()) {
    ++it->second.count;
    return;
  }
  if (counters_.size() < capacity_) {
    counters_.emplace(std::string(key), Counter{1, 0});
    return;
  }
  const std::string_view smallest_key = SmallestKey();
  auto smallest = counters_.find(absl::string_view(smallest_key.data(), smallest_key.size()));
  const uint64_t m = smallest->second.count;
  counters_.erase(smallest);
  counters_.emplace(std::string(key), Counter{m + 1, m});
}

std::string_view SpaceSaving::SmallestKey() const {
  auto best = counters_.begin();
  for (auto it = counters_.begin(); it != counters_.end(); ++it) {
    if (it->second.count < best->second.count) {
      best = it;
    }
  }
  return best->first;
}

void SpaceSaving::Clear() {
  counters_.clear();
  total_ = 0;
}

std::vector<TopKey> SpaceSaving::Entries() const {
  std::vector<TopKey> out;
  out.reserve(counters_.size());
  for (const auto& [key, counter] : counters_) {
    out.push_back(TopKey{key, counter.count, counter.error});
  }
  return out;
}

TopSnapshot MergeTopSnapshots(const std::vector<TopSnapshot>& parts, size_t limit) {
  absl::flat_hash_map<std::string, TopKey> sums;
  TopSnapshot merged;
  for (const TopSnapshot& part : parts) {
    merged.total += part.total;
    for (const TopKey& key : part.keys) {
      TopKey& sum = sums[key.key];
      sum.key = key.key;
      sum.count += key.count;
      sum.error += key.error;
    }
  }
  merged.keys.reserve(sums.size());
  for (auto& [key, sum] : sums) {
    merged.keys.push_back(std::move(sum));
  }
  std::sort(merged.keys.begin(), merged.keys.end(), [](const TopKey& a, const TopKey& b) {
    return a.count != b.count ? a.count > b.count : a.key < b.key;
  });
  if (merged.keys.size() > limit) {
    merged.keys.resize(limit);
  }
  return merged;
}

WindowedTopKeys::WindowedTopKeys(size_t capacity_per_slot) {
  ring_.reserve(kSlots);
  for (int i = 0; i < kSlots; ++i) {
    ring_.push_back(Slot{-1, SpaceSaving(capacity_per_slot)});
  }
}

int64_t WindowedTopKeys::SlotIndex(int64_t now_ns) { return now_ns < 0 ? 0 : now_ns / kSlotNs; }

void WindowedTopKeys::Add(std::string_view key, int64_t now_ns) {
  const int64_t index = SlotIndex(now_ns);
  Slot& slot = ring_[static_cast<size_t>(index % kSlots)];
  if (slot.index != index) {
    if (slot.index > index) {
      return;  // time went back past a whole window: the slot holds newer counts; drop this one
    }
    slot.sketch.Clear();
    slot.index = index;
  }
  slot.sketch.Add(key);
}

TopSnapshot WindowedTopKeys::Snapshot(int64_t now_ns) const {
  const int64_t index = SlotIndex(now_ns);
  std::vector<TopSnapshot> live;
  for (const Slot& slot : ring_) {
    if (slot.index >= 0 && slot.index > index - kSlots && slot.index <= index) {
      live.push_back(TopSnapshot{slot.sketch.Entries(), slot.sketch.total()});
    }
  }
  return MergeTopSnapshots(live, kSlots * ring_.front().sketch.capacity());
}

std::string_view TruncateKey(std::string_view key, size_t max_bytes) {
  if (key.size() <= max_bytes) {
    return key;
  }
  size_t end = max_bytes;
  // Back off continuation bytes (10xxxxxx) so that a multi-byte character is never split.
  while (end > 0 && (static_cast<unsigned char>(key[end]) & 0xC0) == 0x80) {
    --end;
  }
  return key.substr(0, end);
}

}  // namespace floodgate::core
