#pragma once

// How a limit is routed in cluster mode (docs/cluster.md): set per limit in the config
// (`consistency:`, `failure_mode:`), carried on every StoreOp, read only by the cluster layer. A
// single node's store ignores them. Plain values, safe to share between threads.

#include <cstdint>

namespace floodgate {

// Where a limit is decided.
enum class Consistency : uint8_t {
  kExact = 0,  // on the key's owner node: one count per key across the cluster
  kLocal = 1,  // from this node's share (limit / N) first, then on the owner once it is spent
};

// How a limit is decided when its owner cannot be asked (no majority visible, the owner
// unreachable, or the check was shed).
enum class FailureMode : uint8_t {
  kLocal = 0,   // from this node's share of the limit (limit / N)
  kOpen = 1,    // allowed
  kClosed = 2,  // refused
};

}  // namespace floodgate
