#pragma once

// Checks a decision history (record.h) against the bound a limit promises, across all nodes.
//
// Two checks:
//  - CheckBound: no window admits more than limit + tolerance. "Window" is either an
//    epoch-aligned fixed window, or (sliding) any interval of length `period`.
//  - CheckExact: every fixed window admits exactly min(limit, offered), within the tolerance.
//    For exact-mode tests that offer all of a window's requests and expect no under-admission.
//
// Times are client-observed, so a decision made just before a window boundary on the server may
// be recorded just after it. `slack_ns` (ε) absorbs that:
//  - Fixed windows: an admitted record strictly within ε of a boundary may count in either
//    adjacent window. A window passes if SOME assignment of those records passes; the checker
//    finds it greedily (earliest window first, as many ambiguous records as fit stay in the
//    earlier window, the rest move on), which is exact for this chain of windows.
//  - Sliding bound: the interval shrinks to period - 2ε (any interval of that length in recorded
//    time holds at most limit + tolerance). Simple and lenient: a real violation shorter than
//    2ε can go unnoticed, never a false failure from clock skew within ε.
//  - CheckExact ignores ε and counts records where their time falls: exact tests should offer
//    requests away from window boundaries.
//
// Every record counts one hit. Each key is checked on its own, with its own bound.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "testing/history/record.h"

namespace floodgate::history {

enum class WindowKind : uint8_t {
  kFixed = 0,    // at most `limit` per window [k*period, (k+1)*period), aligned to the Unix epoch
  kSliding = 1,  // at most `limit` in any interval [t, t + period)
};

// Largest period and record time accepted: windows' ends stay far from int64 overflow.
inline constexpr int64_t kMaxPeriodNs = 100LL * 366 * 86400 * 1'000'000'000LL;  // ~100 years
inline constexpr int64_t kMaxTimeNs = INT64_MAX / 2;                            // year ~2116
static_assert(kMaxTimeNs <= INT64_MAX - kMaxPeriodNs, "window ends must not overflow");

// What one key's limit promises. A plain value.
struct Bound {
  WindowKind kind = WindowKind::kFixed;
  uint64_t limit = 0;      // admissions allowed per window
  int64_t period_ns = 0;   // window length, in (0, kMaxPeriodNs]
  uint64_t tolerance = 0;  // extra admissions a window may have and still pass (failover, ...)
  int64_t slack_ns = 0;    // ε, see above; 0 <= 2ε < period
};

// Checks the ranges above. InvalidArgument naming the bad field.
absl::Status ValidateBound(const Bound& bound);

// Returns the tolerance cluster failover tests use: 1% of the limit, plus one.
uint64_t FailoverTolerance(uint64_t limit);

// One window of one key.
struct WindowResult {
  int64_t start_ns = 0;    // the window is [start_ns, start_ns + period)
  uint64_t offered = 0;    // records (allowed or not) whose time falls in the window
  uint64_t admitted = 0;   // allowed records counted in it (after assigning boundary records)
  uint64_t ambiguous = 0;  // allowed records within ε of one of its boundaries (fixed only)
  uint64_t bound = 0;      // most admissions that pass: limit + tolerance
  uint64_t expected = 0;   // CheckExact only: min(limit, offered)
  uint64_t over = 0;       // admissions beyond the limit (not the bound) charged to this window
  bool pass = true;
};

// All windows of one key.
struct KeyResult {
  std::string key;
  Bound bound;
  uint64_t offered = 0;
  uint64_t admitted = 0;
  // Admissions beyond the limit, summed over windows. Fixed windows: under the assignment
  // chosen for boundary records (the fewest possible when the key passes). Sliding: the fewest
  // admissions whose removal leaves at most `limit` in every interval.
  uint64_t over_admission = 0;
  // Sliding only: the most admissions in one interval of length period - 2ε, and its start.
  uint64_t max_in_interval = 0;
  int64_t max_interval_start_ns = 0;
  // Ascending; windows without records are left out. Sliding: epoch-aligned windows for
  // context; one fails when a violating interval ends in it.
  std::vector<WindowResult> windows;
  bool pass = true;
};

struct Report {
  bool exact = false;  // made by CheckExact
  size_t records = 0;
  std::vector<KeyResult> keys;  // sorted by key
  uint64_t failed_windows = 0;
  uint64_t total_over_admission = 0;
  bool pass = true;

  // Returns a readable summary: one line per key, one per failing window (every window when
  // `verbose`), and a final RESULT line.
  std::string Summary(bool verbose = false) const;
};

// Checks histories against per-key bounds.
//
// Thread-safety: configure with SetBound first; after that the Check methods are const and may
// run concurrently.
class Checker {
 public:
  // `default_bound` applies to every key without its own.
  explicit Checker(Bound default_bound) : default_bound_(default_bound) {}

  // Gives `key` its own bound.
  void SetBound(const std::string& key, Bound bound) { bounds_[key] = bound; }

  // Checks that no window admitted more than limit + tolerance. InvalidArgument when a bound is
  // invalid or a record's time is outside [0, kMaxTimeNs].
  absl::StatusOr<Report> CheckBound(const std::vector<Record>& records) const;
  // Checks that every fixed window admitted min(limit, offered) +- tolerance. InvalidArgument
  // as CheckBound, and for a sliding bound (exactness needs fixed windows).
  absl::StatusOr<Report> CheckExact(const std::vector<Record>& records) const;

 private:
  const Bound& BoundFor(const std::string& key) const;
  absl::StatusOr<Report> Check(const std::vector<Record>& records, bool exact) const;

  Bound default_bound_;
  std::map<std::string, Bound> bounds_;
};

}  // namespace floodgate::history
