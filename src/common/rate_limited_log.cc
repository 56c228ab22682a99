#include "src/common/rate_limited_log.h"

#include <chrono>
#include <utility>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"

namespace floodgate::common {
namespace {

int64_t MonotonicNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Bare lines (protobuf's, StatsD's) become the event `message`.
void WriteToLog(std::string_view line) { common::Log(LogLevel::kWarn, "message", {{"msg", line}}); }

}  // namespace

RateLimitedLog::RateLimitedLog(int burst, int64_t interval_ns, NowNs now_ns, Sink sink)
    : burst_(burst < 1 ? 1 : burst),
      interval_ns_(interval_ns < 1 ? 1 : interval_ns),
      now_ns_(now_ns != nullptr ? std::move(now_ns) : NowNs(MonotonicNs)),
      custom_sink_(sink != nullptr),
      sink_(sink != nullptr ? std::move(sink) : Sink(WriteToLog)) {}

bool RateLimitedLog::Admit(uint64_t* suppressed) {
  const int64_t now = now_ns_();
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
  *suppressed = suppressed_pending_;
  suppressed_pending_ = 0;
  return true;
}

bool RateLimitedLog::Log(std::string_view line) {
  uint64_t suppressed = 0;
  if (!Admit(&suppressed)) {
    return false;
  }
  std::string out(line);
  if (suppressed > 0) {
    absl::StrAppend(&out, " (", suppressed, " earlier line", suppressed == 1 ? "" : "s",
                    " suppressed)");
  }
  sink_(out);
  return true;
}

bool RateLimitedLog::Log(LogLevel level, std::string_view event,
                         std::initializer_list<LogField> fields) {
  uint64_t suppressed = 0;
  if (!Admit(&suppressed)) {
    return false;
  }
  absl::InlinedVector<LogField, 8> all(fields.begin(), fields.end());
  if (suppressed > 0) {
    all.push_back({"suppressed", suppressed});
  }
  if (custom_sink_) {
    const std::string line = FormatLogLine(LogFormat::kPlain, absl::UnixEpoch(), level, event, all);
    sink_(std::string_view(line).substr(line.find(' ') + 1));  // without the timestamp
  } else {
    common::Log(level, event, absl::MakeConstSpan(all));
  }
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
