// Redis Cluster: routing by hash slot, redirects, topology refresh.
//
// Invariants:
//  - slots_[s] is the Node that owns slot s as far as we know (null: unknown). It is replaced
//    whole by a refresh (CLUSTER SLOTS) and slot by slot by a MOVED; an ASK changes nothing.
//  - Nodes are kept by "host:port" in nodes_, one per address, created on first need and shared
//    by every slot that address serves. A Node no refresh has named for two refreshes in a row
//    is stopped and moved to the graveyard; graveyard Nodes are destroyed two refreshes later,
//    long after their last callback (Node callbacks hold raw pointers to their Node).
//  - A command is, at any time, in exactly one place: inside a Node, parked (no route yet,
//    TRYAGAIN), or being handled by the callback that took it out. Its callback runs once
//    (PendingCommand::Complete); a command that was redirected or retried also carries a timer
//    at its deadline, so redirects never stretch the caller's timeout.
//  - At most one refresh runs at a time, and refreshes start at most once per
//    min_refresh_interval_ms (backing off after failed ones: RefreshGapMs); a request during
//    either is remembered and served after.

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "src/net/io_threads.h"
#include "src/redis/redis_node.h"
#include "src/redis/redis_topology.h"

namespace floodgate::redis {
namespace {

using topology_internal::EndpointKey;
using topology_internal::kSlots;
using topology_internal::Parking;
using topology_internal::PendingCommand;
using topology_internal::Redirect;
using topology_internal::SlotRange;
using topology_internal::SteadyTime;

SteadyTime Now() { return std::chrono::steady_clock::now(); }

class ClusterClient final : public Client {
 public:
  ClusterClient(const ClientOptions& options, const TopologyOptions& topology)
      : options_(options),
        topology_(topology),
        io_(net::IoModel::kPerThread, std::max(1, options.io_threads)),
        parking_(io_.context(0), static_cast<size_t>(std::max(1, options.max_pending_per_node)),
                 [this](std::shared_ptr<PendingCommand> command) { Dispatch(std::move(command)); }),
        refresh_timer_(io_.context(0)),
        periodic_timer_(io_.context(0)),
        slots_(kSlots) {}

  ~ClusterClient() override { Stop(); }

  void Start() {
    io_.Start();
    RequestRefresh();
    ArmPeriodic();
  }

  void Send(absl::Span<const std::string_view> args, std::string_view slot_key,
            Callback callback) override {
    auto command =
        std::make_shared<PendingCommand>(args, HashSlot(slot_key), std::move(callback),
                                         Now() + std::chrono::milliseconds(options_.timeout_ms));
    Dispatch(std::move(command));
  }

  bool Healthy() const override {
    absl::ReaderMutexLock lock(&mu_);
    if (covered_slots_ != kSlots) {
      return false;
    }
    return std::all_of(masters_.begin(), masters_.end(),
                       [](const Node* node) { return node->Healthy(); });
  }

  ClientStats GetStats() const override {
    ClientStats stats;
    {
      absl::ReaderMutexLock lock(&mu_);
      for (const auto& [key, entry] : nodes_) {
        entry.node->AddStats(stats);
      }
    }
    stats.redirects += redirects_.load(std::memory_order_relaxed);
    stats.pending += parking_.size();
    return stats;
  }

  void Stop() override {
    if (stopping_.exchange(true)) {
      return;
    }
    std::vector<Node*> all;
    {
      absl::ReaderMutexLock lock(&mu_);
      for (auto& [key, entry] : nodes_) {
        all.push_back(entry.node.get());
      }
    }
    for (Node* node : all) {
      node->Stop();
    }
    io_.Stop();
    parking_.FailAll(absl::CancelledError("redis: client stopped"));
  }

 private:
  struct NodeEntry {
    std::unique_ptr<Node> node;
    int unnamed_refreshes = 0;  // refreshes in a row that did not name it
  };

