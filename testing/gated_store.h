#pragma once

// A fake Store for tests of shedding: it allows everything, holds every op that is not shed at
// a gate until the test opens it (as a check waiting for its key's owner would wait), answers
// shed ops at once, and counts both kinds.

#include <atomic>
#include <cstdint>

#include "absl/synchronization/notification.h"
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
  bool ApplyAndCapture(absl::Span<const StoreOp> ops, int64_t now_ns,
                       absl::Span<Decision> decisions, absl::Span<StateRecord>) override {
    return Apply(ops, now_ns, decisions);
  }
  void MergeStates(absl::Span<const StateRecord>, int64_t) override {}
  bool GetState(uint64_t, int64_t, StateRecord*) const override { return false; }
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

}  // namespace floodgate::testing
