#include "src/common/rate_limited_log.h"

#include <chrono>
#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"

namespace floodgate::common {
namespace {

int64_t MonotonicNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void WriteToStderr(std::string_view line) {
  // One fwrite per line so that lines from different threads do not interleave.
  std::string out(line);
  out += '\n';
  std::fwrite(out.data(), 1, out.size(), stderr);
  std::fflush(stderr);
}

}  // namespace

RateLimitedLog::RateLimitedLog(int burst, int64_t interval_ns, NowNs now_ns, Sink sink)
    : burst_(burst < 1 ? 1 : burst),
      interval_ns_(interval_ns < 1 ? 1 : interval_ns),
      now_ns_(now_ns != nullptr ? std::move(now_ns) : NowNs(MonotonicNs)),
      sink_(sink != nullptr ? std::move(sink) : Sink(WriteToStderr)) {}

bool RateLimitedLog::Log(std::string_view line) {
  const int64_t now = now_ns_();
  std::string out;
  {
    absl::MutexLock lock(&mu_);
    // A clock that steps back starts a new window rather than muting the log until it catches up.
    if (!started_ || now < window_start_ns_ || now - window_start_ns_ >= interval_ns_) {
      started_ = true;
      window_start_ns_ = now;
      written_in_window_ = 0;
    }
    if (written_in_window_ >= burst_) {
      ++suppressed_pending_;
      ++suppressed_total_;
      return false;
    }
    ++written_in_window_;
    out = std::string(line);
    if (suppressed_pending_ > 0) {
      absl::StrAppend(&out, " (", suppressed_pending_, " earlier line",
                      suppressed_pending_ == 1 ? "" : "s", " suppressed)");
      suppressed_pending_ = 0;
    }
  }
  sink_(out);
  return true;
}

uint64_t RateLimitedLog::suppressed_total() const {
  absl::MutexLock lock(&mu_);
  return suppressed_total_;
}

RateLimitedLog& RateLimitedLog::Default() {
  static RateLimitedLog* log = new RateLimitedLog();
  return *log;
}

}  // namespace floodgate::common
