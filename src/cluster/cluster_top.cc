// ClusterStore's side of GET /v1/top: this node's top refused keys for the other members, and
// theirs gathered and merged for this node's caller.

#include <memory>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "src/cluster/cluster_store.h"

namespace floodgate::cluster {

void ClusterStore::SetTopRefusedSource(std::function<core::TopSnapshot()> source) {
  absl::MutexLock lock(&top_mu_);
  top_source_ = std::move(source);
}

core::TopSnapshot ClusterStore::HandleTopRefused() {
  std::function<core::TopSnapshot()> source;
  {
    absl::MutexLock lock(&top_mu_);
    source = top_source_;
  }
  return source ? source() : core::TopSnapshot{};
}

ClusterTopRefused ClusterStore::TopRefused(absl::Duration timeout, size_t limit) {
  // The answers arrive on the transport's threads; this call waits for all of them, or the
  // deadline. What is shared lives on the heap: a late answer finds it still there.
  struct Gather {
    absl::Mutex mu;
    int pending ABSL_GUARDED_BY(mu) = 0;
    std::vector<std::optional<core::TopSnapshot>> answers ABSL_GUARDED_BY(mu);
  };
  auto gather = std::make_shared<Gather>();
  const int self = membership_->self();
  const int slots = membership_->slots();
  const uint64_t alive = membership_->alive_mask();
  std::vector<int> asked;
  ClusterTopRefused out;
  out.nodes.push_back(options_.self_id);
  for (int i = 0; i < slots; ++i) {
    if (i == self || !membership_->is_member(i)) {
      continue;
    }
    if (((alive >> i) & 1) == 0) {
      out.missing.push_back(membership_->member(i).id);
      continue;
    }
    asked.push_back(i);
  }
  {
    absl::MutexLock lock(&gather->mu);
    gather->pending = static_cast<int>(asked.size());
    gather->answers.resize(asked.size());
  }
  for (size_t n = 0; n < asked.size(); ++n) {
    transport_->TopRefused(asked[n], timeout,
                           [gather, n](absl::StatusOr<core::TopSnapshot> answer) {
                             absl::MutexLock lock(&gather->mu);
                             if (answer.ok()) {
                               gather->answers[n] = *std::move(answer);
                             }
                             --gather->pending;
                           });
  }
  std::vector<core::TopSnapshot> parts;
  parts.push_back(HandleTopRefused());
  {
    absl::MutexLock lock(&gather->mu);
    gather->mu.AwaitWithTimeout(
        absl::Condition(
            +[](Gather* g) ABSL_NO_THREAD_SAFETY_ANALYSIS { return g->pending == 0; },
            gather.get()),
        timeout + absl::Milliseconds(50));
    for (size_t n = 0; n < asked.size(); ++n) {
      const std::string id = membership_->member(asked[n]).id;
      if (gather->answers[n].has_value()) {
        out.nodes.push_back(id);
        parts.push_back(*std::move(gather->answers[n]));
        gather->answers[n].reset();
      } else {
        out.missing.push_back(id);
      }
    }
  }
  out.top = core::MergeTopSnapshots(parts, limit);
  return out;
}

}  // namespace floodgate::cluster
