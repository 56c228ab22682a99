#pragma once

// The gRPC front end: envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit and the
// standard grpc.health.v1 service.

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "src/limiter/limiter.h"
#include "src/server/metrics.h"
#include "src/server/request_limits.h"

namespace floodgate::server {

struct GrpcServerOptions {
  std::string address = "127.0.0.1:8081";  // port 0 picks a free one
  RequestLimits limits;
  size_t max_receive_bytes = 1 << 20;  // larger messages get RESOURCE_EXHAUSTED
  // Cluster mode: decide on this many threads of our own instead of gRPC's (a forwarded check
  // blocks its thread; gRPC's must stay free to answer peers). 0 decides inline.
  int worker_threads = 0;
  size_t max_queued = 10000;  // checks waiting for a worker; beyond it: RESOURCE_EXHAUSTED
};

// Owns a grpc::Server. Start/Shutdown from one thread; calls run on gRPC's threads.
class GrpcServer {
 public:
  GrpcServer(GrpcServerOptions options, limiter::Limiter* limiter, ServerMetrics* metrics);
  ~GrpcServer();
  absl::Status Start();
  int port() const;
  // Reports NOT_SERVING on the health service, then lets in-flight calls finish within `grace`.
  void Shutdown(absl::Duration grace);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace floodgate::server
