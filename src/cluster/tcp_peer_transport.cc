#include "src/cluster/tcp_peer_transport.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <utility>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "floodgate/status_macros.h"
#include "src/cluster/peer_link.h"
#include "src/cluster/peer_server.h"
#include "src/cluster/peer_top.h"
#include "src/cluster/peer_wire.h"
#include "src/cluster/tcp_peer_state.h"
#include "src/net/io_threads.h"

namespace floodgate::cluster {
namespace pb = ::floodgate::peer::v1;
namespace asio = boost::asio;

namespace {

// Replicated states or reported hits waiting for one member beyond these are dropped (and
// counted): a replica then misses some states (the owner's copy still decides), the owner
// undercounts some local-share hits (the shares still hold the limit).
constexpr size_t kMaxStatesQueued = 100'000;
constexpr size_t kMaxReportsQueued = 100'000;
// The peer server's bound on transactions in one forward frame (peer_server.cc).
constexpr size_t kMaxTxnsPerFrame = 4096;

using tcp_internal::MemberState;
using tcp_internal::Shared;

class TcpPeerTransport final : public PeerTransport {
 public:
  explicit TcpPeerTransport(TcpPeerTransportOptions options)
      : options_(std::move(options)),
        shared_(std::make_shared<Shared>()),
        io_(net::IoModel::kPerThread, 1) {}

  ~TcpPeerTransport() override {
    Shutdown();
    shared_->Detach();
    io_.Stop();
    // A ForwardAsync callback still queued on a caller's loop keeps its MemberState (for the
    // member's id and counters) beyond this transport. The member's own link lives on io_,
    // which goes with this transport: drop it now, while io_ exists, or it would be destroyed
    // later with the MemberState, touching io_'s freed timer service. Nothing else reads
    // `link` any more: io_'s threads have stopped and callbacks on callers' loops never do.
    absl::MutexLock lock(&states_mu_);
    for (const auto& member : states_) {
      member->link.reset();
    }
  }

  absl::Status Start(PeerHandler* handler) override {
    {
      absl::MutexLock lock(&shared_->mu);
      shared_->handler = handler;
    }
    if (options_.tls.has_value()) {
      // Both contexts first: the links and the listener share them.
      if (!options_.tls->mutual()) {
        return absl::InvalidArgumentError("peer TLS needs the members' CA (--peer-tls-ca)");
      }
      absl::StatusOr<std::unique_ptr<net::TlsContext>> server =
          net::TlsContext::New(*options_.tls, kPeerAlpn);
      if (!server.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("peer TLS (listener): ", server.status().message()));
      }
      absl::StatusOr<std::unique_ptr<net::TlsContext>> client =
          net::TlsContext::NewClient(*options_.tls, kPeerAlpn);
      if (!client.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("peer TLS (links): ", client.status().message()));
      }
      server_tls_ = *std::move(server);
      client_tls_ = *std::move(client);
    }
    io_.Start();
    for (size_t i = 0; i < options_.members.size() && i < kMaxMembers; ++i) {
      if (static_cast<int>(i) != options_.self) {
        SetSlot(static_cast<int>(i), options_.members[i].id, options_.members[i].address);
      }
    }
    PeerServerOptions server;
    server.address = options_.listen_address;
    server.self_id = options_.self_id;
    for (const Member& m : options_.members) {
      server.members.push_back(m.id);
    }
    server.key = options_.cluster_key;
    server.accept_unknown = options_.accept_unknown_members;
    server.io_threads = options_.listener_threads;
    server.clock = options_.clock;
    server.auth = &shared_->auth;
    server.tls = server_tls_;
    server_ = std::make_unique<PeerServer>(std::move(server), handler);
    return server_->Start();
  }

  int port() const override { return server_ == nullptr ? 0 : server_->port(); }

