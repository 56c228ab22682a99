#pragma once

// Waiting on other processes in integration tests: what a test cannot be told (a server
// process's state) it polls, bounded. Not for synchronising with our own threads (those take an
// injected clock or a notification).

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace floodgate::testing {

// Polls `done` every 20 ms until it holds or `timeout` passes. Returns the time it took, or
// absl::InfiniteDuration() on timeout.
template <typename Fn>
absl::Duration WaitFor(Fn done, absl::Duration timeout) {
  const absl::Time start = absl::Now();
  while (absl::Now() - start < timeout) {
    if (done()) {
      return absl::Now() - start;
    }
    absl::SleepFor(absl::Milliseconds(20));  // polling external processes, not synchronising
  }
  return absl::InfiniteDuration();
}

}  // namespace floodgate::testing
