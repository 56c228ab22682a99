// Merge: reconciling two replicas of one key's state (src/core/algorithms.h). Decide and Release,
// and the invariants I1-I6 referred to below, are in algorithms.cc.
//
// Merge (two replicas a, b of one key's state, at now)
//   M1. Safe: for every t >= now and every hits, Decide(Merge) admits => Decide(a) and Decide(b)
//       admit. Each algorithm's admission is monotone in one "load" read from the state at t
//       (count, weighted estimate, TAT, in flight), so it suffices that the merged load is >=
//       both loads at every t >= now. Every load below is non-increasing in t for a fixed state
//       (the windows and epochs only age, the TAT stays put while now rises towards it), so the
//       load at now bounds the load at any later time.
//   M2. Exact where it can be: a dead input (fresh at now) returns the other one unchanged, or
//       KeyState{} if both are; a == b returns a; when b evolved from a by Decide (consuming only,
//       at times <= now) the result is b bit for bit (away from the int64 ends of time, where
//       saturated expiries stop naming window ends).
//   M3. Symmetric: the construction only ever asks which input expires later, so it is
//       commutative bit for bit.
//   Fixed window: (max expiry, max count). With equal expiries that is the same window's larger
//   count; with different ones, both live at now (clocks of two nodes on either side of a window
//   edge), one count must cover both windows until the later end: the earlier window's count is
//   not forgotten before it ends. A merge at a now in the later window finds the earlier one
//   dead, so the later window simply wins.
//   Buckets: the state with the larger TAT (compared in 128 bits, scaled), unchanged.
//   Sliding window and concurrency: the state with the later expiry is the frame. Same expiry:
//   the larger prev and the larger cur. The other state one window/epoch earlier: its cur is
//   the frame's prev, so the frame's prev takes the larger of the two; its own prev (and any
//   state two or more windows earlier) is older than the frame can hold, so the frame's
//   prev + cur is raised to the other's load at now, by raising prev (which ages out first).
//   Expiries that are not a whole number of periods apart (only after saturation near
//   INT64_MAX/MIN) are covered by raising the frame's cur instead. Counts saturate at 2^32 - 1,
//   which is >= every limit, so a saturated count refuses rather than wraps.

#include <algorithm>
#include <cstdint>

#include "floodgate/limit.h"
#include "src/core/algorithms.h"
#include "src/core/algorithms_internal.h"

