#include "src/cluster/cluster.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cstdio>
#include <deque>
#include <limits>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "floodgate/peer/v1/peer.grpc.pb.h"
#include "floodgate/status_macros.h"
#include "src/common/worker_pool.h"

namespace floodgate::cluster {
namespace pb = ::floodgate::peer::v1;

namespace {

constexpr int kInlineOps = 4;
constexpr size_t kMaxOpsPerTxn = 256;
constexpr int kMaxTxnsPerBatch = 4096;
constexpr size_t kReplicationBatch = 512;
constexpr int kMaxReplicationInFlight = 2;
// Hit reports waiting for one peer beyond this are dropped (the owner then undercounts the
// local-share hits of an overloaded link; the shares still hold the limit).
constexpr size_t kMaxReportsQueued = 100'000;
// Limits of this node's own share (consistency: local, failure mode local) live under a salted
// key, apart from the owner's state of the same limit.
constexpr uint64_t kLocalShareSalt = 0x6C6F63616C736872ULL;
// A restarted owner asks replicas for the state of keys it lacks for at most this long (the
// replicas' corrections cover the rest: see ReplicateResponse).
constexpr int64_t kMaxWarmUpNs = 30'000'000'000LL;
// Peers started within this of each other started together (a fresh cluster: nothing to fetch).
constexpr int64_t kJoinSlackNs = 250'000'000LL;

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) {
    return absl::OkStatus();
  }
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

void ToProto(const LimitSpec& spec, pb::Limit* out) {
  out->set_algorithm(static_cast<uint32_t>(spec.algorithm));
  out->set_requests_per_period(spec.requests_per_period);
  out->set_period_ns(spec.period_ns);
  out->set_burst(spec.burst);
}

absl::StatusOr<LimitSpec> FromProto(const pb::Limit& limit) {
  if (limit.algorithm() > static_cast<uint32_t>(Algorithm::kConcurrency)) {
    return absl::InvalidArgumentError(absl::StrCat("unknown algorithm ", limit.algorithm()));
  }
  LimitSpec spec;
  spec.algorithm = static_cast<Algorithm>(limit.algorithm());
  spec.requests_per_period = limit.requests_per_period();
  spec.period_ns = limit.period_ns();
  spec.burst = limit.burst();
  FG_RETURN_IF_ERROR(ValidateLimitSpec(spec));
  return spec;
}

void ToProto(const StoreOp& op, pb::Op* out) {
  out->set_key_hash(op.key_hash);
  ToProto(op.spec, out->mutable_limit());
  out->set_hits(op.hits);
  out->set_release(op.kind == StoreOp::Kind::kRelease);
  out->set_acquired_at_ns(op.acquired_at_ns);
  out->set_shadow(op.shadow);
}

absl::StatusOr<StoreOp> FromProto(const pb::Op& op) {
  StoreOp out;
  out.key_hash = op.key_hash();
  FG_ASSIGN_OR_RETURN(out.spec, FromProto(op.limit()));
  out.hits = op.hits();
  out.kind = op.release() ? StoreOp::Kind::kRelease : StoreOp::Kind::kCheck;
  out.acquired_at_ns = op.acquired_at_ns();
  out.shadow = op.shadow();
  return out;
}

void ToProto(const Decision& d, pb::Decision* out) {
  out->set_allowed(d.allowed);
  out->set_limit(d.limit);
  out->set_remaining(d.remaining);
  out->set_retry_after_ns(d.retry_after_ns);
  out->set_reset_after_ns(d.reset_after_ns);
  out->set_delay_ns(d.delay_ns);
}

Decision FromProto(const pb::Decision& d) {
  Decision out;
  out.allowed = d.allowed();
  out.limit = d.limit();
  out.remaining = d.remaining();
  out.retry_after_ns = d.retry_after_ns();
  out.reset_after_ns = d.reset_after_ns();
  out.delay_ns = d.delay_ns();
  return out;
}

void ToProto(const StateRecord& r, pb::State* out) {
  out->set_key_hash(r.key_hash);
  ToProto(r.spec, out->mutable_limit());
  out->set_expiry_ns(r.expiry_ns);
  out->set_data(r.data);
}

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

bool IsNewerConfig(const pb::DomainVersion& a, const pb::DomainVersion& b) {
  if (a.version() != b.version()) {
    return a.version() > b.version();
  }
  return a.origin() > b.origin();
}

// ---------------------------------------------------------------------------------------------
// PeerClient: one persistent channel to one member; batches forwarded transactions and
// replicated states on a sender thread.

class PeerClient {
 public:
  PeerClient(const ClusterOptions& options, int index, Membership* membership)
      : options_(options), index_(index), membership_(membership) {
    const Member& member = membership->members()[index];
    id_ = member.id;
    address_ = member.address;
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
    args.SetInt(GRPC_ARG_ENABLE_CHANNELZ, 0);
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // our own connection, not a shared one
    // Find a connection that went silent (a partition) within about 2 s.
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 1000);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 1000);
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    channel_ = grpc::CreateCustomChannel(address_, grpc::InsecureChannelCredentials(), args);
    stub_ = pb::Peer::NewStub(channel_);
    sender_ = std::thread([this] { SenderLoop(); });
  }

  ~PeerClient() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    sender_.join();
    // Wait for callbacks of calls still in flight (they touch this object).
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](PeerClient* c) { return c->in_flight_ == 0 && c->repl_in_flight_ == 0; }, this));
    for (auto& pending : queue_) {
      pending->status = absl::UnavailableError("shutting down");
      pending->done.Notify();
    }
  }

  const std::string& id() const { return id_; }
  const std::string& address() const { return address_; }

  // Sends one transaction in the next batch and waits for the owner's answer.
  absl::Status Forward(absl::Span<const StoreOp> ops, absl::Span<Decision> decisions,
                       bool* committed) {
    auto pending = std::make_shared<Pending>();
    for (const StoreOp& op : ops) {
      ToProto(op, pending->txn.add_ops());
    }
    pending->enqueued = absl::Now();
    {
      absl::MutexLock lock(&mu_);
      if (stop_) {
        return absl::UnavailableError("cluster is shutting down");
      }
      queue_.push_back(pending);
    }
    if (!pending->done.WaitForNotificationWithTimeout(options_.forward_timeout +
                                                      absl::Milliseconds(100))) {
      return absl::DeadlineExceededError(absl::StrCat("no answer from ", id_));
    }
    FG_RETURN_IF_ERROR(pending->status);
    if (pending->result.decisions_size() != static_cast<int>(ops.size())) {
      return absl::InternalError(absl::StrCat("peer ", id_, " answered ",
                                              pending->result.decisions_size(), " decisions for ",
                                              ops.size(), " ops"));
    }
    for (size_t i = 0; i < ops.size(); ++i) {
      decisions[i] = FromProto(pending->result.decisions(static_cast<int>(i)));
    }
    *committed = pending->result.committed();
    return absl::OkStatus();
  }

  // Queues a state for the next replication batch (the latest state of a key wins).
  void Replicate(const StateRecord& record) {
    absl::MutexLock lock(&mu_);
    if (replication_.empty()) {
      replication_oldest_ = absl::Now();
    }
    replication_[record.key_hash] = record;
  }

  // Queues hits admitted here from a `consistency: local` share, for the key's owner.
  void Report(const StoreOp& op) {
    absl::MutexLock lock(&mu_);
    if (reports_.empty()) {
      reports_oldest_ = absl::Now();
    }
    if (reports_.size() < kMaxReportsQueued) {
      reports_.push_back(op);
    }
  }

  // Sends the reports queued so far at once and waits (at most forward_timeout) until every
  // report sent before this call returns is acknowledged, so that a check this node then asks
  // the owner about is decided against all of this node's earlier hits.
  void FlushReports() {
    absl::MutexLock lock(&mu_);
    if (!reports_.empty()) {
      SendQueuedReports();
    }
    mu_.AwaitWithTimeout(
        absl::Condition(
            +[](PeerClient* c) { return c->stop_ || c->reports_in_flight_ == 0; }, this),
        options_.forward_timeout);
  }

  absl::StatusOr<pb::FetchResponse> Fetch(const pb::FetchRequest& request) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + options_.forward_timeout));
    context.set_wait_for_ready(true);
    pb::FetchResponse response;
    FG_RETURN_IF_ERROR(FromGrpc(stub_->Fetch(&context, request, &response)));
    return response;
  }

  absl::StatusOr<pb::GetConfigResponse> GetConfig(const pb::GetConfigRequest& request) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + options_.forward_timeout));
    context.set_wait_for_ready(true);
    pb::GetConfigResponse response;
    FG_RETURN_IF_ERROR(FromGrpc(stub_->GetConfig(&context, request, &response)));
    return response;
  }

  void PushConfig(const pb::PushConfigRequest& request) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + options_.forward_timeout));
    context.set_wait_for_ready(true);
    pb::PushConfigResponse response;
    const grpc::Status status = stub_->PushConfig(&context, request, &response);
    if (!status.ok()) {
      std::fprintf(stderr,
                   "floodgate: config push to %s failed: %s (it catches up through "
                   "heartbeats)\n",
                   id_.c_str(), status.error_message().c_str());
    }
  }

  // Starts a heartbeat; `done` runs on a gRPC thread.
  void Ping(const pb::PingRequest& request,
            std::function<void(grpc::Status, const pb::PingResponse&)> done) {
    struct Call {
      grpc::ClientContext context;
      pb::PingRequest request;
      pb::PingResponse response;
    };
    auto* call = new Call;
    call->request = request;
    call->context.set_deadline(absl::ToChronoTime(absl::Now() + options_.heartbeat * 2));
    stub_->async()->Ping(&call->context, &call->request, &call->response,
                         [call, done = std::move(done)](grpc::Status status) {
                           done(status, call->response);
                           delete call;
                         });
  }

  void FillStats(PeerStats& stats) const {
    absl::MutexLock lock(&mu_);
    stats.replication_lag_ns = replication_lag_ns_;
    stats.forwarded_txns = forwarded_txns_;
    stats.forward_batches = forward_batches_;
    stats.forward_errors = forward_errors_;
    stats.replicated_states = replicated_states_;
  }

 private:
  struct Pending {
    pb::Txn txn;
    absl::Time enqueued;
    absl::Notification done;
    absl::Status status;
    pb::TxnResult result;
  };

  void SenderLoop() {
    absl::MutexLock lock(&mu_);
    while (!stop_) {
      const absl::Time now = absl::Now();
      absl::Time wake = absl::InfiniteFuture();
      bool sent = false;
      if (!queue_.empty() && in_flight_ < options_.max_in_flight) {
        // Adaptive batching: with nothing in flight, send at once (no added latency at low load);
        // otherwise gather until the batch is full or its oldest check has waited batch_wait.
        const absl::Time due = queue_.front()->enqueued + options_.batch_wait;
        if (!options_.batching || in_flight_ == 0 ||
            queue_.size() >= static_cast<size_t>(options_.batch_max) || now >= due) {
          const size_t n = options_.batching
                               ? std::min(queue_.size(), static_cast<size_t>(options_.batch_max))
                               : 1;
          std::vector<std::shared_ptr<Pending>> batch(queue_.begin(), queue_.begin() + n);
          queue_.erase(queue_.begin(), queue_.begin() + n);
          ++in_flight_;
          mu_.Unlock();
          SendForward(std::move(batch));
          mu_.Lock();
          sent = true;
        } else {
          wake = std::min(wake, due);
        }
      }
      if (!replication_.empty() && repl_in_flight_ < kMaxReplicationInFlight) {
        const absl::Time due = replication_oldest_ + options_.batch_wait;
        if (replication_.size() >= kReplicationBatch || now >= due) {
          absl::flat_hash_map<uint64_t, StateRecord> states;
          states.swap(replication_);
          const absl::Time oldest = replication_oldest_;
          ++repl_in_flight_;
          mu_.Unlock();
          SendReplication(states, oldest);
          mu_.Lock();
          sent = true;
        } else {
          wake = std::min(wake, due);
        }
      }
      if (!reports_.empty() && reports_in_flight_ < kMaxReplicationInFlight) {
        const absl::Time due = reports_oldest_ + options_.batch_wait;
        if (reports_.size() >= kReplicationBatch || now >= due) {
          SendQueuedReports();
          sent = true;
        } else {
          wake = std::min(wake, due);
        }
      }
      if (!sent) {
        // absl re-evaluates these conditions whenever mu_ is released, so a Forward or Replicate
        // that queues work wakes the loop; the timeouts only bound a wait.
        if (wake == absl::InfiniteFuture()) {
          mu_.AwaitWithTimeout(
              absl::Condition(
                  +[](PeerClient* c) {
                    return c->stop_ ||
                           (!c->queue_.empty() && c->in_flight_ < c->options_.max_in_flight) ||
                           (!c->replication_.empty() &&
                            c->repl_in_flight_ < kMaxReplicationInFlight) ||
                           (!c->reports_.empty() &&
                            c->reports_in_flight_ < kMaxReplicationInFlight);
                  },
                  this),
              absl::Milliseconds(100));
        } else {
          mu_.AwaitWithDeadline(
              absl::Condition(
                  +[](PeerClient* c) {
                    return c->stop_ || (!c->queue_.empty() && c->in_flight_ == 0) ||
                           c->queue_.size() >= static_cast<size_t>(c->options_.batch_max) ||
                           c->replication_.size() >= kReplicationBatch ||
                           c->reports_.size() >= kReplicationBatch;
                  },
                  this),
              wake);
        }
      }
    }
  }

  void SendForward(std::vector<std::shared_ptr<Pending>> batch) {
    struct Call {
      grpc::ClientContext context;
      pb::ForwardRequest request;
      pb::ForwardResponse response;
      std::vector<std::shared_ptr<Pending>> batch;
    };
    auto* call = new Call;
    call->request.set_protocol_version(kProtocolVersion);
    call->request.set_from(options_.self_id);
    for (auto& pending : batch) {
      call->request.add_txns()->Swap(&pending->txn);
    }
    call->batch = std::move(batch);
    call->context.set_deadline(absl::ToChronoTime(absl::Now() + options_.forward_timeout));
    // Wait for a (re)connecting channel rather than fail on its last connect error: a peer that
    // just came back must not be marked dead again by a stale error. A broken connection still
    // fails at once, and a silent one at the deadline.
    call->context.set_wait_for_ready(true);
    stub_->async()->Forward(
        &call->context, &call->request, &call->response, [this, call](grpc::Status status) {
          const bool ok =
              status.ok() && call->response.results_size() == static_cast<int>(call->batch.size());
          for (size_t i = 0; i < call->batch.size(); ++i) {
            Pending& pending = *call->batch[i];
            if (ok) {
              pending.result.Swap(call->response.mutable_results(static_cast<int>(i)));
            } else if (status.ok()) {
              pending.status = absl::InternalError(
                  absl::StrCat("peer ", id_, " answered ", call->response.results_size(),
                               " results for ", call->batch.size(), " transactions"));
            } else {
              pending.status = FromGrpc(status);
            }
            pending.done.Notify();
          }
          if (ok) {
            membership_->RecordContact(index_);
          }
          absl::MutexLock lock(&mu_);
          --in_flight_;
          ++forward_batches_;
          forwarded_txns_ += call->batch.size();
          if (!ok) {
            // Say why, for the first failures of a streak (a dead peer fails every call).
            if (forward_errors_streak_++ < 3) {
              std::fprintf(stderr, "floodgate: forward to %s failed: %s\n", id_.c_str(),
                           FromGrpc(status).ToString().c_str());
            }
            ++forward_errors_;
          } else {
            forward_errors_streak_ = 0;
          }
          delete call;
        });
  }

  // Takes every queued report and sends them in one call (mu_ is released while sending).
  void SendQueuedReports() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::vector<StoreOp> ops;
    ops.swap(reports_);
    ++reports_in_flight_;
    mu_.Unlock();
    SendReports(ops);
    mu_.Lock();
  }

  void SendReports(const std::vector<StoreOp>& ops) {
    struct Call {
      grpc::ClientContext context;
      pb::ForwardRequest request;
      pb::ForwardResponse response;
    };
    auto* call = new Call;
    call->request.set_protocol_version(kProtocolVersion);
    call->request.set_from(options_.self_id);
    call->request.set_report(true);
    for (const StoreOp& op : ops) {
      ToProto(op, call->request.add_txns()->add_ops());
    }
    call->context.set_deadline(absl::ToChronoTime(absl::Now() + options_.forward_timeout));
    stub_->async()->Forward(&call->context, &call->request, &call->response,
                            [this, call, count = ops.size()](grpc::Status status) {
                              absl::MutexLock lock(&mu_);
                              --reports_in_flight_;
                              if (status.ok()) {
                                reported_hits_ += count;
                              }
                              delete call;
                            });
  }

  void SendReplication(const absl::flat_hash_map<uint64_t, StateRecord>& states,
                       absl::Time oldest) {
    struct Call {
      grpc::ClientContext context;
      pb::ReplicateRequest request;
      pb::ReplicateResponse response;
    };
    auto* call = new Call;
    call->request.set_protocol_version(kProtocolVersion);
    call->request.set_from(options_.self_id);
    call->request.set_now_ns(options_.clock->NowNs());
    for (const auto& [key, record] : states) {
      ToProto(record, call->request.add_states());
    }
    const size_t count = states.size();
    call->context.set_deadline(absl::ToChronoTime(absl::Now() + options_.forward_timeout));
    stub_->async()->Replicate(
        &call->context, &call->request, &call->response,
        [this, call, count, oldest](grpc::Status status) {
          if (status.ok() && corrections_ != nullptr && call->response.corrections_size() > 0) {
            corrections_(call->request, call->response);
          }
          absl::MutexLock lock(&mu_);
          --repl_in_flight_;
          if (status.ok()) {
            replicated_states_ += count;
            replication_lag_ns_ = absl::ToInt64Nanoseconds(absl::Now() - oldest);
          }
          delete call;
        });
  }

 public:
  // Called with the replica's corrections (set once before traffic).
  std::function<void(const pb::ReplicateRequest&, const pb::ReplicateResponse&)> corrections_;

 private:
  const ClusterOptions& options_;
  const int index_;
  Membership* const membership_;
  std::string id_;
  std::string address_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::Peer::Stub> stub_;

  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<std::shared_ptr<Pending>> queue_ ABSL_GUARDED_BY(mu_);
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<uint64_t, StateRecord> replication_ ABSL_GUARDED_BY(mu_);
  absl::Time replication_oldest_ ABSL_GUARDED_BY(mu_);
  int repl_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t replication_lag_ns_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t forwarded_txns_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t forward_batches_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t forward_errors_ ABSL_GUARDED_BY(mu_) = 0;
  int forward_errors_streak_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<StoreOp> reports_ ABSL_GUARDED_BY(mu_);
  absl::Time reports_oldest_ ABSL_GUARDED_BY(mu_);
  int reports_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t reported_hits_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t replicated_states_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread sender_;
};

