#include "src/service/shed_watch.h"

#include <utility>

#include "src/common/log.h"

namespace floodgate::service {

ShedWatch::ShedWatch(std::vector<Counter> counters, absl::Duration quiet)
    : counters_(std::move(counters)), quiet_(quiet) {
  absl::MutexLock lock(&mu_);
  states_.resize(counters_.size());
  for (size_t i = 0; i < counters_.size(); ++i) {
    states_[i].last = counters_[i].shed->load(std::memory_order_relaxed);
  }
}

ShedWatch::~ShedWatch() { Stop(); }

void ShedWatch::Poll(absl::Time now) {
  absl::MutexLock lock(&mu_);
  for (size_t i = 0; i < counters_.size(); ++i) {
    State& state = states_[i];
    const uint64_t count = counters_[i].shed->load(std::memory_order_relaxed);
    if (count > state.last) {
      if (!state.shedding) {
        state.shedding = true;
        state.at_start = state.last;
        state.started = now;
        common::Log(common::LogLevel::kWarn, "shed_started",
                    {{"frontend", counters_[i].frontend}, {"shed", count - state.last}});
      }
      state.last_increase = now;
    } else if (state.shedding && now - state.last_increase >= quiet_) {
      state.shedding = false;
      common::Log(common::LogLevel::kInfo, "shed_stopped",
                  {{"frontend", counters_[i].frontend},
                   {"shed", count - state.at_start},
                   {"lasted", state.last_increase - state.started}});
    }
    state.last = count;
  }
}

void ShedWatch::Start(absl::Duration interval) {
  thread_ = std::thread([this, interval] {
    while (!stop_.WaitForNotificationWithTimeout(interval)) {
      Poll(absl::Now());
    }
  });
}

void ShedWatch::Stop() {
  if (!stop_.HasBeenNotified()) {
    stop_.Notify();
  }
  if (thread_.joinable()) {
    thread_.join();
  }
}

}  // namespace floodgate::service
