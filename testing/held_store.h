#pragma once

// A fake Store for tests of the asynchronous check path (Store::ApplyAsync), standing in for a
// cluster whose owners answer late: it decides every transaction on a real sharded store of its
// own, so its decisions are a single node's, but it says it may suspend (MaySuspend) and its
// ApplyAsync keeps back the transactions a test picks (HoldIf; never a shed one, which waits
// for no other node) until the test releases them
// (Release, ReleaseAll). A released transaction is decided on the caller's loop, then its
// `done` runs there, as ClusterStore resumes a forwarded check; one that is not held is decided
// and answered inline, as a key this node owns is. Unavailable() makes every transaction
// (Apply's too) be decided as a cluster node decides when no owner can be asked: by each op's
// failure mode (open: allowed; closed: refused, Decision::unavailable; local: here).
//
// Held transactions must be released while their loops still run (or are polled): a test that
// destroys the store with held ones destroys their callbacks unrun, which a real store never
// does.
//
// Thread-safety: every method may be called from any thread.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "floodgate/store.h"

namespace floodgate::testing {

class HeldStore final : public Store {
 public:
  // Returns whether ApplyAsync should hold a transaction of these ops.
  using HoldPredicate = std::function<bool(absl::Span<const StoreOp> ops)>;
  // The retry_after of a closed failure-mode refusal (a cluster's dead_after).
  static constexpr int64_t kClosedRetryAfterNs = 3'000'000'000;

  HeldStore() : local_(*NewShardedStore(StoreOptions{.shards = 4})) {}

  bool Apply(absl::Span<const StoreOp> ops, int64_t now_ns,
             absl::Span<Decision> decisions) override {
    sync_applies_.fetch_add(1);
    return Decide(ops, now_ns, decisions);
  }

  // Holds the transaction when the predicate says so; otherwise decides it and runs `done`
  // before returning.
  void ApplyAsync(absl::Span<const StoreOp> ops, int64_t now_ns, absl::Span<Decision> decisions,
                  boost::asio::io_context& loop, ApplyDone done) override {
    {
      absl::MutexLock lock(&mu_);
      ++async_applies_;
      if (hold_ && !ops[0].shed && hold_(ops)) {
        ++suspended_;
        held_.push_back(std::make_unique<Held>(Held{std::vector<StoreOp>(ops.begin(), ops.end()),
                                                    now_ns, decisions, &loop, std::move(done)}));
        return;
      }
    }
    const bool committed = Decide(ops, now_ns, decisions);
    std::move(done)(committed);
    answered_.fetch_add(1);
  }

  bool MaySuspend() const override { return true; }
  StoreStats GetStats() const override { return local_->GetStats(); }
  void ReclaimExpired(int64_t now_ns) override { local_->ReclaimExpired(now_ns); }

  // From now on, ApplyAsync holds the transactions `hold` picks (null: none).
  void HoldIf(HoldPredicate hold) {
    absl::MutexLock lock(&mu_);
    hold_ = std::move(hold);
  }
  void HoldAll() {
    HoldIf([](absl::Span<const StoreOp>) { return true; });
  }
  // While set, transactions are decided by their ops' failure modes (see the file comment).
  void SetUnavailable(bool unavailable) { unavailable_.store(unavailable); }

  // Posts the held transaction `index` (0: the oldest still held) to its loop, where it is
  // decided and answered. Returns false when there is no such transaction.
  bool Release(size_t index) {
    std::unique_ptr<Held> held;
    {
      absl::MutexLock lock(&mu_);
      if (index >= held_.size()) {
        return false;
      }
      held = std::move(held_[index]);
      held_.erase(held_.begin() + static_cast<ptrdiff_t>(index));
    }
    boost::asio::io_context& loop = *held->loop;
    boost::asio::post(loop, [this, held = std::move(held)]() mutable {
      const bool committed = Decide(held->ops, held->now_ns, held->decisions);
      std::move(held->done)(committed);
      answered_.fetch_add(1);
    });
    return true;
  }
  // Releases every held transaction, oldest first; returns how many.
  size_t ReleaseAll() {
    size_t released = 0;
    while (Release(0)) {
      ++released;
    }
    return released;
  }

  // Returns the transactions held now.
  size_t held() {
    absl::MutexLock lock(&mu_);
    return held_.size();
  }
  // Returns the ApplyAsync calls so far, and how many of them were held.
  int async_applies() {
    absl::MutexLock lock(&mu_);
    return async_applies_;
  }
  int suspended() {
    absl::MutexLock lock(&mu_);
    return suspended_;
  }
  // Returns the ApplyAsync calls whose `done` has returned (inline or released), and the Apply
  // calls so far.
  int answered() const { return answered_.load(); }
  int sync_applies() const { return sync_applies_.load(); }

  // Waits until `done()` is true or 10 s have passed (a bounded wait for what other threads
  // do, never a sleep); returns done().
  static bool WaitFor(const std::function<bool()>& done) {
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (!done() && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(1));
    }
    return done();
  }

 private:
  struct Held {
    std::vector<StoreOp> ops;
    int64_t now_ns = 0;
    absl::Span<Decision> decisions;
    boost::asio::io_context* loop = nullptr;
    ApplyDone done;
  };

  // Decides on the local store, or by failure modes while unavailable (as ClusterStore's
  // ApplyFailureMode: the local ones on this node's store, the transaction passing when every
  // non-shadow check passes).
  bool Decide(absl::Span<const StoreOp> ops, int64_t now_ns, absl::Span<Decision> decisions) {
    if (!unavailable_.load()) {
      return local_->Apply(ops, now_ns, decisions);
    }
    std::vector<StoreOp> local;
    std::vector<size_t> index;
    for (size_t i = 0; i < ops.size(); ++i) {
      const StoreOp& op = ops[i];
      Decision& d = decisions[i];
      if (op.failure_mode == FailureMode::kOpen) {
        d = Decision{.allowed = true,
                     .limit = op.spec.requests_per_period,
                     .remaining = op.spec.requests_per_period};
      } else if (op.failure_mode == FailureMode::kClosed) {
        d = Decision{.allowed = false,
                     .unavailable = true,
                     .limit = op.spec.requests_per_period,
                     .remaining = 0,
                     .retry_after_ns = kClosedRetryAfterNs};
      } else {
        local.push_back(op);
        index.push_back(i);
      }
    }
    if (!local.empty()) {
      std::vector<Decision> out(local.size());
      local_->Apply(local, now_ns, absl::MakeSpan(out));
      for (size_t k = 0; k < index.size(); ++k) {
        decisions[index[k]] = out[k];
      }
    }
    for (size_t i = 0; i < ops.size(); ++i) {
      if (ops[i].kind == StoreOp::Kind::kCheck && !ops[i].shadow && !decisions[i].allowed) {
        return false;
      }
    }
    return true;
  }

  const std::unique_ptr<LocalStore> local_;
  std::atomic<bool> unavailable_{false};
  std::atomic<int> answered_{0};
  std::atomic<int> sync_applies_{0};
  absl::Mutex mu_;
  HoldPredicate hold_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Held>> held_ ABSL_GUARDED_BY(mu_);
  int async_applies_ ABSL_GUARDED_BY(mu_) = 0;
  int suspended_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace floodgate::testing
