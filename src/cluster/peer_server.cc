#include "src/cluster/peer_server.h"

#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <memory>
#include <utility>

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "src/cluster/peer_wire.h"
#include "src/common/rate_limited_log.h"

namespace floodgate::cluster {

namespace asio = boost::asio;
namespace pb = ::floodgate::peer::v1;
using boost::system::error_code;

namespace {

constexpr int kInlineOps = 4;
constexpr size_t kMaxOpsPerTxn = 256;
constexpr int kMaxTxnsPerBatch = 4096;
constexpr size_t kReadChunk = 64 * 1024;
// Answers waiting to be written beyond this: stop reading until the peer reads them.
constexpr size_t kMaxUnwritten = size_t{8} << 20;

std::string EndpointOf(const net::Socket& socket) {
  error_code ec;
  const auto endpoint = socket.remote_endpoint(ec);
  return ec ? std::string("?") : absl::StrCat(endpoint.address().to_string(), ":", endpoint.port());
}

// One accepted peer connection.
class PeerSession final : public net::Connection, public std::enable_shared_from_this<PeerSession> {
 public:
  PeerSession(net::Socket socket, net::ConnectionSlot slot, PeerServer* server)
      : server_(server),
        options_(server->options()),
        tls_(options_.tls),
        stream_(std::move(socket), tls_.get()),
        fd_(stream_.socket().native_handle()),
        slot_(std::move(slot)),
        handshake_(options_.key, options_.self_id, server->members(), options_.protocol_version,
                   /*nonce=*/"", options_.accept_unknown),
        from_(EndpointOf(stream_.socket())) {}

  ~PeerSession() override { slot_.Release(); }

  void Start() {
    deadline_ns_.store(
        server_->listener().now_ns() + absl::ToInt64Nanoseconds(options_.handshake_timeout),
        std::memory_order_relaxed);
    slot_.Register(this);
    if (!stream_.is_tls()) {
      Read();
      return;
    }
    stream_.AsyncHandshake([self = shared_from_this()](error_code ec) {
      if (ec && (self->state_ == State::kClosing || self->server_->listener().draining())) {
        self->Close();  // refused already (no handshake in time), or shutting down
        return;
      }
      if (ec) {
        const bool closed = ec == asio::error::eof || ec == asio::ssl::error::stream_truncated;
        self->Refuse(
            AuthFailure::kMalformed,
            absl::StrCat("TLS handshake failed: ", closed ? "closed by the peer" : ec.message(),
                         " (every member needs --peer-tls-cert, --peer-tls-key and "
                         "--peer-tls-ca, its certificate signed by the same CA)"),
            /*count=*/false);
        self->Close();
        return;
      }
      self->Read();
    });
  }

  void Drain() override { ShutdownSocket(); }
  void ShutdownSocket() override {
    absl::MutexLock lock(&close_mu_);
    if (!closed_) {
      ::shutdown(fd_, SHUT_RDWR);
    }
  }
  int64_t deadline_ns() const override { return deadline_ns_.load(std::memory_order_relaxed); }
  void OnDeadline(int64_t now_ns) override {
    if (!authenticated_.load(std::memory_order_acquire)) {
      Refuse(AuthFailure::kMalformed, "no handshake in time", /*count=*/true);
    }
  }

 private:
  enum class State { kHello, kAuth, kReady, kClosing };

  void Read() {
    if (state_ == State::kClosing) {
      return;
    }
    stream_.async_read_some(asio::buffer(buffer_),
                            [self = shared_from_this()](error_code ec, size_t bytes) {
                              if (ec) {
                                self->Close();
                                return;
                              }
                              self->OnRead(bytes);
                            });
  }

