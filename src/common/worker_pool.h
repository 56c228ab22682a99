#pragma once

// A fixed set of threads running submitted closures, with a bounded queue.
//
// Cluster mode uses it to keep blocking work off gRPC's own threads: a check that waits for its
// key's owner must not hold a thread that the peer service needs to answer other nodes (on
// every node at once, that would stall the whole cluster until deadlines fire).
//
// Thread-safety: Submit may be called from any thread.

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace floodgate::common {

class WorkerPool {
 public:
  WorkerPool(int threads, size_t max_queue) : max_queue_(max_queue) {
    for (int i = 0; i < threads; ++i) {
      threads_.emplace_back([this] { Run(); });
    }
  }
  ~WorkerPool() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    for (std::thread& t : threads_) {
      t.join();
    }
  }
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Queues `fn`. Returns false, without running it, when the queue is full or the pool stopping.
  bool Submit(std::function<void()> fn) {
    absl::MutexLock lock(&mu_);
    if (stop_ || queue_.size() >= max_queue_) {
      return false;
    }
    queue_.push_back(std::move(fn));
    return true;
  }

  // A front end's shedding policy: runs fn(shed) on a worker, with shed true when the call
  // waited in the queue longer than `max_delay`; when the queue is full, runs fn(true) here and
  // now. A shed call must not block (it waits for no other node).
  void SubmitOrShed(std::chrono::nanoseconds max_delay, std::function<void(bool shed)> fn) {
    const auto queued_at = std::chrono::steady_clock::now();
    auto shared = std::make_shared<std::function<void(bool)>>(std::move(fn));
    if (!Submit([shared, queued_at, max_delay] {
          (*shared)(std::chrono::steady_clock::now() - queued_at > max_delay);
        })) {
      (*shared)(true);
    }
  }

 private:
  void Run() {
    while (true) {
      std::function<void()> fn;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](WorkerPool* p)
                 ABSL_SHARED_LOCKS_REQUIRED(p->mu_) { return p->stop_ || !p->queue_.empty(); },
            this));
        if (queue_.empty()) {
          return;  // stopping, and everything queued has run
        }
        fn = std::move(queue_.front());
        queue_.pop_front();
      }
      fn();
    }
  }

  const size_t max_queue_;
  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_;
};

}  // namespace floodgate::common
