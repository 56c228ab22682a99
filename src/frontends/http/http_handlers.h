#pragma once

// The HTTP endpoints: what each request is answered, as a value. The session (http_server.cc)
// reads a request off the socket, calls HttpHandlers::Handle and writes the reply; the handlers
// know nothing of sockets, and reach the node only through the rate limit service and the
// admin API. Endpoints: docs/http_api.md.
//
// Thread-safety: Handle and HandleAsync may be called from any number of threads at once, each
// with its own HttpScratch.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/beast/http/verb.hpp>

#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
#include "envoy/service/ratelimit/v3/rls.pb.h"
#include "floodgate/v1/check.pb.h"
#include "src/limiter/limiter.h"
#include "src/service/admin_api.h"
#include "src/service/metrics.h"
#include "src/service/rate_limit_service.h"
#include "src/service/rls.h"

namespace floodgate::frontends {

inline constexpr std::string_view kJsonType = "application/json";
inline constexpr std::string_view kTextType = "text/plain; charset=utf-8";
inline constexpr std::string_view kPrometheusType = "text/plain; version=0.0.4; charset=utf-8";

// A request as the handlers see it: parsed, its body complete. Views into the session's buffers.
struct HttpRequest {
  boost::beast::http::verb method = boost::beast::http::verb::unknown;
  std::string_view target;
  std::string_view authorization;
  std::string_view body;
  // Returns whether the client is on this machine (admin calls without a token need it). Asked
  // only for such calls.
  absl::FunctionRef<bool()> from_loopback;
  // The front end is past its in-flight bounds (see CallContext::shed).
  bool shed = false;
  // The server is draining (the healthcheck answers 503).
  bool draining = false;
  // When set, whether the node is ready (HttpServerOptions::ready; the healthcheck answers 503
  // while it is not). Asked only by the healthcheck.
  const std::function<bool()>* ready = nullptr;
  // When set, returns the client's address ("ip:port"). Asked only by admin calls, for the audit
  // line (`config_change` with source=admin; docs/operations.md).
  const std::function<std::string()>* client_address = nullptr;
};

// What a request is answered: the session frames it.
struct HttpReply {
  int status = 200;
  std::string_view content_type = kJsonType;
  std::vector<service::Header> headers;
  std::string body;
};

// Per-connection scratch for the check paths, reused so that the steady state allocates
// little.
struct HttpScratch {
  limiter::CheckRequest check;
  floodgate::v1::CheckRequest native_request;
  floodgate::v1::CheckResponse native_response;
  envoy::service::ratelimit::v3::RateLimitRequest envoy_request;
  // A suspended call's decision, until its reply is built (HandleAsync).
  std::optional<limiter::CheckResponse> check_response;
  envoy::service::ratelimit::v3::RateLimitResponse envoy_response;
};

class HttpHandlers {
 public:
  // When `admin_token` is set, admin calls (PUT/DELETE /v1/config/...) need
  // `Authorization: Bearer <token>`; without it only clients on this machine may make them.
  // `service`, `admin` and `metrics` must outlive the handlers.
  HttpHandlers(std::string admin_token, service::RateLimitService* service,
               service::AdminApi* admin, service::FrontendMetrics* metrics);

  // Answers one request, and counts it in the HTTP metrics (rate limit calls are counted by the
  // service's pipeline; the rest here). HEAD is answered as GET: the session leaves the body
  // out. Methods no endpoint takes are 501, a method the path does not take 405 (both with
  // Allow when the path exists), targets that are not a path or an absolute URL 400.
  HttpReply Handle(const HttpRequest& request, HttpScratch& scratch) const;

  // Gets the reply of HandleAsync.
  using ReplyDone = absl::AnyInvocable<void(HttpReply reply) &&>;
  // Answers one request as Handle does, through `done`, which runs exactly once: before
  // HandleAsync returns, unless the request is a rate limit call that waits for another node
  // (the service may suspend it); then later, on a thread running `loop`, while the caller
  // goes on serving. The request's views and `scratch` must stay valid until `done` runs.
  void HandleAsync(const HttpRequest& request, HttpScratch& scratch, boost::asio::io_context& loop,
                   ReplyDone done) const;

  // Returns whether `target` is a rate limit call (check, auth, Envoy JSON, release): the calls
  // that may wait for another node. Health, metrics and admin calls are not.
  static bool IsRateLimitCall(std::string_view target);

 private:
  // Where a rate limit call may be suspended: both set (HandleAsync), or both null (Handle).
  struct Async {
    boost::asio::io_context* loop = nullptr;
    ReplyDone* done = nullptr;
  };
  // Handle's routing. Returns the reply, or nullopt when a suspended call took *async.done.
  std::optional<HttpReply> Answer(const HttpRequest& request, HttpScratch& scratch,
                                  Async async) const;
  // Whether a rate limit call goes through the service's *Async form and may suspend.
  bool Suspends(Async async) const;
  // The rate limit calls: each returns its reply, or nullopt when it took *async.done.
  std::optional<HttpReply> Check(const HttpRequest& request, std::string_view query, bool auth,
                                 HttpScratch& scratch, Async async) const;
  std::optional<HttpReply> EnvoyJson(const HttpRequest& request, HttpScratch& scratch,
                                     Async async) const;
  std::optional<HttpReply> Release(const HttpRequest& request, HttpScratch& scratch,
                                   Async async) const;
  std::optional<HttpReply> ReleaseSlots(const HttpRequest& request, HttpScratch& scratch,
                                        Async async) const;
  // The reply to a decided check (`status` OK: `response` holds the decision).
  HttpReply CheckOutcome(const absl::Status& status, const limiter::CheckResponse* response,
                         bool auth, HttpScratch& scratch) const;
  HttpReply EnvoyOutcome(const absl::Status& status,
                         const envoy::service::ratelimit::v3::RateLimitResponse& out) const;
  HttpReply CheckReply(const limiter::CheckResponse& response, HttpScratch& scratch) const;
  HttpReply Metrics() const;
  HttpReply Cluster() const;
  HttpReply ConfigView() const;
  HttpReply Rules() const;  // GET /v1/rules (service/rules_json.h)
  HttpReply ConfigChange(const HttpRequest& request, std::string_view raw_domain) const;
  // The web console's endpoints (console_handlers.cc).
  HttpReply Ui(std::string_view file) const;
  HttpReply Status(bool draining) const;
  HttpReply Top(std::string_view query) const;
  HttpReply Simulate(std::string_view body) const;
  HttpReply Validate(std::string_view body, std::string_view raw_domain) const;
  // Decodes a native JSON CheckRequest body into scratch.native_request and scratch.check.
  absl::Status DecodeNative(std::string_view body, HttpScratch& scratch) const;
  // Counts a rate limit call whose input did not decode, and answers it 400.
  HttpReply Malformed(const absl::Status& status) const;
  // Counts a reply that the pipeline did not count.
  void Count(const HttpReply& reply, bool healthcheck) const;

  const std::string admin_token_;
  service::RateLimitService* const service_;
  service::AdminApi* const admin_;
  service::FrontendMetrics* const metrics_;
};

}  // namespace floodgate::frontends
