#pragma once

// The io threads of a server, in one of two models:
//  - IoModel::kShared: one io_context run by N threads. Work goes to whichever thread is free;
//    a connection's operations must then form a single chain (or run on a strand).
//  - IoModel::kPerThread: N io_contexts, one thread each. Whatever is posted to a context runs
//    on its thread only, so a connection placed on one needs no lock at all.
//
// Thread-safety: Start/Stop from one thread; context() from any.

#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

namespace floodgate::net {

enum class IoModel { kShared, kPerThread };

class IoThreads {
 public:
  // `threads` < 1 counts as 1.
  IoThreads(IoModel model, int threads);
  ~IoThreads();

  IoThreads(const IoThreads&) = delete;
  IoThreads& operator=(const IoThreads&) = delete;

  IoModel model() const { return model_; }
  // Returns the number of io_contexts: 1 for kShared, the thread count for kPerThread.
  int contexts() const { return static_cast<int>(contexts_.size()); }
  boost::asio::io_context& context(int i) { return contexts_[i]->ioc; }

  // Starts the threads; until Stop, the contexts keep running even with no work queued.
  void Start();
  // Stops the contexts (handlers still queued are not run) and joins the threads. Idempotent.
  void Stop();

 private:
  struct Context {
    explicit Context(int concurrency_hint) : ioc(concurrency_hint) {}
    boost::asio::io_context ioc;
    std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work;
  };

  const IoModel model_;
  const int threads_;
  std::vector<std::unique_ptr<Context>> contexts_;
  std::vector<std::thread> running_;
};

}  // namespace floodgate::net
