#pragma once

// Logs when a front end starts and stops shedding (docs/operations.md, "Logs"): `shed_started`
// when its shed counter moves after being still, `shed_stopped` (with how many were shed
// meanwhile and for how long) once it has stayed still for `quiet` (1 s by default).
//
// The hot path pays nothing for it: the front ends count shed calls as they always did
// (FrontendMetrics::shed), and this watch only reads those counters, every `interval` on a thread
// of its own (Start), or when a test calls Poll. So a start is logged up to one interval late.
//
// Thread-safety: Poll may be called from any thread (calls are serialized); Start and Stop from
// the owner's.

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace floodgate::service {

class ShedWatch {
 public:
  struct Counter {
    std::string frontend;               // "http", "grpc"
    const std::atomic<uint64_t>* shed;  // read only; must outlive the watch
  };

  explicit ShedWatch(std::vector<Counter> counters, absl::Duration quiet = absl::Seconds(1));
  ~ShedWatch();
  ShedWatch(const ShedWatch&) = delete;
  ShedWatch& operator=(const ShedWatch&) = delete;

  // Reads the counters at `now` and logs the transitions since the last call.
  void Poll(absl::Time now);

  // Polls every `interval` on a background thread until Stop() or destruction.
  void Start(absl::Duration interval = absl::Milliseconds(250));
  void Stop();

 private:
  struct State {
    uint64_t last = 0;  // the counter at the last poll
    bool shedding = false;
    uint64_t at_start = 0;     // the counter before shedding started
    absl::Time started;        // when shedding was first seen
    absl::Time last_increase;  // when the counter last moved
  };

  const std::vector<Counter> counters_;
  const absl::Duration quiet_;
  absl::Mutex mu_;
  std::vector<State> states_ ABSL_GUARDED_BY(mu_);
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace floodgate::service