  void OnRead(size_t bytes) {
    if (state_ == State::kHello && !stream_.is_tls() && decoder_.buffered() == 0 && bytes >= 3 &&
        buffer_[0] == 0x16 && buffer_[1] == 0x03) {
      // A TLS record (a ClientHello) where our Hello frame should be.
      Refuse(AuthFailure::kMalformed,
             "it speaks TLS: --peer-tls-* is set there but not here (every member needs "
             "--peer-tls-cert, --peer-tls-key and --peer-tls-ca, or none does)",
             true);
      return;
    }
    decoder_.Feed(std::string_view(buffer_.data(), bytes));
    while (state_ != State::kClosing) {
      Frame frame;
      bool got = false;
      if (absl::Status status = decoder_.Next(&frame, &got); !status.ok()) {
        Refuse(AuthFailure::kMalformed, std::string(status.message()), state_ != State::kReady);
        break;
      }
      if (!got) {
        break;
      }
      OnFrame(frame);
    }
    if (state_ == State::kClosing) {
      return;
    }
    if (!writing_ && !out_.empty()) {
      Write();
    }
    if (out_.size() < kMaxUnwritten) {
      Read();
    } else {
      read_paused_ = true;  // resumed once the answers are written
    }
  }

  void Write() {
    auto buffer = std::make_shared<std::string>();
    buffer->swap(out_);
    writing_ = true;
    asio::async_write(stream_, asio::buffer(*buffer),
                      [self = shared_from_this(), buffer](error_code ec, size_t) {
                        self->writing_ = false;
                        if (ec) {
                          self->Close();
                          return;
                        }
                        if (!self->out_.empty()) {
                          self->Write();
                        }
                        if (self->read_paused_ && self->out_.size() < kMaxUnwritten) {
                          self->read_paused_ = false;
                          self->Read();
                        }
                      });
  }

  // Logs (rate-limited) why the connection is closed, counts a failed handshake, and closes.
  void Refuse(AuthFailure reason, const std::string& why, bool count) {
    if (count && options_.auth != nullptr) {
      options_.auth->Count(reason);
    }
    common::RateLimitedLog::Default().Log(
        common::LogLevel::kWarn, "peer_connection_refused",
        {{"from", from_}, {"peer", client_id_.empty() ? "-" : client_id_}, {"why", why}});
    state_ = State::kClosing;
    ShutdownSocket();
  }

  void Close() {
    state_ = State::kClosing;
    absl::MutexLock lock(&close_mu_);
    if (!closed_) {
      closed_ = true;
      error_code ignored;
      stream_.socket().close(ignored);
    }
  }

  template <typename Message>
  bool Parse(const Frame& frame, Message* message) {
    if (message->ParseFromArray(frame.payload.data(), static_cast<int>(frame.payload.size()))) {
      return true;
    }
    Refuse(AuthFailure::kMalformed,
           absl::StrCat("malformed ", FrameTypeName(static_cast<uint8_t>(frame.type)), " frame"),
           state_ != State::kReady);
    return false;
  }

  void OnFrame(const Frame& frame) {
    AuthError error{AuthFailure::kMalformed, ""};
    switch (state_) {
      case State::kHello: {
        pb::Hello hello;
        if (frame.type != FrameType::kHello) {
          Refuse(AuthFailure::kMalformed,
                 absl::StrCat(FrameTypeName(static_cast<uint8_t>(frame.type)),
                              " frame before the handshake"),
                 true);
          return;
        }
        if (!Parse(frame, &hello)) {
          return;
        }
        absl::StatusOr<pb::Challenge> challenge = handshake_.OnHello(hello, &error);
        if (!challenge.ok()) {
          Refuse(error.reason, error.message, true);
          return;
        }
        client_id_ = handshake_.client_id();
        (void)AppendFrame(FrameType::kChallenge, 0, *challenge, &out_);
        state_ = State::kAuth;
        return;
      }
      case State::kAuth: {
        pb::Auth auth;
        if (frame.type != FrameType::kAuth) {
          Refuse(AuthFailure::kMalformed,
                 absl::StrCat(FrameTypeName(static_cast<uint8_t>(frame.type)),
                              " frame before the handshake ended"),
                 true);
          return;
        }
        if (!Parse(frame, &auth)) {
          return;
        }
        if (!handshake_.OnAuth(auth, &error).ok()) {
          Refuse(error.reason, error.message, true);
          return;
        }
        state_ = State::kReady;
        authenticated_.store(true, std::memory_order_release);
        deadline_ns_.store(net::kNoDeadline, std::memory_order_relaxed);
        return;
      }
      case State::kReady:
        Dispatch(frame);
        return;
      case State::kClosing:
        return;
    }
  }

