// The pipeline's asynchronous forms over a store that suspends (testing::HeldStore, standing
// in for a cluster whose owners answer late): the same answers and counts as the blocking
// forms, and the failure modes when no owner can be asked.

#include <gtest/gtest.h>

#include <google/protobuf/util/message_differencer.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "floodgate/store.h"
#include "src/service/rate_limit_service.h"
#include "testing/fake_clock.h"
#include "testing/held_store.h"
#include "testing/limiter_helpers.h"

namespace floodgate::service {
namespace {

namespace rls = ::envoy::service::ratelimit::v3;
using floodgate::testing::HeldStore;
using floodgate::testing::MakeConfig;
using floodgate::testing::MakeRequest;
using google::protobuf::util::MessageDifferencer;

constexpr int64_t kHourNs = 3600LL * 1'000'000'000;

// "slow" is the only hourly limit: HeldStore holds the transactions that touch it (a key whose
// owner is another node). "open" and "closed" say what happens when no owner can be asked.
constexpr char kYaml[] =
    "domain: api\n"
    "descriptors:\n"
    "  - {key: user, rate_limit: {unit: minute, requests_per_unit: 2}}\n"
    "  - {key: slow, rate_limit: {unit: hour, requests_per_unit: 2}}\n"
    "  - {key: open, rate_limit: {unit: minute, requests_per_unit: 1, failure_mode: open}}\n"
    "  - {key: closed, rate_limit: {unit: minute, requests_per_unit: 1, failure_mode: closed}}\n"
    "  - {key: slot, rate_limit: {unit: minute, requests_per_unit: 1, algorithm: concurrency}}\n";

bool TouchesSlow(absl::Span<const StoreOp> ops) {
  for (const StoreOp& op : ops) {
    if (op.spec.period_ns == kHourNs) {
      return true;
    }
  }
  return false;
}

// Returns an Envoy request in domain "api" with one descriptor per {key, value}.
rls::RateLimitRequest EnvoyRequest(const std::vector<std::pair<std::string, std::string>>& keys,
                                   uint32_t hits = 0) {
  rls::RateLimitRequest request;
  request.set_domain("api");
  request.set_hits_addend(hits);
  for (const auto& [key, value] : keys) {
    auto* entry = request.add_descriptors()->add_entries();
    entry->set_key(key);
    entry->set_value(value);
  }
  return request;
}

// What an *Async call delivered.
struct Delivered {
  absl::Status status = absl::UnknownError("not delivered");
  int calls = 0;
};

RateLimitService::Done Record(Delivered& delivered) {
  return [&delivered](absl::Status status) {
    delivered.status = std::move(status);
    ++delivered.calls;
  };
}

class RateLimitServiceAsyncTest : public ::testing::Test {
 protected:
  RateLimitServiceAsyncTest() {
    clock_.Set(floodgate::testing::kMinuteStartNs);
    limiter::LimiterOptions options;
    options.clock = &clock_;
    limiter_ =
        std::make_unique<limiter::Limiter>(&store_, KeyHasher(1, 2), MakeConfig(kYaml), options);
    service_ = NewRateLimitService(limiter_.get(), RequestLimits(), &metrics_);
    reference_store_ = *NewShardedStore({});
    reference_limiter_ = std::make_unique<limiter::Limiter>(reference_store_.get(), KeyHasher(1, 2),
                                                            MakeConfig(kYaml), options);
    reference_ =
        NewRateLimitService(reference_limiter_.get(), RequestLimits(), &reference_metrics_);
  }

  void RunLoop() {
    loop_.restart();
    loop_.poll();
  }
  void ReleaseEverything() {
    do {
      store_.ReleaseAll();
      RunLoop();
    } while (store_.held() > 0);
  }

