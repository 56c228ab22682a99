#pragma once

// An in-process PeerTransport for cluster tests without sockets: a FakePeerNetwork maps member
// index -> the PeerHandler of the node started there, and each node's FakePeerTransport calls
// the target's handler directly, on the caller's thread (so forwarding, replication, reports and
// heartbeats all complete before the call returns: tests need no waiting). Switches make a
// member unreachable (calls to and from it fail with kUnavailable, as a dead or partitioned
// node) or slow-failing (calls to it fail with kDeadlineExceeded, as a timed-out forward).
// ForwardAsync decides on the target's handler at once too, but its answer reaches the caller as
// a real one does: posted to the caller's loop, so the caller is suspended until that loop runs
// it; HoldAnswers keeps the answers back until ReleaseAnswers (a slow owner).
//
// Thread-safety: the network's switches and the calls may be used from any thread; a node must
// not be started or destroyed while calls to it run.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "floodgate/clock.h"
#include "src/cluster/peer_transport.h"

namespace floodgate::testing {

class FakePeerNetwork {
 public:
  // `clock` (shared by every node of the test) stamps the calls a receiver decides.
  FakePeerNetwork(int members, const Clock* clock)
      : clock_(clock),
        handlers_(members, nullptr),
        unreachable_(members, false),
        slow_fail_(members, false),
        links_(members * members) {}

  // Returns the transport of member `self` (index in the sorted member list).
  std::unique_ptr<cluster::PeerTransport> TransportFor(int self);

  // Calls to and from `member` fail with kUnavailable while set.
  void SetUnreachable(int member, bool unreachable) {
    absl::MutexLock lock(&mu_);
    unreachable_[member] = unreachable;
  }
  // Calls to `member` fail with kDeadlineExceeded while set.
  void SetSlowFail(int member, bool slow_fail) {
    absl::MutexLock lock(&mu_);
    slow_fail_[member] = slow_fail;
  }
  // While set, ForwardAsync's answers are kept back (the owner has decided, the caller has not
  // heard) until ReleaseAnswers posts them to their loops.
  void HoldAnswers(bool hold) {
    absl::MutexLock lock(&mu_);
    hold_answers_ = hold;
  }
  void ReleaseAnswers() {
    std::vector<HeldAnswer> held;
    {
      absl::MutexLock lock(&mu_);
      held.swap(held_);
    }
    for (HeldAnswer& answer : held) {
      boost::asio::post(*answer.loop,
                        [run = std::move(answer.run)]() mutable { std::move(run)(); });
    }
  }
  // Returns the number of answers held back now, and of ForwardAsync calls so far.
  size_t held_answers() {
    absl::MutexLock lock(&mu_);
    return held_.size();
  }
  int async_forwards() {
    absl::MutexLock lock(&mu_);
    return async_forwards_;
  }
  // Flushes of reports that waited (FlushReports) and that did not (FlushReportsAsync).
  int blocking_flushes() {
    absl::MutexLock lock(&mu_);
    return blocking_flushes_;
  }
  int async_flushes() {
    absl::MutexLock lock(&mu_);
    return async_flushes_;
  }

 private:
  friend class FakePeerTransport;

  void Register(int member, cluster::PeerHandler* handler) {
    absl::MutexLock lock(&mu_);
    handlers_[member] = handler;
  }
  // Returns the handler `to` for a call from `from` (noting the contact, as a real server
  // does), or the error the call gets.
  absl::StatusOr<cluster::PeerHandler*> Reach(int from, int to) {
    cluster::PeerHandler* handler = nullptr;
    {
      absl::MutexLock lock(&mu_);
      if (unreachable_[from] || unreachable_[to] || handlers_[to] == nullptr ||
          handlers_[from] == nullptr) {
        return absl::UnavailableError(absl::StrCat("member ", to, " unreachable"));
      }
      if (slow_fail_[to]) {
        return absl::DeadlineExceededError(absl::StrCat("no answer from member ", to));
      }
      handler = handlers_[to];
    }
    handler->RecordContact(from);
    return handler;
  }
  struct HeldAnswer {
    boost::asio::io_context* loop;
    absl::AnyInvocable<void() &&> run;
  };
  // Sends `run` to `loop` now, or keeps it back while answers are held.
  void Answer(boost::asio::io_context& loop, absl::AnyInvocable<void() &&> run) {
    {
      absl::MutexLock lock(&mu_);
      ++async_forwards_;
      if (hold_answers_) {
        held_.push_back(HeldAnswer{&loop, std::move(run)});
        return;
      }
    }
    boost::asio::post(loop, [run = std::move(run)]() mutable { std::move(run)(); });
  }
  cluster::PeerLinkStats& Link(int from, int to) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return links_[from * static_cast<int>(handlers_.size()) + to];
  }

  const Clock* const clock_;
  absl::Mutex mu_;
  std::vector<cluster::PeerHandler*> handlers_ ABSL_GUARDED_BY(mu_);
  std::vector<bool> unreachable_ ABSL_GUARDED_BY(mu_);
  std::vector<bool> slow_fail_ ABSL_GUARDED_BY(mu_);
  std::vector<cluster::PeerLinkStats> links_ ABSL_GUARDED_BY(mu_);
  bool hold_answers_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<HeldAnswer> held_ ABSL_GUARDED_BY(mu_);
  int async_forwards_ ABSL_GUARDED_BY(mu_) = 0;
  int blocking_flushes_ ABSL_GUARDED_BY(mu_) = 0;
  int async_flushes_ ABSL_GUARDED_BY(mu_) = 0;
};

class FakePeerTransport final : public cluster::PeerTransport {
 public:
  FakePeerTransport(FakePeerNetwork* network, int self) : network_(network), self_(self) {}
  ~FakePeerTransport() override { Shutdown(); }