  void Answer(FrameType type, uint64_t call_id, const google::protobuf::MessageLite& message) {
    if (absl::Status status = AppendFrame(type, call_id, message, &out_); !status.ok()) {
      AnswerError(call_id, absl::ResourceExhaustedError(status.message()));
    }
  }

  void AnswerError(uint64_t call_id, const absl::Status& status) {
    pb::ErrorAnswer error;
    error.set_code(static_cast<uint32_t>(status.code()));
    error.set_message(std::string(status.message()));
    (void)AppendFrame(FrameType::kError, call_id, error, &out_);
  }

  void Dispatch(const Frame& frame) {
    PeerHandler* handler = server_->handler();
    handler->RecordContact(handshake_.client());
    switch (frame.type) {
      case FrameType::kForward: {
        pb::ForwardRequest request;
        if (Parse(frame, &request)) {
          auto batch = std::make_shared<ForwardBatch>();
          if (absl::Status status = ParseForward(request, *batch); !status.ok()) {
            AnswerError(frame.call_id, status);
            return;
          }
          const int64_t now = options_.clock->NowNs();
          if (handler->ForwardMayWait(batch->ops, now)) {
            DecideOffLoop(std::move(batch), now, frame.call_id);
            return;
          }
          pb::ForwardResponse response;
          DecideForward(*batch, now, response);
          Answer(FrameType::kForwardAnswer, frame.call_id, response);
        }
        return;
      }
      case FrameType::kReplicate: {
        pb::ReplicateRequest request;
        if (Parse(frame, &request)) {
          pb::ReplicateResponse response;
          absl::Status status = DoReplicate(request, response);
          if (status.ok()) {
            Answer(FrameType::kReplicateAnswer, frame.call_id, response);
          } else {
            AnswerError(frame.call_id, status);
          }
        }
        return;
      }
      case FrameType::kFetch: {
        pb::FetchRequest request;
        if (Parse(frame, &request)) {
          pb::FetchResponse response;
          const std::vector<uint64_t> keys(request.key_hashes().begin(),
                                           request.key_hashes().end());
          for (const StateRecord& held : handler->HandleFetch(keys, options_.clock->NowNs())) {
            pb::State* out = response.add_states();
            out->set_key_hash(held.key_hash);
            out->set_expiry_ns(held.expiry_ns);
            out->set_data(held.data);
          }
          Answer(FrameType::kFetchAnswer, frame.call_id, response);
        }
        return;
      }
      case FrameType::kPing: {
        pb::PingRequest request;
        if (Parse(frame, &request)) {
          PingInfo ours = handler->HandlePing();
          pb::PingResponse response;
          response.set_node_id(ours.node_id);
          response.set_started_at_ns(ours.started_at_ns);
          response.set_config_fingerprint(ours.config_fingerprint);
          response.set_keys_held(ours.keys_held);
          for (auto& v : ours.config) {
            *response.add_config() = std::move(v);
          }
          Answer(FrameType::kPingAnswer, frame.call_id, response);
        }
        return;
      }
      case FrameType::kPushConfig: {
        pb::PushConfigRequest request;
        if (Parse(frame, &request)) {
          handler->HandlePushConfig(
              std::vector<pb::ConfigChange>(request.changes().begin(), request.changes().end()));
          Answer(FrameType::kPushConfigAnswer, frame.call_id, pb::PushConfigResponse());
        }
        return;
      }
      case FrameType::kGetConfig: {
        pb::GetConfigRequest request;
        if (Parse(frame, &request)) {
          const std::vector<std::string> domains(request.domains().begin(),
                                                 request.domains().end());
          pb::GetConfigResponse response;
          for (auto& change : handler->HandleGetConfig(domains)) {
            *response.add_changes() = std::move(change);
          }
          Answer(FrameType::kGetConfigAnswer, frame.call_id, response);
        }
        return;
      }
      case FrameType::kTopRefused: {
        pb::TopRefusedRequest request;
        if (Parse(frame, &request)) {
          pb::TopRefusedResponse response;
          ToProto(handler->HandleTopRefused(), &response);
          Answer(FrameType::kTopRefusedAnswer, frame.call_id, response);
        }
        return;
      }
      default:
        Refuse(
            AuthFailure::kMalformed,
            absl::StrCat("unexpected ", FrameTypeName(static_cast<uint8_t>(frame.type)), " frame"),
            false);
        return;
    }
  }

