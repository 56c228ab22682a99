#include "src/core/algorithms.h"

#include <algorithm>
#include <cstdint>
#include <limits>

#include "floodgate/decision.h"
#include "floodgate/limit.h"
#include "src/core/algorithms_internal.h"

// Invariants shared by every algorithm below (docs/algorithms.md has the prose version). Merge,
// which reconciles replicas of a state, lives in algorithms_merge.cc with its own block.
//
//  I1. Fresh. A state is fresh when expiry_ns <= now or it is the all-zero value; a fresh state is
//      read exactly as KeyState{}. Every state we write has expiry_ns equal to the first instant
//      at which the algorithm itself would read it as empty (window over, bucket full, nothing
//      in flight), never earlier (the store would forget debt) and never later (idle keys would
//      hold memory). The tests check this against reference models that never drop state.
//  I2. Refused or hits == 0 => next == state, bit for bit.
//  I3. Time is never rewound. When now is earlier than a time recorded in the state, we read the
//      state at the recorded time (the later, more restrictive reading) and keep the recorded
//      times, so a clock stepping back cannot admit more than the limit.
//  I4. No overflow. Products are formed in 128 bits, or in 64 bits behind an overflow check that
//      hands the decision to the 128-bit version (I6). With the bounds of ValidateLimitSpec
//      (period <= 2^62, counts <= 1e12 < 2^40) every product below is < 2^105. Times that would
//      pass INT64_MAX saturate there; a bucket whose next timestamp cannot be represented refuses
//      (fail closed) rather than wrap. Distances between times are formed the same way (SatSub,
//      128 bits, or a check that hands over): every int64 now is a valid input, and from a now
//      near INT64_MIN an end near INT64_MAX is more than INT64_MAX ns away.
//  I5. hits == 0 is a read: allowed/retry_after/delay describe one more hit, while remaining and
//      reset_after describe the state as it is.
//  I6. Few instructions per decision. In the store a decision runs right after a cache miss on its
//      key, and the CPU can start the next key's miss while this one is outstanding only if the
//      instructions in between fit in its out-of-order window, so the length of the decision sets
//      the store's throughput more than its latency does. In 128-bit arithmetic (with calls to
//      __divti3) the sliding window took ~240 instructions, the token and leaky buckets ~370 and
//      ~425, against ~90 for the fixed window, and store_benchmark measured ~195 ns per random
//      key for them against ~116 ns. So these two algorithms come in two versions with identical
//      results:
//      - DecideSlidingWindow / DecideBucket restate the arithmetic so that every value is small
//        (the sliding window compares counts instead of counts times P; the buckets work in
//        scaled time relative to now instead of absolute) and compute in 64 bits, with
//        __builtin_*_overflow where a value might not fit: ~135-160 instructions, ~115 ns.
//      - If one does not fit (huge counts with long periods: rare), they hand the whole decision
//        to the *Wide version: the original 128-bit code, unchanged (SatAdd, which all share,
//        now uses __builtin_add_overflow: same results).
//      Each restatement is an exact integer identity, written out where it is used, and the test
//      FastPathMatchesTheWidePath compares the two versions on 1.8M random specs, states, times
//      and hits, including the magnitudes at which the fast version hands over. Figures and
//      commands: docs/algorithms.md, "In the store".
//
// Fixed window (state: expiry_ns = window end, data = count in that window)
//   Windows are [k*P, (k+1)*P) in Unix time, as Envoy's. A live state names its own window by its
//   end, so a clock stepping back into an earlier window keeps counting in the stored one (I3).
//
// Sliding window (state: expiry_ns = end of the current window + P, data = prev << 32 | cur)
//   estimate(t) = prev * (P - e) / P + cur, e = t - window_start in [0, P). We compare
//   estimate + hits <= L without division: prev * (P - e) + (cur + hits) * P <= L * P, so there
//   is no rounding in the admission test at all. The current window is recovered from the state
//   as [expiry - 2P, expiry - P); once now reaches expiry - P the state's cur becomes prev. If now
//   is before the recorded window (clock stepped back) we evaluate at e = 0, where the estimate
//   is largest (I3). Every written state has cur >= 1, so it is empty exactly at expiry_ns.
//
// Token bucket = GCRA (state: expiry_ns = ceil(TAT), data = deficit, see below)
//   Exact arithmetic, no rounding of the emission interval: we measure time in "scaled" units of
//   1/count ns, in which the emission interval T = P / count is exactly P. So
//     now_s = now * count, increment_s = P * hits, dvt_s = P * capacity,
//     TAT_s = expiry_ns * count - data   with 0 <= data < count (the sub-nanosecond part).
//   Storing ceil(TAT) in expiry_ns makes I1 exact: TAT <= now  <=>  ceil(TAT) <= now. When
//   count divides P (T a whole number of ns) data is always 0 and TAT is a plain timestamp.
//   Durations handed back are rounded up to whole ns (retry_after, reset_after, delay) so that
//   acting on them never lands early; remaining is rounded down. Long-run admission is therefore
//   exactly count per P: never more, also for sub-nanosecond intervals (count > P).
//   The rules are redis-cell's (throttled): tat = max(TAT, now); new_tat = tat + increment;
//   allowed iff new_tat - dvt <= now; ttl = (allowed ? new_tat : tat) - now;
//   remaining = floor((dvt - ttl) / T) clamped to [0, capacity]; reset_after = ttl.
//
// Leaky bucket (same state and admission rule as GCRA)
//   A queue served at one hit per T. TAT is the time the queue drains (the end of the service of
//   the last queued hit). A batch of h hits arriving at now starts service at
//   start = max(TAT, now) and the queue then drains at start + h*T. It is admitted iff the queue
//   after it fits the capacity: (start + h*T) - now <= capacity * T, the GCRA rule with
//   dvt = capacity * T. The caller waits delay = start - now (nginx limit_req with burst and
//   without nodelay: the first request of an idle key passes at once, the next waits T, ...).
//
// Concurrency (state: expiry_ns = end of the current epoch + P, data = prev << 32 | cur)
//   Two lease epochs, the sliding window's shape: epochs [k*P, (k+1)*P) in Unix time, P the lease.
//   cur = slots acquired in the current epoch and still held, prev = the same for the previous
//   epoch; slots from older epochs are at least one lease old and presumed leaked by a crashed
//   holder, so they are dropped. In flight = prev + cur; acquire adds to cur.
//   A release carries a lease token, the `now` of the acquire it ends (acquired_at), and takes
//   from the bucket of that acquire's epoch: cur if it is the current epoch (or later: clamped),
//   prev if the previous one, nothing if older (those slots were already dropped). So a holder
//   that releases within P of its acquire removes exactly its own slots: prev + cur is exactly
//   the slots held, never more than the limit, and no leak can be paid for by someone else's
//   release. An unreleased slot is dropped between P and 2P after its acquire, whatever the
//   traffic (a per-key lease renewed by every acquire never ran out under load). A holder that
//   keeps its slot longer than P loses it (P must exceed the longest legitimate hold).
//   An anonymous release could not do this: taken from cur first, it lets a key hold 2x its
//   limit after each epoch boundary (releases of prev's holders empty cur instead); from prev
//   first, leaks never age out (releases of cur's holders empty prev instead).
//   The current epoch's end is expiry - P; once now reaches it, cur becomes prev, and at expiry
//   both are gone (I1). A now before the recorded epoch is read in it (I3); a slot acquired so
//   is counted in the recorded epoch while its token names an earlier one, so its release may
//   miss and the slot ages out instead (fail closed). Every written state has cur >= 1 and so is
//   non-empty up to expiry: a state with cur == 0 and prev > 0 (after a release) is written as the
//   identical state one epoch earlier, cur = that prev, prev = 0, which rolls forward to it
//   exactly (expiry = the current epoch's end, when prev is dropped).