// ---------------------------------------------------------------------------------------------
// PeerServer: answers the other members.

class PeerServer final : public pb::Peer::CallbackService {
 public:
  // Forward batches run on a pool of their own: a restarted owner's warm-up fetch waits on
  // other nodes, and must not hold gRPC's threads while it does.
  explicit PeerServer(ClusterStore* store) : store_(store), pool_(8, 10000) {}

  absl::Status Start(const std::string& address, int* port) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort(address, grpc::InsecureServerCredentials(), port);
    builder.RegisterService(this);
    builder.AddChannelArgument(GRPC_ARG_ENABLE_CHANNELZ, 0);
    builder.SetMaxReceiveMessageSize(16 << 20);
    // Accept the clients' 1 s keepalive pings (see PeerClient).
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 500);
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    server_ = builder.BuildAndStart();
    if (server_ == nullptr || *port == 0) {
      return absl::UnavailableError(absl::StrCat("cannot listen for peers on ", address));
    }
    return absl::OkStatus();
  }

  void Shutdown() {
    if (server_ != nullptr) {
      server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
    }
  }

  grpc::ServerUnaryReactor* Forward(grpc::CallbackServerContext* context,
                                    const pb::ForwardRequest* request,
                                    pb::ForwardResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    if (!pool_.Submit([this, reactor, request, response] {
          reactor->Finish(DoForward(*request, *response));
        })) {
      reactor->Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "forward queue full"));
    }
    return reactor;
  }

  grpc::ServerUnaryReactor* Replicate(grpc::CallbackServerContext* context,
                                      const pb::ReplicateRequest* request,
                                      pb::ReplicateResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(DoReplicate(*request, *response));
    return reactor;
  }

  grpc::ServerUnaryReactor* Fetch(grpc::CallbackServerContext* context,
                                  const pb::FetchRequest* request,
                                  pb::FetchResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(DoFetch(*request, *response));
    return reactor;
  }

  grpc::ServerUnaryReactor* Ping(grpc::CallbackServerContext* context,
                                 const pb::PingRequest* request,
                                 pb::PingResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    grpc::Status status = CheckHeader(request->protocol_version(), request->from());
    if (status.ok()) {
      response->set_node_id(store_->options_.self_id);
      response->set_started_at_ns(store_->started_at_ns_);
      if (ConfigSync* sync = store_->config_sync_.load(); sync != nullptr) {
        for (auto& v : sync->Versions()) {
          *response->add_config() = std::move(v);
        }
      }
    }
    reactor->Finish(status);
    return reactor;
  }

  grpc::ServerUnaryReactor* PushConfig(grpc::CallbackServerContext* context,
                                       const pb::PushConfigRequest* request,
                                       pb::PushConfigResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    grpc::Status status = CheckHeader(request->protocol_version(), request->from());
    if (status.ok()) {
      if (ConfigSync* sync = store_->config_sync_.load(); sync != nullptr) {
        const std::vector<pb::ConfigChange> changes(request->changes().begin(),
                                                    request->changes().end());
        store_->config_pushes_.fetch_add(sync->Apply(changes), std::memory_order_relaxed);
      }
    }
    reactor->Finish(status);
    return reactor;
  }

  grpc::ServerUnaryReactor* GetConfig(grpc::CallbackServerContext* context,
                                      const pb::GetConfigRequest* request,
                                      pb::GetConfigResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    grpc::Status status = CheckHeader(request->protocol_version(), request->from());
    if (status.ok()) {
      if (ConfigSync* sync = store_->config_sync_.load(); sync != nullptr) {
        const std::vector<std::string> domains(request->domains().begin(),
                                               request->domains().end());
        for (auto& change : sync->Get(domains)) {
          *response->add_changes() = std::move(change);
        }
      }
    }
    reactor->Finish(status);
    return reactor;
  }

 private:
  // Checks the protocol version and the sender, and notes that the sender is alive.
  grpc::Status CheckHeader(uint32_t version, const std::string& from) {
    if (version != kProtocolVersion) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          absl::StrCat("peer protocol version ", version, " not supported (this ",
                                       "node speaks ", kProtocolVersion, ")"));
    }
    const auto& members = store_->membership_->members();
    for (size_t i = 0; i < members.size(); ++i) {
      if (members[i].id == from) {
        store_->membership_->RecordContact(static_cast<int>(i));
        return grpc::Status::OK;
      }
    }
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        absl::StrCat("unknown node id \"", from, "\" (not in --peers)"));
  }

  grpc::Status DoForward(const pb::ForwardRequest& request, pb::ForwardResponse& response) {
    grpc::Status status = CheckHeader(request.protocol_version(), request.from());
    if (!status.ok()) {
      return status;
    }
    if (request.txns_size() > kMaxTxnsPerBatch) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("batch of ", request.txns_size(), " transactions; at most ",
                                       kMaxTxnsPerBatch));
    }
    absl::InlinedVector<StoreOp, kInlineOps> ops;
    absl::InlinedVector<Decision, kInlineOps> decisions;
    const int64_t now = store_->options_.clock->NowNs();
    for (const pb::Txn& txn : request.txns()) {
      if (txn.ops_size() == 0 || static_cast<size_t>(txn.ops_size()) > kMaxOpsPerTxn) {
        return grpc::Status(
            grpc::StatusCode::INVALID_ARGUMENT,
            absl::StrCat("transaction of ", txn.ops_size(), " ops; 1 to ", kMaxOpsPerTxn));
      }
      ops.clear();
      for (const pb::Op& op : txn.ops()) {
        absl::StatusOr<StoreOp> parsed = FromProto(op);
        if (!parsed.ok()) {
          return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                              absl::StrCat("bad op: ", parsed.status().message()));
        }
        ops.push_back(*parsed);
      }
      decisions.assign(ops.size(), Decision{});
      const bool committed = store_->ApplyOwned(ops, now, absl::MakeSpan(decisions));
      if (request.report()) {
        continue;  // hits admitted elsewhere: counted (if they still fit), nothing to answer
      }
      pb::TxnResult* result = response.add_results();
      result->set_committed(committed);
      for (const Decision& d : decisions) {
        ToProto(d, result->add_decisions());
      }
    }
    return grpc::Status::OK;
  }

  grpc::Status DoReplicate(const pb::ReplicateRequest& request, pb::ReplicateResponse& response) {
    grpc::Status status = CheckHeader(request.protocol_version(), request.from());
    if (!status.ok()) {
      return status;
    }
    std::vector<StateRecord> records;
    records.reserve(request.states_size());
    for (const pb::State& state : request.states()) {
      absl::StatusOr<LimitSpec> spec = FromProto(state.limit());
      if (!spec.ok()) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            absl::StrCat("bad state: ", spec.status().message()));
      }
      records.push_back(StateRecord{state.key_hash(), *spec, state.expiry_ns(), state.data()});
    }
    const int64_t now = std::max(store_->options_.clock->NowNs(), request.now_ns());
    store_->local_->MergeStates(records, now);
    // Tell the sender where this copy admits less than what it sent.
    for (const StateRecord& sent : records) {
      StateRecord held;
      if (store_->local_->GetState(sent.key_hash, now, &held) &&
          (held.expiry_ns != sent.expiry_ns || held.data != sent.data)) {
        held.spec = sent.spec;
        ToProto(held, response.add_corrections());
      }
    }
    return grpc::Status::OK;
  }

  grpc::Status DoFetch(const pb::FetchRequest& request, pb::FetchResponse& response) {
    grpc::Status status = CheckHeader(request.protocol_version(), request.from());
    if (!status.ok()) {
      return status;
    }
    const int64_t now = store_->options_.clock->NowNs();
    for (uint64_t key : request.key_hashes()) {
      StateRecord held;
      if (store_->local_->GetState(key, now, &held)) {
        pb::State* out = response.add_states();
        out->set_key_hash(key);
        out->set_expiry_ns(held.expiry_ns);
        out->set_data(held.data);
      }
    }
    return grpc::Status::OK;
  }

  ClusterStore* const store_;
  common::WorkerPool pool_;
  std::unique_ptr<grpc::Server> server_;
};

