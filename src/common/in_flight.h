#pragma once

// A bound on work in flight, shared by threads: TryBegin takes a place if one is free, End
// gives it back. The front ends bound the rate limit calls they hold at once with it
// (--max-checks-in-flight is per front end).
//
// Thread-safety: every method may be called from any thread.

#include <atomic>
#include <cstddef>

namespace floodgate::common {

class InFlightLimit {
 public:
  explicit InFlightLimit(size_t max) : max_(max) {}
  InFlightLimit(const InFlightLimit&) = delete;
  InFlightLimit& operator=(const InFlightLimit&) = delete;

  // Takes a place and returns true, or returns false, taking nothing, when `max` are taken.
  bool TryBegin() {
    if (in_flight_.fetch_add(1, std::memory_order_relaxed) >= max_) {
      in_flight_.fetch_sub(1, std::memory_order_relaxed);
      return false;
    }
    return true;
  }
  // Gives back a place TryBegin took.
  void End() { in_flight_.fetch_sub(1, std::memory_order_relaxed); }
  size_t in_flight() const { return in_flight_.load(std::memory_order_relaxed); }

 private:
  const size_t max_;
  std::atomic<size_t> in_flight_{0};
};

}  // namespace floodgate::common