namespace floodgate::core {
namespace {

using internal::CeilDivNonNeg;
using internal::InBounds;
using internal::Int128;
using internal::IsFresh;
using internal::kLow32;
using internal::kMaxTime;
using internal::kMinTime;
using internal::ReadSlots;
using internal::SatAdd;
using internal::SatSub;
using internal::Saturate;
using internal::Slots;

// Returns ceil(a / b) for any a and b > 0.
Int128 CeilDiv(Int128 a, Int128 b) {
  Int128 q = a / b;
  if (a % b != 0 && a > 0) {
    ++q;
  }
  return q;
}

// Returns ceil(a / b) for b > 0: one 64-bit division (the compiler shares it for / and %).
uint64_t CeilDiv64(uint64_t a, uint64_t b) { return a / b + (a % b != 0 ? 1 : 0); }

// Returns v clamped to INT64_MAX.
int64_t SaturateToTime(uint64_t v) {
  return v > static_cast<uint64_t>(kMaxTime) ? kMaxTime : static_cast<int64_t>(v);
}

// Returns now mod period in [0, period).
int64_t PositiveMod(int64_t now_ns, int64_t period_ns) {
  const int64_t r = now_ns % period_ns;
  return r < 0 ? r + period_ns : r;
}

Outcome RefuseForever(const KeyState& state, uint64_t limit) {
  Outcome out{.decision = {}, .next = state};
  out.decision.allowed = false;
  out.decision.limit = limit;
  out.decision.retry_after_ns = Decision::kNever;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Fixed window.

Outcome DecideFixedWindow(const LimitSpec& spec, const KeyState& state, int64_t now_ns,
                          uint64_t hits) {
  const uint64_t limit = spec.requests_per_period;
  uint64_t count = 0;
  int64_t window_end_ns;
  if (IsFresh(state, now_ns)) {
    window_end_ns = SatAdd(now_ns, spec.period_ns - PositiveMod(now_ns, spec.period_ns));
  } else {
    count = state.data;
    window_end_ns = state.expiry_ns;  // > now_ns; a later window if the clock stepped back (I3)
  }
  // >= 0; saturated, as the end may be more than INT64_MAX ns after a now near INT64_MIN (I4).
  const int64_t until_end_ns = SatSub(window_end_ns, now_ns);

  Outcome out{.decision = {}, .next = state};
  Decision& d = out.decision;
  d.limit = limit;
  const uint64_t probe = hits == 0 ? 1 : hits;
  const bool fits = count <= limit && probe <= limit - count;
  if (fits && hits != 0) {
    count += hits;
    out.next = KeyState{.expiry_ns = window_end_ns, .data = count};
  }
  d.allowed = fits;
  d.remaining = count < limit ? limit - count : 0;
  d.reset_after_ns = count == 0 ? 0 : until_end_ns;
  if (!fits) {
    d.retry_after_ns = probe <= limit ? until_end_ns : Decision::kNever;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Sliding window.

// The reference version, all in 128 bits. DecideSlidingWindow hands decisions here when its
// 64-bit arithmetic would overflow (I6).
Outcome DecideSlidingWindowWide(const LimitSpec& spec, const KeyState& state, int64_t now_ns,
                                uint64_t hits) {
  const uint64_t limit = spec.requests_per_period;
  const int64_t period_ns = spec.period_ns;
  uint64_t prev = 0;
  uint64_t cur = 0;
  int64_t window_end_ns;
  int64_t elapsed_ns;  // position in the current window, [0, period)
  if (IsFresh(state, now_ns)) {
    elapsed_ns = PositiveMod(now_ns, period_ns);
    window_end_ns = SatAdd(now_ns, period_ns - elapsed_ns);
  } else {
    prev = state.data >> 32;
    cur = state.data & kLow32;
    const int64_t stored_end_ns = Saturate(Int128{state.expiry_ns} - period_ns);
    if (now_ns >= stored_end_ns) {
      // The state's window is over and now is in the next one: cur becomes prev.
      prev = cur;
      cur = 0;
      window_end_ns = state.expiry_ns;
      elapsed_ns = now_ns - stored_end_ns;  // < period, since now < expiry
    } else {
      // Now is in the state's window, or before it (clock stepped back: evaluate at e = 0, I3).
      window_end_ns = stored_end_ns;
      elapsed_ns = static_cast<int64_t>(
          std::max<Int128>(0, Int128{period_ns} - (Int128{stored_end_ns} - now_ns)));
    }
  }
  // > 0 except at INT64_MAX; exact, as the end may be more than INT64_MAX ns after a now near
  // INT64_MIN (I4). Durations derived from it saturate.
  const Int128 until_end_ns = Int128{window_end_ns} - now_ns;

  const Int128 budget = Int128{limit} * period_ns;  // L * P
  Int128 used = Int128{prev} * (period_ns - elapsed_ns) + Int128{cur} * period_ns;

  Outcome out{.decision = {}, .next = state};
  Decision& d = out.decision;
  d.limit = limit;
  const uint64_t probe = hits == 0 ? 1 : hits;
  const bool fits = probe <= limit && used + Int128{probe} * period_ns <= budget;
  if (fits && hits != 0) {
    cur += hits;  // <= limit < 2^32
    used += Int128{hits} * period_ns;
    out.next = KeyState{.expiry_ns = SatAdd(window_end_ns, period_ns), .data = prev << 32 | cur};
  }
  d.allowed = fits;
  d.remaining = used < budget ? static_cast<uint64_t>((budget - used) / period_ns) : 0;
  if (cur != 0) {
    d.reset_after_ns = Saturate(until_end_ns + period_ns);  // cur is forgotten a window later
  } else if (prev != 0) {
    d.reset_after_ns = Saturate(until_end_ns);
  }
  if (!fits) {
    if (probe > limit) {
      d.retry_after_ns = Decision::kNever;
      return out;
    }
    // Later in this window (prev's weight falls, cur is fixed): the first e with
    // prev * (P - e) <= x * P, x = L - cur - probe, is e = P - floor(x * P / prev).
    const Int128 x = Int128{limit} - cur - probe;
    if (x >= 0 && prev != 0) {
      const Int128 e = period_ns - x * period_ns / prev;
      if (e < period_ns) {
        d.retry_after_ns = Saturate(until_end_ns - (period_ns - e));
        return out;
      }
    }
    // In the next window cur becomes prev and the new cur is 0: the first e with
    // cur * (P - e) <= (L - probe) * P. e == P means the window after that, where both are 0.
    Int128 e = 0;
    if (cur != 0) {
      e = std::max<Int128>(0, period_ns - Int128{limit - probe} * period_ns / cur);
    }
    d.retry_after_ns = Saturate(until_end_ns + e);
  }
  return out;
}

// The same decisions as DecideSlidingWindowWide, in 64 bits (I6). With
//   k = floor(prev * e / P)                  the part of prev that has slid out of the window
//   w = prev - k = ceil(prev * (P - e) / P)  prev's weight, rounded up (0 <= w <= prev)
// and since prev * (P - e) = w * P - r with 0 <= r < P, for integers c and h:
//   prev * (P - e) + (c + h) * P <= L * P   <=>  w + c + h <= L
//   floor((L * P - used) / P) when used < L * P, else 0   =   max(0, L - c - w)
// So the admission test and remaining need k alone, and every count is below 2^33. prev * e
// fits in 64 bits whenever P <= 2^32 ns (4.3 s), as prev < 2^32, and for longer periods unless
// prev is in the millions.
Outcome DecideSlidingWindow(const LimitSpec& spec, const KeyState& state, int64_t now_ns,
                            uint64_t hits) {
  const uint64_t limit = spec.requests_per_period;  // < 2^32 (InBounds)
  const int64_t period_ns = spec.period_ns;
  uint64_t prev = 0;
  uint64_t cur = 0;
  int64_t window_end_ns;
  int64_t elapsed_ns;  // position in the current window, [0, period)
  if (IsFresh(state, now_ns)) {
    elapsed_ns = PositiveMod(now_ns, period_ns);
    window_end_ns = SatAdd(now_ns, period_ns - elapsed_ns);
  } else {
    // The wide version's reading of the state, with its 128-bit saturations done in 64 bits.
    prev = state.data >> 32;
    cur = state.data & kLow32;
    int64_t stored_end_ns;
    if (__builtin_sub_overflow(state.expiry_ns, period_ns, &stored_end_ns)) {
      stored_end_ns = kMinTime;
    }
    if (now_ns >= stored_end_ns) {
      prev = cur;  // the state's window is over and now is in the next one
      cur = 0;
      window_end_ns = state.expiry_ns;
      elapsed_ns = now_ns - stored_end_ns;  // < period, since now < expiry
    } else {
      // In the state's window, or before it (clock stepped back: e = 0, I3).
      window_end_ns = stored_end_ns;
      // stored_end - now as a 64-bit magnitude: in [1, 2^64).
      const uint64_t ahead_ns =
          static_cast<uint64_t>(stored_end_ns) - static_cast<uint64_t>(now_ns);
      elapsed_ns = ahead_ns < static_cast<uint64_t>(period_ns)
                       ? period_ns - static_cast<int64_t>(ahead_ns)
                       : 0;
    }
  }
  uint64_t prev_elapsed;
  if (__builtin_mul_overflow(prev, static_cast<uint64_t>(elapsed_ns), &prev_elapsed)) [[unlikely]] {
    return DecideSlidingWindowWide(spec, state, now_ns, hits);
  }
  const uint64_t weight = prev - prev_elapsed / static_cast<uint64_t>(period_ns);  // w
  int64_t until_end_ns;  // > 0 except at INT64_MAX
  if (__builtin_sub_overflow(window_end_ns, now_ns, &until_end_ns)) [[unlikely]] {
    // More than INT64_MAX ns to the end (now near INT64_MIN): the wide version keeps it exact.
    return DecideSlidingWindowWide(spec, state, now_ns, hits);
  }

  Outcome out{.decision = {}, .next = state};
  Decision& d = out.decision;
  d.limit = limit;
  const uint64_t probe = hits == 0 ? 1 : hits;
  const bool fits = probe <= limit && weight + cur + probe <= limit;
  if (fits && hits != 0) {
    cur += hits;  // <= limit < 2^32
    out.next = KeyState{.expiry_ns = SatAdd(window_end_ns, period_ns), .data = prev << 32 | cur};
  }
  d.allowed = fits;
  d.remaining = weight + cur < limit ? limit - weight - cur : 0;
  if (cur != 0) {
    d.reset_after_ns = SatAdd(until_end_ns, period_ns);  // cur is forgotten a window later
  } else if (prev != 0) {
    d.reset_after_ns = until_end_ns;
  }
  if (!fits) {
    if (probe > limit) {
      d.retry_after_ns = Decision::kNever;
      return out;
    }
    // The wide version's two candidates. Later in this window it passes at e = P - q with
    // q = floor(x * P / prev), x = L - cur - probe, if q > 0: that is until_end - q from now.
    if (cur + probe <= limit && prev != 0) {
      uint64_t x_periods;
      if (__builtin_mul_overflow(limit - cur - probe, static_cast<uint64_t>(period_ns), &x_periods))
          [[unlikely]] {
        return DecideSlidingWindowWide(spec, state, now_ns, hits);
      }
      // q < P (the refusal says x * P < prev * (P - e)) and until_end >= 0: no overflow.
      const uint64_t q = x_periods / prev;
      if (q > 0) {
        d.retry_after_ns = until_end_ns - static_cast<int64_t>(q);
        return out;
      }
    }
    // In the next window, at e = max(0, P - floor((L - probe) * P / cur)).
    int64_t e = 0;
    if (cur != 0) {
      uint64_t rest_periods;
      if (__builtin_mul_overflow(limit - probe, static_cast<uint64_t>(period_ns), &rest_periods))
          [[unlikely]] {
        return DecideSlidingWindowWide(spec, state, now_ns, hits);
      }
      const uint64_t q = rest_periods / cur;
      e = q < static_cast<uint64_t>(period_ns) ? period_ns - static_cast<int64_t>(q) : 0;
    }
    d.retry_after_ns = SatAdd(until_end_ns, e);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Token bucket (GCRA) and leaky bucket: same state, same admission rule, see the header block.

// The reference version: absolute scaled times, all in 128 bits. DecideBucket hands decisions
// here when its 64-bit arithmetic would overflow (I6).
Outcome DecideBucketWide(const LimitSpec& spec, const KeyState& state, int64_t now_ns,
                         uint64_t hits, bool leaky) {
  const uint64_t rate = spec.requests_per_period;
  const uint64_t capacity = spec.Capacity();
  if (rate == 0) {
    return RefuseForever(state, 0);
  }
  const Int128 now_s = Int128{now_ns} * rate;
  Int128 tat_s = now_s;
  if (!IsFresh(state, now_ns)) {
    tat_s = std::max(now_s, Int128{state.expiry_ns} * rate - state.data);
  }
  const Int128 dvt_s = Int128{spec.period_ns} * capacity;

  Outcome out{.decision = {}, .next = state};
  Decision& d = out.decision;
  d.limit = capacity;
  const uint64_t probe = hits == 0 ? 1 : hits;
  Int128 ttl_s = tat_s - now_s;  // >= 0
  if (probe > capacity) {
    d.allowed = false;
    d.retry_after_ns = Decision::kNever;  // increment > dvt: can never pass
  } else {
    const Int128 new_tat_s = tat_s + Int128{spec.period_ns} * probe;
    const Int128 allow_at_s = new_tat_s - dvt_s;
    if (allow_at_s > now_s) {
      d.allowed = false;
      d.retry_after_ns = Saturate(CeilDivNonNeg(allow_at_s - now_s, rate));
    } else if (const Int128 new_expiry_ns = CeilDiv(new_tat_s, rate); new_expiry_ns > kMaxTime) {
      // The new TAT is past INT64_MAX ns and cannot be stored. It stays there until now passes
      // TAT, and then now + increment is past it too, so this is final (I4).
      d.allowed = false;
      d.retry_after_ns = Decision::kNever;
    } else {
      d.allowed = true;
      if (leaky) {
        d.delay_ns = Saturate(CeilDivNonNeg(tat_s - now_s, rate));
      }
      if (hits != 0) {
        ttl_s = new_tat_s - now_s;
        const auto expiry_ns = static_cast<int64_t>(new_expiry_ns);
        out.next = KeyState{.expiry_ns = expiry_ns,
                            .data = static_cast<uint64_t>(Int128{expiry_ns} * rate - new_tat_s)};
      }
    }
  }
  const Int128 next_s = dvt_s - ttl_s;
  d.remaining =
      next_s > 0 ? static_cast<uint64_t>(std::min<Int128>(next_s / spec.period_ns, capacity)) : 0;
  d.reset_after_ns = Saturate(CeilDivNonNeg(ttl_s, rate));
  return out;
}

// The same decisions as DecideBucketWide, in 64 bits (I6). Absolute scaled times (now * count)
// are far past 2^64, so this version works relative to now, in scaled units: ttl_s = TAT_s - now_s
// and new_ttl_s = ttl_s + P * probe. The identities used (n an integer, X, t >= 0, R, P > 0):
//   ceil((n * R + X) / R) = n + ceil(X / R)     the new expiry_ns, with n = now
//   floor((P * C - t) / P) = C - ceil(t / P)    remaining, when P * C > t (and then it is <= C)
// ttl_s and new_ttl_s fit in 64 bits unless the TAT is more than 2^64 / count ns ahead of now
// (213 days at 1000 per period, 18 ms at 1e12 per period); dvt_s = P * C may well not fit, and
// then it exceeds both, which is all the comparisons need to know.
Outcome DecideBucket(const LimitSpec& spec, const KeyState& state, int64_t now_ns, uint64_t hits,
                     bool leaky) {
  const uint64_t rate = spec.requests_per_period;
  const uint64_t capacity = spec.Capacity();
  if (rate == 0) {
    return RefuseForever(state, 0);
  }
  const auto period = static_cast<uint64_t>(spec.period_ns);
  uint64_t ttl_s = 0;  // max(TAT_s, now_s) - now_s
  if (!IsFresh(state, now_ns)) {
    // expiry > now here, so the difference is in [1, 2^64).
    const uint64_t ahead_ns =
        static_cast<uint64_t>(state.expiry_ns) - static_cast<uint64_t>(now_ns);
    uint64_t ahead_s;
    if (__builtin_mul_overflow(ahead_ns, rate, &ahead_s)) [[unlikely]] {
      return DecideBucketWide(spec, state, now_ns, hits, leaky);
    }
    ttl_s = ahead_s > state.data ? ahead_s - state.data : 0;
  }
  uint64_t dvt_s;
  const bool dvt_fits = !__builtin_mul_overflow(period, capacity, &dvt_s);

  Outcome out{.decision = {}, .next = state};
  Decision& d = out.decision;
  d.limit = capacity;
  const uint64_t probe = hits == 0 ? 1 : hits;
  bool committed = false;
  uint64_t until_tat_ns = 0;  // ceil(TAT) - now once committed
  if (probe > capacity) {
    d.allowed = false;
    d.retry_after_ns = Decision::kNever;  // increment > dvt: can never pass
  } else {
    uint64_t increment_s;
    uint64_t new_ttl_s;
    if (__builtin_mul_overflow(period, probe, &increment_s) ||
        __builtin_add_overflow(ttl_s, increment_s, &new_ttl_s)) [[unlikely]] {
      return DecideBucketWide(spec, state, now_ns, hits, leaky);
    }
    if (dvt_fits && new_ttl_s > dvt_s) {  // new_tat - dvt > now
      d.allowed = false;
      d.retry_after_ns = SaturateToTime(CeilDiv64(new_ttl_s - dvt_s, rate));
    } else if (const uint64_t new_until_tat_ns = CeilDiv64(new_ttl_s, rate);
               new_until_tat_ns > static_cast<uint64_t>(kMaxTime) - static_cast<uint64_t>(now_ns)) {
      // now + new_until_tat > INT64_MAX: the new TAT cannot be stored; final, as in the wide
      // version (I4).
      d.allowed = false;
      d.retry_after_ns = Decision::kNever;
    } else {
      d.allowed = true;
      if (leaky) {
        d.delay_ns = SaturateToTime(CeilDiv64(ttl_s, rate));
      }
      if (hits != 0) {
        committed = true;
        ttl_s = new_ttl_s;
        until_tat_ns = new_until_tat_ns;
        // expiry = now + until_tat <= INT64_MAX, summed modulo 2^64. data = ceil(TAT) * count -
        // TAT_s = until_tat * count - new_ttl_s, in [0, count): the product may wrap modulo
        // 2^64, the difference is exact.
        out.next = KeyState{
            .expiry_ns = static_cast<int64_t>(static_cast<uint64_t>(now_ns) + until_tat_ns),
            .data = until_tat_ns * rate - new_ttl_s};
      }
    }
  }
  if (!dvt_fits || ttl_s < dvt_s) {
    d.remaining = capacity - CeilDiv64(ttl_s, period);
  }
  // reset_after = ceil(ttl_s / count); once committed that is until_tat, already at hand.
  d.reset_after_ns = SaturateToTime(committed ? until_tat_ns : CeilDiv64(ttl_s, rate));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Concurrency.

}  // namespace

namespace internal {

Slots ReadSlots(const LimitSpec& spec, const KeyState& state, int64_t now_ns) {
  const int64_t period_ns = spec.period_ns;
  if (IsFresh(state, now_ns)) {
    return Slots{.end_ns = SatAdd(now_ns, period_ns - PositiveMod(now_ns, period_ns))};
  }
  Slots s{.prev = state.data >> 32, .cur = state.data & kLow32, .end_ns = state.expiry_ns};
  const int64_t stored_end_ns = SatAdd(state.expiry_ns, -period_ns);
  if (now_ns >= stored_end_ns) {
    // Now is in the next epoch (now < expiry): cur's slots become prev, prev's are dropped.
    s.prev = s.cur;
    s.cur = 0;
  } else {
    s.end_ns = stored_end_ns;  // now is in the recorded epoch, or before it (I3)
  }
  return s;
}

}  // namespace internal

namespace {

// Returns the state holding `s`; see the invariants block for the cur == 0 case.
KeyState WriteSlots(const LimitSpec& spec, const Slots& s) {
  if (s.cur != 0) {
    return KeyState{.expiry_ns = SatAdd(s.end_ns, spec.period_ns), .data = s.prev << 32 | s.cur};
  }
  if (s.prev != 0) {
    return KeyState{.expiry_ns = s.end_ns, .data = s.prev};
  }
  return KeyState{};
}

Outcome DecideConcurrency(const LimitSpec& spec, const KeyState& state, int64_t now_ns,
                          uint64_t hits) {
  const uint64_t limit = spec.requests_per_period;  // < 2^32 (InBounds)
  Slots s = ReadSlots(spec, state, now_ns);
  const uint64_t in_flight = s.prev + s.cur;  // < 2^33: a state written under a larger limit
  Outcome out{.decision = {}, .next = state};
  Decision& d = out.decision;
  d.limit = limit;
  const uint64_t probe = hits == 0 ? 1 : hits;
  const bool fits = in_flight <= limit && probe <= limit - in_flight;
  if (fits && hits != 0) {
    s.cur += hits;  // <= limit < 2^32
    out.next = WriteSlots(spec, s);
  }
  const uint64_t held = in_flight + (fits ? hits : 0);
  d.allowed = fits;
  d.remaining = held < limit ? limit - held : 0;
  // > 0 except at INT64_MAX; exact, as the end may be more than INT64_MAX ns after a now near
  // INT64_MIN (I4). Durations derived from it saturate.
  const Int128 until_end_ns = Int128{s.end_ns} - now_ns;
  if (s.cur != 0) {
    d.reset_after_ns = Saturate(until_end_ns + spec.period_ns);
  } else if (s.prev != 0) {
    d.reset_after_ns = Saturate(until_end_ns);
  }
  if (!fits) {
    // Releases may free slots sooner; these are when unreleased slots age out at the latest.
    if (probe > limit) {
      d.retry_after_ns = Decision::kNever;
    } else if (s.cur <= limit - probe) {
      d.retry_after_ns = Saturate(until_end_ns);  // prev > 0 here, and dropping it makes room
    } else {
      d.retry_after_ns = Saturate(until_end_ns + spec.period_ns);  // cur's slots age out too
    }
  }
  return out;
}

}  // namespace

namespace internal {

// Decide with the *Wide versions only: the 128-bit reference that algorithms_test compares Decide
// against (I6). Not in algorithms.h, as it is not for callers: the test declares it itself.
Outcome DecideWide(const LimitSpec& spec, const KeyState& state, int64_t now_ns, uint64_t hits);

Outcome DecideWide(const LimitSpec& spec, const KeyState& state, int64_t now_ns, uint64_t hits) {
  if (!InBounds(spec)) {
    return RefuseForever(state, 0);
  }
  switch (spec.algorithm) {
    case Algorithm::kSlidingWindow:
      return DecideSlidingWindowWide(spec, state, now_ns, hits);
    case Algorithm::kTokenBucket:
      return DecideBucketWide(spec, state, now_ns, hits, /*leaky=*/false);
    case Algorithm::kLeakyBucket:
      return DecideBucketWide(spec, state, now_ns, hits, /*leaky=*/true);
    case Algorithm::kFixedWindow:
    case Algorithm::kConcurrency:
      break;  // one version only: nothing wide to avoid
  }
  return Decide(spec, state, now_ns, hits);
}

}  // namespace internal

Outcome Decide(const LimitSpec& spec, const KeyState& state, int64_t now_ns, uint64_t hits) {
  if (!InBounds(spec)) {
    return RefuseForever(state, 0);
  }
  switch (spec.algorithm) {
    case Algorithm::kFixedWindow:
      return DecideFixedWindow(spec, state, now_ns, hits);
    case Algorithm::kSlidingWindow:
      return DecideSlidingWindow(spec, state, now_ns, hits);
    case Algorithm::kTokenBucket:
    case Algorithm::kLeakyBucket:
      // One call site, so that the compiler inlines it here.
      return DecideBucket(spec, state, now_ns, hits,
                          /*leaky=*/spec.algorithm == Algorithm::kLeakyBucket);
    case Algorithm::kConcurrency:
      return DecideConcurrency(spec, state, now_ns, hits);
  }
  return RefuseForever(state, 0);
}

KeyState Release(const LimitSpec& spec, const KeyState& state, int64_t now_ns, uint64_t count,
                 int64_t acquired_at_ns) {
  if (spec.algorithm != Algorithm::kConcurrency || !InBounds(spec)) {
    return state;  // Decide admits nothing under a spec out of bounds, so nothing is held
  }
  Slots s = ReadSlots(spec, state, now_ns);
  const int64_t cur_start_ns = SatAdd(s.end_ns, -spec.period_ns);
  if (acquired_at_ns >= cur_start_ns) {
    s.cur -= std::min(s.cur, count);  // this epoch's slot (a token from later is clamped here)
  } else if (acquired_at_ns >= SatAdd(cur_start_ns, -spec.period_ns)) {
    s.prev -= std::min(s.prev, count);  // acquired in the previous epoch
  } else {
    return state;  // older: its slots were already dropped as expired
  }
  return WriteSlots(spec, s);
}

}  // namespace floodgate::core