  void Shutdown() override {
    if (shut_down_.exchange(true)) {
      return;
    }
    if (server_ != nullptr) {
      server_->Shutdown();
    }
    {
      absl::MutexLock lock(&states_mu_);
      for (const auto& member : states_) {
        member->link->Close();
      }
    }
    absl::MutexLock lock(&links_mu_);
    for (const auto& [loop, links] : loop_links_) {
      for (const LoopLink& link : links) {
        if (link.link != nullptr) {
          link.link->Close();
        }
      }
    }
    // The links on callers' loops now live only in their loops' handlers (the Close posted
    // above, reads, timers), so each is destroyed with its loop's work, on its loop or when its
    // io_context goes: never here, after a front end's io_context is gone (its socket would
    // outlive the context that owns its service).
    loop_links_.clear();
  }

  absl::Status Forward(int member, absl::Span<const StoreOp> ops, absl::Span<Decision> decisions,
                       bool* committed) override {
    FG_ASSIGN_OR_RETURN(MemberState * state, MemberAt(member));
    pb::ForwardResponse response;
    absl::Status status = CallAndWait(member, FrameType::kForward, FrameType::kForwardAnswer,
                                      ForwardRequestOf(ops), &response);
    if (status.ok()) {
      status = DecisionsOf(response, state->id, decisions, committed);
    }
    CountForward(*state, status);
    return status;
  }

  void ForwardAsync(int member, absl::Span<const StoreOp> ops, absl::Span<Decision> decisions,
                    asio::io_context& loop, ForwardDone done) override {
    absl::StatusOr<MemberState*> state = MemberAt(member);
    if (!state.ok()) {
      asio::post(loop, [done = std::move(done), status = state.status()]() mutable {
        std::move(done)(status, false);
      });
      return;
    }
    std::shared_ptr<PeerLink> link = LinkFor(**state, loop);
    if (link == nullptr) {
      asio::post(loop, [done = std::move(done)]() mutable {
        std::move(done)(absl::UnavailableError("cluster is shutting down"), false);
      });
      return;
    }
    // The member's state is kept alive by the callback: it may outlive this transport.
    std::shared_ptr<MemberState> keep = (*state)->shared_from_this();
    auto shared = shared_;
    auto pending = std::make_shared<ForwardDone>(std::move(done));
    absl::Status queued =
        link->Call(FrameType::kForward, ForwardRequestOf(ops), options_.forward_timeout,
                   [keep, shared, decisions, pending](absl::Status status, const Frame& frame) {
                     pb::ForwardResponse response;
                     bool committed = false;
                     status = DecodeAnswer(std::move(status), frame, FrameType::kForwardAnswer,
                                           &response, keep->id);
                     if (status.ok()) {
                       status = DecisionsOf(response, keep->id, decisions, &committed);
                     }
                     CountForward(*keep, status);
                     if (status.ok()) {
                       shared->WithHandler([&](PeerHandler* h) { h->RecordContact(keep->index); });
                     }
                     std::move (*pending)(std::move(status), committed);
                   });
    if (!queued.ok()) {
      CountForward(*keep, queued);
      asio::post(loop, [pending, queued]() mutable { std::move (*pending)(queued, false); });
    }
  }

