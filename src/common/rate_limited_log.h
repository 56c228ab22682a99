#pragma once

// A log for lines that callers can trigger (a refused config, a bad peer message): at most
// `burst` lines per `interval`, the rest counted and summed up in the next line that is written
// ("... (12 earlier lines suppressed)"), so no caller can flood the log.
//
// Events (Log(level, event, fields)) go to the server's log (log.h) with a field
// `suppressed=N` when lines were suppressed before them; bare lines (Log(line), protobuf's and
// StatsD's) go there as the event `message` with the field `msg`.
//
// Time is injected (a function returning nanoseconds; any monotonic source) and so is the sink
// (the server's log by default; a sink given gets plain lines without the timestamp), for tests.
// Thread-safe: one instance may be shared by every thread.

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "src/common/log.h"

namespace floodgate::common {

class RateLimitedLog {
 public:
  using NowNs = std::function<int64_t()>;
  using Sink = std::function<void(std::string_view line)>;

  // Writes at most `burst` lines per `interval_ns` (a fixed window). `now_ns` defaults to the
  // monotonic clock, `sink` to the server's log (log.h).
  explicit RateLimitedLog(int burst = 10, int64_t interval_ns = 10'000'000'000,
                          NowNs now_ns = nullptr, Sink sink = nullptr);

  // Writes `line` (no trailing newline needed), or counts it as suppressed. Returns whether it
  // was written.
  bool Log(std::string_view line);
  // Writes the event, or counts it as suppressed. Returns whether it was written.
  bool Log(LogLevel level, std::string_view event, std::initializer_list<LogField> fields);

  // Returns the lines suppressed since the process started.
  uint64_t suppressed_total() const;

  // Returns a process-wide log with the defaults, for the events callers can trigger.
  static RateLimitedLog& Default();

 private:
  // Counts the line against the window; returns false if it is suppressed, else the number of
  // lines suppressed since the last one written (0 or more) through `suppressed`.
  bool Admit(uint64_t* suppressed) ABSL_LOCKS_EXCLUDED(mu_);

  const int burst_;
  const int64_t interval_ns_;
  const NowNs now_ns_;
  const bool custom_sink_;
  const Sink sink_;

  mutable absl::Mutex mu_;
  int64_t window_start_ns_ ABSL_GUARDED_BY(mu_) = 0;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  int written_in_window_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t suppressed_pending_ ABSL_GUARDED_BY(mu_) = 0;  // not yet reported in a line
  uint64_t suppressed_total_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace floodgate::common