// The merge rules live beside the helpers they share with the decisions (algorithms_internal.h).
namespace floodgate::core::internal {
namespace {

// Returns the larger of two states in (expiry_ns, data) order: a deterministic, symmetric choice
// for where nothing better is needed.
KeyState LexMax(const KeyState& a, const KeyState& b) {
  if (a.expiry_ns != b.expiry_ns) {
    return a.expiry_ns > b.expiry_ns ? a : b;
  }
  return a.data >= b.data ? a : b;
}

KeyState MergeFixedWindow(const KeyState& a, const KeyState& b) {
  const uint64_t count = std::max(a.data, b.data);
  if (count == 0) {
    return KeyState{};  // live but empty: reads as fresh
  }
  return KeyState{.expiry_ns = std::max(a.expiry_ns, b.expiry_ns), .data = count};
}

// The bucket's TAT in scaled units (1/count ns), as DecideBucketWide reads a live state.
Int128 ScaledTat(const KeyState& state, uint64_t rate) {
  return Int128{state.expiry_ns} * rate - state.data;
}

KeyState MergeBucket(const LimitSpec& spec, const KeyState& a, const KeyState& b) {
  const Int128 tat_a = ScaledTat(a, spec.requests_per_period);
  const Int128 tat_b = ScaledTat(b, spec.requests_per_period);
  if (tat_a != tat_b) {
    return tat_a > tat_b ? a : b;
  }
  return LexMax(a, b);  // one TAT spelled two ways (a data word >= count): either reads the same
}

// Returns the sliding window's load of a live `state` at now_ns: w + cur in DecideSlidingWindow's
// terms (prev's weight rounded up, plus cur), read as DecideSlidingWindowWide reads it. Hits pass
// iff load + hits <= limit, and the load never grows as now advances.
Int128 SlidingLoad(const LimitSpec& spec, const KeyState& state, int64_t now_ns) {
  const int64_t period_ns = spec.period_ns;
  uint64_t prev = state.data >> 32;
  uint64_t cur = state.data & kLow32;
  Int128 elapsed_ns;
  const int64_t stored_end_ns = Saturate(Int128{state.expiry_ns} - period_ns);
  if (now_ns >= stored_end_ns) {
    prev = cur;
    cur = 0;
    elapsed_ns = Int128{now_ns} - stored_end_ns;
  } else {
    elapsed_ns = std::max<Int128>(0, Int128{period_ns} - (Int128{stored_end_ns} - now_ns));
  }
  return CeilDivNonNeg(Int128{prev} * (period_ns - elapsed_ns), period_ns) + cur;
}

// Returns min(v, 2^32 - 1): a count that fits its half of the data word. Every limit of the
// sliding window and concurrency is <= 2^32 - 1, so a clamped count still refuses every hit.
uint64_t ClampCount(Int128 v) { return static_cast<uint64_t>(std::min<Int128>(v, kLow32)); }

// The merged counts of the sliding window and concurrency in the frame (the later-expiring
// state's windows), before WriteFrame.
struct Frame {
  Int128 expiry_ns;
  uint64_t prev;
  uint64_t cur;
};

// Returns the state holding `f`, with cur == 0 written as the same counts one window earlier
// (prev becomes that window's cur), as WriteSlots does: it reads the same at every time, and
// its expiry is not later than needed. Concurrency reads the two forms alike whenever expiry - P
// is a time, the sliding window when expiry - 2P is one too (nearer INT64_MIN the earlier form
// reads stricter, which is still safe).
KeyState WriteFrame(const LimitSpec& spec, const Frame& f) {
  if (f.cur == 0) {
    if (f.prev == 0) {
      return KeyState{};
    }
    const Int128 earlier_ns = f.expiry_ns - spec.period_ns;
    if (earlier_ns >= kMinTime) {
      return KeyState{.expiry_ns = static_cast<int64_t>(earlier_ns), .data = f.prev};
    }
  }
  return KeyState{.expiry_ns = static_cast<int64_t>(f.expiry_ns), .data = f.prev << 32 | f.cur};
}

// Both inputs are live at now_ns and differ.
KeyState MergeSlidingWindow(const LimitSpec& spec, const KeyState& a, const KeyState& b,
                            int64_t now_ns) {
  const bool a_frames = a.expiry_ns >= b.expiry_ns;
  const KeyState& frame = a_frames ? a : b;
  const KeyState& other = a_frames ? b : a;
  const Int128 p = spec.period_ns;
  Frame f{.expiry_ns = frame.expiry_ns, .prev = frame.data >> 32, .cur = frame.data & kLow32};
  const uint64_t other_prev = other.data >> 32;
  const uint64_t other_cur = other.data & kLow32;
  if (other.expiry_ns == frame.expiry_ns) {
    // Same windows: every reading is monotone in prev and cur at the same elapsed time.
    f.prev = std::max(f.prev, other_prev);
    f.cur = std::max(f.cur, other_cur);
    return WriteFrame(spec, f);
  }
  const Int128 other_load = SlidingLoad(spec, other, now_ns);
  const Int128 x = f.expiry_ns;
  const Int128 y = other.expiry_ns;
  if ((y == x - p && x - 2 * p >= kMinTime) || y <= x - 2 * p) {
    if (y == x - p) {
      // Other's current window is the frame's previous one: in the frame's current window both
      // weigh that count by the same (P - e) / P.
      f.prev = std::max(f.prev, other_cur);
    }
    // Before the frame's current window starts (where other may still count its own previous
    // window, or is the only live state) the frame reads prev + cur at e = 0. Other is dead by
    // the time the frame's prev weighs less than that.
    if (Int128{f.prev} + f.cur < other_load) {
      f.prev = ClampCount(other_load - f.cur);
    }
  } else {
    // Windows not a whole number of periods apart (saturated expiries). The frame reads at
    // least cur until its current window ends; after that other is in its own next window,
    // further into it than the frame is into its, so cur >= other's cur covers it.
    f.cur = std::max({f.cur, other_cur, ClampCount(other_load)});
  }
  return WriteFrame(spec, f);
}

// Both inputs are live at now_ns and differ. In flight is prev + cur until the current epoch's
// end (ReadSlots' stored end, expiry - P), then cur until expiry.
KeyState MergeConcurrency(const LimitSpec& spec, const KeyState& a, const KeyState& b,
                          int64_t now_ns) {
  const bool a_frames = a.expiry_ns >= b.expiry_ns;
  const KeyState& frame = a_frames ? a : b;
  const KeyState& other = a_frames ? b : a;
  Frame f{.expiry_ns = frame.expiry_ns, .prev = frame.data >> 32, .cur = frame.data & kLow32};
  const uint64_t other_prev = other.data >> 32;
  const uint64_t other_cur = other.data & kLow32;
  if (other.expiry_ns == frame.expiry_ns) {
    f.prev = std::max(f.prev, other_prev);  // per epoch, the larger count
    f.cur = std::max(f.cur, other_cur);
    return WriteFrame(spec, f);
  }
  const Int128 x = f.expiry_ns;
  const Int128 y = other.expiry_ns;
  if (y == x - spec.period_ns) {
    f.prev = std::max(f.prev, other_cur);  // other's current epoch is the frame's previous one
  } else if (other.expiry_ns > SatAdd(frame.expiry_ns, -spec.period_ns)) {
    // Not a whole number of epochs apart (saturated expiries) and other outlives the frame's
    // current epoch: then it holds only its cur, which the frame's cur must cover.
    f.cur = std::max(f.cur, other_cur);
  }
  // Until the frame's current epoch ends it holds prev + cur, which must cover what other holds
  // now (other's own prev epoch, or all of other when it ends before then). Raising prev, which
  // is dropped at that end, keeps the cover no longer than needed.
  const Slots s = ReadSlots(spec, other, now_ns);
  const uint64_t other_in_flight = s.prev + s.cur;  // < 2^33
  if (f.prev + f.cur < other_in_flight) {
    f.prev = ClampCount(other_in_flight - f.cur);
  }
  return WriteFrame(spec, f);
}

}  // namespace

KeyState MergeStates(const LimitSpec& spec, const KeyState& a, const KeyState& b, int64_t now_ns) {
  const bool a_fresh = IsFresh(a, now_ns);
  const bool b_fresh = IsFresh(b, now_ns);
  if (a_fresh || b_fresh) {
    // A fresh state reads as KeyState{} at every t >= now: the other one covers it.
    return a_fresh ? (b_fresh ? KeyState{} : b) : a;
  }
  if (a == b) {
    return a;
  }
  if (!InBounds(spec)) {
    return LexMax(a, b);  // Decide refuses everything under such a spec; stay deterministic
  }
  switch (spec.algorithm) {
    case Algorithm::kFixedWindow:
      return MergeFixedWindow(a, b);
    case Algorithm::kSlidingWindow:
      return MergeSlidingWindow(spec, a, b, now_ns);
    case Algorithm::kTokenBucket:
    case Algorithm::kLeakyBucket:
      return MergeBucket(spec, a, b);
    case Algorithm::kConcurrency:
      return MergeConcurrency(spec, a, b, now_ns);
  }
  return LexMax(a, b);
}

}  // namespace floodgate::core::internal

namespace floodgate::core {

KeyState Merge(const LimitSpec& spec, const KeyState& a, const KeyState& b, int64_t now_ns) {
  return internal::MergeStates(spec, a, b, now_ns);
}

}  // namespace floodgate::core
