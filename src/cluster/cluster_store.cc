#include "src/cluster/cluster_store.h"

#include <algorithm>
#include <atomic>
#include <limits>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "floodgate/status_macros.h"
#include "src/cluster/tcp_peer_transport.h"
#include "src/common/rate_limited_log.h"

namespace floodgate::cluster {

namespace {

constexpr int kInlineOps = 4;
// Limits of this node's own share (consistency: local, failure mode local) live under a salted
// key, apart from the owner's state of the same limit.
constexpr uint64_t kLocalShareSalt = 0x6C6F63616C736872ULL;
// A restarted owner asks replicas for the state of keys it lacks for at most this long (the
// replicas' corrections cover the rest: see ReplicateResponse).
constexpr int64_t kMaxWarmUpNs = 30'000'000'000LL;
// A forwarded transaction tries at most this many owners before its failure mode decides it.
constexpr int kForwardAttempts = 3;

// The longest a key's state can matter after its last change.
int64_t StateLifetimeNs(const LimitSpec& spec) {
  const uint64_t capacity = spec.Capacity();
  const uint64_t rpp = std::max<uint64_t>(spec.requests_per_period, 1);
  const uint64_t periods = std::min<uint64_t>(capacity / rpp + 2, 1000);
  const int64_t max = std::numeric_limits<int64_t>::max() / 2;
  return spec.period_ns > max / static_cast<int64_t>(periods)
             ? max
             : spec.period_ns * static_cast<int64_t>(periods);
}

// The share of a limit one of `members` nodes enforces on its own.
LimitSpec ShareOf(const LimitSpec& spec, int members) {
  LimitSpec share = spec;
  const uint64_t n = static_cast<uint64_t>(std::max(members, 1));
  share.requests_per_period = spec.requests_per_period / n;
  if (spec.burst != 0) {
    share.burst = std::max<uint64_t>(spec.burst / n, share.requests_per_period == 0 ? 0 : 1);
  }
  return share;
}

// Whether a transaction decided into `decisions` passes: every op allowed, or shadow.
bool Passed(absl::Span<const StoreOp> ops, absl::Span<const Decision> decisions) {
  for (size_t i = 0; i < ops.size(); ++i) {
    if (!decisions[i].allowed && !ops[i].shadow) {
      return false;
    }
  }
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Start and stop

ClusterStore::ClusterStore(ClusterOptions options, LocalStore* local, int self)
    : options_(std::move(options)),
      local_(local),
      started_at_ns_(options_.clock->NowNs()),
      membership_(std::make_unique<Membership>(options_.members, self, options_.clock,
                                               absl::ToInt64Nanoseconds(options_.dead_after))) {}

absl::StatusOr<std::unique_ptr<ClusterStore>> ClusterStore::Start(ClusterOptions options,
                                                                  LocalStore* local) {
  TcpPeerTransportOptions transport;
  transport.self_id = options.self_id;
  transport.members = options.members;
  for (size_t i = 0; i < options.members.size(); ++i) {
    if (options.members[i].id == options.self_id) {
      transport.self = static_cast<int>(i);
    }
  }
  transport.listen_address = options.listen_address;
  transport.accept_unknown_members = options.dynamic_members;
  if (transport.listen_address.empty() && !options.members.empty()) {
    transport.listen_address = options.members[transport.self].address;
  }
  transport.heartbeat = options.heartbeat;
  transport.forward_timeout = options.forward_timeout;
  transport.cluster_key = options.cluster_key;
  transport.tls = options.peer_tls;
  transport.clock = options.clock;
  transport.background_delay = options.background_delay;
  return Start(std::move(options), local, NewTcpPeerTransport(std::move(transport)));
}

absl::StatusOr<std::unique_ptr<ClusterStore>> ClusterStore::Start(
    ClusterOptions options, LocalStore* local, std::unique_ptr<PeerTransport> transport) {
  int self = -1;
  for (size_t i = 0; i < options.members.size(); ++i) {
    if (options.members[i].id == options.self_id) {
      self = static_cast<int>(i);
    }
  }
  if (self < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--node-id ", options.self_id, " is not in --peers"));
  }
  if (options.replicas < 1) {
    return absl::InvalidArgumentError("--replicas must be at least 1");
  }
  std::unique_ptr<ClusterStore> store(new ClusterStore(std::move(options), local, self));
  store->transport_ = std::move(transport);
  GossipOptions gossip;
  gossip.self_id = store->options_.self_id;
  gossip.started_at_ns = store->started_at_ns_;
  gossip.heartbeat = store->options_.heartbeat;
  ClusterStore* raw = store.get();
  gossip.on_death = [raw] { raw->OnMemberDeath(); };
  store->gossip_ =
      std::make_unique<Gossip>(gossip, store->membership_.get(), store->transport_.get());
  FG_RETURN_IF_ERROR(store->transport_->Start(store.get()));
  if (store->options_.heartbeat_thread) {
    store->gossip_->Start();
    // Serve once a majority answers (bounded): a node that has not heard from its peers would
    // otherwise decide every key by failure mode for its first heartbeat.
    store->gossip_->WaitForQuorum(store->options_.dead_after * 2);
  }
  return store;
}

ClusterStore::~ClusterStore() {
  Shutdown();
  // The transport first: its destructor waits for calls in flight, which use this store.
  transport_.reset();
}

void ClusterStore::Shutdown() {
  if (stopping_.exchange(true)) {
    return;
  }
  gossip_->Stop();
  transport_->Shutdown();
}

void ClusterStore::SetConfigSync(ConfigSync* sync) { gossip_->SetConfigSync(sync); }

void ClusterStore::BroadcastConfig(const std::vector<peer::v1::ConfigChange>& changes) {
  gossip_->BroadcastConfig(changes);
}

void ClusterStore::HeartbeatRound() { gossip_->RunRound(); }

// ---------------------------------------------------------------------------------------------
// Routing

// Route targets other than a member index.
namespace {
constexpr int kRouteLocalShare = -1;
constexpr int kRouteFailureMode = -2;
}  // namespace

int ClusterStore::Route(const StoreOp& op, uint64_t mask) const {
  if (op.consistency == Consistency::kLocal) {
    return kRouteLocalShare;
  }
  if (!Membership::HasQuorum(mask, membership_->size())) {
    return kRouteFailureMode;
  }
  const int owner = membership_->Owner(op.key_hash, mask);
  if (op.shed && owner != membership_->self()) {
    return kRouteFailureMode;
  }
  return owner;
}

std::optional<int> ClusterStore::CommonRoute(absl::Span<const StoreOp> ops, uint64_t mask) const {
  const int first = Route(ops[0], mask);
  for (size_t i = 1; i < ops.size(); ++i) {
    if (Route(ops[i], mask) != first) {
      return std::nullopt;
    }
  }
  return first;
}

std::vector<ClusterStore::RouteGroup> ClusterStore::GroupByRoute(absl::Span<const StoreOp> ops,
                                                                 uint64_t mask) const {
  std::vector<RouteGroup> groups;
  for (size_t i = 0; i < ops.size(); ++i) {
    const int route = Route(ops[i], mask);
    auto it = std::find_if(groups.begin(), groups.end(),
                           [route](const RouteGroup& g) { return g.route == route; });
    if (it == groups.end()) {
      groups.push_back(RouteGroup{route, {}});
      it = groups.end() - 1;
    }
    it->index.push_back(i);
  }
  return groups;
}

bool ClusterStore::Apply(absl::Span<const StoreOp> ops, int64_t now_ns,
                         absl::Span<Decision> decisions) {
  const uint64_t mask = membership_->alive_mask();
  if (const std::optional<int> route = CommonRoute(ops, mask)) {
    return ApplyRouted(*route, ops, now_ns, decisions);
  }
  return ApplySplit(ops, now_ns, decisions, mask);
}

bool ClusterStore::ApplySplit(absl::Span<const StoreOp> ops, int64_t now_ns,
                              absl::Span<Decision> decisions, uint64_t mask) {
  // Ops with different owners: each owner's part is atomic on its own (docs/cluster.md).
  bool committed = true;
  for (const RouteGroup& group : GroupByRoute(ops, mask)) {
    absl::InlinedVector<StoreOp, kInlineOps> part;
    for (size_t i : group.index) {
      part.push_back(ops[i]);
    }
    absl::InlinedVector<Decision, kInlineOps> out(part.size());
    committed &= ApplyRouted(group.route, part, now_ns, absl::MakeSpan(out));
    for (size_t k = 0; k < group.index.size(); ++k) {
      decisions[group.index[k]] = out[k];
    }
  }
  return committed;
}

bool ClusterStore::ApplyRouted(int target, absl::Span<const StoreOp> ops, int64_t now_ns,
                               absl::Span<Decision> decisions) {
  if (target == kRouteLocalShare) {
    return ApplyLocalConsistency(ops, now_ns, decisions);
  }
  if (target == kRouteFailureMode) {
    failure_mode_ops_.fetch_add(ops.size(), std::memory_order_relaxed);
    if (ops[0].shed) {
      shed_ops_.fetch_add(ops.size(), std::memory_order_relaxed);
    }
    ApplyFailureMode(ops, now_ns, decisions, false);
    return Passed(ops, decisions);
  }
  if (target == membership_->self()) {
    return ApplyOwned(ops, now_ns, decisions);
  }
  return ForwardOrFail(target, ops, now_ns, decisions);
}

ClusterStore::Failover ClusterStore::AfterForwardFailure(int owner, const absl::Status& status,
                                                         absl::Span<const StoreOp> ops) {
  // The owner did not answer: treat it as dead and retry where its keys went (its replica,
  // which holds their state). Other errors (a version mismatch, a malformed batch) are not
  // the owner's death: decide by failure mode.
  if (status.code() != absl::StatusCode::kUnavailable &&
      status.code() != absl::StatusCode::kDeadlineExceeded) {
    return Failover{Failover::Next::kFailureMode};
  }
  membership_->RecordFailure(owner);
  failovers_.fetch_add(1, std::memory_order_relaxed);
  const std::optional<int> next = CommonRoute(ops, membership_->alive_mask());
  if (!next.has_value()) {
    return Failover{Failover::Next::kReapply};  // split across owners now
  }
  if (*next < 0 || *next == membership_->self()) {
    return Failover{Failover::Next::kRouted, *next};
  }
  return Failover{Failover::Next::kForward, *next};
}

bool ClusterStore::ForwardOrFail(int owner, absl::Span<const StoreOp> ops, int64_t now_ns,
                                 absl::Span<Decision> decisions) {
  for (int attempt = 0; attempt < kForwardAttempts; ++attempt) {
    bool committed = false;
    const absl::Status status = transport_->Forward(owner, ops, decisions, &committed);
    if (status.ok()) {
      return committed;
    }
    const Failover failover = AfterForwardFailure(owner, status, ops);
    switch (failover.next) {
      case Failover::Next::kFailureMode:
        return ApplyRouted(kRouteFailureMode, ops, now_ns, decisions);
      case Failover::Next::kReapply:
        return Apply(ops, now_ns, decisions);
      case Failover::Next::kRouted:
        return ApplyRouted(failover.target, ops, now_ns, decisions);
      case Failover::Next::kForward:
        owner = failover.target;
        break;
    }
  }
  return ApplyRouted(kRouteFailureMode, ops, now_ns, decisions);
}

// ---------------------------------------------------------------------------------------------
// ApplyAsync: the same routes, without waiting for a peer
//
// Only a forward waits. Everything else (owned keys, shares, failure modes) is decided inline,
// by the code Apply uses; a forward is sent with ForwardAsync and its answer, on the caller's
// loop, either completes the transaction or fails it over by AfterForwardFailure, as Apply does.
// The state a suspended transaction needs (its ops: the caller may free them; its callback)
// lives in a PendingForward owned by the transport's callback, so a callback that is dropped
// unrun (a loop destroyed at shutdown) frees it.

struct ClusterStore::PendingForward {
  absl::InlinedVector<StoreOp, kInlineOps> ops;
  int64_t now_ns = 0;
  absl::Span<Decision> decisions;
  boost::asio::io_context* loop = nullptr;
  ApplyDone done;
  int owner = 0;
  int attempt = 0;
};

void ClusterStore::ApplyAsync(absl::Span<const StoreOp> ops, int64_t now_ns,
                              absl::Span<Decision> decisions, boost::asio::io_context& loop,
                              ApplyDone done) {
  const uint64_t mask = membership_->alive_mask();
  if (const std::optional<int> route = CommonRoute(ops, mask)) {
    ApplyRoutedAsync(*route, ops, now_ns, decisions, loop, std::move(done));
    return;
  }
  ApplySplitAsync(ops, now_ns, decisions, mask, loop, std::move(done));
}

void ClusterStore::ApplyRoutedAsync(int target, absl::Span<const StoreOp> ops, int64_t now_ns,
                                    absl::Span<Decision> decisions, boost::asio::io_context& loop,
                                    ApplyDone done) {
  if (target == kRouteLocalShare) {
    if (const std::optional<bool> committed =
            DecideFromShare(ops, now_ns, decisions, /*flush=*/false)) {
      std::move(done)(*committed);
      return;
    }
    // The share is spent: ask the owners exactly, once this node's own reported hits have
    // reached them. The flushes' answers come on this loop, so the count needs no lock.
    struct Refill {
      absl::InlinedVector<StoreOp, kInlineOps> exact;
      int64_t now_ns = 0;
      absl::Span<Decision> decisions;
      boost::asio::io_context* loop = nullptr;
      ApplyDone done;
      size_t flushes_left = 0;
    };
    auto refill = std::make_shared<Refill>();
    refill->exact.assign(ops.begin(), ops.end());
    for (StoreOp& op : refill->exact) {
      op.consistency = Consistency::kExact;
    }
    refill->now_ns = now_ns;
    refill->decisions = decisions;
    refill->loop = &loop;
    refill->done = std::move(done);
    const absl::InlinedVector<int, 4> owners = RefillOwners(ops);
    if (owners.empty()) {
      ApplyAsync(refill->exact, now_ns, decisions, loop, std::move(refill->done));
      return;
    }
    refill->flushes_left = owners.size();
    for (int owner : owners) {
      transport_->FlushReportsAsync(owner, loop, [this, refill] {
        if (--refill->flushes_left == 0) {
          ApplyAsync(refill->exact, refill->now_ns, refill->decisions, *refill->loop,
                     std::move(refill->done));
        }
      });
    }
    return;
  }
  if (target < 0 || target == membership_->self()) {
    std::move(done)(ApplyRouted(target, ops, now_ns, decisions));
    return;
  }
  auto forward = std::make_unique<PendingForward>();
  forward->ops.assign(ops.begin(), ops.end());
  forward->now_ns = now_ns;
  forward->decisions = decisions;
  forward->loop = &loop;
  forward->done = std::move(done);
  forward->owner = target;
  SendForward(std::move(forward));
}

void ClusterStore::SendForward(std::unique_ptr<PendingForward> forward) {
  PendingForward* f = forward.get();  // the callback owns it from here on
  transport_->ForwardAsync(
      f->owner, f->ops, f->decisions, *f->loop,
      [this, forward = std::move(forward)](absl::Status status, bool committed) mutable {
        OnForwardDone(std::move(forward), status, committed);
      });
}

void ClusterStore::OnForwardDone(std::unique_ptr<PendingForward> forward,
                                 const absl::Status& status, bool committed) {
  PendingForward& f = *forward;
  if (status.ok()) {
    std::move(f.done)(committed);
    return;
  }
  const Failover failover = AfterForwardFailure(f.owner, status, f.ops);
  switch (failover.next) {
    case Failover::Next::kFailureMode:
      break;
    case Failover::Next::kReapply:
      ApplyAsync(f.ops, f.now_ns, f.decisions, *f.loop, std::move(f.done));
      return;
    case Failover::Next::kRouted:
      ApplyRoutedAsync(failover.target, f.ops, f.now_ns, f.decisions, *f.loop, std::move(f.done));
      return;
    case Failover::Next::kForward:
      if (++f.attempt < kForwardAttempts) {
        f.owner = failover.target;
        SendForward(std::move(forward));
        return;
      }
      break;
  }
  std::move(f.done)(ApplyRouted(kRouteFailureMode, f.ops, f.now_ns, f.decisions));
}

void ClusterStore::ApplySplitAsync(absl::Span<const StoreOp> ops, int64_t now_ns,
                                   absl::Span<Decision> decisions, uint64_t mask,
                                   boost::asio::io_context& loop, ApplyDone done) {
  // As ApplySplit, each route's part on its own, some maybe suspended: the last part to finish
  // (on whichever thread) writes every decision back and completes the transaction. One count
  // more than the parts keeps a part that finishes inline from completing it early.
  struct Split {
    std::vector<RouteGroup> groups;
    std::vector<Decision> out;  // group g's decisions at [offset[g], offset[g] + its size)
    std::vector<size_t> offset;
    absl::Span<Decision> decisions;
    ApplyDone done;
    std::atomic<size_t> pending{0};
    std::atomic<bool> committed{true};
  };
  auto split = std::make_shared<Split>();
  split->groups = GroupByRoute(ops, mask);
  split->out.resize(ops.size());
  split->decisions = decisions;
  split->done = std::move(done);
  split->pending.store(split->groups.size() + 1, std::memory_order_relaxed);
  auto finish_one = [](const std::shared_ptr<Split>& s) {
    if (s->pending.fetch_sub(1, std::memory_order_acq_rel) != 1) {
      return;
    }
    for (size_t g = 0; g < s->groups.size(); ++g) {
      for (size_t k = 0; k < s->groups[g].index.size(); ++k) {
        s->decisions[s->groups[g].index[k]] = s->out[s->offset[g] + k];
      }
    }
    std::move(s->done)(s->committed.load(std::memory_order_acquire));
  };
  size_t offset = 0;
  for (const RouteGroup& group : split->groups) {
    split->offset.push_back(offset);
    offset += group.index.size();
  }
  for (size_t g = 0; g < split->groups.size(); ++g) {
    const RouteGroup& group = split->groups[g];
    absl::InlinedVector<StoreOp, kInlineOps> part;
    for (size_t i : group.index) {
      part.push_back(ops[i]);
    }
    const absl::Span<Decision> out =
        absl::MakeSpan(split->out).subspan(split->offset[g], group.index.size());
    ApplyRoutedAsync(group.route, part, now_ns, out, loop, [split, finish_one](bool committed) {
      if (!committed) {
        split->committed.store(false, std::memory_order_release);
      }
      finish_one(split);
    });
  }
  finish_one(split);
}

bool ClusterStore::ApplyLocalConsistency(absl::Span<const StoreOp> ops, int64_t now_ns,
                                         absl::Span<Decision> decisions) {
  if (const std::optional<bool> committed = DecideFromShare(ops, now_ns, decisions)) {
    return *committed;
  }
  absl::InlinedVector<StoreOp, kInlineOps> exact(ops.begin(), ops.end());
  for (StoreOp& op : exact) {
    op.consistency = Consistency::kExact;
  }
  return Apply(exact, now_ns, decisions);
}

std::optional<bool> ClusterStore::DecideFromShare(absl::Span<const StoreOp> ops, int64_t now_ns,
                                                  absl::Span<Decision> decisions, bool flush) {
  local_share_ops_.fetch_add(ops.size(), std::memory_order_relaxed);
  ApplyFailureMode(ops, now_ns, decisions, /*local_consistency=*/true);
  const bool committed = Passed(ops, decisions);
  const bool concurrency = std::any_of(ops.begin(), ops.end(), [](const StoreOp& op) {
    return op.spec.algorithm == Algorithm::kConcurrency;
  });
  // Concurrency slots are released where they were taken: a share only.
  if (concurrency) {
    return committed;
  }
  const uint64_t mask = membership_->alive_mask();
  const bool quorum = Membership::HasQuorum(mask, membership_->size());
  if (committed) {
    if (quorum) {
      ReportShareHits(ops, now_ns, mask);
    }
    return true;
  }
  if (!quorum) {
    return false;
  }
  // This node's share is spent: ask the owner, whose state holds every node's reported hits,
  // once this node's own hits have reached it (they may still be waiting for their batch).
  local_share_refills_.fetch_add(1, std::memory_order_relaxed);
  if (flush) {
    for (int owner : RefillOwners(ops)) {
      transport_->FlushReports(owner);
    }
  }
  return std::nullopt;
}

absl::InlinedVector<int, 4> ClusterStore::RefillOwners(absl::Span<const StoreOp> ops) const {
  const uint64_t mask = membership_->alive_mask();
  absl::InlinedVector<int, 4> owners;
  for (const StoreOp& op : ops) {
    const int owner = membership_->Owner(op.key_hash, mask);
    if (owner != membership_->self() && !op.shed &&
        std::find(owners.begin(), owners.end(), owner) == owners.end()) {
      owners.push_back(owner);
    }
  }
  return owners;
}

void ClusterStore::ReportShareHits(absl::Span<const StoreOp> ops, int64_t now_ns, uint64_t mask) {
  // Tell each key's owner, in the background, so its state counts every node's hits.
  for (const StoreOp& op : ops) {
    if (op.kind != StoreOp::Kind::kCheck || op.hits == 0) {
      continue;
    }
    const int owner = membership_->Owner(op.key_hash, mask);
    if (owner == membership_->self()) {
      Decision ignored;
      ApplyOwned(absl::MakeConstSpan(&op, 1), now_ns, absl::MakeSpan(&ignored, 1));
    } else {
      transport_->Report(owner, op);
    }
  }
}

void ClusterStore::ApplyFailureMode(absl::Span<const StoreOp> ops, int64_t now_ns,
                                    absl::Span<Decision> decisions, bool local_consistency) {
  absl::InlinedVector<StoreOp, kInlineOps> shares;
  absl::InlinedVector<size_t, kInlineOps> index;
  for (size_t i = 0; i < ops.size(); ++i) {
    const StoreOp& op = ops[i];
    const FailureMode mode = local_consistency ? FailureMode::kLocal : op.failure_mode;
    Decision& d = decisions[i];
    if (mode == FailureMode::kOpen) {
      d = Decision{};
      d.allowed = true;
      d.limit = op.spec.requests_per_period;
      d.remaining = op.spec.requests_per_period;
    } else if (mode == FailureMode::kClosed) {
      d = Decision{};
      d.allowed = false;
      d.limit = op.spec.requests_per_period;
      d.remaining = 0;
      d.retry_after_ns = absl::ToInt64Nanoseconds(options_.dead_after);
      d.unavailable = true;
    } else {  // local: this node's share of the limit
      StoreOp share = op;
      share.spec = ShareOf(op.spec, membership_->size());
      share.key_hash = op.key_hash ^ kLocalShareSalt;
      if (share.key_hash == 0) {
        share.key_hash = kLocalShareSalt;
      }
      shares.push_back(share);
      index.push_back(i);
    }
  }
  if (!shares.empty()) {
    absl::InlinedVector<Decision, kInlineOps> out(shares.size());
    local_->Apply(shares, now_ns, absl::MakeSpan(out));
    for (size_t k = 0; k < index.size(); ++k) {
      decisions[index[k]] = out[k];
    }
  }
}

bool ClusterStore::Warming(absl::Span<const StoreOp> ops, int64_t now_ns) const {
  // A shed check must not wait, so it does not fetch state while warming up.
  return now_ns - started_at_ns_ < kMaxWarmUpNs && gossip_->warming_up() && !ops.empty() &&
         !ops[0].shed;
}

bool ClusterStore::NeedsFetch(const StoreOp& op, int64_t now_ns) const {
  // A state that began before this node started may be held elsewhere; one that would have
  // expired by now is not worth asking for.
  if (now_ns - started_at_ns_ >= std::min(StateLifetimeNs(op.spec), kMaxWarmUpNs)) {
    return false;
  }
  StateRecord held;
  return !local_->GetState(op.key_hash, now_ns, &held);
}

bool ClusterStore::ForwardMayWait(absl::Span<const StoreOp> ops, int64_t now_ns) {
  if (!Warming(ops, now_ns)) {
    return false;
  }
  return std::any_of(ops.begin(), ops.end(),
                     [&](const StoreOp& op) { return !op.shed && NeedsFetch(op, now_ns); });
}

void ClusterStore::WarmUp(absl::Span<const StoreOp> ops, int64_t now_ns, uint64_t mask) {
  absl::flat_hash_map<int, std::vector<size_t>> by_peer;
  int ranks[kMaxMembers];
  const int want = std::min(options_.replicas + 1, membership_->size());
  for (size_t i = 0; i < ops.size(); ++i) {
    if (!NeedsFetch(ops[i], now_ns)) {
      continue;
    }
    const int n = membership_->Rank(ops[i].key_hash, mask, absl::MakeSpan(ranks, want));
    for (int r = 0; r < n; ++r) {
      if (ranks[r] != membership_->self()) {
        by_peer[ranks[r]].push_back(i);
      }
    }
  }
  for (const auto& [peer, indexes] : by_peer) {
    std::vector<uint64_t> keys;
    for (size_t i : indexes) {
      keys.push_back(ops[i].key_hash);
    }
    absl::StatusOr<std::vector<StateRecord>> fetched = transport_->Fetch(peer, keys);
    if (!fetched.ok()) {
      continue;
    }
    std::vector<StateRecord> records;
    for (const StateRecord& state : *fetched) {
      for (size_t i : indexes) {
        if (ops[i].key_hash == state.key_hash) {
          records.push_back(StateRecord{state.key_hash, ops[i].spec, state.expiry_ns, state.data});
          break;
        }
      }
    }
    warmup_fetches_.fetch_add(indexes.size(), std::memory_order_relaxed);
    local_->MergeStates(records, now_ns);
  }
}

bool ClusterStore::ApplyOwned(absl::Span<const StoreOp> ops, int64_t now_ns,
                              absl::Span<Decision> decisions) {
  owned_ops_.fetch_add(ops.size(), std::memory_order_relaxed);
  const uint64_t mask = membership_->alive_mask();
  if (has_adopted_.load(std::memory_order_acquire)) {
    MergeAdopted(ops, now_ns);
  }
  if (Warming(ops, now_ns)) {
    WarmUp(ops, now_ns, mask);
  }
  absl::InlinedVector<StateRecord, kInlineOps> after(ops.size());
  const bool committed = local_->ApplyAndCapture(ops, now_ns, decisions, absl::MakeSpan(after));
  if (committed && options_.replicas >= 2) {
    ReplicateStates(after, mask);
  }
  return committed;
}

void ClusterStore::MergeAdopted(absl::Span<const StoreOp> ops, int64_t now_ns) {
  absl::InlinedVector<StateRecord, kInlineOps> records;
  {
    absl::MutexLock lock(&adopted_mu_);
    for (const StoreOp& op : ops) {
      auto it = adopted_.find(op.key_hash);
      if (it != adopted_.end()) {
        records.push_back(StateRecord{op.key_hash, op.spec, it->second.expiry_ns, it->second.data});
        adopted_.erase(it);
      }
    }
    if (adopted_.empty()) {
      has_adopted_.store(false, std::memory_order_release);
    }
  }
  if (!records.empty()) {
    local_->MergeStates(records, now_ns);
  }
}

void ClusterStore::HandleAdopt(absl::Span<const StateRecord> states, int64_t sender_now_ns) {
  const int64_t now = std::max(options_.clock->NowNs(), sender_now_ns);
  absl::MutexLock lock(&adopted_mu_);
  for (const StateRecord& state : states) {
    if (state.expiry_ns > now) {
      adopted_[state.key_hash] = AdoptedState{state.expiry_ns, state.data};
    }
  }
  adopted_states_.fetch_add(states.size(), std::memory_order_relaxed);
  if (!adopted_.empty()) {
    has_adopted_.store(true, std::memory_order_release);
  }
}

void ClusterStore::ReplicateStates(absl::Span<const StateRecord> after, uint64_t mask) {
  int ranks[kMaxMembers];
  const int want = std::min(options_.replicas, membership_->size());
  for (const StateRecord& record : after) {
    const int n = membership_->Rank(record.key_hash, mask, absl::MakeSpan(ranks, want));
    for (int r = 0; r < n; ++r) {
      if (ranks[r] != membership_->self()) {
        transport_->Replicate(ranks[r], record);
      }
    }
  }
}

StoreStats ClusterStore::GetStats() const { return local_->GetStats(); }

void ClusterStore::ReclaimExpired(int64_t now_ns) {
  local_->ReclaimExpired(now_ns);
  if (has_adopted_.load(std::memory_order_acquire)) {
    absl::MutexLock lock(&adopted_mu_);
    absl::erase_if(adopted_, [&](const auto& entry) { return entry.second.expiry_ns <= now_ns; });
    if (adopted_.empty()) {
      has_adopted_.store(false, std::memory_order_release);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// PeerHandler: what the other members ask of this node

void ClusterStore::RecordContact(int member) {
  // A member taken for dead speaks again (a restarted node dials in before this node's link to
  // it has waited out its reconnect backoff): reach it at once, or forwards to it keep failing
  // and it flaps between dead and alive until the backoff ends.
  if (membership_->RecordContact(member)) {
    transport_->PeerIsUp(member);
  }
}

bool ClusterStore::HandleForward(absl::Span<const StoreOp> ops, int64_t now_ns,
                                 absl::Span<Decision> decisions) {
  return ApplyOwned(ops, now_ns, decisions);
}

std::vector<StateRecord> ClusterStore::HandleReplicate(absl::Span<const StateRecord> records,
                                                       int64_t sender_now_ns) {
  const int64_t now = std::max(options_.clock->NowNs(), sender_now_ns);
  local_->MergeStates(records, now);
  // Tell the sender where this copy admits less than what it sent.
  std::vector<StateRecord> corrections;
  for (const StateRecord& sent : records) {
    StateRecord held;
    if (local_->GetState(sent.key_hash, now, &held) &&
        (held.expiry_ns != sent.expiry_ns || held.data != sent.data)) {
      held.spec = sent.spec;
      corrections.push_back(held);
    }
  }
  return corrections;
}

void ClusterStore::HandleCorrections(absl::Span<const StateRecord> corrections) {
  local_->MergeStates(corrections, options_.clock->NowNs());
}

std::vector<StateRecord> ClusterStore::HandleFetch(absl::Span<const uint64_t> key_hashes,
                                                   int64_t now_ns) {
  std::vector<StateRecord> held;
  for (uint64_t key : key_hashes) {
    StateRecord state;
    if (local_->GetState(key, now_ns, &state)) {
      state.key_hash = key;
      held.push_back(state);
    }
  }
  return held;
}

PingInfo ClusterStore::HandlePing() {
  PingInfo ours = gossip_->OurPing();
  ours.keys_held = local_->GetStats().keys;
  return ours;
}

void ClusterStore::HandlePushConfig(const std::vector<peer::v1::ConfigChange>& changes) {
  gossip_->ApplyPushed(changes);
}

std::vector<peer::v1::ConfigChange> ClusterStore::HandleGetConfig(
    const std::vector<std::string>& domains) {
  return gossip_->GetConfig(domains);
}

}  // namespace floodgate::cluster