// ---------------------------------------------------------------------------------------------
// ClusterStore

ClusterStore::ClusterStore(ClusterOptions options, LocalStore* local)
    : options_(std::move(options)), local_(local), started_at_ns_(options_.clock->NowNs()) {}

absl::StatusOr<std::unique_ptr<ClusterStore>> ClusterStore::Start(ClusterOptions options,
                                                                  LocalStore* local) {
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
  if (options.listen_address.empty()) {
    options.listen_address = options.members[self].address;
  }
  std::unique_ptr<ClusterStore> store(new ClusterStore(std::move(options), local));
  const ClusterOptions& opts = store->options_;
  store->membership_ = std::make_unique<Membership>(opts.members, self, opts.clock,
                                                    absl::ToInt64Nanoseconds(opts.dead_after));
  store->clients_.resize(opts.members.size());
  for (size_t i = 0; i < opts.members.size(); ++i) {
    if (static_cast<int>(i) != self) {
      auto client =
          std::make_unique<PeerClient>(opts, static_cast<int>(i), store->membership_.get());
      ClusterStore* raw = store.get();
      client->corrections_ = [raw](const pb::ReplicateRequest& sent,
                                   const pb::ReplicateResponse& response) {
        std::vector<StateRecord> records;
        for (const pb::State& state : response.corrections()) {
          absl::StatusOr<LimitSpec> spec = FromProto(state.limit());
          if (spec.ok()) {
            records.push_back(
                StateRecord{state.key_hash(), *spec, state.expiry_ns(), state.data()});
          }
        }
        raw->local_->MergeStates(records, raw->options_.clock->NowNs());
      };
      store->clients_[i] = std::move(client);
    }
  }
  store->server_ = std::make_unique<PeerServer>(store.get());
  FG_RETURN_IF_ERROR(store->server_->Start(opts.listen_address, &store->peer_port_));
  store->heartbeat_ = std::thread([raw = store.get()] { raw->HeartbeatLoop(); });
  // Serve once a majority answers (bounded): a node that has not heard from its peers would
  // otherwise decide every key by failure mode for its first heartbeat.
  store->quorum_seen_.WaitForNotificationWithTimeout(store->options_.dead_after * 2);
  return store;
}

