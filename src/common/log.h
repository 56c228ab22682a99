#pragma once

// The server's log: one line per event on stderr, with a timestamp (UTC, milliseconds), a level,
// an event name and key=value fields, written through spdlog (one locked write per line, so lines
// from different threads never interleave). Two formats (--log-format):
//
//   plain: 2026-12-06T04:01:02.123Z WARN peer_dead peer=b members=3
//          (a value that is empty or holds a space, '"', '=' or a control character is written as
//          a JSON string literal: reason="connection refused")
//   json:  {"ts":"2026-12-06T04:01:02.123Z","level":"warn","event":"peer_dead","peer":"b",...}
//          (one object per line; strings escaped as JSON, bytes that are not UTF-8 become U+FFFD)
//
// Events are named in snake_case and listed, with their fields, in docs/operations.md ("Logs").
// Field keys are our own constants; values may come from callers (a domain, an error message),
// and lines a caller can trigger at will go through a RateLimitedLog (rate_limited_log.h).
//
// Thread-safety: Log may be called from any thread at any time; SetLogFormat and SetLogLevel
// too (main calls them once, before serving). A LogCapture (tests) diverts every line of the
// process while it lives.

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace floodgate::common {

enum class LogLevel : int { kInfo = 0, kWarn = 1, kError = 2 };
enum class LogFormat : int { kPlain = 0, kJson = 1 };

// Returns "info", "warn" or "error" (the JSON form; plain lines use it upper-cased).
std::string_view LogLevelName(LogLevel level);
// Parse "info|warn|error" and "plain|json"; false for anything else.
bool ParseLogLevel(std::string_view text, LogLevel* level);
bool ParseLogFormat(std::string_view text, LogFormat* format);

// One field's value: a string (viewed, not copied: it must outlive the Log call, as a
// temporary in the call's own expression does), an integer, a double, a bool or a duration
// (written as absl::FormatDuration does: "1.5s").
class LogValue {
 public:
  enum class Kind { kString, kInt, kUint, kDouble, kBool };

  LogValue(std::string_view text) : kind_(Kind::kString), text_(text) {}    // NOLINT
  LogValue(const char* text) : kind_(Kind::kString), text_(text) {}         // NOLINT
  LogValue(const std::string& text) : kind_(Kind::kString), text_(text) {}  // NOLINT
#ifndef ABSL_USES_STD_STRING_VIEW   // Debian's abseil has a string_view of its own
  LogValue(absl::string_view text)  // NOLINT
      : kind_(Kind::kString), text_(text.data(), text.size()) {}
#endif
  LogValue(bool value) : kind_(Kind::kBool), bool_(value) {}        // NOLINT
  LogValue(double value) : kind_(Kind::kDouble), double_(value) {}  // NOLINT
  template <typename T,
            std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>, int> = 0>
  LogValue(T value)  // NOLINT
      : kind_(std::is_signed_v<T> ? Kind::kInt : Kind::kUint),
        int_(static_cast<int64_t>(value)),
        uint_(static_cast<uint64_t>(value)) {}
  LogValue(absl::Duration value);  // NOLINT

  // Appends the value as JSON (a string literal, a number, true/false).
  void AppendJson(std::string& out) const;
  // Appends the value for a plain line: bare, or a JSON string literal when it needs quotes.
  void AppendPlain(std::string& out) const;

 private:
  Kind kind_;
  std::string_view text_;
  std::string owned_;  // a duration's text
  bool bool_ = false;
  double double_ = 0;
  int64_t int_ = 0;
  uint64_t uint_ = 0;
};

struct LogField {
  std::string_view key;
  LogValue value;
};

// Returns one line (no trailing newline) in `format`. Pure: tests call it with a fixed time.
std::string FormatLogLine(LogFormat format, absl::Time time, LogLevel level, std::string_view event,
                          absl::Span<const LogField> fields);

// Chooses the format and the lowest level written (default plain, info).
void SetLogFormat(LogFormat format);
void SetLogLevel(LogLevel level);
LogFormat log_format();
// Returns whether events at `level` are written.
bool LogEnabled(LogLevel level);

// Writes one event now, e.g. Log(LogLevel::kWarn, "peer_dead", {{"peer", id}, {"members", n}}).
void Log(LogLevel level, std::string_view event, std::initializer_list<LogField> fields = {});
void Log(LogLevel level, std::string_view event, absl::Span<const LogField> fields);

// While it lives, every line Log writes (formatted as configured) is kept here instead of going
// to stderr. For tests; one at a time.
class LogCapture {
 public:
  LogCapture();
  ~LogCapture();
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  // Returns the lines written so far.
  std::vector<std::string> lines() const;
  // Returns the lines whose event is `event` (plain lines: the third word).
  std::vector<std::string> Events(std::string_view event) const;

  // Called by the log's sink.
  void Add(std::string_view line);

 private:
  mutable absl::Mutex mu_;
  std::vector<std::string> lines_ ABSL_GUARDED_BY(mu_);
};

}  // namespace floodgate::common
