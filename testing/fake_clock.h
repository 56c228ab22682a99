#pragma once

#include <atomic>
#include <cstdint>

#include "floodgate/clock.h"

namespace floodgate::testing {

// A clock that moves only when told to. Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t start_ns = 1'700'000'000'000'000'000LL) : now_ns_(start_ns) {}
  int64_t NowNs() const override { return now_ns_.load(std::memory_order_relaxed); }
  void Set(int64_t now_ns) { now_ns_.store(now_ns, std::memory_order_relaxed); }
  void Advance(int64_t delta_ns) { now_ns_.fetch_add(delta_ns, std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> now_ns_;
};

}  // namespace floodgate::testing
