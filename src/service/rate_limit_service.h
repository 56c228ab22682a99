#pragma once

// The rate limit service: the one interface every front end calls, and the one check pipeline
// behind it.
//
// A front end decodes its protocol (protobuf, JSON, a query string) into a message and hands it
// here. The pipeline then, for every protocol alike: converts it into the limiter's terms,
// validates it against the request limits (each failure a clear InvalidArgument), marks it shed
// when the front end is past its in-flight bounds (it then waits for no other node), decides it,
// and counts the call in its front end's metrics (requests, bad requests, errors, over limit,
// shed, latency). Front ends never see the limiter, the store or the cluster.
//
// Errors: InvalidArgument for bad input, in the caller's terms; Unavailable for a release that
// was shed; the limiter's status otherwise. An over-limit decision is not an error: it is in the
// returned response.
//
// Every call also has an asynchronous form for front ends on an event loop (the *Async
// methods): the same pipeline, whose outcome goes to a callback. A call that can be decided here
// completes before the method returns; one that waits for another node (in a cluster, a key
// this node does not own) is suspended, and its callback runs later on the caller's loop, so
// the front end's io thread serves other connections meanwhile. may_suspend() says whether that
// can happen at all (never on a single node, where the async forms cost what the others do).
//
// Thread-safety: every method may be called from any number of threads at once.
//
// (This interface lives in src/service rather than include/floodgate because its messages do:
// the limiter's request and response types and the generated protobuf classes.)

#include <cstdint>
#include <memory>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "envoy/service/ratelimit/v3/rls.pb.h"
#include "src/core/config.h"
#include "src/limiter/limiter.h"
#include "src/service/metrics.h"
#include "src/service/request_limits.h"
#include "src/service/rls.h"
#include "src/service/top_refused.h"

namespace floodgate::service {

// The front end a call came through: which metrics it counts in.
enum class Frontend : uint8_t { kGrpc, kHttp };

// What a front end knows about a call besides its message.
struct CallContext {
  Frontend frontend = Frontend::kGrpc;
  // The front end is past its in-flight bounds: decide at once, waiting for no other node (keys
  // another node owns go by their limit's failure mode; see limiter::CheckRequest::shed).
  bool shed = false;
  // How the caller wrote a native check or release (JSON or a query), so that errors name its
  // fields as it wrote them. Envoy calls (ShouldRateLimit) always use Envoy's names.
  FieldNames names = FieldNames::kNative;
};

class RateLimitService {
 public:
  virtual ~RateLimitService() = default;

  // Envoy RLS v3 (gRPC ShouldRateLimit, HTTP POST /json): converts, validates, decides, counts,
  // and fills `response`.
  virtual absl::Status ShouldRateLimit(
      const CallContext& call, const envoy::service::ratelimit::v3::RateLimitRequest& request,
      envoy::service::ratelimit::v3::RateLimitResponse* response) = 0;

  // A native check (HTTP GET/POST /v1/check, GET /v1/auth), already in the limiter's terms
  // (FromNative, or a parsed query string): validates, decides, counts.
  virtual absl::StatusOr<limiter::CheckResponse> Check(const CallContext& call,
                                                       limiter::CheckRequest& request) = 0;

  // Releases the concurrency slots that the check answered with `lease` acquired: validates,
  // releases, counts. InvalidArgument without a lease; FailedPrecondition when it freed nothing
  // (the lease is unknown, already released or expired; see Limiter::Release); Unavailable when
  // the call is shed (a release must reach the slots' owner, which a shed call may not wait for).
  virtual absl::Status Release(const CallContext& call, const limiter::CheckRequest& request,
                               int64_t lease) = 0;

  // Gets the outcome of an *Async call: OK (its response filled), or the error the blocking
  // form returns.
  using Done = absl::AnyInvocable<void(absl::Status status) &&>;

  // Returns whether an *Async call may complete after it returns (a check may wait for another
  // node). False: every callback runs before its call returns.
  virtual bool may_suspend() const = 0;
  // ShouldRateLimit without waiting: `done` runs exactly once, inline or later on a thread
  // running `loop`. `request` is read before the call returns; `response` must stay valid until
  // `done` runs.
  virtual void ShouldRateLimitAsync(const CallContext& call,
                                    const envoy::service::ratelimit::v3::RateLimitRequest& request,
                                    envoy::service::ratelimit::v3::RateLimitResponse* response,
                                    boost::asio::io_context& loop, Done done) = 0;
  // Check without waiting: decides into `response` (default-constructed by the caller), then
  // `done` as ShouldRateLimitAsync. `request` and `response` must stay valid until `done` runs.
  virtual void CheckAsync(const CallContext& call, limiter::CheckRequest& request,
                          limiter::CheckResponse& response, boost::asio::io_context& loop,
                          Done done) = 0;
  // Release without waiting; `request` is read before the call returns.
  virtual void ReleaseAsync(const CallContext& call, const limiter::CheckRequest& request,
                            int64_t lease, boost::asio::io_context& loop, Done done) = 0;

  // Counts a rate limit call that the front end refused before the pipeline (its body did not
  // decode): one request and one bad request.
  virtual void CountMalformed(Frontend frontend) = 0;

  // Returns the config in force (GET /v1/config); may be null before the first config.
  virtual std::shared_ptr<const core::Config> config() const = 0;

  // Returns the size limits calls are validated against (front ends use max_body_bytes and
  // max_entries while decoding).
  virtual const RequestLimits& limits() const = 0;
};

// Returns the service over `limiter`, counting in `metrics`; both must outlive it. When `top` is
// set (it must outlive the service too), every refused check feeds it (GET /v1/top).
std::unique_ptr<RateLimitService> NewRateLimitService(limiter::Limiter* limiter,
                                                      RequestLimits limits, ServerMetrics* metrics,
                                                      EnvoyCompat envoy = {},
                                                      TopRefused* top = nullptr);

}  // namespace floodgate::service