  // Sends `command` to the owner of its slot, or to `target` (a redirect) when given.
  void Dispatch(std::shared_ptr<PendingCommand> command, Node* target = nullptr,
                bool asking = false) {
    if (command->done()) {
      return;
    }
    if (stopping_.load(std::memory_order_acquire)) {
      command->Complete(absl::CancelledError("redis: client stopped"));
      return;
    }
    if (target == nullptr) {
      absl::ReaderMutexLock lock(&mu_);
      target = slots_[command->slot];
    }
    if (target == nullptr) {
      // No owner known yet (first refresh not back, or "?" endpoints): wait for a refresh.
      RequestRefresh();
      Park(std::move(command));
      return;
    }
    PendingCommand* raw = command.get();
    target->Send(
        raw->args,
        [this, target, command = std::move(command)](absl::StatusOr<Reply> result) mutable {
          OnReply(std::move(command), target, std::move(result));
        },
        asking);
  }

  void Park(std::shared_ptr<PendingCommand> command) {
    const SteadyTime wake = Now() + std::chrono::milliseconds(topology_.retry_delay_ms);
    if (wake >= command->deadline) {
      command->Complete(absl::UnavailableError(
          absl::StrCat("redis cluster: no node serves slot ", command->slot)));
      return;
    }
    ArmDeadline(command);
    std::shared_ptr<PendingCommand> kept = command;
    if (!parking_.Park(std::move(kept), wake)) {
      command->Complete(absl::ResourceExhaustedError("redis cluster: too many commands waiting"));
    }
  }

  void OnReply(std::shared_ptr<PendingCommand> command, Node* from, absl::StatusOr<Reply> result) {
    if (command->done()) {
      return;  // its deadline timer answered already
    }
    if (!result.ok()) {
      // A master we cannot reach may have been replaced by its replica: look again. (A timeout
      // alone proves nothing; the node's breaker turns repeated ones into Unavailable.)
      if (result.status().code() == absl::StatusCode::kUnavailable) {
        RequestRefresh();
      }
      command->Complete(std::move(result));
      return;
    }
    if (result->type != Reply::Type::kError) {
      command->Complete(std::move(result));
      return;
    }
    const std::string& error = result->str;
    if (std::optional<Redirect> redirect =
            topology_internal::ParseRedirect(error, from->endpoint().host)) {
      FollowRedirect(std::move(command), *redirect, std::move(result));
      return;
    }
    const bool cluster_down = error.starts_with("CLUSTERDOWN");
    if (cluster_down || error.starts_with("TRYAGAIN")) {
      if (cluster_down) {
        RequestRefresh();
      }
      if (Now() + std::chrono::milliseconds(topology_.retry_delay_ms) < command->deadline) {
        ArmDeadline(command);
        std::shared_ptr<PendingCommand> kept = command;
        if (parking_.Park(std::move(kept),
                          Now() + std::chrono::milliseconds(topology_.retry_delay_ms))) {
          return;
        }
      }
    }
    command->Complete(std::move(result));
  }

  void FollowRedirect(std::shared_ptr<PendingCommand> command, const Redirect& redirect,
                      absl::StatusOr<Reply> reply) {
    if (++command->redirects > topology_.max_redirects) {
      command->Complete(absl::UnavailableError(absl::StrCat(
          "redis cluster: more than ", topology_.max_redirects, " redirects; last: ", reply->str)));
      return;
    }
    if (Now() >= command->deadline) {
      command->Complete(absl::DeadlineExceededError("redis cluster: timeout while redirected"));
      return;
    }
    redirects_.fetch_add(1, std::memory_order_relaxed);
    ArmDeadline(command);
    Node* target = nullptr;
    {
      absl::MutexLock lock(&mu_);
      target = NodeForLocked(redirect.endpoint);
      if (redirect.kind == Redirect::Kind::kMoved) {
        SetSlotLocked(redirect.slot, target);
      }
    }
    if (redirect.kind == Redirect::Kind::kMoved) {
      RequestRefresh();  // one MOVED usually means a whole range moved
    }
    Dispatch(std::move(command), target, redirect.kind == Redirect::Kind::kAsk);
  }

  // Gives a command that leaves the one-Node path a timer at its deadline (once).
  void ArmDeadline(const std::shared_ptr<PendingCommand>& command) {
    if (command->deadline_timer_armed) {
      return;
    }
    command->deadline_timer_armed = true;
    auto timer = std::make_shared<boost::asio::steady_timer>(io_.context(0), command->deadline);
    timer->async_wait([timer, command](const boost::system::error_code& error) {
      if (!error) {
        command->Complete(absl::DeadlineExceededError("redis cluster: command timed out"));
      }
    });
  }

