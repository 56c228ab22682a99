#include "src/cluster/grpc_peer_server.h"

#include <chrono>
#include <utility>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "src/cluster/peer_wire.h"

namespace floodgate::cluster {
namespace pb = ::floodgate::peer::v1;

namespace {
constexpr int kInlineOps = 4;
constexpr size_t kMaxOpsPerTxn = 256;
constexpr int kMaxTxnsPerBatch = 4096;
}  // namespace

PeerServer::PeerServer(const GrpcPeerTransportOptions& options, PeerHandler* handler)
    : options_(options), handler_(handler), pool_(8, 10000) {}

absl::Status PeerServer::Start(const std::string& address, int* port) {
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
  // With port 0 in `address`, gRPC picks a free port and writes it to *port.
  if (server_ == nullptr || *port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen for peers on ", address));
  }
  return absl::OkStatus();
}

void PeerServer::Shutdown() {
  if (server_ != nullptr) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
  }
}

grpc::ServerUnaryReactor* PeerServer::Forward(grpc::CallbackServerContext* context,
                                              const pb::ForwardRequest* request,
                                              pb::ForwardResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (!pool_.Submit([this, reactor, request, response] {
        reactor->Finish(DoForward(*request, *response));
      })) {
    reactor->Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "forward queue full"));
  }
  return reactor;
}

grpc::ServerUnaryReactor* PeerServer::Replicate(grpc::CallbackServerContext* context,
                                                const pb::ReplicateRequest* request,
                                                pb::ReplicateResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(DoReplicate(*request, *response));
  return reactor;
}

grpc::ServerUnaryReactor* PeerServer::Fetch(grpc::CallbackServerContext* context,
                                            const pb::FetchRequest* request,
                                            pb::FetchResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(DoFetch(*request, *response));
  return reactor;
}

grpc::ServerUnaryReactor* PeerServer::Ping(grpc::CallbackServerContext* context,
                                           const pb::PingRequest* request,
                                           pb::PingResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  grpc::Status status = CheckHeader(request->protocol_version(), request->from());
  if (status.ok()) {
    PingInfo ours = handler_->HandlePing();
    response->set_node_id(ours.node_id);
    response->set_started_at_ns(ours.started_at_ns);
    for (auto& v : ours.config) {
      *response->add_config() = std::move(v);
    }
  }
  reactor->Finish(status);
  return reactor;
}

grpc::ServerUnaryReactor* PeerServer::PushConfig(grpc::CallbackServerContext* context,
                                                 const pb::PushConfigRequest* request,
                                                 pb::PushConfigResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  grpc::Status status = CheckHeader(request->protocol_version(), request->from());
  if (status.ok()) {
    handler_->HandlePushConfig(
        std::vector<pb::ConfigChange>(request->changes().begin(), request->changes().end()));
  }
  reactor->Finish(status);
  return reactor;
}

grpc::ServerUnaryReactor* PeerServer::GetConfig(grpc::CallbackServerContext* context,
                                                const pb::GetConfigRequest* request,
                                                pb::GetConfigResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  grpc::Status status = CheckHeader(request->protocol_version(), request->from());
  if (status.ok()) {
    const std::vector<std::string> domains(request->domains().begin(), request->domains().end());
    for (auto& change : handler_->HandleGetConfig(domains)) {
      *response->add_changes() = std::move(change);
    }
  }
  reactor->Finish(status);
  return reactor;
}

// Checks the protocol version and the sender, and notes that the sender is alive.
grpc::Status PeerServer::CheckHeader(uint32_t version, const std::string& from) {
  if (version != kProtocolVersion) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        absl::StrCat("peer protocol version ", version, " not supported (this ",
                                     "node speaks ", kProtocolVersion, ")"));
  }
  const auto& members = options_.members;
  for (size_t i = 0; i < members.size(); ++i) {
    if (members[i].id == from) {
      handler_->RecordContact(static_cast<int>(i));
      return grpc::Status::OK;
    }
  }
  return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                      absl::StrCat("unknown node id \"", from, "\" (not in --peers)"));
}

grpc::Status PeerServer::DoForward(const pb::ForwardRequest& request,
                                   pb::ForwardResponse& response) {
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
  const int64_t now = options_.clock->NowNs();
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
    const bool committed = handler_->HandleForward(ops, now, absl::MakeSpan(decisions));
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

grpc::Status PeerServer::DoReplicate(const pb::ReplicateRequest& request,
                                     pb::ReplicateResponse& response) {
  grpc::Status status = CheckHeader(request.protocol_version(), request.from());
  if (!status.ok()) {
    return status;
  }
  std::vector<StateRecord> records;
  records.reserve(request.states_size());
  for (const pb::State& state : request.states()) {
    absl::StatusOr<StateRecord> record = FromProto(state);
    if (!record.ok()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("bad state: ", record.status().message()));
    }
    records.push_back(*record);
  }
  for (const StateRecord& held : handler_->HandleReplicate(records, request.now_ns())) {
    ToProto(held, response.add_corrections());
  }
  return grpc::Status::OK;
}

grpc::Status PeerServer::DoFetch(const pb::FetchRequest& request, pb::FetchResponse& response) {
  grpc::Status status = CheckHeader(request.protocol_version(), request.from());
  if (!status.ok()) {
    return status;
  }
  const std::vector<uint64_t> keys(request.key_hashes().begin(), request.key_hashes().end());
  for (const StateRecord& held : handler_->HandleFetch(keys, options_.clock->NowNs())) {
    pb::State* out = response.add_states();
    out->set_key_hash(held.key_hash);
    out->set_expiry_ns(held.expiry_ns);
    out->set_data(held.data);
  }
  return grpc::Status::OK;
}

}  // namespace floodgate::cluster
