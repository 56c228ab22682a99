#pragma once

// The native gRPC front end: a unary gRPC server of our own on HTTP/2 (libnghttp2) and
// Boost.Asio, serving envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit and
// grpc.health.v1.Health/Check over h2c with prior knowledge (what gRPC clients and Envoy use on
// insecure channels). Wire format: grpc_wire.h; design and limits: docs/grpc.md.
//
// Threads: `GrpcServerOptions::io_threads` threads, each with its own io_context; connections
// are spread across them round-robin and stay on theirs. A call is decoded, decided, encoded and
// written on its connection's thread, with no hand-off; the responses one read produced leave in
// one socket write. In cluster mode a check that waits for its key's owner is suspended
// (RateLimitService::ShouldRateLimitAsync): the thread goes on serving, and the answer resumes
// the call on the same thread, which writes it (past max_checks_in_flight calls at once, a call
// is shed). With worker_threads > 0 (for a service whose calls block) ShouldRateLimit calls are
// decided on a worker pool instead, with a bounded queue (max_queued, max_queue_delay; past them
// a call is shed), and their answers posted back to the connection's thread; health checks stay
// on the io threads.
//
// Thread-safety: Start/Shutdown from one thread; everything else runs on the io threads.

#include <memory>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "src/frontends/grpc/grpc_service.h"
#include "src/net/server.h"
#include "src/service/metrics.h"
#include "src/service/rate_limit_service.h"

namespace floodgate::frontends {

// Returns the native gRPC server (not started). `service` and `metrics` must outlive it. Uses
// options.address, max_receive_bytes, io_threads, max_concurrent_streams, max_connections,
// max_connections_per_client, idle_timeout, request_timeout, clock, max_checks_in_flight,
// worker_threads, max_queued and max_queue_delay. Its drain also sends every connection a GOAWAY.
std::unique_ptr<net::Server> NewNativeGrpcServer(GrpcServerOptions options,
                                                 service::RateLimitService* service,
                                                 service::ServerMetrics* metrics);

}  // namespace floodgate::frontends