  // A forward's transactions, checked and converted: ops[ends[i-1], ends[i]) is transaction i.
  struct ForwardBatch {
    std::vector<StoreOp> ops;
    std::vector<size_t> ends;
    bool report = false;
  };

  // Checks every transaction before any is decided: a bad batch changes nothing.
  static absl::Status ParseForward(const pb::ForwardRequest& request, ForwardBatch& batch) {
    if (request.txns_size() > kMaxTxnsPerBatch) {
      return absl::InvalidArgumentError(absl::StrCat("batch of ", request.txns_size(),
                                                     " transactions; at most ", kMaxTxnsPerBatch));
    }
    batch.report = request.report();
    batch.ends.reserve(request.txns_size());
    for (const pb::Txn& txn : request.txns()) {
      if (txn.ops_size() == 0 || static_cast<size_t>(txn.ops_size()) > kMaxOpsPerTxn) {
        return absl::InvalidArgumentError(
            absl::StrCat("transaction of ", txn.ops_size(), " ops; 1 to ", kMaxOpsPerTxn));
      }
      for (const pb::Op& op : txn.ops()) {
        absl::StatusOr<StoreOp> parsed = FromProto(op);
        if (!parsed.ok()) {
          return absl::InvalidArgumentError(absl::StrCat("bad op: ", parsed.status().message()));
        }
        batch.ops.push_back(*std::move(parsed));
      }
      batch.ends.push_back(batch.ops.size());
    }
    return absl::OkStatus();
  }

  // Decides a checked batch through the handler (on an io thread or off the loop; the handler
  // is thread-safe and this reads nothing of the session's).
  void DecideForward(const ForwardBatch& batch, int64_t now, pb::ForwardResponse& response) {
    absl::InlinedVector<Decision, kInlineOps> decisions;
    size_t begin = 0;
    for (size_t end : batch.ends) {
      const absl::Span<const StoreOp> ops =
          absl::MakeConstSpan(batch.ops).subspan(begin, end - begin);
      begin = end;
      decisions.assign(ops.size(), Decision{});
      const bool committed = server_->handler()->HandleForward(ops, now, absl::MakeSpan(decisions));
      if (batch.report) {
        continue;  // hits admitted elsewhere: counted (if they still fit), nothing to answer
      }
      pb::TxnResult* result = response.add_results();
      result->set_committed(committed);
      for (const Decision& d : decisions) {
        ToProto(d, result->add_decisions());
      }
    }
  }

  // Decides a batch that may wait on another member on the server's off-loop threads, and
  // answers it back on this session's io thread. This io thread goes on reading: it may be the
  // one the other member needs to answer a fetch of ours.
  void DecideOffLoop(std::shared_ptr<const ForwardBatch> batch, int64_t now, uint64_t call_id) {
    server_->RunOffLoop([self = shared_from_this(), executor = stream_.get_executor(),
                         batch = std::move(batch), now, call_id] {
      auto response = std::make_shared<pb::ForwardResponse>();
      self->DecideForward(*batch, now, *response);
      asio::post(executor, [self, response, call_id] {
        if (self->state_ == State::kClosing) {
          return;
        }
        self->Answer(FrameType::kForwardAnswer, call_id, *response);
        if (!self->writing_ && !self->out_.empty()) {
          self->Write();
        }
      });
    });
  }

