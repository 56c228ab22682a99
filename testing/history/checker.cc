#include "testing/history/checker.h"

#include <algorithm>
#include <deque>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"

namespace floodgate::history {
namespace {

// Times of one key's records.
struct KeyTimes {
  std::vector<int64_t> all;      // every record
  std::vector<int64_t> allowed;  // admitted records, sorted before use
};

uint64_t SaturatingAdd(uint64_t a, uint64_t b) {
  return a > std::numeric_limits<uint64_t>::max() - b ? std::numeric_limits<uint64_t>::max()
                                                      : a + b;
}

std::string FormatTimeNs(int64_t time_ns) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E*SZ", absl::FromUnixNanos(time_ns),
                          absl::UTCTimeZone());
}

std::string FormatDurationNs(int64_t ns) { return absl::FormatDuration(absl::Nanoseconds(ns)); }

// Fixed windows, with records near a boundary assignable to either side.
//
// Invariants of the greedy pass, window by window in ascending order, for a cap C:
//  - `carry` is the part of the previous boundary's ambiguous records that did not fit in the
//    previous window; it must go to this one (its only other choice).
//  - Of the next boundary's ambiguous records, as many as fit under C stay here and the rest
//    carry on. Keeping the carry as small as possible leaves every later window the most room,
//    so if the pass puts more than C in some window, every assignment does.
// With C = limit the pass also charges the fewest admissions beyond the limit (a record kept in
// a full window costs one now; carried on, it costs at most one later). So: assign with
// C = limit; if that puts a window over limit + tolerance, assign again with C = limit +
// tolerance, which decides pass or fail exactly.
// Windows are keyed by index (start / period); times are >= 0, so plain division floors.
void CheckFixedWindows(const Bound& bound, const KeyTimes& times, KeyResult& out) {
  const int64_t period = bound.period_ns;
  const int64_t slack = bound.slack_ns;
  const uint64_t most = SaturatingAdd(bound.limit, bound.tolerance);

  std::map<int64_t, WindowResult> windows;
  std::map<int64_t, uint64_t> unambiguous;  // window -> admitted records surely in it
  std::map<int64_t, uint64_t> boundary;     // boundary b (between windows b-1 and b) -> records
  for (const int64_t t : times.all) {
    ++windows[t / period].offered;
  }
  for (const int64_t t : times.allowed) {
    const int64_t w = t / period;
    const int64_t offset = t - w * period;
    if (offset < slack && w > 0) {
      ++boundary[w];
      ++windows[w - 1].ambiguous;
      ++windows[w].ambiguous;
    } else if (period - offset < slack) {
      ++boundary[w + 1];
      ++windows[w].ambiguous;
      ++windows[w + 1].ambiguous;
    } else {
      ++unambiguous[w];
    }
  }

  // Sets every window's `admitted` for cap `cap`; returns whether all are within `most`.
  auto assign = [&](uint64_t cap) {
    bool within = true;
    uint64_t carry = 0;
    int64_t previous = -2;
    for (auto& [w, window] : windows) {
      const uint64_t carry_in = previous == w - 1 ? carry : 0;
      auto sure = unambiguous.find(w);
      const uint64_t load = (sure == unambiguous.end() ? 0 : sure->second) + carry_in;
      auto next = boundary.find(w + 1);
      const uint64_t ambiguous_next = next == boundary.end() ? 0 : next->second;
      const uint64_t keep = std::min(cap > load ? cap - load : 0, ambiguous_next);
      carry = ambiguous_next - keep;
      previous = w;
      window.admitted = load + keep;
      within = within && window.admitted <= most;
    }
    return within;
  };
  if (!assign(bound.limit)) {
    assign(most);
  }
  for (auto& [w, window] : windows) {
    window.start_ns = w * period;
    window.bound = most;
    window.over = window.admitted > bound.limit ? window.admitted - bound.limit : 0;
    window.pass = window.admitted <= most;
    out.windows.push_back(window);
  }
}