  floodgate::testing::FakeClock clock_;
  HeldStore store_;
  std::unique_ptr<limiter::Limiter> limiter_;
  ServerMetrics metrics_;
  std::unique_ptr<RateLimitService> service_;
  // The same config over a store that never suspends, asked with the blocking forms.
  std::unique_ptr<Store> reference_store_;
  std::unique_ptr<limiter::Limiter> reference_limiter_;
  ServerMetrics reference_metrics_;
  std::unique_ptr<RateLimitService> reference_;
  boost::asio::io_context loop_;
};

// Envoy calls of one and several descriptors, some of them held by the store and some answered
// at once, all started before any held one is released: each gets the answer ShouldRateLimit
// gives the same calls in the same order, and the same counts. (The held calls and the others
// share no key, so the order in which the store decides them does not change any answer.)
TEST_F(RateLimitServiceAsyncTest, ShouldRateLimitAsyncAnswersAsShouldRateLimit) {
  store_.HoldIf(TouchesSlow);
  ASSERT_TRUE(service_->may_suspend());
  const std::vector<rls::RateLimitRequest> requests = {
      EnvoyRequest({{"user", "a"}, {"slow", "s"}}),  // held
      EnvoyRequest({{"user", "b"}}),
      EnvoyRequest({{"slow", "t"}, {"user", "c"}, {"user", "c"}, {"user", "c"}}),  // held; refused
      EnvoyRequest({{"user", "b"}}),
      EnvoyRequest({{"user", "b"}}),                 // over the limit
      EnvoyRequest({{"slow", "s"}, {"user", "a"}}),  // held
      EnvoyRequest({{"slow", "s"}}, /*hits=*/2),     // held; over the limit
      EnvoyRequest({{"nomatch", "x"}, {"user", "d"}}),
  };
  const std::vector<bool> held = {true, false, true, false, false, true, true, false};
  std::vector<rls::RateLimitResponse> responses(requests.size());
  std::vector<Delivered> delivered(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    clock_.Advance(1'000'000'000);
    service_->ShouldRateLimitAsync(CallContext{Frontend::kGrpc}, requests[i], &responses[i], loop_,
                                   Record(delivered[i]));
    EXPECT_EQ(delivered[i].calls, held[i] ? 0 : 1) << i;
  }
  EXPECT_EQ(store_.held(), 4u);
  ReleaseEverything();

  // The reference, at the same clock readings.
  clock_.Set(floodgate::testing::kMinuteStartNs);
  for (size_t i = 0; i < requests.size(); ++i) {
    clock_.Advance(1'000'000'000);
    rls::RateLimitResponse want;
    ASSERT_TRUE(reference_->ShouldRateLimit(CallContext{Frontend::kGrpc}, requests[i], &want).ok());
    ASSERT_EQ(delivered[i].calls, 1) << i;
    ASSERT_TRUE(delivered[i].status.ok()) << i << ": " << delivered[i].status;
    EXPECT_TRUE(MessageDifferencer::Equals(responses[i], want))
        << i << ":\n got " << responses[i].DebugString() << "\nwant " << want.DebugString();
  }
  EXPECT_EQ(responses[4].overall_code(), rls::RateLimitResponse::OVER_LIMIT);
  EXPECT_EQ(responses[6].overall_code(), rls::RateLimitResponse::OVER_LIMIT);
  EXPECT_EQ(responses[0].overall_code(), rls::RateLimitResponse::OK);
  EXPECT_EQ(metrics_.grpc.requests.load(), reference_metrics_.grpc.requests.load());
  EXPECT_EQ(metrics_.grpc.over_limit.load(), reference_metrics_.grpc.over_limit.load());
  EXPECT_GE(metrics_.grpc.over_limit.load(), 3u);
  EXPECT_EQ(metrics_.grpc.errors.load(), 0u);
  EXPECT_EQ(metrics_.grpc.bad_requests.load(), 0u);
}

// The native check's asynchronous form: a held check answers later with the decision Check
// gives; a bad one fails at once, counted as a bad request, without reaching the store.
TEST_F(RateLimitServiceAsyncTest, CheckAsyncAnswersAsCheck) {
  store_.HoldAll();
  // One request object per call: each must stay untouched until its call is answered.
  std::vector<limiter::CheckRequest> requests(
      3, MakeRequest("api", {{{"user", "e"}}, {{"slow", "e"}}}));
  std::vector<limiter::CheckResponse> responses(3);
  std::vector<Delivered> delivered(3);
  for (int i = 0; i < 3; ++i) {
    service_->CheckAsync(CallContext{Frontend::kHttp}, requests[i], responses[i], loop_,
                         Record(delivered[i]));
    EXPECT_EQ(delivered[i].calls, 0);
  }
  ReleaseEverything();
  for (int i = 0; i < 3; ++i) {
    limiter::CheckRequest again = MakeRequest("api", {{{"user", "e"}}, {{"slow", "e"}}});
    auto want = reference_->Check(CallContext{Frontend::kHttp}, again);
    ASSERT_TRUE(want.ok());
    ASSERT_EQ(delivered[i].calls, 1);
    ASSERT_TRUE(delivered[i].status.ok()) << delivered[i].status;
    EXPECT_EQ(responses[i].overall, want->overall) << i;
    ASSERT_EQ(responses[i].descriptors.size(), 2u);
    for (int d = 0; d < 2; ++d) {
      EXPECT_EQ(responses[i].descriptors[d].code, want->descriptors[d].code) << i;
      EXPECT_EQ(responses[i].descriptors[d].limits[0].decision.remaining,
                want->descriptors[d].limits[0].decision.remaining)
          << i;
    }
  }
  EXPECT_EQ(responses[2].overall, limiter::Code::kOverLimit);
  EXPECT_EQ(metrics_.http.requests.load(), 3u);
  EXPECT_EQ(metrics_.http.over_limit.load(), 1u);

  limiter::CheckRequest bad = MakeRequest("", {{{"user", "e"}}});
  limiter::CheckResponse response;
  Delivered refused;
  service_->CheckAsync(CallContext{Frontend::kHttp}, bad, response, loop_, Record(refused));
  EXPECT_EQ(refused.calls, 1);
  EXPECT_EQ(refused.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(metrics_.http.bad_requests.load(), 1u);
  EXPECT_EQ(store_.held(), 0u);

  rls::RateLimitResponse envoy_response;
  Delivered envoy_refused;
  service_->ShouldRateLimitAsync(CallContext{Frontend::kGrpc}, EnvoyRequest({}), &envoy_response,
                                 loop_, Record(envoy_refused));
  EXPECT_EQ(envoy_refused.calls, 1);
  EXPECT_EQ(envoy_refused.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(metrics_.grpc.bad_requests.load(), 1u);
}

// No owner can be asked (the store answers as unavailable): a `failure_mode: open` limit
// passes, a `closed` one refuses (Envoy: OVER_LIMIT; the decision says unavailable). The
// asynchronous form answers as the blocking one, neither is an error, and once the owners
// answer again the refusals have consumed nothing.
TEST_F(RateLimitServiceAsyncTest, FailureModesWhenTheStoreIsUnavailable) {
  store_.HoldAll();
  store_.SetUnavailable(true);
  struct Case {
    rls::RateLimitRequest request;
    rls::RateLimitResponse::Code overall;
    std::vector<rls::RateLimitResponse::Code> statuses;
  };
  const std::vector<Case> cases = {
      {EnvoyRequest({{"open", "x"}}), rls::RateLimitResponse::OK, {rls::RateLimitResponse::OK}},
      {EnvoyRequest({{"closed", "x"}}),
       rls::RateLimitResponse::OVER_LIMIT,
       {rls::RateLimitResponse::OVER_LIMIT}},
      {EnvoyRequest({{"open", "x"}, {"closed", "y"}}),
       rls::RateLimitResponse::OVER_LIMIT,
       {rls::RateLimitResponse::OK, rls::RateLimitResponse::OVER_LIMIT}},
      // Twice over an open limit of one: still allowed, nobody counted.
      {EnvoyRequest({{"open", "x"}}, /*hits=*/2),
       rls::RateLimitResponse::OK,
       {rls::RateLimitResponse::OK}},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    rls::RateLimitResponse got;
    Delivered delivered;
    service_->ShouldRateLimitAsync(CallContext{Frontend::kGrpc}, cases[i].request, &got, loop_,
                                   Record(delivered));
    EXPECT_EQ(delivered.calls, 0) << i;
    ReleaseEverything();
    ASSERT_EQ(delivered.calls, 1) << i;
    ASSERT_TRUE(delivered.status.ok()) << i << ": " << delivered.status;
    EXPECT_EQ(got.overall_code(), cases[i].overall) << i << ": " << got.DebugString();
    ASSERT_EQ(got.statuses_size(), static_cast<int>(cases[i].statuses.size())) << i;
    for (size_t d = 0; d < cases[i].statuses.size(); ++d) {
      EXPECT_EQ(got.statuses(static_cast<int>(d)).code(), cases[i].statuses[d]) << i;
    }
    rls::RateLimitResponse blocking;
    ASSERT_TRUE(
        service_->ShouldRateLimit(CallContext{Frontend::kGrpc}, cases[i].request, &blocking).ok());
    EXPECT_TRUE(MessageDifferencer::Equals(got, blocking))
        << i << ":\n async " << got.DebugString() << "\nblocking " << blocking.DebugString();
  }
  EXPECT_EQ(metrics_.grpc.errors.load(), 0u);

  // The native form says why: the closed limit could not be asked.
  limiter::CheckRequest closed = MakeRequest("api", {{{"closed", "z"}}});
  limiter::CheckResponse response;
  Delivered delivered;
  service_->CheckAsync(CallContext{Frontend::kHttp}, closed, response, loop_, Record(delivered));
  ReleaseEverything();
  ASSERT_EQ(delivered.calls, 1);
  ASSERT_TRUE(delivered.status.ok()) << delivered.status;
  EXPECT_EQ(response.overall, limiter::Code::kOverLimit);
  EXPECT_TRUE(response.descriptors[0].limits[0].decision.unavailable);

  // The owners answer again: the closed limit of one still has its one hit.
  store_.SetUnavailable(false);
  rls::RateLimitResponse after;
  Delivered after_delivered;
  service_->ShouldRateLimitAsync(CallContext{Frontend::kGrpc}, EnvoyRequest({{"closed", "x"}}),
                                 &after, loop_, Record(after_delivered));
  ReleaseEverything();
  ASSERT_EQ(after_delivered.calls, 1);
  EXPECT_EQ(after.overall_code(), rls::RateLimitResponse::OK);
}

// Releases through the asynchronous form: held like checks, counted as the blocking form
// counts them (a replayed lease is the caller's error), and refused at once without a lease or
// when shed.
TEST_F(RateLimitServiceAsyncTest, ReleaseAsyncFreesTheSlotAndCountsAsRelease) {
  store_.HoldAll();
  limiter::CheckRequest request = MakeRequest("api", {{{"slot", "s"}}});
  limiter::CheckResponse held_slot;
  Delivered checked;
  service_->CheckAsync(CallContext{Frontend::kHttp}, request, held_slot, loop_, Record(checked));
  ReleaseEverything();
  ASSERT_EQ(checked.calls, 1);
  ASSERT_EQ(held_slot.overall, limiter::Code::kOk);
  ASSERT_NE(held_slot.lease, 0);

  Delivered no_lease;
  service_->ReleaseAsync(CallContext{Frontend::kHttp}, request, 0, loop_, Record(no_lease));
  EXPECT_EQ(no_lease.calls, 1);
  EXPECT_EQ(no_lease.status.code(), absl::StatusCode::kInvalidArgument);
  Delivered shed;
  service_->ReleaseAsync(CallContext{Frontend::kHttp, /*shed=*/true}, request, held_slot.lease,
                         loop_, Record(shed));
  EXPECT_EQ(shed.calls, 1);
  EXPECT_EQ(shed.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(store_.held(), 0u) << "neither reached the store";

  Delivered released;
  service_->ReleaseAsync(CallContext{Frontend::kHttp}, request, held_slot.lease, loop_,
                         Record(released));
  EXPECT_EQ(released.calls, 0);
  ReleaseEverything();
  EXPECT_EQ(released.calls, 1);
  EXPECT_TRUE(released.status.ok()) << released.status;

  Delivered replayed;
  service_->ReleaseAsync(CallContext{Frontend::kHttp}, request, held_slot.lease, loop_,
                         Record(replayed));
  ReleaseEverything();
  EXPECT_EQ(replayed.calls, 1);
  EXPECT_EQ(replayed.status.code(), absl::StatusCode::kFailedPrecondition);

  limiter::CheckResponse again;
  Delivered checked_again;
  service_->CheckAsync(CallContext{Frontend::kHttp}, request, again, loop_, Record(checked_again));
  ReleaseEverything();
  EXPECT_EQ(again.overall, limiter::Code::kOk) << "the slot was freed";

  EXPECT_EQ(metrics_.http.requests.load(), 6u);
  EXPECT_EQ(metrics_.http.bad_requests.load(), 2u);  // no lease, replayed
  EXPECT_EQ(metrics_.http.errors.load(), 1u);        // the shed release
  EXPECT_EQ(metrics_.http.shed.load(), 1u);
}

}  // namespace
}  // namespace floodgate::service
