#pragma once

// The gRPC front end: envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit and the
// standard grpc.health.v1 service, in one of two implementations: our own HTTP/2 server
// (grpc_native.h, the default) or grpc++'s (callback API). Both call the rate limit service
// (src/service/rate_limit_service.h). In cluster mode, where a check may wait for a peer, the
// native server suspends the call and goes on serving (max_checks_in_flight); grpc++'s decides
// on a worker pool of its own (GrpcServerOptions::worker_threads). See docs/grpc.md.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "src/net/server.h"
#include "src/net/tls.h"
#include "src/service/metrics.h"
#include "src/service/rate_limit_service.h"

namespace floodgate::frontends {

enum class GrpcImpl {
  kNative,  // grpc_native.h: nghttp2 + Boost.Asio, decides inline on the connection's thread
  kGrpcpp,  // grpc++ callback API
};

// Parses "native" or "grpcpp". InvalidArgument otherwise.
absl::StatusOr<GrpcImpl> ParseGrpcImpl(std::string_view name);
std::string_view GrpcImplName(GrpcImpl impl);

struct GrpcServerOptions {
  GrpcImpl impl = GrpcImpl::kNative;
  std::string address = "127.0.0.1:8081";  // port 0 picks a free one
  size_t max_receive_bytes = 1 << 20;      // larger messages get RESOURCE_EXHAUSTED
  // Cluster mode with grpc++ (or a service whose calls block): decide on this many threads of
  // our own instead of the io threads (a forwarded check blocks its thread). 0 decides inline.
  int worker_threads = 0;
  // Checks waiting for a worker. Beyond it, and for a check that waited longer than
  // max_queue_delay, the check is shed: decided at once without waiting for other nodes (keys
  // another node owns go by their limit's failure mode; see CheckRequest::shed).
  size_t max_queued = 1024;
  absl::Duration max_queue_delay = absl::Milliseconds(20);  // Envoy's default call timeout
  // Set: gRPC over TLS 1.2+ (ALPN "h2"); with a client CA, clients must present a certificate
  // it signed (mTLS). Both servers; the handshake must finish within request_timeout. A client
  // SAN (its certificate must carry that name): the native server only; grpc++'s Start refuses
  // it (InvalidArgument). docs/tls.md.
  std::optional<net::TlsCredentials> tls;
  // When set, the native server's health service answers NOT_SERVING while it returns false
  // (the server's --healthy-with-config). Asked only by health checks, from io threads.
  std::function<bool()> ready;

  // Timeouts (docs/grpc.md, "Limits and timeouts"). A connection with no call open for this
  // long (since its last call ended; PINGs and other frames do not count) gets GOAWAY and is
  // closed. grpc++ too (max connection idle, and the keepalive PING interval).
  absl::Duration idle_timeout = absl::Minutes(5);
  // Within this: the connection preface and the client's SETTINGS from the accept; every frame
  // from its first byte (else the connection is closed); a call's request from its HEADERS and
  // its response's leaving (else the stream is reset, CANCEL). Enforced with about a quarter of
  // the smaller timeout's resolution (at most 1 s). grpc++ uses it for its handshake timeout
  // and the keepalive PING's answer only.
  absl::Duration request_timeout = absl::Seconds(10);

  // Native implementation only.
  int io_threads = 2;  // connections are spread across them
  // Rate limit calls suspended at once (cluster mode: waiting for a key's owner) on the whole
  // server; beyond it a call is shed, as past max_queued.
  size_t max_checks_in_flight = 1024;
  uint32_t max_concurrent_streams = 1000;  // per connection (HTTP/2 SETTINGS)
  size_t max_connections = 20000;          // accepted connections beyond this are closed at once
  // Connections one client address may hold at once; beyond it new ones are closed at once.
  // 0: no cap.
  size_t max_connections_per_client = 0;
  // The clock the timeouts are read against (ns, monotonic). Null: the steady clock. Tests
  // inject a fake one. (grpc++ reads its own.)
  std::function<int64_t()> clock;
};

// Returns the gRPC server of options.impl (not started). `service` and `metrics` must outlive
// it. Its drain reports NOT_SERVING on the health service first.
std::unique_ptr<net::Server> NewGrpcServer(GrpcServerOptions options,
                                           service::RateLimitService* service,
                                           service::ServerMetrics* metrics);

}  // namespace floodgate::frontends
