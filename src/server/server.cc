#include "src/server/server.h"

#include "floodgate/status_macros.h"

namespace floodgate::server {

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const ServerOptions& options) {
  std::unique_ptr<Server> server(new Server());
  StoreOptions store_options;
  store_options.max_memory_bytes = options.max_memory_bytes;
  FG_ASSIGN_OR_RETURN(server->store_, NewShardedStore(store_options));
  server->limiter_ =
      std::make_unique<limiter::Limiter>(server->store_.get(), KeyHasher::Random(), nullptr);
  FG_ASSIGN_OR_RETURN(server->config_,
                      ConfigManager::Create(options.config_path, server->limiter_.get()));

  HttpServerOptions http_options;
  http_options.address = options.http_address;
  http_options.threads = options.http_threads;
  http_options.admin_token = options.admin_token;
  http_options.limits = options.limits;
  server->http_ = std::make_unique<HttpServer>(http_options, server->limiter_.get(),
                                               server->config_.get(), &server->metrics_);
  FG_RETURN_IF_ERROR(server->http_->Start());

  GrpcServerOptions grpc_options;
  grpc_options.address = options.grpc_address;
  grpc_options.limits = options.limits;
  server->grpc_ =
      std::make_unique<GrpcServer>(grpc_options, server->limiter_.get(), &server->metrics_);
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
}

Server::~Server() {
  if (http_ != nullptr && grpc_ != nullptr && config_ != nullptr) {
    Shutdown(absl::Seconds(1));
  }
}

}  // namespace floodgate::server
