#pragma once

// The descriptors refused most over the last minute on this node (GET /v1/top): a
// core::WindowedTopKeys fed by the check pipeline with every descriptor a limit refused, keyed
// by its domain and entries. Bounded memory whatever the key cardinality (6 slots of 128 keys of
// at most 256 bytes); the counts carry Space-Saving's error bound (core/top_keys.h).
//
// The pipeline calls Record only for a check refused by a limit (HTTP 429 / OVER_LIMIT), never
// for one shed or refused because a counter could not be asked: allowed checks pay one branch.
//
// Thread-safety: every method may be called from any number of threads; one mutex, taken only
// on refusals and snapshots.

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "floodgate/clock.h"
#include "src/core/config.h"
#include "src/core/top_keys.h"
#include "src/limiter/limiter.h"

namespace floodgate::service {

// A refused descriptor as /v1/top shows it.
struct RefusedKey {
  std::string domain;
  std::string descriptor;  // "key=value,key2=value2", cut to fit the key bound
  uint64_t refused = 0;
  uint64_t error = 0;  // refused overestimates the truth by at most this
};

// Returns the sketch key of a descriptor: the domain's length, ':', the domain, then the entries
// as "key=value,..." (unambiguous whatever the domain holds), cut to kMaxKeyBytes.
std::string RefusalKey(std::string_view domain, absl::Span<const core::DescriptorEntry> entries);
// Splits a RefusalKey back; a malformed key (from a peer) gives its whole text as descriptor.
RefusedKey RefusedKeyOf(const core::TopKey& key);

class TopRefused {
 public:
  // `clock` must outlive it.
  explicit TopRefused(const Clock* clock,
                      size_t capacity_per_slot = core::WindowedTopKeys::kDefaultCapacity)
      : clock_(clock), window_(capacity_per_slot) {}

  // Counts every descriptor of `response` refused by a limit, if the check was refused.
  void RecordRefusals(const limiter::CheckRequest& request, const limiter::CheckResponse& response);
  // Counts one refusal of `key` (a RefusalKey) now.
  void Record(std::string_view key);
  // Returns the last minute's keys, largest first.
  core::TopSnapshot Snapshot() const;

 private:
  const Clock* const clock_;
  mutable absl::Mutex mu_;
  core::WindowedTopKeys window_ ABSL_GUARDED_BY(mu_);
};

}  // namespace floodgate::service
