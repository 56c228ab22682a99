// RedisStore over a fake redis::Client the test answers by hand: batching (many transactions in
// few EVALSHA), NOSCRIPT, and replies of every wrong shape (never a crash: failure modes).

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <boost/asio/io_context.hpp>

#include "absl/strings/numbers.h"
#include "absl/synchronization/mutex.h"
#include "floodgate/store.h"
#include "src/core/config.h"
#include "src/limiter/state_key.h"
#include "src/redis/redis_client.h"
#include "src/redis_store/redis_scripts.h"
#include "src/redis_store/redis_store.h"

namespace floodgate::redis_store {
namespace {

constexpr int64_t kNowNs = 1'765'000'000'000'000'000;

// Keeps every command; the test answers them in order with Reply().
class FakeClient final : public redis::Client {
 public:
  struct Call {
    std::vector<std::string> args;
    Callback callback;
  };

  void Send(absl::Span<const std::string_view> args, std::string_view /*slot_key*/,
            Callback callback) override {
    absl::MutexLock lock(&mu_);
    calls_.push_back(Call{std::vector<std::string>(args.begin(), args.end()), std::move(callback)});
  }
  bool Healthy() const override { return true; }
  redis::ClientStats GetStats() const override { return {}; }
  void Stop() override {}

  size_t pending() {
    absl::MutexLock lock(&mu_);
    return calls_.size();
  }
  // Takes the oldest command (the test then answers it).
  Call Take() {
    absl::MutexLock lock(&mu_);
    Call call = std::move(calls_.front());
    calls_.pop_front();
    return call;
  }

 private:
  absl::Mutex mu_;
  std::deque<Call> calls_ ABSL_GUARDED_BY(mu_);
};

redis::Reply Int(int64_t v) {
  return redis::Reply{.type = redis::Reply::Type::kInteger, .integer = v};
}

redis::Reply Array(std::vector<redis::Reply> elements) {
  return redis::Reply{.type = redis::Reply::Type::kArray, .elements = std::move(elements)};
}

// The number of transactions an EVALSHA carries (the argument after its keys).
int Transactions(const FakeClient::Call& call) {
  int keys = 0;
  int txns = 0;
  EXPECT_EQ(call.args[0], "EVALSHA");
  EXPECT_TRUE(absl::SimpleAtoi(call.args[2], &keys));
  EXPECT_TRUE(absl::SimpleAtoi(call.args[3 + keys], &txns));
  return txns;
}

// A committed one-op transaction's reply: allowed, remaining 4.
redis::Reply Allowed() { return Array({Int(1), Int(1), Int(4), Int(0), Int(100), Int(0)}); }

class BatchTest : public ::testing::Test {
 protected:
  BatchTest() {
    descriptor_size_ = static_cast<uint32_t>(limiter::PutDescriptorPart(
        state_key_, "api", std::vector<core::DescriptorEntry>{{"user", "alice"}}));
    core::RateLimitRule rule;
    rule.spec = spec_;
    limiter::PutRulePart(state_key_.data() + descriptor_size_, rule);
  }

  std::unique_ptr<RedisStore> NewStore(RedisStoreOptions options) {
    return *NewRedisStore(&client_, std::move(options));
  }

  StoreOp Op(FailureMode mode = FailureMode::kOpen) const {
    return StoreOp{.key_hash = 1,
                   .spec = spec_,
                   .failure_mode = mode,
                   .state_key = state_key_,
                   .descriptor_size = descriptor_size_};
  }

  // Starts `n` asynchronous one-op transactions; their decisions and results land in the
  // vectors, once loop_ runs.
  void Start(RedisStore& store, int n, FailureMode mode = FailureMode::kOpen) {
    const size_t first = decisions_.size();
    decisions_.resize(first + n);  // deque: existing elements stay put
    for (int i = 0; i < n; ++i) {
      const StoreOp op = Op(mode);
      store.ApplyAsync(absl::MakeConstSpan(&op, 1), kNowNs,
                       absl::MakeSpan(&decisions_[first + i], 1), loop_,
                       [this](bool committed) { results_.push_back(committed); });
    }
  }

