#include "src/server/server.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "floodgate/status_macros.h"

namespace floodgate::server {

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const ServerOptions& options) {
  std::unique_ptr<Server> server(new Server());
  StoreOptions store_options;
  // --max-memory is the process's budget: the key tables get what is left after a headroom for
  // the process itself (about 15 MiB), connections, buffers and a shard's table while it is
  // rehashed: 1/8 of the budget, at least 24 MiB, at most half (docs/overload.md).
  constexpr size_t kMinHeadroom = size_t{24} << 20;
  const size_t headroom =
      std::min(std::max(options.max_memory_bytes / 8, kMinHeadroom), options.max_memory_bytes / 2);
  store_options.max_memory_bytes = options.max_memory_bytes - headroom;
  FG_ASSIGN_OR_RETURN(server->store_, NewShardedStore(store_options));
  Store* store = server->store_.get();
  KeyHasher hasher = KeyHasher::Random();
  if (!options.peers.empty()) {
    cluster::ClusterOptions cluster_options;
    FG_ASSIGN_OR_RETURN(cluster_options.members, cluster::ParsePeers(options.peers));
    if (options.node_id.empty()) {
      return absl::InvalidArgumentError("cluster mode (--peers) needs --node-id");
    }
    cluster_options.self_id = options.node_id;
    cluster_options.listen_address = options.peer_address;
    cluster_options.replicas = options.replicas;
    cluster_options.batch_max = options.forward_batch_max;
    cluster_options.batching = options.forward_batch_max > 1;
    // Every node must hash keys alike to agree on owners.
    std::string key = options.cluster_key;
    if (key.empty()) {
      std::vector<std::string> ids;
      for (const cluster::Member& m : cluster_options.members) {
        ids.push_back(m.id);
      }
      key = absl::StrCat("floodgate-cluster:", absl::StrJoin(ids, ","));
    }
    hasher = KeyHasher(cluster::NodeSeed(key + "/k0"), cluster::NodeSeed(key + "/k1"));
    FG_ASSIGN_OR_RETURN(server->cluster_, cluster::ClusterStore::Start(std::move(cluster_options),
                                                                       server->store_.get()));
    store = server->cluster_.get();
  }
  server->limiter_ = std::make_unique<limiter::Limiter>(store, hasher, nullptr);
  FG_ASSIGN_OR_RETURN(server->config_,
                      ConfigManager::Create(options.config_path, server->limiter_.get()));

  HttpServerOptions http_options;
  http_options.address = options.http_address;
  http_options.threads = options.http_threads;
  if (server->cluster_ != nullptr) {
    // A forwarded check waits for its owner: rate limit calls run on workers of their own, so
    // that the HTTP threads never block (same sizes as the gRPC front end's pool).
    server->http_workers_ = std::make_unique<common::WorkerPool>(32, 1024);
    http_options.workers = server->http_workers_.get();
    server->config_sync_ = std::make_unique<ClusterConfigSync>(
        options.node_id, server->config_.get(), server->limiter_.get());
    server->cluster_->SetConfigSync(server->config_sync_.get());
  }
  server->service_ = NewRateLimitService(server->limiter_.get(), options.limits, &server->metrics_);
  server->admin_ =
      std::make_unique<NodeAdmin>(server->config_.get(), server->limiter_.get(), &server->metrics_,
                                  server->cluster_.get(), server->config_sync_.get());
  http_options.admin_token = options.admin_token;
  http_options.max_connections = options.max_connections;
  http_options.max_connections_per_client = options.max_connections_per_client;
  server->http_ = std::make_unique<HttpServer>(http_options, server->service_.get(),
                                               server->admin_.get(), &server->metrics_);
  FG_RETURN_IF_ERROR(server->http_->Start());

  GrpcServerOptions grpc_options;
  grpc_options.address = options.grpc_address;
  grpc_options.io_threads = options.grpc_threads;
  grpc_options.max_connections = options.max_connections;  // native gRPC only
  grpc_options.max_connections_per_client = options.max_connections_per_client;
  if (server->cluster_ != nullptr) {
    // A forwarded check waits for its owner: checks run on a worker pool, not the io threads.
    grpc_options.worker_threads = 32;
  }
  if (!options.grpc_impl.empty()) {
    FG_ASSIGN_OR_RETURN(grpc_options.impl, ParseGrpcImpl(options.grpc_impl));
  }
  server->grpc_ =
      std::make_unique<GrpcServer>(grpc_options, server->service_.get(), &server->metrics_);
  FG_RETURN_IF_ERROR(server->grpc_->Start());

  server->config_->StartWatching(options.config_poll);
  return server;
}

void Server::Shutdown(absl::Duration grace) {
  if (shut_down_) {
    return;
  }
  shut_down_ = true;
  config_->Stop();
  // Both front ends drain at once: each stops taking new work and finishes what it has.
  grpc_->Shutdown(grace);
  http_->Shutdown(grace);
  if (cluster_ != nullptr) {
    cluster_->Shutdown();
  }
}

Server::~Server() {
  if (http_ != nullptr && grpc_ != nullptr && config_ != nullptr) {
    Shutdown(absl::Seconds(1));
  }
}

}  // namespace floodgate::server