// Exactness: windows by nominal time; admitted must equal min(limit, offered) +- tolerance.
void CheckExactWindows(const Bound& bound, const KeyTimes& times, KeyResult& out) {
  const int64_t period = bound.period_ns;
  std::map<int64_t, WindowResult> windows;
  for (const int64_t t : times.all) {
    ++windows[t / period].offered;
  }
  for (const int64_t t : times.allowed) {
    ++windows[t / period].admitted;
  }
  for (auto& [w, window] : windows) {
    window.start_ns = w * period;
    window.bound = SaturatingAdd(bound.limit, bound.tolerance);
    window.expected = std::min(bound.limit, window.offered);
    window.over = window.admitted > bound.limit ? window.admitted - bound.limit : 0;
    window.pass = window.admitted <= SaturatingAdd(window.expected, bound.tolerance) &&
                  SaturatingAdd(window.admitted, bound.tolerance) >= window.expected;
    out.windows.push_back(window);
  }
}

// Any-interval bound over intervals of length period - 2 * slack.
//
// Two admissions at a and b (a <= b) share an interval of that length iff b - a < length. So
// the most admissions in one interval, ending at the j-th, is j - i + 1 for the first i with
// t[j] - t[i] < length (two pointers). Over-admission keeps admissions earliest first and drops
// any that would make a (limit + 1)-th in an interval: dropping the latest is optimal, as in
// interval scheduling, so this is the fewest removals that satisfy the limit.
void CheckSliding(const Bound& bound, const KeyTimes& times, KeyResult& out) {
  const int64_t period = bound.period_ns;
  const int64_t length = bound.period_ns - 2 * bound.slack_ns;
  const uint64_t cap = SaturatingAdd(bound.limit, bound.tolerance);
  const std::vector<int64_t>& t = times.allowed;

  std::map<int64_t, WindowResult> windows;
  for (const int64_t time : times.all) {
    ++windows[time / period].offered;
  }
  size_t first = 0;
  for (size_t j = 0; j < t.size(); ++j) {
    while (t[j] - t[first] >= length) {
      ++first;
    }
    const uint64_t count = j - first + 1;
    if (count > out.max_in_interval) {
      out.max_in_interval = count;
      out.max_interval_start_ns = t[first];
    }
    WindowResult& window = windows[t[j] / period];
    ++window.admitted;
    if (count > cap) {
      window.pass = false;
    }
  }
  std::deque<int64_t> kept;
  for (const int64_t time : t) {
    while (!kept.empty() && time - kept.front() >= length) {
      kept.pop_front();
    }
    if (kept.size() >= bound.limit) {
      ++windows[time / period].over;
    } else {
      kept.push_back(time);
    }
  }
  for (auto& [w, window] : windows) {
    window.start_ns = w * period;
    window.bound = cap;
    out.windows.push_back(window);
  }
}

std::string KindName(WindowKind kind) { return kind == WindowKind::kFixed ? "fixed" : "sliding"; }

}  // namespace

absl::Status ValidateBound(const Bound& bound) {
  if (bound.period_ns <= 0 || bound.period_ns > kMaxPeriodNs) {
    return absl::InvalidArgumentError(
        absl::StrCat("period must be in (0, 100 years], got ", bound.period_ns, " ns"));
  }
  if (bound.slack_ns < 0 || bound.slack_ns >= (bound.period_ns + 1) / 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "slack must be >= 0 and less than half the period, got ", bound.slack_ns, " ns"));
  }
  return absl::OkStatus();
}

uint64_t FailoverTolerance(uint64_t limit) { return limit / 100 + 1; }

const Bound& Checker::BoundFor(const std::string& key) const {
  auto it = bounds_.find(key);
  return it == bounds_.end() ? default_bound_ : it->second;
}

absl::StatusOr<Report> Checker::CheckBound(const std::vector<Record>& records) const {
  return Check(records, /*exact=*/false);
}

