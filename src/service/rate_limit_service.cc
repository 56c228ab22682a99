#include "src/service/rate_limit_service.h"

#include <chrono>
#include <utility>

#include "src/service/rls.h"

namespace floodgate::service {
namespace {

namespace rls = ::envoy::service::ratelimit::v3;

// Whether a failed call is the caller's fault (counted as a bad request) rather than ours.
bool IsCallerError(absl::StatusCode code) {
  using Code = absl::StatusCode;
  for (Code callers :
       {Code::kInvalidArgument, Code::kNotFound, Code::kFailedPrecondition, Code::kAlreadyExists,
        Code::kOutOfRange, Code::kUnauthenticated, Code::kPermissionDenied}) {
    if (code == callers) {
      return true;
    }
  }
  return false;
}

// Counts one call in its front end's metrics from start to end: a request on entry, then the
// outcome and the latency when it goes out of scope.
class CallCounter {
 public:
  explicit CallCounter(FrontendMetrics& metrics)
      : metrics_(metrics), start_(std::chrono::steady_clock::now()) {
    metrics_.requests.fetch_add(1, std::memory_order_relaxed);
  }
  ~CallCounter() {
    metrics_.latency.Record(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                std::chrono::steady_clock::now() - start_)
                                .count());
  }
  CallCounter(const CallCounter&) = delete;
  CallCounter& operator=(const CallCounter&) = delete;

  // Counts a failed call and passes its status on.
  absl::Status Failed(absl::Status status) {
    (IsCallerError(status.code()) ? metrics_.bad_requests : metrics_.errors)
        .fetch_add(1, std::memory_order_relaxed);
    return status;
  }
  void Shed() { metrics_.shed.fetch_add(1, std::memory_order_relaxed); }
  void OverLimit() { metrics_.over_limit.fetch_add(1, std::memory_order_relaxed); }
  void UnknownDomain() { metrics_.unknown_domain.fetch_add(1, std::memory_order_relaxed); }

 private:
  FrontendMetrics& metrics_;
  const std::chrono::steady_clock::time_point start_;
};

class Pipeline final : public RateLimitService {
 public:
  Pipeline(limiter::Limiter* limiter, RequestLimits limits, ServerMetrics* metrics)
      : limiter_(limiter), limits_(limits), metrics_(metrics) {}

  absl::Status ShouldRateLimit(const CallContext& call, const rls::RateLimitRequest& request,
                               rls::RateLimitResponse* response) override {
    CallCounter counter(MetricsOf(call.frontend));
    absl::StatusOr<limiter::CheckRequest> check = FromEnvoy(request);
    if (!check.ok()) {
      return counter.Failed(check.status());
    }
    absl::StatusOr<limiter::CheckResponse> decided =
        Decide(call, FieldNames::kEnvoy, *check, counter);
    if (!decided.ok()) {
      return decided.status();
    }
    ToEnvoy(*decided, response);
    return absl::OkStatus();
  }

  absl::StatusOr<limiter::CheckResponse> Check(const CallContext& call,
                                               limiter::CheckRequest& request) override {
    CallCounter counter(MetricsOf(call.frontend));
    return Decide(call, call.names, request, counter);
  }

  absl::Status Release(const CallContext& call, const limiter::CheckRequest& request,
                       int64_t lease) override {
    CallCounter counter(MetricsOf(call.frontend));
    if (absl::Status valid = ValidateRequest(request, limits_, call.names); !valid.ok()) {
      return counter.Failed(std::move(valid));
    }
    // The token names the slots to free: without one, nothing can be released (a made-up,
    // replayed or expired one is refused by the limiter: FailedPrecondition, HTTP 409).
    if (lease == 0) {
      return counter.Failed(absl::InvalidArgumentError(
          "a release needs \"lease\": the \"lease\" value of the /v1/check response that "
          "acquired the slots"));
    }
    if (call.shed) {
      counter.Shed();
      return counter.Failed(absl::UnavailableError(
          "overloaded: the release was not applied; retry it, or the slots free themselves when "
          "their lease expires"));
    }
    if (absl::Status released = limiter_->Release(request, lease); !released.ok()) {
      return counter.Failed(std::move(released));
    }
    return absl::OkStatus();
  }

  void CountMalformed(Frontend frontend) override {
    FrontendMetrics& metrics = MetricsOf(frontend);
    metrics.requests.fetch_add(1, std::memory_order_relaxed);
    metrics.bad_requests.fetch_add(1, std::memory_order_relaxed);
  }

  std::shared_ptr<const core::Config> config() const override { return limiter_->config(); }

  const RequestLimits& limits() const override { return limits_; }

 private:
  FrontendMetrics& MetricsOf(Frontend frontend) {
    return frontend == Frontend::kHttp ? metrics_->http : metrics_->grpc;
  }

  // Validate, shed, decide: the steps every check shares after conversion.
  absl::StatusOr<limiter::CheckResponse> Decide(const CallContext& call, FieldNames names,
                                                limiter::CheckRequest& request,
                                                CallCounter& counter) {
    if (absl::Status valid = ValidateRequest(request, limits_, names); !valid.ok()) {
      return counter.Failed(std::move(valid));
    }
    request.shed = call.shed;
    if (call.shed) {
      counter.Shed();
    }
    absl::StatusOr<limiter::CheckResponse> decided = limiter_->Check(request);
    if (!decided.ok()) {
      return counter.Failed(decided.status());
    }
    if (decided->overall == limiter::Code::kOverLimit) {
      counter.OverLimit();
    }
    if (decided->unknown_domain) {
      counter.UnknownDomain();
    }
    return decided;
  }

  limiter::Limiter* const limiter_;
  const RequestLimits limits_;
  ServerMetrics* const metrics_;
};

}  // namespace

std::unique_ptr<RateLimitService> NewRateLimitService(limiter::Limiter* limiter,
                                                      RequestLimits limits,
                                                      ServerMetrics* metrics) {
  return std::make_unique<Pipeline>(limiter, limits, metrics);
}

}  // namespace floodgate::service
