#pragma once

// A fake Store for tests of shedding: it allows everything, holds every op that is not shed at
// a gate until the test opens it (as a check waiting for its key's owner would wait), answers
// shed ops at once, and counts both kinds.

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "floodgate/store.h"

namespace floodgate::testing {

class GatedStore final : public Store {
 public:
  bool Apply(absl::Span<const StoreOp> ops, int64_t /*now_ns*/,
             absl::Span<Decision> decisions) override {
    if (ops[0].shed) {
      shed_.fetch_add(1);
    } else {
      waiting_.fetch_add(1);
      gate_.WaitForNotification();
      unshed_.fetch_add(1);
    }
    for (size_t i = 0; i < ops.size(); ++i) {
      decisions[i].allowed = true;
    }
    return true;
  }
  StoreStats GetStats() const override { return {}; }
  void ReclaimExpired(int64_t) override {}

  void Open() {
    if (!gate_.HasBeenNotified()) {
      gate_.Notify();
    }
  }
  int shed() const { return shed_.load(); }
  int unshed() const { return unshed_.load(); }
  int waiting() const { return waiting_.load(); }

 private:
  absl::Notification gate_;
  std::atomic<int> shed_{0};
  std::atomic<int> unshed_{0};
  std::atomic<int> waiting_{0};
};

// What RunQueueOverflow saw.
struct QueueOverflow {
  int first_waiting = 0;        // ops at the gate once the first call was taken by the worker
  int answered_while_shut = 0;  // of the five later calls, answered before the gate opened
  int shed_while_shut = 0;
  int unshed_while_shut = 0;
  int answered = 0;  // of the five, in the end
  int unshed = 0;    // in the end, the first call included
};

// The overflow scenario for a front end with one worker and a queue of one: `call(user)` makes
// one rate limit call for `user` and returns whether it was answered OK. The first call takes
// the worker and waits at the gate; five more follow at once, of which one takes the queue's
// place and four should be shed. `while_shut` runs before the gate opens (to check that other
// requests are still answered, say). Waits are bounded (30 s in all).
inline QueueOverflow RunQueueOverflow(
    GatedStore& store, std::function<bool(std::string)> call,
    std::function<void()> while_shut = [] {}) {
  QueueOverflow seen;
  std::vector<std::thread> callers;
  callers.emplace_back([&] { call("first"); });
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (store.waiting() < 1 && absl::Now() < deadline) {
    std::this_thread::yield();
  }
  seen.first_waiting = store.waiting();
  while_shut();
  std::atomic<int> answered{0};
  for (int i = 0; i < 5; ++i) {
    callers.emplace_back([&, i] {
      if (call("user" + std::to_string(i))) {
        answered.fetch_add(1);
      }
    });
  }
  while (answered.load() < 4 && absl::Now() < deadline) {
    std::this_thread::yield();
  }
  seen.answered_while_shut = answered.load();
  seen.shed_while_shut = store.shed();
  seen.unshed_while_shut = store.unshed();
  store.Open();
  for (std::thread& t : callers) {
    t.join();
  }
  seen.answered = answered.load();
  seen.unshed = store.unshed();
  return seen;
}

}  // namespace floodgate::testing