ClusterStore::~ClusterStore() {
  Shutdown();
  clients_.clear();
}

void ClusterStore::Shutdown() {
  {
    absl::MutexLock lock(&stop_mu_);
    if (stopping_) {
      return;
    }
    stopping_ = true;
  }
  if (heartbeat_.joinable()) {
    heartbeat_.join();
  }
  if (server_ != nullptr) {
    server_->Shutdown();
  }
}

void ClusterStore::SetConfigSync(ConfigSync* sync) { config_sync_.store(sync); }

void ClusterStore::HeartbeatLoop() {
  absl::MutexLock lock(&stop_mu_);
  while (!stopping_) {
    stop_mu_.Unlock();
    PingAll();
    membership_->Tick();
    stop_mu_.Lock();
    stop_mu_.AwaitWithTimeout(absl::Condition(&stopping_), options_.heartbeat);
  }
}

void ClusterStore::PingAll() {
  pb::PingRequest request;
  request.set_protocol_version(kProtocolVersion);
  request.set_from(options_.self_id);
  request.set_started_at_ns(started_at_ns_);
  ConfigSync* sync = config_sync_.load();
  std::vector<pb::DomainVersion> ours;
  if (sync != nullptr) {
    ours = sync->Versions();
    for (const auto& v : ours) {
      *request.add_config() = v;
    }
  }
  struct Round {
    absl::Mutex mu;
    int pending = 0;
    std::vector<std::pair<int, pb::PingResponse>> answers;
  };
  auto round = std::make_shared<Round>();
  for (size_t i = 0; i < clients_.size(); ++i) {
    if (clients_[i] == nullptr) {
      continue;
    }
    {
      absl::MutexLock lock(&round->mu);
      ++round->pending;
    }
    clients_[i]->Ping(request,
                      [this, round, i](grpc::Status status, const pb::PingResponse& response) {
                        if (status.ok()) {
                          membership_->RecordContact(static_cast<int>(i));
                        }
                        absl::MutexLock lock(&round->mu);
                        if (status.ok()) {
                          round->answers.emplace_back(static_cast<int>(i), response);
                        }
                        --round->pending;
                      });
  }
  {
    absl::MutexLock lock(&round->mu);
    round->mu.AwaitWithTimeout(absl::Condition(
                                   +[](int* pending) { return *pending == 0; }, &round->pending),
                               options_.heartbeat * 2 + absl::Milliseconds(100));
  }
  std::vector<std::pair<int, pb::PingResponse>> answers;
  {
    absl::MutexLock lock(&round->mu);
    answers = round->answers;
  }
  if (!quorum_seen_.HasBeenNotified() &&
      Membership::HasQuorum(membership_->alive_mask(), membership_->size())) {
    quorum_seen_.Notify();
  }
  // Warm-up is for a node that (re)joins a running cluster: it is on until the first round of
  // pings that some peer answers shows whether any peer was already running before this node.
  if (!answers.empty() && !first_round_done_.exchange(true)) {
    bool joined_running = false;
    for (const auto& [peer, response] : answers) {
      joined_running |= response.started_at_ns() < started_at_ns_ - kJoinSlackNs;
    }
    warming_up_.store(joined_running, std::memory_order_relaxed);
  }
  if (sync == nullptr) {
    return;
  }
  // Anti-entropy: pull every domain a peer holds a newer version of.
  for (const auto& [peer, response] : answers) {
    pb::GetConfigRequest get;
    get.set_protocol_version(kProtocolVersion);
    get.set_from(options_.self_id);
    for (const pb::DomainVersion& theirs : response.config()) {
      if (theirs.version() == 0) {
        continue;  // read from that node's files, never changed over the API: not spread
      }
      auto it = std::find_if(ours.begin(), ours.end(), [&](const pb::DomainVersion& v) {
        return v.domain() == theirs.domain();
      });
      if (it == ours.end() || IsNewerConfig(theirs, *it)) {
        get.add_domains(theirs.domain());
      }
    }
    if (get.domains_size() == 0) {
      continue;
    }
    absl::StatusOr<pb::GetConfigResponse> got = clients_[peer]->GetConfig(get);
    if (got.ok()) {
      const std::vector<pb::ConfigChange> changes(got->changes().begin(), got->changes().end());
      config_pushes_.fetch_add(sync->Apply(changes), std::memory_order_relaxed);
      ours = sync->Versions();
    }
  }
}

