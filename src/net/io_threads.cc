#include "src/net/io_threads.h"

#include <algorithm>

namespace floodgate::net {

IoThreads::IoThreads(IoModel model, int threads) : model_(model), threads_(std::max(threads, 1)) {
  if (model_ == IoModel::kShared) {
    contexts_.push_back(std::make_unique<Context>(threads_));
  } else {
    for (int i = 0; i < threads_; ++i) {
      contexts_.push_back(std::make_unique<Context>(1));
    }
  }
}

IoThreads::~IoThreads() { Stop(); }

void IoThreads::Start() {
  for (auto& context : contexts_) {
    context->work.emplace(context->ioc.get_executor());
  }
  running_.reserve(threads_);
  for (int i = 0; i < threads_; ++i) {
    boost::asio::io_context* ioc =
        &contexts_[model_ == IoModel::kShared ? 0 : static_cast<size_t>(i)]->ioc;
    running_.emplace_back([ioc] { ioc->run(); });
  }
}

void IoThreads::Stop() {
  for (auto& context : contexts_) {
    context->work.reset();
    context->ioc.stop();
  }
  for (std::thread& thread : running_) {
    thread.join();
  }
  running_.clear();
}

}  // namespace floodgate::net