  Node* NodeForLocked(const Endpoint& endpoint) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto [it, inserted] = nodes_.try_emplace(EndpointKey(endpoint));
    if (inserted) {
      const int context = next_context_++ % io_.contexts();
      it->second.node = std::make_unique<Node>(io_.context(context), endpoint, options_);
    }
    it->second.unnamed_refreshes = 0;
    return it->second.node.get();
  }

  void SetSlotLocked(uint16_t slot, Node* node) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (slots_[slot] == nullptr) {
      ++covered_slots_;
    }
    slots_[slot] = node;
    if (std::find(masters_.begin(), masters_.end(), node) == masters_.end()) {
      masters_.push_back(node);
    }
  }

  // --- Topology refresh ---

  void RequestRefresh() {
    if (stopping_.load(std::memory_order_acquire)) {
      return;
    }
    absl::MutexLock lock(&refresh_mu_);
    if (refreshing_ || refresh_timer_armed_) {
      refresh_wanted_ = true;
      return;
    }
    const SteadyTime earliest =
        last_refresh_ +
        std::chrono::milliseconds(topology_internal::RefreshGapMs(topology_, refresh_failures_));
    if (Now() < earliest) {
      refresh_timer_armed_ = true;
      refresh_timer_.expires_at(earliest);
      refresh_timer_.async_wait([this](const boost::system::error_code& error) {
        if (error) {
          return;
        }
        {
          absl::MutexLock lock(&refresh_mu_);
          refresh_timer_armed_ = false;
          refresh_wanted_ = false;
        }
        RequestRefresh();
      });
      return;
    }
    refreshing_ = true;
    refresh_wanted_ = false;
    last_refresh_ = Now();
    boost::asio::post(io_.context(0), [this] { StartRefresh(); });
  }

  // Asks the masters we know (reachable ones first), then the seeds, until one answers.
  void StartRefresh() {
    std::vector<Endpoint> candidates;
    {
      absl::ReaderMutexLock lock(&mu_);
      std::vector<const Node*> ordered(masters_.begin(), masters_.end());
      std::stable_partition(ordered.begin(), ordered.end(),
                            [](const Node* node) { return node->Healthy(); });
      for (const Node* node : ordered) {
        candidates.push_back(node->endpoint());
      }
    }
    for (const Endpoint& seed : options_.endpoints) {
      candidates.push_back(seed);
    }
    TryRefresh(std::make_shared<std::vector<Endpoint>>(std::move(candidates)), 0);
  }

  void TryRefresh(std::shared_ptr<std::vector<Endpoint>> candidates, size_t index) {
    if (index >= candidates->size() || stopping_.load(std::memory_order_acquire)) {
      FinishRefresh(false);
      return;
    }
    Node* node = nullptr;
    {
      absl::MutexLock lock(&mu_);
      node = NodeForLocked((*candidates)[index]);
    }
    static constexpr std::string_view kClusterSlots[] = {"CLUSTER", "SLOTS"};
    node->Send(kClusterSlots, [this, node, candidates = std::move(candidates),
                               index](absl::StatusOr<Reply> reply) mutable {
      if (reply.ok()) {
        absl::StatusOr<std::vector<SlotRange>> ranges =
            topology_internal::ParseClusterSlots(*reply, node->endpoint().host);
        if (ranges.ok() && !ranges->empty()) {
          ApplyTopology(*ranges);
          FinishRefresh(true);
          return;
        }
      }
      TryRefresh(std::move(candidates), index + 1);
    });
  }

  void ApplyTopology(const std::vector<SlotRange>& ranges) {
    std::vector<Node*> to_stop;
    {
      absl::MutexLock lock(&mu_);
      ApplyTopologyLocked(ranges, to_stop);
    }
    // Outside the lock: Stop waits for the Node's io thread, which may be waiting for mu_.
    for (Node* node : to_stop) {
      node->Stop();
    }
  }

  void ApplyTopologyLocked(const std::vector<SlotRange>& ranges, std::vector<Node*>& to_stop)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::vector<Node*> table(kSlots, nullptr);
    std::vector<Node*> masters;
    int covered = 0;
    for (const SlotRange& range : ranges) {
      Node* node = NodeForLocked(range.master);
      if (std::find(masters.begin(), masters.end(), node) == masters.end()) {
        masters.push_back(node);
      }
      for (int slot = range.first; slot <= range.last; ++slot) {
        covered += table[slot] == nullptr ? 1 : 0;
        table[slot] = node;
      }
    }
    slots_.swap(table);
    masters_.swap(masters);
    covered_slots_ = covered;

