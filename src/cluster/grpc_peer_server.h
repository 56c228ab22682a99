#pragma once

// The grpc++ peer server of GrpcPeerTransport (internal to grpc_peer_transport.cc): answers the
// other members' Forward, Replicate, Fetch, Ping, PushConfig and GetConfig calls through a
// PeerHandler, after checking the protocol version and that the sender is a member.
//
// Forward batches run on a worker pool of their own: a restarted owner's warm-up fetch waits on
// other nodes, and must not hold gRPC's threads while it does. Other calls are answered on
// gRPC's threads.
//
// Thread-safety: gRPC calls it from many threads; Start and Shutdown from one.

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "floodgate/peer/v1/peer.grpc.pb.h"
#include "src/cluster/grpc_peer_transport.h"
#include "src/cluster/peer_transport.h"
#include "src/common/worker_pool.h"

namespace floodgate::cluster {

class PeerServer final : public peer::v1::Peer::CallbackService {
 public:
  // `options` and `handler` must outlive the server.
  PeerServer(const GrpcPeerTransportOptions& options, PeerHandler* handler);

  // Listens on `address` (port 0: a free port) and writes the bound port to *port.
  absl::Status Start(const std::string& address, int* port);
  // Stops listening; calls in progress get 500 ms to finish.
  void Shutdown();

  grpc::ServerUnaryReactor* Forward(grpc::CallbackServerContext* context,
                                    const peer::v1::ForwardRequest* request,
                                    peer::v1::ForwardResponse* response) override;
  grpc::ServerUnaryReactor* Replicate(grpc::CallbackServerContext* context,
                                      const peer::v1::ReplicateRequest* request,
                                      peer::v1::ReplicateResponse* response) override;
  grpc::ServerUnaryReactor* Fetch(grpc::CallbackServerContext* context,
                                  const peer::v1::FetchRequest* request,
                                  peer::v1::FetchResponse* response) override;
  grpc::ServerUnaryReactor* Ping(grpc::CallbackServerContext* context,
                                 const peer::v1::PingRequest* request,
                                 peer::v1::PingResponse* response) override;
  grpc::ServerUnaryReactor* PushConfig(grpc::CallbackServerContext* context,
                                       const peer::v1::PushConfigRequest* request,
                                       peer::v1::PushConfigResponse* response) override;
  grpc::ServerUnaryReactor* GetConfig(grpc::CallbackServerContext* context,
                                      const peer::v1::GetConfigRequest* request,
                                      peer::v1::GetConfigResponse* response) override;

 private:
  // Checks the protocol version and the sender, and notes that the sender is alive.
  grpc::Status CheckHeader(uint32_t version, const std::string& from);
  grpc::Status DoForward(const peer::v1::ForwardRequest& request,
                         peer::v1::ForwardResponse& response);
  grpc::Status DoReplicate(const peer::v1::ReplicateRequest& request,
                           peer::v1::ReplicateResponse& response);
  grpc::Status DoFetch(const peer::v1::FetchRequest& request, peer::v1::FetchResponse& response);

  const GrpcPeerTransportOptions& options_;
  PeerHandler* const handler_;
  common::WorkerPool pool_;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace floodgate::cluster
