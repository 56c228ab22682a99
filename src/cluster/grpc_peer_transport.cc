#include "src/cluster/grpc_peer_transport.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cstdio>
#include <deque>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "floodgate/peer/v1/peer.grpc.pb.h"
#include "floodgate/status_macros.h"
#include "src/cluster/grpc_peer_server.h"
#include "src/cluster/peer_wire.h"
#include "src/common/rate_limited_log.h"

namespace floodgate::cluster {
namespace pb = ::floodgate::peer::v1;

namespace {

constexpr size_t kReplicationBatch = 512;
// Replication batches go one at a time, so a replica applies a key's states in the order the
// owner produced them: a release's lowered state (StateRecord::lowered) must not arrive after a
// later state of the same key, or the replica could take it and count fewer slots than the
// owner. Reports (hits to add, order-free) may overlap.
constexpr int kMaxReplicationInFlight = 1;
constexpr int kMaxReportsInFlight = 2;

// What one asynchronous unary call owns until its callback runs (the callback deletes it).
template <typename Request, typename Response>
struct AsyncCall {
  grpc::ClientContext context;
  Request request;
  Response response;
};
// Hit reports waiting for one peer beyond this are dropped (the owner then undercounts the
// local-share hits of an overloaded link; the shares still hold the limit).
constexpr size_t kMaxReportsQueued = 100'000;

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) {
    return absl::OkStatus();
  }
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

// ---------------------------------------------------------------------------------------------
// PeerClient: one persistent channel to one member; batches forwarded transactions, replicated
// states and local-share reports on a sender thread.

class PeerClient {
 public:
  PeerClient(const GrpcPeerTransportOptions& options, int index, PeerHandler* handler)
      : options_(options), index_(index), handler_(handler) {
    const Member& member = options.members[index];
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
        +[](PeerClient* c) ABSL_SHARED_LOCKS_REQUIRED(c->mu_) {
          return c->in_flight_ == 0 && c->repl_in_flight_ == 0;
        },
        this));
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
    StateRecord& queued = replication_[record.key_hash];
    if (queued.lowered) {
      // A release is queued for this key: the batch still carries it, from the state before it.
      queued = StateRecord{record.key_hash,   record.spec,
                           record.expiry_ns,  record.data,
                           /*lowered=*/true,  queued.before_expiry_ns,
                           queued.before_data};
    } else {
      queued = record;
    }
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
    mu_.AwaitWithTimeout(absl::Condition(
                             +[](PeerClient* c) ABSL_SHARED_LOCKS_REQUIRED(c->mu_) {
                               return c->stop_ || c->reports_in_flight_ == 0;
                             },
                             this),
                         options_.forward_timeout);
  }

  // Stamps a request with the protocol version and this node's id.
  template <typename Request>
  void Stamp(Request* request) const {
    request->set_protocol_version(kProtocolVersion);
    request->set_from(options_.self_id);
  }

  // Gives a blocking call forward_timeout, waiting for the channel to be ready within it.
  void WaitUpToForwardTimeout(grpc::ClientContext* context) const {
    context->set_deadline(absl::ToChronoTime(absl::Now() + options_.forward_timeout));
    context->set_wait_for_ready(true);
  }

  absl::StatusOr<std::vector<StateRecord>> Fetch(absl::Span<const uint64_t> key_hashes) {
    pb::FetchRequest request;
    Stamp(&request);
    for (uint64_t key : key_hashes) {
      request.add_key_hashes(key);
    }
    grpc::ClientContext context;
    WaitUpToForwardTimeout(&context);
    pb::FetchResponse response;
    FG_RETURN_IF_ERROR(FromGrpc(stub_->Fetch(&context, request, &response)));
    std::vector<StateRecord> states;
    states.reserve(response.states_size());
    for (const pb::State& state : response.states()) {
      StateRecord record;
      record.key_hash = state.key_hash();
      record.expiry_ns = state.expiry_ns();
      record.data = state.data();
      states.push_back(record);
    }
    return states;
  }

  absl::StatusOr<std::vector<pb::ConfigChange>> GetConfig(const std::vector<std::string>& domains) {
    pb::GetConfigRequest request;
    Stamp(&request);
    for (const std::string& domain : domains) {
      request.add_domains(domain);
    }
    grpc::ClientContext context;
    WaitUpToForwardTimeout(&context);
    pb::GetConfigResponse response;
    FG_RETURN_IF_ERROR(FromGrpc(stub_->GetConfig(&context, request, &response)));
    return std::vector<pb::ConfigChange>(response.changes().begin(), response.changes().end());
  }

  absl::Status PushConfig(const std::vector<pb::ConfigChange>& changes) {
    pb::PushConfigRequest request;
    Stamp(&request);
    for (const auto& change : changes) {
      *request.add_changes() = change;
    }
    grpc::ClientContext context;
    WaitUpToForwardTimeout(&context);
    pb::PushConfigResponse response;
    return FromGrpc(stub_->PushConfig(&context, request, &response));
  }

  // Starts a heartbeat; `done` runs on a gRPC thread.
  void Ping(const PingInfo& ours, std::function<void(absl::StatusOr<PingInfo>)> done) {
    auto* call = new AsyncCall<pb::PingRequest, pb::PingResponse>;
    Stamp(&call->request);
    call->request.set_started_at_ns(ours.started_at_ns);
    for (const auto& v : ours.config) {
      *call->request.add_config() = v;
    }
    call->context.set_deadline(absl::ToChronoTime(absl::Now() + options_.heartbeat * 2));
    stub_->async()->Ping(&call->context, &call->request, &call->response,
                         [call, done = std::move(done)](grpc::Status status) {
                           if (status.ok()) {
                             PingInfo theirs;
                             theirs.node_id = call->response.node_id();
                             theirs.started_at_ns = call->response.started_at_ns();
                             theirs.config.assign(call->response.config().begin(),
                                                  call->response.config().end());
                             done(std::move(theirs));
                           } else {
                             done(FromGrpc(status));
                           }
                           delete call;
                         });
  }

  PeerLinkStats GetStats() const {
    absl::MutexLock lock(&mu_);
    PeerLinkStats stats;
    stats.replication_lag_ns = replication_lag_ns_;
    stats.forwarded_txns = forwarded_txns_;
    stats.forward_batches = forward_batches_;
    stats.forward_errors = forward_errors_;
    stats.replicated_states = replicated_states_;
    return stats;
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
      bool sent = SendDueForwards(now, &wake);
      sent |= SendDueReplication(now, &wake);
      sent |= SendDueReports(now, &wake);
      if (!sent) {
        WaitForWork(wake);
      }
    }
  }

  // Each SendDue* sends its queue's next batch if it is due (mu_ is released while sending) and
  // returns whether it sent; otherwise it lowers *wake to when the batch will be due.
  bool SendDueForwards(absl::Time now, absl::Time* wake) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (queue_.empty() || in_flight_ >= options_.max_in_flight) {
      return false;
    }
    // Adaptive batching: with nothing in flight, send at once (no added latency at low load);
    // otherwise gather until the batch is full or its oldest check has waited batch_wait.
    const absl::Time due = queue_.front()->enqueued + options_.batch_wait;
    if (options_.batching && in_flight_ != 0 &&
        queue_.size() < static_cast<size_t>(options_.batch_max) && now < due) {
      *wake = std::min(*wake, due);
      return false;
    }
    const size_t n =
        options_.batching ? std::min(queue_.size(), static_cast<size_t>(options_.batch_max)) : 1;
    std::vector<std::shared_ptr<Pending>> batch(queue_.begin(), queue_.begin() + n);
    queue_.erase(queue_.begin(), queue_.begin() + n);
    ++in_flight_;
    mu_.Unlock();
    SendForward(std::move(batch));
    mu_.Lock();
    return true;
  }

  // Whether a queue of `size` states, the oldest queued at `oldest`, leaves now: when it is full
  // or has waited batch_wait, and fewer than the most batches are in flight. Otherwise lowers
  // *wake to when it is due.
  bool BatchDue(size_t size, int in_flight, int max_in_flight, absl::Time oldest, absl::Time now,
                absl::Time* wake) const {
    if (size == 0 || in_flight >= max_in_flight) {
      return false;
    }
    const absl::Time due = oldest + options_.batch_wait;
    if (size < kReplicationBatch && now < due) {
      *wake = std::min(*wake, due);
      return false;
    }
    return true;
  }

  bool SendDueReplication(absl::Time now, absl::Time* wake) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!BatchDue(replication_.size(), repl_in_flight_, kMaxReplicationInFlight,
                  replication_oldest_, now, wake)) {
      return false;
    }
    absl::flat_hash_map<uint64_t, StateRecord> states;
    states.swap(replication_);
    const absl::Time oldest = replication_oldest_;
    ++repl_in_flight_;
    mu_.Unlock();
    SendReplication(states, oldest);
    mu_.Lock();
    return true;
  }

  bool SendDueReports(absl::Time now, absl::Time* wake) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!BatchDue(reports_.size(), reports_in_flight_, kMaxReportsInFlight, reports_oldest_, now,
                  wake)) {
      return false;
    }
    SendQueuedReports();
    return true;
  }

  // Waits until some queue can send, or `wake`. absl re-evaluates these conditions whenever mu_
  // is released, so a Forward or Replicate that queues work wakes the loop; the timeouts only
  // bound a wait.
  void WaitForWork(absl::Time wake) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (wake == absl::InfiniteFuture()) {
      mu_.AwaitWithTimeout(
          absl::Condition(
              +[](PeerClient* c) ABSL_SHARED_LOCKS_REQUIRED(c->mu_) {
                return c->stop_ ||
                       (!c->queue_.empty() && c->in_flight_ < c->options_.max_in_flight) ||
                       (!c->replication_.empty() && c->repl_in_flight_ < kMaxReplicationInFlight) ||
                       (!c->reports_.empty() && c->reports_in_flight_ < kMaxReportsInFlight);
              },
              this),
          absl::Milliseconds(100));
    } else {
      mu_.AwaitWithDeadline(absl::Condition(
                                +[](PeerClient* c) ABSL_SHARED_LOCKS_REQUIRED(c->mu_) {
                                  return c->stop_ || (!c->queue_.empty() && c->in_flight_ == 0) ||
                                         c->queue_.size() >=
                                             static_cast<size_t>(c->options_.batch_max) ||
                                         c->replication_.size() >= kReplicationBatch ||
                                         c->reports_.size() >= kReplicationBatch;
                                },
                                this),
                            wake);
    }
  }

  void SendForward(std::vector<std::shared_ptr<Pending>> batch) {
    struct Call : AsyncCall<pb::ForwardRequest, pb::ForwardResponse> {
      std::vector<std::shared_ptr<Pending>> batch;
    };
    auto* call = new Call;
    Stamp(&call->request);
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
            handler_->RecordContact(index_);
          }
          absl::MutexLock lock(&mu_);
          --in_flight_;
          ++forward_batches_;
          forwarded_txns_ += call->batch.size();
          if (!ok) {
            // Say why, for the first failures of a streak (a dead peer fails every call).
            if (forward_errors_streak_++ < 3) {
              common::RateLimitedLog::Default().Log(absl::StrCat(
                  "floodgate: forward to ", id_, " failed: ", FromGrpc(status).ToString()));
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
    auto* call = new AsyncCall<pb::ForwardRequest, pb::ForwardResponse>;
    Stamp(&call->request);
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
    auto* call = new AsyncCall<pb::ReplicateRequest, pb::ReplicateResponse>;
    Stamp(&call->request);
    call->request.set_now_ns(options_.clock->NowNs());
    for (const auto& [key, record] : states) {
      ToProto(record, call->request.add_states());
    }
    const size_t count = states.size();
    call->context.set_deadline(absl::ToChronoTime(absl::Now() + options_.forward_timeout));
    stub_->async()->Replicate(&call->context, &call->request, &call->response,
                              [this, call, count, oldest](grpc::Status status) {
                                if (status.ok() && call->response.corrections_size() > 0) {
                                  HandleCorrections(call->response);
                                }
                                absl::MutexLock lock(&mu_);
                                --repl_in_flight_;
                                if (status.ok()) {
                                  replicated_states_ += count;
                                  replication_lag_ns_ =
                                      absl::ToInt64Nanoseconds(absl::Now() - oldest);
                                }
                                delete call;
                              });
  }

  // Merges back what a replica holds above what it was sent (a bad record is skipped).
  void HandleCorrections(const pb::ReplicateResponse& response) {
    std::vector<StateRecord> records;
    for (const pb::State& state : response.corrections()) {
      absl::StatusOr<StateRecord> record = FromProto(state);
      if (record.ok()) {
        records.push_back(*record);
      }
    }
    handler_->HandleCorrections(records);
  }

  const GrpcPeerTransportOptions& options_;
  const int index_;
  PeerHandler* const handler_;
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
// GrpcPeerTransport: a PeerClient per other member, and the PeerServer.

class GrpcPeerTransport final : public PeerTransport {
 public:
  explicit GrpcPeerTransport(GrpcPeerTransportOptions options) : options_(std::move(options)) {}

  ~GrpcPeerTransport() override {
    Shutdown();
    // Clients first: their destructors wait for calls in flight, whose callbacks use the handler.
    clients_.clear();
    server_.reset();
  }

  absl::Status Start(PeerHandler* handler) override {
    clients_.resize(options_.members.size());
    for (size_t i = 0; i < options_.members.size(); ++i) {
      if (static_cast<int>(i) != options_.self) {
        clients_[i] = std::make_unique<PeerClient>(options_, static_cast<int>(i), handler);
      }
    }
    server_ = std::make_unique<PeerServer>(options_, handler);
    return server_->Start(options_.listen_address, &port_);
  }

  int port() const override { return port_; }

  void Shutdown() override {
    if (server_ != nullptr) {
      server_->Shutdown();
    }
  }

  absl::Status Forward(int member, absl::Span<const StoreOp> ops, absl::Span<Decision> decisions,
                       bool* committed) override {
    FG_ASSIGN_OR_RETURN(PeerClient * client, Client(member));
    return client->Forward(ops, decisions, committed);
  }

  void Replicate(int member, const StateRecord& record) override {
    if (absl::StatusOr<PeerClient*> client = Client(member); client.ok()) {
      (*client)->Replicate(record);
    }
  }

  void Report(int member, const StoreOp& op) override {
    if (absl::StatusOr<PeerClient*> client = Client(member); client.ok()) {
      (*client)->Report(op);
    }
  }

  void FlushReports(int member) override {
    if (absl::StatusOr<PeerClient*> client = Client(member); client.ok()) {
      (*client)->FlushReports();
    }
  }

  absl::StatusOr<std::vector<StateRecord>> Fetch(int member,
                                                 absl::Span<const uint64_t> key_hashes) override {
    FG_ASSIGN_OR_RETURN(PeerClient * client, Client(member));
    return client->Fetch(key_hashes);
  }

  void Ping(int member, const PingInfo& ours,
            std::function<void(absl::StatusOr<PingInfo>)> done) override {
    absl::StatusOr<PeerClient*> client = Client(member);
    if (!client.ok()) {
      done(client.status());
      return;
    }
    (*client)->Ping(ours, std::move(done));
  }

  absl::StatusOr<std::vector<pb::ConfigChange>> GetConfig(
      int member, const std::vector<std::string>& domains) override {
    FG_ASSIGN_OR_RETURN(PeerClient * client, Client(member));
    return client->GetConfig(domains);
  }

  absl::Status PushConfig(int member, const std::vector<pb::ConfigChange>& changes) override {
    FG_ASSIGN_OR_RETURN(PeerClient * client, Client(member));
    return client->PushConfig(changes);
  }

  PeerLinkStats GetLinkStats(int member) const override {
    if (member < 0 || member >= static_cast<int>(clients_.size()) || clients_[member] == nullptr) {
      return {};
    }
    return clients_[member]->GetStats();
  }

 private:
  // Returns the client for `member`, or an error for self, an unknown member, or before Start.
  absl::StatusOr<PeerClient*> Client(int member) const {
    if (member < 0 || member >= static_cast<int>(clients_.size()) || clients_[member] == nullptr) {
      return absl::UnavailableError(absl::StrCat("no peer client for member ", member));
    }
    return clients_[member].get();
  }

  const GrpcPeerTransportOptions options_;
  std::vector<std::unique_ptr<PeerClient>> clients_;  // by member index; null for self
  std::unique_ptr<PeerServer> server_;
  int port_ = 0;
};

}  // namespace

std::unique_ptr<PeerTransport> NewGrpcPeerTransport(GrpcPeerTransportOptions options) {
  return std::make_unique<GrpcPeerTransport>(std::move(options));
}

}  // namespace floodgate::cluster
