#include "src/service/rate_limit_service.h"

#include <chrono>
#include <memory>
#include <optional>
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
  CallCounter(FrontendMetrics& metrics, DomainCounts& not_found)
      : metrics_(metrics), not_found_(not_found), start_(std::chrono::steady_clock::now()) {
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
  void UnknownDomain(std::string_view domain) {
    metrics_.unknown_domain.fetch_add(1, std::memory_order_relaxed);
    not_found_.Add(domain);
  }

 private:
  FrontendMetrics& metrics_;
  DomainCounts& not_found_;
  const std::chrono::steady_clock::time_point start_;
};

// The last step of every check: counts the outcome of a decided call and passes its status on.
// A refusal also feeds the top refused keys (`top`, may be null): allowed checks pay a branch.
absl::Status Account(absl::Status decided, const limiter::CheckRequest& request,
                     const limiter::CheckResponse& response, CallCounter& counter,
                     TopRefused* top) {
  if (!decided.ok()) {
    return counter.Failed(std::move(decided));
  }
  if (response.overall == limiter::Code::kOverLimit) {
    counter.OverLimit();
    if (top != nullptr) {
      top->RecordRefusals(request, response);
    }
  }
  if (response.unknown_domain) {
    counter.UnknownDomain(request.domain);
  }
  return absl::OkStatus();
}

// The pipeline. Each call is: convert (Envoy's message), Admit (validate, shed), the limiter,
// Account (count). The blocking and the *Async forms share those steps; an async call that may
// suspend keeps its counter (and, for Envoy, its converted request and decision) on the heap,
// owned by the limiter's callback, and its latency ends when its answer is ready.
class Pipeline final : public RateLimitService {
 public:
  Pipeline(limiter::Limiter* limiter, RequestLimits limits, ServerMetrics* metrics,
           EnvoyCompat envoy, TopRefused* top)
      : limiter_(limiter),
        limits_(limits),
        metrics_(metrics),
        envoy_(std::move(envoy)),
        top_(top) {}

  absl::Status ShouldRateLimit(const CallContext& call, const rls::RateLimitRequest& request,
                               rls::RateLimitResponse* response) override {
    CallCounter counter(MetricsOf(call.frontend), metrics_->domain_not_found);
    absl::StatusOr<limiter::CheckRequest> check = FromEnvoy(request);
    if (!check.ok()) {
      return counter.Failed(check.status());
    }
    if (absl::Status admitted = Admit(call, FieldNames::kEnvoy, *check, counter); !admitted.ok()) {
      return admitted;
    }
    absl::StatusOr<limiter::CheckResponse> decided = limiter_->Check(*check);
    if (!decided.ok()) {
      return counter.Failed(decided.status());
    }
    if (absl::Status counted = Account(absl::OkStatus(), *check, *decided, counter, top_);
        !counted.ok()) {
      return counted;
    }
    Answer(request, *decided, response);
    return absl::OkStatus();
  }

  absl::StatusOr<limiter::CheckResponse> Check(const CallContext& call,
                                               limiter::CheckRequest& request) override {
    CallCounter counter(MetricsOf(call.frontend), metrics_->domain_not_found);
    if (absl::Status admitted = Admit(call, call.names, request, counter); !admitted.ok()) {
      return admitted;
    }
    absl::StatusOr<limiter::CheckResponse> decided = limiter_->Check(request);
    if (!decided.ok()) {
      return counter.Failed(decided.status());
    }
    Account(absl::OkStatus(), request, *decided, counter, top_).IgnoreError();  // OK in, OK out
    return decided;
  }

  absl::Status Release(const CallContext& call, const limiter::CheckRequest& request,
                       int64_t lease) override {
    CallCounter counter(MetricsOf(call.frontend), metrics_->domain_not_found);
    if (absl::Status admitted = AdmitRelease(call, request, lease, counter); !admitted.ok()) {
      return admitted;
    }
    if (absl::Status released = limiter_->Release(request, lease); !released.ok()) {
      return counter.Failed(std::move(released));
    }
    return absl::OkStatus();
  }

  bool may_suspend() const override { return limiter_->may_suspend(); }

  void ShouldRateLimitAsync(const CallContext& call, const rls::RateLimitRequest& request,
                            rls::RateLimitResponse* response, boost::asio::io_context& loop,
                            Done done) override {
    if (!limiter_->may_suspend()) {
      std::move(done)(ShouldRateLimit(call, request, response));
      return;
    }
    struct EnvoyCall {
      EnvoyCall(FrontendMetrics& metrics, DomainCounts& not_found) : counter(metrics, not_found) {}
      CallCounter counter;
      limiter::CheckRequest check;
      limiter::CheckResponse decided;
      // The request, kept only when the answer's dynamic metadata needs it.
      std::optional<rls::RateLimitRequest> request;
    };
    auto c = std::make_unique<EnvoyCall>(MetricsOf(call.frontend), metrics_->domain_not_found);
    absl::StatusOr<limiter::CheckRequest> check = FromEnvoy(request);
    if (!check.ok()) {
      absl::Status failed = c->counter.Failed(check.status());
      c.reset();
      std::move(done)(std::move(failed));
      return;
    }
    c->check = *std::move(check);
    if (envoy_.response_dynamic_metadata) {
      c->request = request;
    }
    if (absl::Status admitted = Admit(call, FieldNames::kEnvoy, c->check, c->counter);
        !admitted.ok()) {
      c.reset();
      std::move(done)(std::move(admitted));
      return;
    }
    EnvoyCall* raw = c.get();  // the callback owns it from here on
    limiter_->CheckAsync(
        raw->check, raw->decided, loop,
        [this, c = std::move(c), response, done = std::move(done)](absl::Status status) mutable {
          absl::Status outcome = Account(std::move(status), c->check, c->decided, c->counter, top_);
          if (outcome.ok()) {
            Answer(c->request.has_value() ? *c->request : rls::RateLimitRequest::default_instance(),
                   c->decided, response);
          }
          c.reset();  // the call's latency ends here
          std::move(done)(std::move(outcome));
        });
  }