  const LimitSpec spec_{
      .algorithm = Algorithm::kFixedWindow, .requests_per_period = 5, .period_ns = 1'000'000'000};
  std::string state_key_;
  uint32_t descriptor_size_ = 0;
  FakeClient client_;
  boost::asio::io_context loop_;
  std::deque<Decision> decisions_;
  std::vector<bool> results_;
};

TEST_F(BatchTest, ManyTransactionsGoInFewScriptCalls) {
  std::unique_ptr<RedisStore> store =
      NewStore(RedisStoreOptions{.max_batch = 64, .max_inflight_batches = 2});
  Start(*store, 200);
  // Two calls go at once; the other 198 wait for a reply.
  ASSERT_EQ(client_.pending(), 2u);
  int calls = 0;
  int transactions = 0;
  while (client_.pending() > 0) {
    FakeClient::Call call = client_.Take();
    const int n = Transactions(call);
    EXPECT_LE(n, 64);
    std::vector<redis::Reply> replies(n, Allowed());
    std::move(call.callback)(Array(std::move(replies)));
    ++calls;
    transactions += n;
  }
  EXPECT_EQ(transactions, 200);
  EXPECT_LE(calls, 2 + 4);  // 2 alone, then 198 in batches of at most 64
  loop_.run();
  ASSERT_EQ(results_.size(), 200u);
  for (size_t i = 0; i < decisions_.size(); ++i) {
    EXPECT_TRUE(decisions_[i].allowed);
    EXPECT_EQ(decisions_[i].remaining, 4u);
    EXPECT_EQ(decisions_[i].reset_after_ns, 100'000);  // microseconds back to nanoseconds
  }
  const RedisStoreStats stats = store->GetRedisStats();
  EXPECT_EQ(stats.transactions, 200u);
  EXPECT_EQ(stats.script_calls, static_cast<uint64_t>(calls));
  EXPECT_EQ(stats.batched_calls, static_cast<uint64_t>(calls - 2));
}

TEST_F(BatchTest, NoScriptLoadsAndRetriesOnce) {
  std::unique_ptr<RedisStore> store = NewStore(RedisStoreOptions{});
  Start(*store, 1, FailureMode::kClosed);
  FakeClient::Call call = client_.Take();
  EXPECT_EQ(call.args[1], TransactionScriptSha());
  std::move(call.callback)(
      redis::Reply{.type = redis::Reply::Type::kError, .str = "NOSCRIPT No matching script."});
  FakeClient::Call load = client_.Take();
  ASSERT_EQ(load.args.size(), 3u);
  EXPECT_EQ(load.args[0], "SCRIPT");
  EXPECT_EQ(load.args[2], TransactionScript());
  std::move(load.callback)(redis::Reply{.type = redis::Reply::Type::kString,
                                        .str = std::string(TransactionScriptSha())});
  FakeClient::Call retry = client_.Take();
  EXPECT_EQ(retry.args, call.args);
  // A second NOSCRIPT is not retried again: the failure mode decides.
  std::move(retry.callback)(redis::Reply{.type = redis::Reply::Type::kError, .str = "NOSCRIPT"});
  EXPECT_EQ(client_.pending(), 0u);
  loop_.run();
  ASSERT_EQ(results_.size(), 1u);
  EXPECT_FALSE(results_[0]);
  EXPECT_TRUE(decisions_[0].unavailable);
  EXPECT_EQ(store->GetRedisStats().noscript_reloads, 1u);
}

TEST_F(BatchTest, MalformedRepliesFailByFailureModeWithoutCrashing) {
  std::unique_ptr<RedisStore> store = NewStore(RedisStoreOptions{.max_inflight_batches = 1});
  const std::vector<absl::StatusOr<redis::Reply>> bad = {
      absl::DeadlineExceededError("timeout"),
      absl::UnavailableError("breaker open"),
      redis::Reply{},  // nil
      redis::Reply{.type = redis::Reply::Type::kString, .str = "?"},
      Int(3),
      Array({}),                                                          // no transactions
      Array({Int(1)}),                                                    // not an array inside
      Array({Array({Int(1)})}),                                           // too short
      Array({Array({Int(1), Int(1), Int(-7), Int(0), Int(0), Int(0)})}),  // negative remaining
      Array({Array({Int(2), Int(1), Int(1), Int(0), Int(0), Int(0)})}),   // bad commit flag
      Array({Array({Int(1), redis::Reply{}, Int(1), Int(0), Int(0), Int(0)})}),
      Array({redis::Reply{.type = redis::Reply::Type::kError, .str = "floodgate: boom"}}),
      redis::Reply{.type = redis::Reply::Type::kError, .str = "BUSY script"},
  };
  for (const absl::StatusOr<redis::Reply>& reply : bad) {
    Start(*store, 1, FailureMode::kClosed);
    ASSERT_EQ(client_.pending(), 1u);
    std::move(client_.Take().callback)(reply);
  }
  loop_.run();
  ASSERT_EQ(results_.size(), bad.size());
  for (size_t i = 0; i < bad.size(); ++i) {
    EXPECT_FALSE(results_[i]) << i;
    EXPECT_TRUE(decisions_[i].unavailable) << i;
  }
  const RedisStoreStats stats = store->GetRedisStats();
  EXPECT_EQ(stats.call_failures, 2u);
  EXPECT_EQ(stats.failed_ops_closed, bad.size());
}

TEST_F(BatchTest, AnErrorForOneTransactionFailsThatOneAlone) {
  std::unique_ptr<RedisStore> store = NewStore(RedisStoreOptions{.max_inflight_batches = 1});
  Start(*store, 1);
  Start(*store, 3, FailureMode::kClosed);  // wait behind the first call
  std::move(client_.Take().callback)(Array({Allowed()}));
  FakeClient::Call batch = client_.Take();
  ASSERT_EQ(Transactions(batch), 3);
  std::move(batch.callback)(
      Array({Allowed(), redis::Reply{.type = redis::Reply::Type::kError, .str = "floodgate: bad"},
             Allowed()}));
  loop_.run();
  ASSERT_EQ(results_.size(), 4u);
  EXPECT_TRUE(decisions_[1].allowed);
  EXPECT_TRUE(decisions_[2].unavailable);
  EXPECT_TRUE(decisions_[3].allowed);
}

TEST_F(BatchTest, LocalFailureModeDecidesOnTheFallbackStore) {
  std::unique_ptr<LocalStore> fallback = *NewShardedStore(StoreOptions{});
  std::unique_ptr<RedisStore> store =
      NewStore(RedisStoreOptions{.max_inflight_batches = 8, .local_fallback = fallback.get()});
  Start(*store, 7, FailureMode::kLocal);
  while (client_.pending() > 0) {
    std::move(client_.Take().callback)(absl::UnavailableError("down"));
  }
  loop_.run();
  int allowed = 0;
  for (const Decision& d : decisions_) {
    allowed += d.allowed ? 1 : 0;
  }
  EXPECT_EQ(allowed, 5);  // the limit, counted by the fallback as a single node would
}

TEST_F(BatchTest, DestructionFailsQueuedTransactions) {
  std::unique_ptr<RedisStore> store = NewStore(RedisStoreOptions{.max_inflight_batches = 1});
  Start(*store, 3, FailureMode::kClosed);
  FakeClient::Call first = client_.Take();
  std::move(first.callback)(Array({Allowed()}));  // sends the two waiting ones
  FakeClient::Call second = client_.Take();
  std::move(second.callback)(absl::CancelledError("client stopped"));
  store.reset();  // nothing in flight now: returns at once
  loop_.run();
  EXPECT_EQ(results_.size(), 3u);
}

}  // namespace
}  // namespace floodgate::redis_store