absl::StatusOr<Report> Checker::CheckExact(const std::vector<Record>& records) const {
  return Check(records, /*exact=*/true);
}

absl::StatusOr<Report> Checker::Check(const std::vector<Record>& records, bool exact) const {
  std::map<std::string, KeyTimes> by_key;
  for (const Record& r : records) {
    if (r.time_ns < 0 || r.time_ns > kMaxTimeNs) {
      return absl::InvalidArgumentError(absl::StrCat("record time ", r.time_ns, " of key '", r.key,
                                                     "' is outside [0, kMaxTimeNs]"));
    }
    KeyTimes& times = by_key[r.key];
    times.all.push_back(r.time_ns);
    if (r.allowed) {
      times.allowed.push_back(r.time_ns);
    }
  }

  Report report;
  report.exact = exact;
  report.records = records.size();
  for (auto& [key, times] : by_key) {
    const Bound& bound = BoundFor(key);
    absl::Status valid = ValidateBound(bound);
    if (!valid.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("key '", key, "': ", valid.message()));
    }
    if (exact && bound.kind != WindowKind::kFixed) {
      return absl::InvalidArgumentError(
          absl::StrCat("key '", key, "': the exactness check needs fixed windows"));
    }
    std::sort(times.allowed.begin(), times.allowed.end());
    KeyResult result;
    result.key = key;
    result.bound = bound;
    result.offered = times.all.size();
    result.admitted = times.allowed.size();
    if (exact) {
      CheckExactWindows(bound, times, result);
    } else if (bound.kind == WindowKind::kFixed) {
      CheckFixedWindows(bound, times, result);
    } else {
      CheckSliding(bound, times, result);
    }
    for (const WindowResult& window : result.windows) {
      result.over_admission += window.over;
      if (!window.pass) {
        result.pass = false;
        ++report.failed_windows;
      }
    }
    report.total_over_admission += result.over_admission;
    report.pass = report.pass && result.pass;
    report.keys.push_back(std::move(result));
  }
  return report;
}

std::string Report::Summary(bool verbose) const {
  std::string out = absl::StrCat(exact ? "exactness" : "bound", " check of ", records, " records, ",
                                 keys.size(), " keys\n");
  for (const KeyResult& key : keys) {
    const Bound& b = key.bound;
    absl::StrAppend(&out, "key '", key.key, "': ", KindName(b.kind), " ",
                    FormatDurationNs(b.period_ns), ", limit ", b.limit, ", tolerance ", b.tolerance,
                    ", slack ", FormatDurationNs(b.slack_ns), "; ", key.windows.size(),
                    " windows, offered ", key.offered, ", admitted ", key.admitted,
                    ", over-admission ", key.over_admission);
    if (b.kind == WindowKind::kSliding) {
      absl::StrAppend(&out, ", most in one interval ", key.max_in_interval, " from ",
                      FormatTimeNs(key.max_interval_start_ns));
    }
    absl::StrAppend(&out, ": ", key.pass ? "PASS" : "FAIL", "\n");
    for (const WindowResult& w : key.windows) {
      if (w.pass && !verbose) {
        continue;
      }
      absl::StrAppend(&out, "  ", w.pass ? "ok  " : "FAIL", " [", FormatTimeNs(w.start_ns), ", +",
                      FormatDurationNs(b.period_ns), "): offered ", w.offered, ", admitted ",
                      w.admitted);
      if (exact) {
        absl::StrAppend(&out, ", expected ", w.expected, " +- ", b.tolerance, "\n");
      } else {
        absl::StrAppend(&out, ", bound ", w.bound, ", over ", w.over, ", ambiguous ", w.ambiguous,
                        "\n");
      }
    }
  }
  absl::StrAppend(&out, "RESULT: ", pass ? "PASS" : "FAIL", " (", failed_windows,
                  " failing windows, total over-admission ", total_over_admission, ")\n");
  return out;
}

}  // namespace floodgate::history