  void Replicate(int member, const StateRecord& record) override {
    absl::StatusOr<MemberState*> found = MemberAt(member);
    if (!found.ok()) {
      return;
    }
    MemberState& state = **found;
    absl::MutexLock lock(&state.mu);
    if (state.replication.empty()) {
      state.replication_oldest = absl::Now();
    }
    auto it = state.replication.find(record.key_hash);
    if (it == state.replication.end()) {
      if (state.replication.size() >= kMaxStatesQueued) {
        state.dropped.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      state.replication.emplace(record.key_hash, record);
    } else if (it->second.lowered) {
      // A release is queued for this key: the batch still carries it, from the state before
      // it (the replica's merge relies on before_*), with the latest state.
      StateRecord& queued = it->second;
      queued = StateRecord{record.key_hash,   record.spec,      record.expiry_ns,
                           record.data,       /*lowered=*/true, queued.before_expiry_ns,
                           queued.before_data};
    } else {
      it->second = record;
    }
    if (!state.replication_in_flight && !state.replication_posted) {
      state.replication_posted = true;
      Later(state.link->loop(), [this, keep = state.shared_from_this()] { SendReplication(keep); });
    }
  }

  void Report(int member, const StoreOp& op) override {
    absl::StatusOr<MemberState*> found = MemberAt(member);
    if (!found.ok()) {
      return;
    }
    MemberState& state = **found;
    absl::MutexLock lock(&state.mu);
    if (state.reports.size() >= kMaxReportsQueued) {
      state.dropped.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    state.reports.push_back(op);
    ++state.reports_queued;
    if (!state.reports_posted) {
      state.reports_posted = true;
      Later(state.link->loop(), [this, keep = state.shared_from_this()] { SendReports(keep); });
    }
  }

  void FlushReports(int member) override {
    absl::StatusOr<MemberState*> found = MemberAt(member);
    if (!found.ok()) {
      return;
    }
    std::shared_ptr<MemberState> state = (*found)->shared_from_this();
    uint64_t target;
    {
      absl::MutexLock lock(&state->mu);
      target = state->reports_queued;
    }
    SendReports(state);
    struct FlushWait {
      MemberState* state;
      uint64_t target;
    };
    FlushWait wait{state.get(), target};
    absl::MutexLock lock(&state->mu);
    state->mu.AwaitWithTimeout(absl::Condition(
                                   +[](FlushWait* w) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                                     return w->state->reports_done >= w->target;
                                   },
                                   &wait),
                               options_.forward_timeout);
  }

  void FlushReportsAsync(int member, asio::io_context& loop, FlushDone done) override {
    absl::StatusOr<MemberState*> found = MemberAt(member);
    if (!found.ok()) {
      asio::post(loop, [done = std::move(done)]() mutable { std::move(done)(); });
      return;
    }
    std::shared_ptr<MemberState> state = (*found)->shared_from_this();
    bool waiting = false;
    {
      absl::MutexLock lock(&state->mu);
      if (state->reports_done < state->reports_queued) {
        state->flush_waiters.push_back({state->reports_queued, &loop, std::move(done)});
        waiting = true;
      }
    }
    if (!waiting) {  // nothing queued or in flight
      asio::post(loop, [done = std::move(done)]() mutable { std::move(done)(); });
      return;
    }
    SendReports(state);
  }

  absl::StatusOr<uint64_t> HandOver(int member, absl::Span<const StateRecord> states) override {
    constexpr size_t kBatch = 16384;  // about 400 KB a frame
    uint64_t bytes = 0;
    for (size_t begin = 0; begin < states.size(); begin += kBatch) {
      pb::ReplicateRequest request;
      request.set_now_ns(options_.clock->NowNs());
      for (const StateRecord& record : states.subspan(begin, kBatch)) {
        pb::State* state = request.add_adopted();
        state->set_key_hash(record.key_hash);
        state->set_expiry_ns(record.expiry_ns);
        state->set_data(record.data);
      }
      pb::ReplicateResponse response;
      FG_RETURN_IF_ERROR(CallAndWait(member, FrameType::kReplicate, FrameType::kReplicateAnswer,
                                     request, &response));
      bytes += request.ByteSizeLong();
    }
    return bytes;
  }

  absl::StatusOr<std::vector<StateRecord>> Fetch(int member,
                                                 absl::Span<const uint64_t> key_hashes) override {
    pb::FetchRequest request;
    for (uint64_t key : key_hashes) {
      request.add_key_hashes(key);
    }
    pb::FetchResponse response;
    FG_RETURN_IF_ERROR(
        CallAndWait(member, FrameType::kFetch, FrameType::kFetchAnswer, request, &response));
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

  void Ping(int member, const PingInfo& ours,
            std::function<void(absl::StatusOr<PingInfo>)> done) override {
    absl::StatusOr<MemberState*> state = MemberAt(member);
    if (!state.ok()) {
      done(state.status());
      return;
    }
    pb::PingRequest request;
    request.set_protocol_version(kPeerProtocolVersion);
    request.set_from(options_.self_id);
    request.set_started_at_ns(ours.started_at_ns);
    for (const auto& v : ours.config) {
      *request.add_config() = v;
    }
    auto shared_done =
        std::make_shared<std::function<void(absl::StatusOr<PingInfo>)>>(std::move(done));
    const std::string id = (*state)->id;
    absl::Status queued = (*state)->link->Call(
        FrameType::kPing, request, options_.heartbeat * 2,
        [shared_done, id](absl::Status status, const Frame& frame) {
          pb::PingResponse response;
          status = DecodeAnswer(std::move(status), frame, FrameType::kPingAnswer, &response, id);
          if (!status.ok()) {
            (*shared_done)(std::move(status));
            return;
          }
          PingInfo theirs;
          theirs.node_id = response.node_id();
          theirs.started_at_ns = response.started_at_ns();
          theirs.config_fingerprint = response.config_fingerprint();
          theirs.keys_held = response.keys_held();
          theirs.config.assign(response.config().begin(), response.config().end());
          (*shared_done)(std::move(theirs));
        });
    if (!queued.ok()) {
      (*shared_done)(std::move(queued));
    }
  }

  absl::StatusOr<std::vector<pb::ConfigChange>> GetConfig(
      int member, const std::vector<std::string>& domains) override {
    pb::GetConfigRequest request;
    for (const std::string& domain : domains) {
      request.add_domains(domain);
    }
    pb::GetConfigResponse response;
    FG_RETURN_IF_ERROR(CallAndWait(member, FrameType::kGetConfig, FrameType::kGetConfigAnswer,
                                   request, &response));
    return std::vector<pb::ConfigChange>(response.changes().begin(), response.changes().end());
  }

  absl::Status PushConfig(int member, const std::vector<pb::ConfigChange>& changes) override {
    pb::PushConfigRequest request;
    for (const auto& change : changes) {
      *request.add_changes() = change;
    }
    pb::PushConfigResponse response;
    return CallAndWait(member, FrameType::kPushConfig, FrameType::kPushConfigAnswer, request,
                       &response);
  }

  PeerLinkStats GetLinkStats(int member) const override {
    absl::StatusOr<MemberState*> found = MemberAt(member);
    if (!found.ok()) {
      return {};
    }
    MemberState& state = **found;
    PeerLinkStats stats;
    stats.forwarded_txns = state.forwarded_txns.load(std::memory_order_relaxed);
    stats.forward_errors = state.forward_errors.load(std::memory_order_relaxed);
    stats.replicated_states = state.replicated_states.load(std::memory_order_relaxed);
    ForEachLink(state, [&](PeerLink& link) { stats.forward_batches += link.forward_writes(); });
    absl::MutexLock lock(&state.mu);
    stats.replication_lag_ns = state.replication_lag_ns;
    return stats;
  }

  void PeerIsUp(int member) override {
    if (absl::StatusOr<MemberState*> state = MemberAt(member); state.ok()) {
      ForEachLink(**state, [](PeerLink& link) { link.EndBackoff(); });
    }
  }

  void SetMember(int member, const std::string& id, const std::string& address) override {
    if (member < 0 || member >= kMaxMembers || member == options_.self || shut_down_.load()) {
      return;
    }
    SetSlot(member, id, address);
    if (server_ != nullptr) {
      std::vector<std::string> ids = server_->members();
      ids.resize(std::max<size_t>(ids.size(), member + 1));
      ids[member] = id;
      server_->SetMembers(std::move(ids));
    }
  }

  Flushed FlushReplication(absl::Duration timeout) override {
    std::vector<std::shared_ptr<MemberState>> states;
    for (int i = 0; i < kMaxMembers; ++i) {
      if (MemberState* state = current_[i].load(std::memory_order_acquire); state != nullptr) {
        states.push_back(state->shared_from_this());
      }
    }
    auto acknowledged = [&states] {
      Flushed sum;
      for (const auto& state : states) {
        sum.states += state->replicated_states.load(std::memory_order_relaxed);
        sum.bytes += state->replicated_bytes.load(std::memory_order_relaxed);
      }
      return sum;
    };
    const Flushed before = acknowledged();
    for (const auto& state : states) {
      asio::post(state->link->loop(), [this, state] { SendReplication(state); });
    }
    const absl::Time deadline = absl::Now() + timeout;
    for (const auto& state : states) {
      absl::MutexLock lock(&state->mu);
      state->mu.AwaitWithDeadline(absl::Condition(
                                      +[](MemberState* s) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                                        return s->replication.empty() && !s->replication_in_flight;
                                      },
                                      state.get()),
                                  deadline);
    }
    const Flushed after = acknowledged();
    return Flushed{after.states - before.states, after.bytes - before.bytes};
  }

  void TopRefused(int member, absl::Duration timeout, TopRefusedDone done) override {
    absl::StatusOr<MemberState*> state = MemberAt(member);
    if (!state.ok()) {
      std::move(done)(state.status());
      return;
    }
    AskTopRefused(*(*state)->link, options_.self_id, (*state)->id, timeout, std::move(done));
  }

  PeerAuthStats GetAuthStats() const override {
    auto count = [this](AuthFailure reason) {
      return shared_->auth.failures[static_cast<int>(reason)].load(std::memory_order_relaxed);
    };
    return PeerAuthStats{count(AuthFailure::kBadKey), count(AuthFailure::kNotMember),
                         count(AuthFailure::kVersion), count(AuthFailure::kMalformed)};
  }

 private:
  PeerLinkOptions LinkOptions(const MemberState& member) const {
    PeerLinkOptions link;
    link.self_id = options_.self_id;
    link.member_id = member.id;
    link.address = member.address;
    link.key = options_.cluster_key;
    link.connect_timeout = options_.forward_timeout;
    link.max_queued_bytes = options_.max_queued_bytes;
    link.max_pending = options_.max_queued_frames;
    link.min_backoff = options_.min_reconnect_backoff;
    link.max_backoff = options_.max_reconnect_backoff;
    link.auth = &shared_->auth;
    link.tls = client_tls_;
    return link;
  }

  // Returns the member's state, or an error for self, an unknown member, or before Start.
  absl::StatusOr<MemberState*> MemberAt(int member) const {
    MemberState* state = member < 0 || member >= kMaxMembers
                             ? nullptr
                             : current_[member].load(std::memory_order_acquire);
    if (state == nullptr) {
      return absl::UnavailableError(absl::StrCat("no peer link for member ", member));
    }
    return state;
  }

  // Makes `id` at `address` the member in `slot` ("" for none): a new state and link; the old
  // one's link closes (its calls fail over) and the state stays until the transport goes, since
  // callbacks may still hold it.
  void SetSlot(int slot, const std::string& id, const std::string& address) {
    std::shared_ptr<MemberState> member;
    if (!id.empty()) {
      member = std::make_shared<MemberState>();
      member->index = slot;
      member->id = id;
      member->address = address;
      member->link = PeerLink::Create(LinkOptions(*member), io_.context(0));
    }
    MemberState* old = current_[slot].exchange(member.get(), std::memory_order_acq_rel);
    if (member != nullptr) {
      absl::MutexLock lock(&states_mu_);
      states_.push_back(std::move(member));
    }
    if (old != nullptr) {
      old->link->Close();
    }
  }

  // Returns the link to `state`'s member on `loop`, made on first use; null once shut down.
  // Runs fn on every link to `state`'s member: its own and each caller loop's (ForwardAsync).
  template <typename Fn>
  void ForEachLink(const MemberState& state, Fn fn) const {
    fn(*state.link);
    absl::MutexLock lock(&links_mu_);
    for (const auto& [loop, links] : loop_links_) {
      if (state.index < static_cast<int>(links.size()) && links[state.index].member == &state) {
        fn(*links[state.index].link);
      }
    }
  }

  std::shared_ptr<PeerLink> LinkFor(const MemberState& state, asio::io_context& loop) {
    absl::MutexLock lock(&links_mu_);
    if (shut_down_.load()) {
      return nullptr;
    }
    std::vector<LoopLink>& links = loop_links_[&loop];
    if (links.empty()) {
      links.resize(kMaxMembers);
    }
    LoopLink& link = links[state.index];
    if (link.member != &state) {  // first use, or the slot has a new member
      if (link.link != nullptr) {
        link.link->Close();
      }
      link.member = &state;
      link.link = PeerLink::Create(LinkOptions(state), loop);
    }
    return link.link;
  }

  static void CountForward(MemberState& state, const absl::Status& status) {
    state.forwarded_txns.fetch_add(1, std::memory_order_relaxed);
    if (!status.ok()) {
      state.forward_errors.fetch_add(1, std::memory_order_relaxed);
    }
  }

  // Sends a call on the member's own link and waits (forward_timeout) for its answer.
  absl::Status CallAndWait(int member, FrameType type, FrameType answer_type,
                           const google::protobuf::MessageLite& request,
                           google::protobuf::Message* response) {
    FG_ASSIGN_OR_RETURN(MemberState * state, MemberAt(member));
    struct Waiter {
      absl::Notification done;
      absl::Status status;
      std::unique_ptr<google::protobuf::Message> response;
    };
    auto waiter = std::make_shared<Waiter>();
    waiter->response.reset(response->New());
    const std::string id = state->id;
    FG_RETURN_IF_ERROR(state->link->Call(
        type, request, options_.forward_timeout,
        [waiter, answer_type, id](absl::Status status, const Frame& frame) {
          waiter->status =
              DecodeAnswer(std::move(status), frame, answer_type, waiter->response.get(), id);
          waiter->done.Notify();
        }));
    if (!waiter->done.WaitForNotificationWithTimeout(options_.forward_timeout +
                                                     absl::Milliseconds(100))) {
      return absl::DeadlineExceededError(absl::StrCat("no answer from ", id));
    }
    FG_RETURN_IF_ERROR(waiter->status);
    response->CopyFrom(*waiter->response);
    return absl::OkStatus();
  }

  // Runs `fn` on `loop` after options_.background_delay (at once, on its next turn, when 0):
  // replication and reports wait that long so that more of them share a frame.
  template <typename Fn>
  void Later(asio::io_context& loop, Fn fn) {
    if (options_.background_delay <= absl::ZeroDuration()) {
      asio::post(loop, std::move(fn));
      return;
    }
    auto timer = std::make_shared<asio::steady_timer>(loop);
    timer->expires_after(absl::ToChronoNanoseconds(options_.background_delay));
    timer->async_wait([timer, fn = std::move(fn)](boost::system::error_code ec) mutable {
      if (!ec) {
        fn();
      }
    });
  }

  // On the transport's io thread: sends the queued states as one batch unless one is in flight
  // (one at a time, so a replica applies a key's states in order).
  void SendReplication(std::shared_ptr<MemberState> state) {
    pb::ReplicateRequest request;
    absl::Time oldest;
    size_t count = 0;
    {
      absl::MutexLock lock(&state->mu);
      state->replication_posted = false;
      if (state->replication_in_flight || state->replication.empty()) {
        return;
      }
      for (const auto& [key, record] : state->replication) {
        ToProto(record, request.add_states());
      }
      count = state->replication.size();
      state->replication.clear();
      oldest = state->replication_oldest;
      state->replication_in_flight = true;
    }
    request.set_now_ns(options_.clock->NowNs());
    auto shared = shared_;
    const size_t bytes = request.ByteSizeLong();
    absl::Status queued = state->link->Call(
        FrameType::kReplicate, request, options_.forward_timeout,
        [this, state, shared, count, bytes, oldest](absl::Status status, const Frame& frame) {
          pb::ReplicateResponse response;
          status = DecodeAnswer(std::move(status), frame, FrameType::kReplicateAnswer, &response,
                                state->id);
          if (status.ok() && response.corrections_size() > 0) {
            std::vector<StateRecord> records;
            for (const pb::State& s : response.corrections()) {
              if (absl::StatusOr<StateRecord> record = FromProto(s); record.ok()) {
                records.push_back(*record);
              }
            }
            shared->WithHandler([&](PeerHandler* h) { h->HandleCorrections(records); });
          }
          bool more = false;
          {
            absl::MutexLock lock(&state->mu);
            state->replication_in_flight = false;
            if (status.ok()) {
              state->replicated_states.fetch_add(count, std::memory_order_relaxed);
              state->replicated_bytes.fetch_add(bytes, std::memory_order_relaxed);
              state->replication_lag_ns = absl::ToInt64Nanoseconds(absl::Now() - oldest);
            }
            more = !state->replication.empty() && !state->replication_posted;
            state->replication_posted |= more;
          }
          if (more) {
            // This runs on the link's loop, which outlives the transport only when the
            // transport is being destroyed (then the loop is stopped before it runs).
            Later(state->link->loop(), [this, state] { SendReplication(state); });
          }
        });
    if (!queued.ok()) {
      absl::MutexLock lock(&state->mu);
      state->replication_in_flight = false;
    }
  }

  // Sends every queued report (in frames of at most kMaxTxnsPerFrame transactions).
  void SendReports(const std::shared_ptr<MemberState>& state) {
    std::vector<StoreOp> ops;
    uint64_t through;
    {
      absl::MutexLock lock(&state->mu);
      state->reports_posted = false;
      ops.swap(state->reports);
      through = state->reports_queued;
    }
    for (size_t start = 0; start < ops.size(); start += kMaxTxnsPerFrame) {
      const size_t end = std::min(ops.size(), start + kMaxTxnsPerFrame);
      pb::ForwardRequest request;
      request.set_report(true);
      for (size_t i = start; i < end; ++i) {
        ToProto(ops[i], request.add_txns()->add_ops());
      }
      const uint64_t done_through = end == ops.size() ? through : 0;
      auto mark = [state, done_through] { ReportsDone(*state, done_through); };
      absl::Status queued =
          state->link->Call(FrameType::kForward, request, options_.forward_timeout,
                            [mark](absl::Status, const Frame&) { mark(); });
      if (!queued.ok()) {
        mark();
      }
    }
    if (ops.empty()) {
      ReportsDone(*state, through);
    }
  }

  // Records reports acknowledged (or given up) through `through`, and runs the flushes that
  // waited for them on their loops.
  static void ReportsDone(MemberState& state, uint64_t through) {
    std::vector<MemberState::FlushWaiter> ready;
    {
      absl::MutexLock lock(&state.mu);
      state.reports_done = std::max(state.reports_done, through);
      auto& waiters = state.flush_waiters;
      for (auto it = waiters.begin(); it != waiters.end();) {
        if (it->target <= state.reports_done) {
          ready.push_back(std::move(*it));
          it = waiters.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (MemberState::FlushWaiter& waiter : ready) {
      asio::post(*waiter.loop, [done = std::move(waiter.done)]() mutable { std::move(done)(); });
    }
  }

  const TcpPeerTransportOptions options_;
  std::shared_ptr<Shared> shared_;
  // Peer TLS (both null when plain): the listener's, and the one every link dials with.
  std::shared_ptr<net::TlsContext> server_tls_;
  std::shared_ptr<net::TlsContext> client_tls_;
  net::IoThreads io_;  // the members' own links run here
  // The member in each slot (null: self or none); every state ever made is kept in states_.
  std::array<std::atomic<MemberState*>, kMaxMembers> current_{};
  absl::Mutex states_mu_;
  std::vector<std::shared_ptr<MemberState>> states_ ABSL_GUARDED_BY(states_mu_);
  std::unique_ptr<PeerServer> server_;
  std::atomic<bool> shut_down_{false};
  mutable absl::Mutex links_mu_;
  // ForwardAsync's links: per caller loop, by slot, each for the member state it was made for.
  struct LoopLink {
    const MemberState* member = nullptr;
    std::shared_ptr<PeerLink> link;
  };
  absl::flat_hash_map<asio::io_context*, std::vector<LoopLink>> loop_links_
      ABSL_GUARDED_BY(links_mu_);
};

}  // namespace

std::unique_ptr<PeerTransport> NewTcpPeerTransport(TcpPeerTransportOptions options) {
  return std::make_unique<TcpPeerTransport>(std::move(options));
}

}  // namespace floodgate::cluster
