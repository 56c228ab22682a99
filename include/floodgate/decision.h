#pragma once

#include <cstdint>

namespace floodgate {

// The answer to "may these hits pass?" under one limit. Being over the limit is not an error:
// it is a Decision with allowed == false. Real failures are absl::Status values.
struct Decision {
  // A value for retry_after_ns meaning "these hits can never pass under this limit"
  // (more hits than the limit's capacity).
  static constexpr int64_t kNever = -1;

  bool allowed = true;
  // Refused without asking the limit's counter: in cluster mode its owner could not be asked
  // and the limit's failure mode is `closed` (docs/cluster.md). Not a verdict on the hits: the
  // same hits may pass once the owner answers. Always false when allowed.
  bool unavailable = false;
  // The limit's capacity: requests per window, bucket size or concurrent slots.
  uint64_t limit = 0;
  // How many more hits would pass right now, after this decision.
  uint64_t remaining = 0;
  // When refused: nanoseconds until the same hits would pass, or kNever. 0 when allowed.
  int64_t retry_after_ns = 0;
  // Nanoseconds until the key is back to its full, fresh state (window end, bucket full).
  int64_t reset_after_ns = 0;
  // Leaky bucket only: how long an allowed caller should wait before proceeding (its place in
  // the queue). 0 for every other algorithm.
  int64_t delay_ns = 0;
};

}  // namespace floodgate