void ClusterStore::BroadcastConfig(const std::vector<pb::ConfigChange>& changes) {
  pb::PushConfigRequest request;
  request.set_protocol_version(kProtocolVersion);
  request.set_from(options_.self_id);
  for (const auto& change : changes) {
    *request.add_changes() = change;
  }
  const uint64_t mask = membership_->alive_mask();
  std::vector<std::thread> pushes;
  for (size_t i = 0; i < clients_.size(); ++i) {
    if (clients_[i] != nullptr && ((mask >> i) & 1)) {
      pushes.emplace_back([this, i, &request] { clients_[i]->PushConfig(request); });
    }
  }
  for (auto& t : pushes) {
    t.join();
  }
}

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

bool ClusterStore::Apply(absl::Span<const StoreOp> ops, int64_t now_ns,
                         absl::Span<Decision> decisions) {
  const uint64_t mask = membership_->alive_mask();
  const int first = Route(ops[0], mask);
  bool same = true;
  for (size_t i = 1; i < ops.size() && same; ++i) {
    same = Route(ops[i], mask) == first;
  }
  if (same) {
    return ApplyRouted(first, ops, now_ns, decisions);
  }
  // Ops with different owners: each owner's part is atomic on its own (docs/cluster.md).
  bool committed = true;
  absl::InlinedVector<int, kInlineOps> routes(ops.size());
  for (size_t i = 0; i < ops.size(); ++i) {
    routes[i] = Route(ops[i], mask);
  }
  absl::InlinedVector<bool, kInlineOps> done(ops.size(), false);
  for (size_t i = 0; i < ops.size(); ++i) {
    if (done[i]) {
      continue;
    }
    absl::InlinedVector<StoreOp, kInlineOps> group;
    absl::InlinedVector<size_t, kInlineOps> index;
    for (size_t j = i; j < ops.size(); ++j) {
      if (!done[j] && routes[j] == routes[i]) {
        group.push_back(ops[j]);
        index.push_back(j);
        done[j] = true;
      }
    }
    absl::InlinedVector<Decision, kInlineOps> out(group.size());
    committed &= ApplyRouted(routes[i], group, now_ns, absl::MakeSpan(out));
    for (size_t k = 0; k < index.size(); ++k) {
      decisions[index[k]] = out[k];
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

bool ClusterStore::ForwardOrFail(int owner, absl::Span<const StoreOp> ops, int64_t now_ns,
                                 absl::Span<Decision> decisions) {
  for (int attempt = 0; attempt < 3; ++attempt) {
    bool committed = false;
    const absl::Status status = clients_[owner]->Forward(ops, decisions, &committed);
    if (status.ok()) {
      return committed;
    }
    // The owner did not answer: treat it as dead and retry where its keys went (its replica,
    // which holds their state). Other errors (a version mismatch, a malformed batch) are not
    // the owner's death: decide by failure mode.
    if (status.code() != absl::StatusCode::kUnavailable &&
        status.code() != absl::StatusCode::kDeadlineExceeded) {
      break;
    }
    membership_->RecordFailure(owner);
    failovers_.fetch_add(1, std::memory_order_relaxed);
    const uint64_t mask = membership_->alive_mask();
    int next = Route(ops[0], mask);
    for (size_t i = 1; i < ops.size(); ++i) {
      if (Route(ops[i], mask) != next) {
        return Apply(ops, now_ns, decisions);  // split across owners now
      }
    }
    if (next < 0 || next == membership_->self()) {
      return ApplyRouted(next, ops, now_ns, decisions);
    }
    owner = next;
  }
  return ApplyRouted(kRouteFailureMode, ops, now_ns, decisions);
}

bool ClusterStore::ApplyLocalConsistency(absl::Span<const StoreOp> ops, int64_t now_ns,
                                         absl::Span<Decision> decisions) {
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
    // Tell each key's owner, in the background, so its state counts every node's hits.
    if (quorum) {
      for (const StoreOp& op : ops) {
        if (op.kind != StoreOp::Kind::kCheck || op.hits == 0) {
          continue;
        }
        const int owner = membership_->Owner(op.key_hash, mask);
        if (owner == membership_->self()) {
          Decision ignored;
          ApplyOwned(absl::MakeConstSpan(&op, 1), now_ns, absl::MakeSpan(&ignored, 1));
        } else {
          clients_[owner]->Report(op);
        }
      }
    }
    return true;
  }
  if (!quorum) {
    return false;
  }
  // This node's share is spent: ask the owner, whose state holds every node's reported hits,
  // once this node's own hits have reached it (they may still be waiting for their batch).
  local_share_refills_.fetch_add(1, std::memory_order_relaxed);
  for (const StoreOp& op : ops) {
    const int owner = membership_->Owner(op.key_hash, mask);
    if (owner != membership_->self() && !op.shed) {
      clients_[owner]->FlushReports();
    }
  }
  absl::InlinedVector<StoreOp, kInlineOps> exact(ops.begin(), ops.end());
  for (StoreOp& op : exact) {
    op.consistency = Consistency::kExact;
  }
  return Apply(exact, now_ns, decisions);
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

void ClusterStore::WarmUp(absl::Span<const StoreOp> ops, int64_t now_ns, uint64_t mask) {
  const int64_t age = now_ns - started_at_ns_;
  absl::flat_hash_map<int, std::vector<size_t>> by_peer;
  int ranks[kMaxMembers];
  const int want = std::min(options_.replicas + 1, membership_->size());
  for (size_t i = 0; i < ops.size(); ++i) {
    if (age >= std::min(StateLifetimeNs(ops[i].spec), kMaxWarmUpNs)) {
      continue;
    }
    StateRecord held;
    if (local_->GetState(ops[i].key_hash, now_ns, &held)) {
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
    pb::FetchRequest request;
    request.set_protocol_version(kProtocolVersion);
    request.set_from(options_.self_id);
    for (size_t i : indexes) {
      request.add_key_hashes(ops[i].key_hash);
    }
    absl::StatusOr<pb::FetchResponse> response = clients_[peer]->Fetch(request);
    if (!response.ok()) {
      continue;
    }
    std::vector<StateRecord> records;
    for (const pb::State& state : response->states()) {
      for (size_t i : indexes) {
        if (ops[i].key_hash == state.key_hash()) {
          records.push_back(
              StateRecord{state.key_hash(), ops[i].spec, state.expiry_ns(), state.data()});
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
  // A shed check must not wait, so it does not fetch state while warming up.
  if (now_ns - started_at_ns_ < kMaxWarmUpNs && warming_up_.load(std::memory_order_relaxed) &&
      !ops[0].shed) {
    WarmUp(ops, now_ns, mask);
  }
  absl::InlinedVector<StateRecord, kInlineOps> after(ops.size());
  const bool committed = local_->ApplyAndCapture(ops, now_ns, decisions, absl::MakeSpan(after));
  if (!committed || options_.replicas < 2) {
    return committed;
  }
  int ranks[kMaxMembers];
  const int want = std::min(options_.replicas, membership_->size());
  for (const StateRecord& record : after) {
    const int n = membership_->Rank(record.key_hash, mask, absl::MakeSpan(ranks, want));
    for (int r = 0; r < n; ++r) {
      if (ranks[r] != membership_->self()) {
        clients_[ranks[r]]->Replicate(record);
      }
    }
  }
  return committed;
}

StoreStats ClusterStore::GetStats() const { return local_->GetStats(); }

void ClusterStore::ReclaimExpired(int64_t now_ns) { local_->ReclaimExpired(now_ns); }

ClusterStats ClusterStore::GetClusterStats() const {
  ClusterStats stats;
  stats.self_id = options_.self_id;
  const uint64_t mask = membership_->alive_mask();
  stats.quorum = Membership::HasQuorum(mask, membership_->size());
  stats.deaths = membership_->deaths();
  stats.failovers = failovers_.load(std::memory_order_relaxed);
  stats.failure_mode_ops = failure_mode_ops_.load(std::memory_order_relaxed);
  stats.shed_ops = shed_ops_.load(std::memory_order_relaxed);
  stats.local_share_ops = local_share_ops_.load(std::memory_order_relaxed);
  stats.local_share_refills = local_share_refills_.load(std::memory_order_relaxed);
  stats.owned_ops = owned_ops_.load(std::memory_order_relaxed);
  stats.warmup_fetches = warmup_fetches_.load(std::memory_order_relaxed);
  stats.config_pushes = config_pushes_.load(std::memory_order_relaxed);
  // Ownership share in this node's view, from a fixed sample of the hash space.
  constexpr int kSamples = 4096;
  std::vector<int> owned(membership_->size(), 0);
  for (int s = 0; s < kSamples; ++s) {
    const uint64_t key = (static_cast<uint64_t>(s) + 1) * 0x9E3779B97F4A7C15ULL;
    const int owner = membership_->Owner(key, mask);
    if (owner >= 0) {
      ++owned[owner];
    }
  }
  for (int i = 0; i < membership_->size(); ++i) {
    PeerStats peer;
    peer.id = membership_->members()[i].id;
    peer.address = membership_->members()[i].address;
    peer.self = i == membership_->self();
    peer.alive = ((mask >> i) & 1) != 0;
    peer.last_contact_ns = membership_->last_contact_ns(i);
    peer.ownership_share = static_cast<double>(owned[i]) / kSamples;
    if (clients_[i] != nullptr) {
      clients_[i]->FillStats(peer);
    }
    stats.peers.push_back(std::move(peer));
  }
  return stats;
}

}  // namespace floodgate::cluster