  absl::Status Start(cluster::PeerHandler* handler) override {
    handler_ = handler;
    network_->Register(self_, handler);
    return absl::OkStatus();
  }
  int port() const override { return 0; }
  void Shutdown() override { network_->Register(self_, nullptr); }

  absl::Status Forward(int member, absl::Span<const StoreOp> ops, absl::Span<Decision> decisions,
                       bool* committed) override {
    absl::StatusOr<cluster::PeerHandler*> to = network_->Reach(self_, member);
    {
      absl::MutexLock lock(&network_->mu_);
      cluster::PeerLinkStats& link = network_->Link(self_, member);
      ++link.forward_batches;
      ++link.forwarded_txns;
      link.forward_errors += to.ok() ? 0 : 1;
    }
    if (!to.ok()) {
      return to.status();
    }
    // As on the wire: routing fields do not travel.
    std::vector<StoreOp> sent(ops.begin(), ops.end());
    for (StoreOp& op : sent) {
      op.consistency = Consistency::kExact;
      op.failure_mode = FailureMode::kLocal;
      op.shed = false;
    }
    *committed = (*to)->HandleForward(sent, now_ns(), decisions);
    handler_->RecordContact(member);
    return absl::OkStatus();
  }

  // Decides on the target's handler now (as its io thread would, inline) and posts the answer
  // to `loop`: the caller resumes only when its loop runs.
  void ForwardAsync(int member, absl::Span<const StoreOp> ops, absl::Span<Decision> decisions,
                    boost::asio::io_context& loop, ForwardDone done) override {
    bool committed = false;
    absl::Status status = Forward(member, ops, decisions, &committed);
    network_->Answer(loop,
                     [done = std::move(done), status = std::move(status), committed]() mutable {
                       std::move(done)(std::move(status), committed);
                     });
  }

  void Replicate(int member, const StateRecord& record) override {
    absl::StatusOr<cluster::PeerHandler*> to = network_->Reach(self_, member);
    if (!to.ok()) {
      return;
    }
    const std::vector<StateRecord> corrections =
        (*to)->HandleReplicate(absl::MakeConstSpan(&record, 1), now_ns());
    {
      absl::MutexLock lock(&network_->mu_);
      ++network_->Link(self_, member).replicated_states;
    }
    if (!corrections.empty()) {
      handler_->HandleCorrections(corrections);
    }
  }

  void Report(int member, const StoreOp& op) override {
    Decision ignored;
    bool committed = false;
    Forward(member, absl::MakeConstSpan(&op, 1), absl::MakeSpan(&ignored, 1), &committed)
        .IgnoreError();
  }
  // Reports are delivered at once: a flush only counts, and the async one answers on the loop.
  void FlushReports(int /*member*/) override {
    absl::MutexLock lock(&network_->mu_);
    ++network_->blocking_flushes_;
  }
  void FlushReportsAsync(int /*member*/, boost::asio::io_context& loop, FlushDone done) override {
    {
      absl::MutexLock lock(&network_->mu_);
      ++network_->async_flushes_;
    }
    boost::asio::post(loop, [done = std::move(done)]() mutable { std::move(done)(); });
  }

  absl::StatusOr<std::vector<StateRecord>> Fetch(int member,
                                                 absl::Span<const uint64_t> key_hashes) override {
    absl::StatusOr<cluster::PeerHandler*> to = network_->Reach(self_, member);
    if (!to.ok()) {
      return to.status();
    }
    std::vector<StateRecord> states = (*to)->HandleFetch(key_hashes, now_ns());
    for (StateRecord& state : states) {
      state.spec = LimitSpec{};  // as on the wire: the asker knows the spec
    }
    return states;
  }

  void Ping(int member, const cluster::PingInfo& /*ours*/,
            std::function<void(absl::StatusOr<cluster::PingInfo>)> done) override {
    absl::StatusOr<cluster::PeerHandler*> to = network_->Reach(self_, member);
    if (!to.ok()) {
      done(to.status());
      return;
    }
    done((*to)->HandlePing());
  }

  absl::StatusOr<std::vector<peer::v1::ConfigChange>> GetConfig(
      int member, const std::vector<std::string>& domains) override {
    absl::StatusOr<cluster::PeerHandler*> to = network_->Reach(self_, member);
    if (!to.ok()) {
      return to.status();
    }
    return (*to)->HandleGetConfig(domains);
  }

  absl::Status PushConfig(int member, const std::vector<peer::v1::ConfigChange>& changes) override {
    absl::StatusOr<cluster::PeerHandler*> to = network_->Reach(self_, member);
    if (!to.ok()) {
      return to.status();
    }
    (*to)->HandlePushConfig(changes);
    return absl::OkStatus();
  }

  void TopRefused(int member, absl::Duration /*timeout*/, TopRefusedDone done) override {
    absl::StatusOr<cluster::PeerHandler*> to = network_->Reach(self_, member);
    if (!to.ok()) {
      std::move(done)(to.status());
      return;
    }
    std::move(done)((*to)->HandleTopRefused());
  }

  cluster::PeerLinkStats GetLinkStats(int member) const override {
    absl::MutexLock lock(&network_->mu_);
    return network_->Link(self_, member);
  }

 private:
  int64_t now_ns() const { return network_->clock_->NowNs(); }

  FakePeerNetwork* const network_;
  const int self_;
  cluster::PeerHandler* handler_ = nullptr;
};

inline std::unique_ptr<cluster::PeerTransport> FakePeerNetwork::TransportFor(int self) {
  return std::make_unique<FakePeerTransport>(this, self);
}

}  // namespace floodgate::testing