  void CheckAsync(const CallContext& call, limiter::CheckRequest& request,
                  limiter::CheckResponse& response, boost::asio::io_context& loop,
                  Done done) override {
    if (!limiter_->may_suspend()) {
      // Decided inline (a local store): the counter stays on this stack.
      absl::Status outcome;
      {
        CallCounter counter(MetricsOf(call.frontend), metrics_->domain_not_found);
        outcome = Admit(call, call.names, request, counter);
        if (outcome.ok()) {
          limiter_->CheckAsync(request, response, loop,
                               [&outcome](absl::Status status) { outcome = std::move(status); });
          outcome = Account(std::move(outcome), request, response, counter, top_);
        }
      }
      std::move(done)(std::move(outcome));
      return;
    }
    auto counter =
        std::make_unique<CallCounter>(MetricsOf(call.frontend), metrics_->domain_not_found);
    if (absl::Status admitted = Admit(call, call.names, request, *counter); !admitted.ok()) {
      counter.reset();
      std::move(done)(std::move(admitted));
      return;
    }
    limiter_->CheckAsync(request, response, loop,
                         [this, counter = std::move(counter), &request, &response,
                          done = std::move(done)](absl::Status status) mutable {
                           absl::Status outcome =
                               Account(std::move(status), request, response, *counter, top_);
                           counter.reset();  // the call's latency ends here
                           std::move(done)(std::move(outcome));
                         });
  }

  void ReleaseAsync(const CallContext& call, const limiter::CheckRequest& request, int64_t lease,
                    boost::asio::io_context& loop, Done done) override {
    if (!limiter_->may_suspend()) {
      std::move(done)(Release(call, request, lease));
      return;
    }
    auto counter =
        std::make_unique<CallCounter>(MetricsOf(call.frontend), metrics_->domain_not_found);
    if (absl::Status admitted = AdmitRelease(call, request, lease, *counter); !admitted.ok()) {
      counter.reset();
      std::move(done)(std::move(admitted));
      return;
    }
    limiter_->ReleaseAsync(
        request, lease, loop,
        [counter = std::move(counter), done = std::move(done)](absl::Status status) mutable {
          if (!status.ok()) {
            status = counter->Failed(std::move(status));
          }
          counter.reset();
          std::move(done)(std::move(status));
        });
  }

  void CountMalformed(Frontend frontend) override {
    FrontendMetrics& metrics = MetricsOf(frontend);
    metrics.requests.fetch_add(1, std::memory_order_relaxed);
    metrics.bad_requests.fetch_add(1, std::memory_order_relaxed);
  }

  std::shared_ptr<const core::Config> config() const override { return limiter_->config(); }

  const RequestLimits& limits() const override { return limits_; }

 private:
  // Renders an Envoy answer with the Envoy switches, counting the global shadow mode's work.
  void Answer(const rls::RateLimitRequest& request, const limiter::CheckResponse& decided,
              rls::RateLimitResponse* response) {
    if (ToEnvoy(request, decided, envoy_, response)) {
      metrics_->global_shadow_mode.fetch_add(1, std::memory_order_relaxed);
    }
  }

  FrontendMetrics& MetricsOf(Frontend frontend) {
    return frontend == Frontend::kHttp ? metrics_->http : metrics_->grpc;
  }

  // Validate and shed: the steps every check shares before the limiter. Returns the (counted)
  // error of a call that goes no further.
  absl::Status Admit(const CallContext& call, FieldNames names, limiter::CheckRequest& request,
                     CallCounter& counter) {
    if (absl::Status valid = ValidateRequest(request, limits_, names); !valid.ok()) {
      return counter.Failed(std::move(valid));
    }
    request.shed = call.shed;
    if (call.shed) {
      counter.Shed();
      CountShed(request.domain);
    }
    return absl::OkStatus();
  }

  // Counts a shed call under its domain when the config defines it, else under _other_: the
  // names stay bounded by the config. Only shed calls pay for it (a config read and a lock).
  void CountShed(std::string_view domain) {
    std::shared_ptr<const core::Config> config = limiter_->config();
    const bool known = config != nullptr && config->FindDomain(domain) != nullptr;
    metrics_->shed_checks.Add(known ? domain : std::string_view(DomainCounts::kOtherDomains));
  }

  // A release's steps before the limiter.
  absl::Status AdmitRelease(const CallContext& call, const limiter::CheckRequest& request,
                            int64_t lease, CallCounter& counter) {
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
      CountShed(request.domain);
      return counter.Failed(absl::UnavailableError(
          "overloaded: the release was not applied; retry it, or the slots free themselves when "
          "their lease expires"));
    }
    return absl::OkStatus();
  }

  limiter::Limiter* const limiter_;
  const RequestLimits limits_;
  ServerMetrics* const metrics_;
  const EnvoyCompat envoy_;
  TopRefused* const top_;
};

}  // namespace

std::unique_ptr<RateLimitService> NewRateLimitService(limiter::Limiter* limiter,
                                                      RequestLimits limits, ServerMetrics* metrics,
                                                      EnvoyCompat envoy, TopRefused* top) {
  return std::make_unique<Pipeline>(limiter, limits, metrics, std::move(envoy), top);
}

}  // namespace floodgate::service
