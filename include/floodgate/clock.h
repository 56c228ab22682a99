#pragma once

#include <chrono>
#include <cstdint>

namespace floodgate {

// A source of wall-clock time in nanoseconds since the Unix epoch.
//
// Algorithms never read a clock: they take `now_ns` as an argument. Only the store's callers
// (the limiter and the servers) hold a Clock, so tests drive time with testing::FakeClock.
// Implementations must be safe to call from many threads at once.
class Clock {
 public:
  virtual ~Clock() = default;
  // Returns the current time in nanoseconds since the Unix epoch.
  virtual int64_t NowNs() const = 0;
};

// The real system clock (CLOCK_REALTIME). Thread-safe; stateless.
class SystemClock final : public Clock {
 public:
  int64_t NowNs() const override {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
  // Returns a process-wide instance.
  static const SystemClock* Get() {
    static const SystemClock clock;
    return &clock;
  }
};

}  // namespace floodgate