    // Retire what the cluster no longer names (see the invariants above).
    for (auto& grave : graveyard_) {
      ++grave.second;
    }
    std::erase_if(graveyard_, [](const auto& grave) { return grave.second >= 2; });
    std::vector<std::string> retired;
    for (auto& [key, entry] : nodes_) {
      const bool named =
          std::find(masters_.begin(), masters_.end(), entry.node.get()) != masters_.end();
      if (!named && ++entry.unnamed_refreshes >= 2) {
        retired.push_back(key);
      }
    }
    for (const std::string& key : retired) {
      auto it = nodes_.find(key);
      to_stop.push_back(it->second.node.get());
      graveyard_.emplace_back(std::move(it->second.node), 0);
      nodes_.erase(it);
    }
  }

  void FinishRefresh(bool ok) {
    bool again = false;
    {
      absl::MutexLock lock(&refresh_mu_);
      refreshing_ = false;
      refresh_failures_ = ok ? 0 : refresh_failures_ + 1;
      again = refresh_wanted_;
    }
    bool incomplete = false;
    {
      absl::ReaderMutexLock lock(&mu_);
      incomplete = covered_slots_ != kSlots;
    }
    parking_.WakeAll();
    if (again || !ok || incomplete) {
      RequestRefresh();  // rate-limited (RefreshGapMs)
    }
  }

  void ArmPeriodic() {
    periodic_timer_.expires_after(std::chrono::milliseconds(topology_.refresh_interval_ms));
    periodic_timer_.async_wait([this](const boost::system::error_code& error) {
      if (error || stopping_.load(std::memory_order_acquire)) {
        return;
      }
      RequestRefresh();
      ArmPeriodic();
    });
  }

  const ClientOptions options_;
  const TopologyOptions topology_;
  net::IoThreads io_;  // before everything that holds its contexts
  Parking parking_;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> redirects_{0};

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, NodeEntry> nodes_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<std::unique_ptr<Node>, int>> graveyard_ ABSL_GUARDED_BY(mu_);
  int next_context_ ABSL_GUARDED_BY(mu_) = 0;

  absl::Mutex refresh_mu_ ABSL_ACQUIRED_AFTER(mu_);
  bool refreshing_ ABSL_GUARDED_BY(refresh_mu_) = false;
  bool refresh_wanted_ ABSL_GUARDED_BY(refresh_mu_) = false;
  bool refresh_timer_armed_ ABSL_GUARDED_BY(refresh_mu_) = false;
  SteadyTime last_refresh_ ABSL_GUARDED_BY(refresh_mu_);
  int refresh_failures_ ABSL_GUARDED_BY(refresh_mu_) = 0;  // failed in a row
  boost::asio::steady_timer refresh_timer_ ABSL_GUARDED_BY(refresh_mu_);
  boost::asio::steady_timer periodic_timer_;  // touched on io context 0 only (and Start)

  std::vector<Node*> slots_ ABSL_GUARDED_BY(mu_);  // kSlots entries
  std::vector<Node*> masters_ ABSL_GUARDED_BY(mu_);
  int covered_slots_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Client>> NewClusterClient(const ClientOptions& options,
                                                         const TopologyOptions& topology) {
  if (options.endpoints.empty()) {
    return absl::InvalidArgumentError("redis cluster: no seed node");
  }
  if (options.db != 0) {
    return absl::InvalidArgumentError("redis cluster: a cluster has database 0 only");
  }
  if (options.timeout_ms <= 0 || topology.max_redirects < 0 || topology.retry_delay_ms <= 0 ||
      topology.min_refresh_interval_ms < 0 || topology.refresh_interval_ms <= 0) {
    return absl::InvalidArgumentError("redis cluster: timeouts and intervals must be positive");
  }
  auto client = std::make_unique<ClusterClient>(options, topology);
  client->Start();
  return client;
}

absl::StatusOr<std::unique_ptr<Client>> NewClusterClient(const ClientOptions& options) {
  return NewClusterClient(options, TopologyOptions{});
}

}  // namespace floodgate::redis
