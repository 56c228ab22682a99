#pragma once

// The rate-limit algorithms, each a pure function of (state, limit, now, hits).
//
// No function here reads a clock, allocates or locks: the store calls them under its shard lock
// and tests call them with any `now_ns` they like. See docs/algorithms.md for behaviour,
// accuracy and cost.

#include <cstdint>

#include "floodgate/decision.h"
#include "floodgate/limit.h"

namespace floodgate::core {

// Per-key state of every algorithm: 16 bytes, interpreted by the algorithm that owns the key.
//
// Invariant shared by all algorithms (the store relies on it): the all-zero value means
// "fresh" (full bucket, empty window, nothing in flight), and at or after `expiry_ns` the state is
// equivalent to the zero value. So the store may drop any state whose expiry_ns <= now, and idle
// keys cost no memory.
struct KeyState {
  int64_t expiry_ns = 0;
  uint64_t data = 0;
  friend bool operator==(const KeyState&, const KeyState&) = default;
};
static_assert(sizeof(KeyState) == 16);

// A decision and the state to store if the caller commits it.
struct Outcome {
  Decision decision;
  KeyState next;
};

// Decides whether `hits` may pass under `spec` at `now_ns`, given the key's `state`.
//
// - hits == 0 only reads: `next` is equivalent to `state` and the decision reports the
//   current remaining capacity (allowed is true unless the limit is exhausted... see below).
// - When refused, `next` == `state` (nothing consumed).
// - Time going backwards (now_ns earlier than times in `state`) never admits more than the
//   limit: the state is not rewound.
// `spec` must have passed ValidateLimitSpec; hits may be any value (saturating arithmetic).
// For hits == 0 the decision's `allowed` says whether one more hit would pass; retry_after_ns and
// delay_ns likewise describe that one hit, while remaining and reset_after_ns describe the state
// as it is. Concurrency: in flight is the slots acquired in the current and previous lease
// epochs and not released; retry_after_ns of a refusal is when enough of them age out, an upper
// bound (a release may free slots sooner).
Outcome Decide(const LimitSpec& spec, const KeyState& state, int64_t now_ns, uint64_t hits);

// Concurrency only: returns the state after releasing `count` slots acquired at
// `acquired_at_ns` (any instant of the lease epoch they were counted in; callers release a
// lease of the key's LeaseBook through ReleaseLease, src/core/leases.h, which passes it). Takes
// them from the lease epoch of acquired_at_ns (epochs of spec.period_ns aligned to the Unix epoch):
// the current one (or later: clamped to it), the previous one, or, if older, nothing, since
// slots are dropped once their epoch is two epochs old (between period_ns and 2 * period_ns after
// the acquire, whatever the traffic). Never below zero; never extends a lease; returns KeyState{}
// once nothing is held. A holder must release within period_ns of its acquire: choose the period
// above the longest legitimate hold. For other algorithms returns `state` unchanged.
KeyState Release(const LimitSpec& spec, const KeyState& state, int64_t now_ns, uint64_t count,
                 int64_t acquired_at_ns);

// Returns a state that admits no more than either `a` or `b` would at now_ns or later: for any
// time t >= now_ns and any hits, if Decide(spec, Merge(...), t, hits) allows, so do
// Decide(spec, a, t, hits) and Decide(spec, b, t, hits). Used to merge replicas of one key's
// state (a replica may lag, never undercount). Commutative (bit for bit); Merge(spec, s, s, now)
// == s (KeyState{} if s is dead at now_ns); a dead input returns the other one; when `b` evolved
// from `a` through Decide (only consuming, at times <= now_ns), the result is `b`. Fixed window:
// the later window wins once the earlier one is over at now_ns, else the larger count is kept
// until the later end. Buckets: the later TAT. Sliding window and concurrency: per window (lease
// epoch) the larger count, with older windows folded into prev. docs/algorithms.md has the rules.
KeyState Merge(const LimitSpec& spec, const KeyState& a, const KeyState& b, int64_t now_ns);

}  // namespace floodgate::core