  absl::Status DoReplicate(const pb::ReplicateRequest& request, pb::ReplicateResponse& response) {
    std::vector<StateRecord> records;
    records.reserve(request.states_size());
    for (const pb::State& state : request.states()) {
      absl::StatusOr<StateRecord> record = FromProto(state);
      if (!record.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("bad state: ", record.status().message()));
      }
      records.push_back(*record);
    }
    if (!records.empty()) {
      for (const StateRecord& held :
           server_->handler()->HandleReplicate(records, request.now_ns())) {
        ToProto(held, response.add_corrections());
      }
    }
    if (request.adopted_size() > 0) {
      std::vector<StateRecord> adopted;
      adopted.reserve(request.adopted_size());
      for (const pb::State& state : request.adopted()) {
        adopted.push_back(StateRecord{state.key_hash(), {}, state.expiry_ns(), state.data()});
      }
      server_->handler()->HandleAdopt(adopted, request.now_ns());
    }
    return absl::OkStatus();
  }

  PeerServer* const server_;
  const PeerServerOptions& options_;
  const std::shared_ptr<net::TlsContext> tls_;  // kept for the stream; null: plain
  net::Stream stream_;
  const int fd_;
  net::ConnectionSlot slot_;
  ServerHandshake handshake_;
  const std::string from_;
  std::string client_id_;
  State state_ = State::kHello;
  std::atomic<bool> authenticated_{false};
  std::atomic<int64_t> deadline_ns_{net::kNoDeadline};
  FrameDecoder decoder_;
  std::array<char, kReadChunk> buffer_;
  std::string out_;
  bool writing_ = false;
  bool read_paused_ = false;
  absl::Mutex close_mu_;
  bool closed_ ABSL_GUARDED_BY(close_mu_) = false;
};

net::ListenerOptions ListenerOptionsOf(const PeerServerOptions& options) {
  net::ListenerOptions listener;
  listener.address = options.address;
  listener.name = "peer listener";
  listener.protocol = "peer";
  listener.io_model = net::IoModel::kPerThread;
  listener.io_threads = options.io_threads;
  listener.sweep_interval = net::SweepInterval(options.handshake_timeout);
  return listener;
}

}  // namespace

PeerServer::PeerServer(PeerServerOptions options, PeerHandler* handler)
    : options_(std::move(options)),
      handler_(handler),
      listener_(ListenerOptionsOf(options_),
                [this](net::Accepted accepted) {
                  error_code ignored;
                  accepted.socket.set_option(asio::ip::tcp::no_delay(true), ignored);
                  std::make_shared<PeerSession>(std::move(accepted.socket),
                                                std::move(accepted.slot), this)
                      ->Start();
                }),
      members_(options_.members),
      off_loop_(static_cast<size_t>(std::max(1, options_.off_loop_threads))) {}

PeerServer::~PeerServer() { Shutdown(); }

void PeerServer::RunOffLoop(absl::AnyInvocable<void() &&> work) {
  asio::post(off_loop_, [work = std::move(work)]() mutable { std::move(work)(); });
}

std::vector<std::string> PeerServer::members() const {
  absl::MutexLock lock(&members_mu_);
  return members_;
}

void PeerServer::SetMembers(std::vector<std::string> members) {
  absl::MutexLock lock(&members_mu_);
  members_ = std::move(members);
}

absl::Status PeerServer::Start() { return listener_.Start(); }

void PeerServer::Shutdown() {
  // Off-loop work posts its answers to the listener's io threads: it ends first. Work not yet
  // started is dropped (its callers time out, as for any answer a closing node does not send).
  off_loop_.stop();
  off_loop_.join();
  listener_.Shutdown(absl::Milliseconds(200));
}

}  // namespace floodgate::cluster
