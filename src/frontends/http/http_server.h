#pragma once

// The HTTP front end (Boost.Beast): envoyproxy/ratelimit's POST /json, the native check
// (POST /v1/check, GET /v1/check?domain=D&KEY=VALUE...), POST /v1/release, /healthcheck,
// /metrics, GET /v1/config, PUT/DELETE /v1/config/{domain}. Keep-alive; many connections.
// See docs/http_api.md.
//
// Thread-safety: Start/Shutdown from one thread; handlers run on the server's own threads.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "src/common/worker_pool.h"
#include "src/net/server.h"
#include "src/net/tls.h"
#include "src/service/admin_api.h"
#include "src/service/metrics.h"
#include "src/service/rate_limit_service.h"

namespace floodgate::frontends {

struct HttpServerOptions {
  std::string address = "127.0.0.1:8080";  // host:port; port 0 picks a free one
  int threads = 2;
  // When set, admin calls (PUT/DELETE /v1/config/...) need `Authorization: Bearer <token>`.
  std::string admin_token;
  size_t max_connections = 20000;  // accepted connections beyond this are closed at once
  // Connections one client address may hold at once; beyond it new ones are closed at once.
  // 0: no cap. (Behind a proxy every client shares the proxy's address: size it for that.)
  size_t max_connections_per_client = 0;
  // A connection is closed when reading one request (or waiting for it) or writing one response
  // takes longer than this. Enforced with about a quarter of this resolution.
  absl::Duration idle_timeout = absl::Seconds(60);
  // Request line plus headers above this are answered 431 and the connection is closed.
  uint32_t max_header_bytes = 8 * 1024;
  // When the service may suspend a call (cluster mode: a check waits for its key's owner), the
  // io thread goes on serving while it waits; beyond this many rate limit calls in flight at
  // once, a call is shed: decided at once, waiting for no other node
  // (limiter::CheckRequest::shed).
  size_t max_checks_in_flight = 1024;
  // For a service whose calls block instead (a store without an asynchronous apply): rate
  // limit calls run on these workers, so that the io threads never block. A call that finds
  // the pool's queue full, or that waited in it longer than max_queue_delay, is shed. Null:
  // calls are answered on the io threads. Must outlive the server.
  common::WorkerPool* workers = nullptr;
  absl::Duration max_queue_delay = absl::Milliseconds(20);
  // Set: HTTPS only (HTTP/1.1 over TLS 1.2+, ALPN "http/1.1"); with a client CA, clients must
  // present a certificate it signed (mTLS). The handshake must finish within idle_timeout.
  // Start fails when OpenSSL refuses the credentials. docs/tls.md.
  std::optional<net::TlsCredentials> tls;
  // When set, /healthcheck answers 503 NOT READY while it returns false (the server's
  // --healthy-with-config: no domain loaded). Asked only by health checks, from io threads.
  std::function<bool()> ready;
};

// Returns the HTTP server (not started). Rate limit calls go to `service`, admin calls to
// `admin`; the server counts its connections and the calls it answers itself in `metrics`. All
// pointers must outlive the server. Request bodies are capped at
// service->limits().max_body_bytes (PUT /v1/config/{domain}: max_config_body_bytes). While it
// drains, the healthcheck answers 503.
std::unique_ptr<net::Server> NewHttpServer(HttpServerOptions options,
                                           service::RateLimitService* service,
                                           service::AdminApi* admin,
                                           service::ServerMetrics* metrics);

class HttpHandlers;

namespace http_internal {

// Reads `bytes` as everything a client sent on one connection, as the server's session reads
// it (the same parser, header checks and limits), answers each whole request with `handlers`
// and appends each framed response to `out`: the session's parse-and-answer without a socket,
// for the fuzz target (fuzz/http_request_fuzzer.cc). Stops after a request that is refused,
// incomplete or closes the connection. Admin calls are not from loopback. Exposed for tests.
void AnswerRequestBytes(std::string_view bytes, const HttpHandlers& handlers, size_t max_body_bytes,
                        uint32_t max_header_bytes, std::string& out);

}  // namespace http_internal

}  // namespace floodgate::frontends
