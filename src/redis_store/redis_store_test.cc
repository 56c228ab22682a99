// Integration: RedisStore against a real redis-server (testing/redis_server.h), compared with the
// memory store (NewShardedStore), which is the reference for every answer.

#include "src/redis_store/redis_store.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "floodgate/store.h"
#include "src/core/config.h"
#include "src/limiter/state_key.h"
#include "src/redis/redis_client.h"
#include "src/redis_store/script_args.h"
#include "testing/redis_server.h"

namespace floodgate::redis_store {
namespace {

constexpr int64_t kUs = 1'000;
constexpr int64_t kMs = 1'000'000;
constexpr int64_t kSecond = 1'000'000'000;
constexpr int64_t kStartNs = 1'765'000'000'000'000'000;  // whole seconds, December 2025

// One limit on one descriptor: its state key (kept alive for the ops that point at it).
struct Limit {
  LimitSpec spec;
  std::string state_key;
  uint32_t descriptor_size = 0;
  uint64_t key_hash = 0;
  FailureMode failure_mode = FailureMode::kLocal;

  StoreOp Op(uint64_t hits = 1) const {
    return StoreOp{.key_hash = key_hash,
                   .spec = spec,
                   .hits = hits,
                   .failure_mode = failure_mode,
                   .state_key = state_key,
                   .descriptor_size = descriptor_size};
  }
};

Limit MakeLimit(const LimitSpec& spec, std::string_view value, uint32_t slot = 0,
                std::string_view domain = "api") {
  Limit limit{.spec = spec};
  const std::vector<core::DescriptorEntry> entries = {{"user", std::string(value)}};
  limit.descriptor_size =
      static_cast<uint32_t>(limiter::PutDescriptorPart(limit.state_key, domain, entries));
  core::RateLimitRule rule;
  rule.spec = spec;
  rule.slot = slot;
  limiter::PutRulePart(limit.state_key.data() + limit.descriptor_size, rule);
  limit.key_hash = KeyHasher(1, 2).Hash(limit.state_key);
  return limit;
}

LimitSpec Spec(Algorithm algorithm, uint64_t count, int64_t period_ns, uint64_t burst = 0) {
  return LimitSpec{
      .algorithm = algorithm, .requests_per_period = count, .period_ns = period_ns, .burst = burst};
}

class RedisStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<testing::RedisServer>> server = testing::RedisServer::Start();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    client_ = NewTestClient();
    ASSERT_NE(client_, nullptr);
    store_ = NewStore(client_.get());
    ASSERT_NE(store_, nullptr);
  }

  std::unique_ptr<redis::Client> NewTestClient(int64_t timeout_ms = 1000) {
    redis::ClientOptions options;
    options.endpoints = {
        redis::Endpoint{.host = "127.0.0.1", .port = static_cast<uint16_t>(server_->port())}};
    options.timeout_ms = timeout_ms;
    options.breaker_open_ms = 100;
    options.reconnect_max_ms = 100;
    absl::StatusOr<std::unique_ptr<redis::Client>> client = redis::NewClient(options);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }

  std::unique_ptr<RedisStore> NewStore(redis::Client* client, RedisStoreOptions options = {}) {
    absl::StatusOr<std::unique_ptr<RedisStore>> store = NewRedisStore(client, std::move(options));
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }

  std::string Cli(const std::vector<std::string>& command) {
    absl::StatusOr<std::string> out = server_->Cli(command);
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? std::string(absl::StripAsciiWhitespace(*out)) : "";
  }

  // Sends one command through the test's client (binary-safe keys) and waits for the reply.
  redis::Reply Command(std::vector<std::string> args) {
    absl::Notification done;
    absl::StatusOr<redis::Reply> reply;
    std::vector<std::string_view> views(args.begin(), args.end());
    client_->Send(views, args.size() > 1 ? args[1] : "", [&](absl::StatusOr<redis::Reply> r) {
      reply = std::move(r);
      done.Notify();
    });
    done.WaitForNotification();
    EXPECT_TRUE(reply.ok()) << reply.status();
    return reply.ok() ? *std::move(reply) : redis::Reply{};
  }

  // Applies one op and returns its decision.
  Decision Check(Store& store, const Limit& limit, uint64_t hits, int64_t now_ns) {
    Decision d;
    StoreOp op = limit.Op(hits);
    store.Apply(absl::MakeConstSpan(&op, 1), now_ns, absl::MakeSpan(&d, 1));
    return d;
  }

  std::unique_ptr<testing::RedisServer> server_;
  std::unique_ptr<redis::Client> client_;
  std::unique_ptr<RedisStore> store_;
};

void ExpectSame(const Decision& memory, const Decision& redis, int64_t unit_ns,
                const std::string& where) {
  EXPECT_EQ(memory.allowed, redis.allowed) << where;
  EXPECT_EQ(memory.limit, redis.limit) << where;
  EXPECT_EQ(memory.remaining, redis.remaining) << where;
  EXPECT_FALSE(redis.unavailable) << where;
  for (auto [m, r, name] : {std::tuple{memory.retry_after_ns, redis.retry_after_ns, "retry"},
                            std::tuple{memory.reset_after_ns, redis.reset_after_ns, "reset"},
                            std::tuple{memory.delay_ns, redis.delay_ns, "delay"}}) {
    if (m == Decision::kNever || r == Decision::kNever) {
      EXPECT_EQ(m, r) << name << " " << where;
    } else {
      // Rounded up to the unit: never earlier, less than one unit later.
      EXPECT_GE(r, m) << name << " " << where;
      EXPECT_LT(r - m, unit_ns) << name << " " << where;
    }
  }
}

// Random transactions on a few descriptors, at microsecond times, on both stores: the same
// answers. Concurrency acquires under lease tokens and releases some of them (also twice).
void RunDifferential(RedisStore& redis, const std::vector<LimitSpec>& specs, uint64_t seed) {
  std::unique_ptr<LocalStore> memory = *NewShardedStore(StoreOptions{});
  std::vector<Limit> limits;
  for (size_t i = 0; i < specs.size(); ++i) {
    for (const char* user : {"alice", "bob"}) {
      limits.push_back(MakeLimit(specs[i], absl::StrCat(user, seed), static_cast<uint32_t>(i)));
    }
  }
  std::mt19937_64 rng(seed);
  int64_t now_ns = kStartNs + static_cast<int64_t>(rng() % kSecond) / kUs * kUs;
  std::vector<std::pair<size_t, uint64_t>> leases;  // (limit, token) acquired
  int committed = 0;
  for (int step = 0; step < 600; ++step) {
    const int64_t period = specs[rng() % specs.size()].period_ns;
    now_ns += static_cast<int64_t>(rng() % static_cast<uint64_t>(period / 6 / kUs + 1)) * kUs;
    std::vector<StoreOp> ops;
    const size_t n = 1 + rng() % 3;
    for (size_t k = 0; k < n; ++k) {
      const size_t li = rng() % limits.size();
      const Limit& limit = limits[li];
      const uint64_t cap = limit.spec.Capacity();
      StoreOp op = limit.Op(rng() % 8 == 0 ? rng() % (cap + 3) : rng() % 3);
      op.shadow = rng() % 10 == 0;
      if (limit.spec.algorithm == Algorithm::kConcurrency) {
        if (!leases.empty() && rng() % 3 == 0) {
          const auto& [lj, token] = leases[rng() % leases.size()];
          op = limits[lj].Op(0);
          op.kind = StoreOp::Kind::kRelease;
          op.lease = token;
        } else {
          op.lease = rng() % 4 == 0 ? 0 : 1 + rng() % 1000;
          if (op.lease != 0) {
            leases.emplace_back(li, op.lease);
          }
        }
      }
      ops.push_back(op);
    }
    std::vector<Decision> dm(ops.size());
    std::vector<Decision> dr(ops.size());
    const bool cm = memory->Apply(ops, now_ns, absl::MakeSpan(dm));
    const bool cr = redis.Apply(ops, now_ns, absl::MakeSpan(dr));
    ASSERT_EQ(cm, cr) << "step " << step;
    committed += cm ? 1 : 0;
    for (size_t k = 0; k < ops.size(); ++k) {
      const int64_t unit_ns = ChooseUnitNs(ops[k].spec, now_ns);
      ExpectSame(dm[k], dr[k], unit_ns,
                 absl::StrCat("step ", step, " op ", k, " ",
                              std::string(AlgorithmName(ops[k].spec.algorithm)), " hits ",
                              ops[k].hits, " kind ", static_cast<int>(ops[k].kind)));
    }
    if (::testing::Test::HasFailure()) {
      return;
    }
  }
  EXPECT_GT(committed, 100);
  const RedisStoreStats stats = redis.GetRedisStats();
  EXPECT_EQ(stats.call_failures + stats.error_replies + stats.malformed_replies, 0u);
}

TEST_F(RedisStoreTest, FixedWindowMatchesMemoryStore) {
  RunDifferential(
      *store_,
      {Spec(Algorithm::kFixedWindow, 5, kSecond), Spec(Algorithm::kFixedWindow, 20, 100 * kMs)}, 1);
}

TEST_F(RedisStoreTest, SlidingWindowMatchesMemoryStore) {
  RunDifferential(
      *store_,
      {Spec(Algorithm::kSlidingWindow, 7, kSecond), Spec(Algorithm::kSlidingWindow, 30, 250 * kMs)},
      2);
}

TEST_F(RedisStoreTest, TokenBucketMatchesMemoryStore) {
  // 7 per 1 s: an emission interval of 142857.14 µs, not a whole number of units.
  RunDifferential(
      *store_,
      {Spec(Algorithm::kTokenBucket, 7, kSecond), Spec(Algorithm::kTokenBucket, 3, 100 * kMs, 10)},
      3);
}

TEST_F(RedisStoreTest, LeakyBucketMatchesMemoryStore) {
  RunDifferential(
      *store_,
      {Spec(Algorithm::kLeakyBucket, 7, kSecond, 4), Spec(Algorithm::kLeakyBucket, 50, 300 * kMs)},
      4);
}

TEST_F(RedisStoreTest, ConcurrencyMatchesMemoryStore) {
  RunDifferential(
      *store_,
      {Spec(Algorithm::kConcurrency, 4, kSecond), Spec(Algorithm::kConcurrency, 2, 200 * kMs)}, 5);
}

TEST_F(RedisStoreTest, AllAlgorithmsInOneTransactionMatchMemoryStore) {
  RunDifferential(
      *store_,
      {Spec(Algorithm::kFixedWindow, 5, kSecond), Spec(Algorithm::kSlidingWindow, 6, kSecond),
       Spec(Algorithm::kTokenBucket, 7, kSecond, 3), Spec(Algorithm::kLeakyBucket, 3, 500 * kMs),
       Spec(Algorithm::kConcurrency, 3, kSecond)},
      6);
}

TEST_F(RedisStoreTest, MultiLimitTransactionIsAtomicAndRefusedHitsAreNotCharged) {
  const Limit loose = MakeLimit(Spec(Algorithm::kFixedWindow, 100, kSecond), "carol", 0);
  const Limit tight = MakeLimit(Spec(Algorithm::kTokenBucket, 2, kSecond), "carol", 1);
  const StoreOp ops[] = {loose.Op(1), tight.Op(1)};
  Decision d[2];
  EXPECT_TRUE(store_->Apply(ops, kStartNs, absl::MakeSpan(d)));
  EXPECT_TRUE(store_->Apply(ops, kStartNs, absl::MakeSpan(d)));
  EXPECT_FALSE(store_->Apply(ops, kStartNs, absl::MakeSpan(d)));  // the bucket is empty
  EXPECT_TRUE(d[0].allowed);
  EXPECT_EQ(d[0].remaining, 98u);  // not charged: the transaction refused
  EXPECT_FALSE(d[1].allowed);
  // Refused hits are never charged: many refusals later, the window still holds 2.
  for (int i = 0; i < 20; ++i) {
    EXPECT_FALSE(Check(*store_, tight, 1, kStartNs).allowed);
  }
  EXPECT_EQ(Check(*store_, loose, 0, kStartNs).remaining, 98u);
  EXPECT_TRUE(Check(*store_, tight, 1, kStartNs + kSecond / 2).allowed);  // a token back
}

TEST_F(RedisStoreTest, KeysExpireWithTheirState) {
  // Redis' TTL runs on its own clock, from now: PTTL is the state's expiry minus now.
  const int64_t now_ns = kStartNs + 250 * kMs;
  const Limit window = MakeLimit(Spec(Algorithm::kFixedWindow, 5, kSecond), "dave");
  const Limit bucket = MakeLimit(Spec(Algorithm::kTokenBucket, 10, 10 * kSecond), "dave", 1);
  ASSERT_TRUE(Check(*store_, window, 1, now_ns).allowed);
  ASSERT_TRUE(Check(*store_, bucket, 4, now_ns).allowed);  // full again in 4 s
  const auto pttl = [&](const Limit& limit) {
    return Command({"PTTL", StateRedisKey("fg:", limit.state_key, limit.descriptor_size)}).integer;
  };
  EXPECT_LE(pttl(window), 750);  // the window ends 750 ms after now
  EXPECT_GT(pttl(window), 650);
  EXPECT_LE(pttl(bucket), 4000);
  EXPECT_GT(pttl(bucket), 3900);
  // Reads never write: a key nobody hit does not exist.
  const Limit idle = MakeLimit(Spec(Algorithm::kSlidingWindow, 5, kSecond), "erin");
  EXPECT_TRUE(Check(*store_, idle, 0, now_ns).allowed);
  EXPECT_EQ(Command({"EXISTS", StateRedisKey("fg:", idle.state_key, idle.descriptor_size)}).integer,
            0);
}

TEST_F(RedisStoreTest, ScriptFlushedIsLoadedAgain) {
  const Limit limit = MakeLimit(Spec(Algorithm::kFixedWindow, 5, kSecond), "frank");
  EXPECT_TRUE(Check(*store_, limit, 1, kStartNs).allowed);
  EXPECT_EQ(Cli({"SCRIPT", "FLUSH"}), "OK");
  const Decision d = Check(*store_, limit, 1, kStartNs);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.remaining, 3u);
  EXPECT_GE(store_->GetRedisStats().noscript_reloads, 1u);
  EXPECT_EQ(store_->GetRedisStats().call_failures, 0u);
}

// Three stateless nodes (a store and a client each) on one Redis, checks sent concurrently and
// asynchronously from three loops, all at one instant: exactly the capacity passes, whatever the
// interleaving and batching. For every algorithm.
TEST_F(RedisStoreTest, ThreeNodesAdmitExactlyTheLimit) {
  constexpr int kNodes = 3;
  constexpr int kChecksPerNode = 400;
  std::vector<std::unique_ptr<redis::Client>> clients;
  std::vector<std::unique_ptr<RedisStore>> stores;
  for (int i = 0; i < kNodes; ++i) {
    clients.push_back(NewTestClient());
    stores.push_back(NewStore(clients.back().get(),
                              RedisStoreOptions{.max_batch = 16, .max_inflight_batches = 2}));
  }
  const std::vector<LimitSpec> specs = {Spec(Algorithm::kFixedWindow, 100, kSecond),
                                        Spec(Algorithm::kSlidingWindow, 100, kSecond),
                                        Spec(Algorithm::kTokenBucket, 10, kSecond, 100),
                                        Spec(Algorithm::kLeakyBucket, 10, kSecond, 100),
                                        Spec(Algorithm::kConcurrency, 100, 10 * kSecond)};
  for (const LimitSpec& spec : specs) {
    const Limit limit = MakeLimit(spec, "shared");
    std::atomic<int> admitted{0};
    std::atomic<int> left{kNodes * kChecksPerNode};
    absl::Notification all_done;
    std::vector<std::unique_ptr<boost::asio::io_context>> loops;
    std::vector<std::thread> threads;
    std::vector<std::vector<Decision>> decisions(kNodes, std::vector<Decision>(kChecksPerNode));
    std::vector<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> guards;
    for (int n = 0; n < kNodes; ++n) {
      loops.push_back(std::make_unique<boost::asio::io_context>());
      guards.push_back(boost::asio::make_work_guard(*loops.back()));
    }
    for (int n = 0; n < kNodes; ++n) {
      threads.emplace_back([&, n] {
        boost::asio::io_context& loop = *loops[n];
        for (int c = 0; c < kChecksPerNode; ++c) {
          StoreOp op = limit.Op(1);
          op.lease = static_cast<uint64_t>(n * kChecksPerNode + c + 1);
          stores[n]->ApplyAsync(absl::MakeConstSpan(&op, 1), kStartNs,
                                absl::MakeSpan(&decisions[n][c], 1), loop, [&](bool committed) {
                                  admitted += committed ? 1 : 0;
                                  if (--left == 0) {
                                    all_done.Notify();
                                  }
                                });
        }
        loop.run();  // until the guards go
      });
    }
    EXPECT_TRUE(all_done.WaitForNotificationWithTimeout(absl::Seconds(60)));
    guards.clear();
    for (std::thread& t : threads) {
      t.join();
    }
    EXPECT_EQ(admitted.load(), 100) << AlgorithmName(spec.algorithm);
  }
  uint64_t batched = 0;
  for (const auto& store : stores) {
    const RedisStoreStats stats = store->GetRedisStats();
    EXPECT_EQ(stats.call_failures + stats.error_replies + stats.malformed_replies, 0u);
    batched += stats.batched_calls;
  }
  EXPECT_GT(batched, 0u);  // 400 checks at once per node cannot all go one by one
}

TEST_F(RedisStoreTest, LeasesAreSharedAcrossNodes) {
  std::unique_ptr<redis::Client> other_client = NewTestClient();
  std::unique_ptr<RedisStore> other = NewStore(other_client.get());
  const Limit limit = MakeLimit(Spec(Algorithm::kConcurrency, 1, 10 * kSecond), "gina");
  const auto apply = [&](Store& store, StoreOp::Kind kind, uint64_t token) {
    StoreOp op = limit.Op(kind == StoreOp::Kind::kCheck ? 1 : 0);
    op.kind = kind;
    op.lease = token;
    Decision d;
    store.Apply(absl::MakeConstSpan(&op, 1), kStartNs + kSecond, absl::MakeSpan(&d, 1));
    return d;
  };
  EXPECT_TRUE(apply(*store_, StoreOp::Kind::kCheck, 7).allowed);
  EXPECT_FALSE(apply(*other, StoreOp::Kind::kCheck, 8).allowed);    // the one slot is held
  EXPECT_FALSE(apply(*other, StoreOp::Kind::kRelease, 9).allowed);  // a made-up token frees nothing
  EXPECT_FALSE(apply(*other, StoreOp::Kind::kCheck, 8).allowed);
  EXPECT_TRUE(apply(*other, StoreOp::Kind::kRelease, 7).allowed);    // released on the other node
  EXPECT_FALSE(apply(*store_, StoreOp::Kind::kRelease, 7).allowed);  // once
  EXPECT_TRUE(apply(*other, StoreOp::Kind::kCheck, 8).allowed);
  EXPECT_FALSE(apply(*store_, StoreOp::Kind::kCheck, 10).allowed);
}

TEST_F(RedisStoreTest, EnvoyKeyLayoutSharesEnvoysCounters) {
  std::unique_ptr<RedisStore> envoy =
      NewStore(client_.get(), RedisStoreOptions{.envoy_key_layout = true, .envoy_prefix = "pre_"});
  const int64_t now_ns = kStartNs + 42 * kSecond + 5 * kMs;
  const int64_t window_s = (now_ns / kSecond) / 60 * 60;
  const Limit minute = MakeLimit(Spec(Algorithm::kFixedWindow, 5, 60 * kSecond), "hank");
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(Check(*envoy, minute, 1, now_ns).allowed);
  }
  // Envoy's exact key, built by hand: CACHE_KEY_PREFIX domain _ key _ value _ window start.
  const std::string key = absl::StrCat("pre_api_user_hank_", window_s);
  EXPECT_EQ(Command({"GET", key}).str, "3");
  const int64_t ttl = Command({"TTL", key}).integer;
  EXPECT_GT(ttl, 55);
  EXPECT_LE(ttl, 60);  // EXPIRE of the unit's seconds when created, as Envoy
  // Refused hits are not charged (Envoy would INCRBY them).
  EXPECT_FALSE(Check(*envoy, minute, 3, now_ns).allowed);
  EXPECT_EQ(Command({"GET", key}).str, "3");
  // A count Envoy wrote is honoured.
  const Limit other = MakeLimit(Spec(Algorithm::kFixedWindow, 5, 60 * kSecond), "ivan");
  Command({"SET", absl::StrCat("pre_api_user_ivan_", window_s), "4"});
  const Decision d = Check(*envoy, other, 1, now_ns);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.remaining, 0u);
  EXPECT_EQ(d.reset_after_ns, (window_s + 60) * kSecond - now_ns);
  EXPECT_FALSE(Check(*envoy, other, 1, now_ns).allowed);
  // A period Envoy has no unit for stays in our layout.
  const Limit odd = MakeLimit(Spec(Algorithm::kFixedWindow, 5, 90 * kSecond), "hank");
  EXPECT_TRUE(Check(*envoy, odd, 1, now_ns).allowed);
  EXPECT_EQ(Command({"EXISTS", StateRedisKey("fg:", odd.state_key, odd.descriptor_size)}).integer,
            1);
  // A value Envoy could not have written fails that transaction alone, by its failure mode.
  Command({"SET", absl::StrCat("pre_api_user_bad_", window_s), "x"});
  Limit bad = MakeLimit(Spec(Algorithm::kFixedWindow, 5, 60 * kSecond), "bad");
  bad.failure_mode = FailureMode::kClosed;
  EXPECT_TRUE(Check(*envoy, bad, 1, now_ns).unavailable);
  EXPECT_TRUE(Check(*envoy, minute, 1, now_ns).allowed);
}

TEST_F(RedisStoreTest, FailureModesWhenRedisStallsAndRecoveryAfterRestart) {
  std::unique_ptr<LocalStore> fallback = *NewShardedStore(StoreOptions{});
  std::unique_ptr<redis::Client> client = NewTestClient(/*timeout_ms=*/100);
  std::unique_ptr<RedisStore> store = NewStore(
      client.get(), RedisStoreOptions{.local_fallback = fallback.get(), .sync_timeout_ms = 2000});
  Limit open = MakeLimit(Spec(Algorithm::kFixedWindow, 1, kSecond), "open");
  open.failure_mode = FailureMode::kOpen;
  Limit closed = MakeLimit(Spec(Algorithm::kFixedWindow, 1, kSecond), "closed");
  closed.failure_mode = FailureMode::kClosed;
  Limit local = MakeLimit(Spec(Algorithm::kFixedWindow, 1, kSecond), "local");
  local.failure_mode = FailureMode::kLocal;
  const int64_t now_ns = kStartNs;
  for (const Limit* limit : {&open, &closed, &local}) {
    ASSERT_TRUE(Check(*store, *limit, 1, now_ns).allowed);  // each limit of 1 is spent in Redis
  }
  const auto all_failure_modes = [&](const char* what) {
    for (int i = 0; i < 2; ++i) {
      const absl::Time start = absl::Now();
      EXPECT_TRUE(Check(*store, open, 1, now_ns).allowed) << what;
      const Decision c = Check(*store, closed, 1, now_ns);
      EXPECT_FALSE(c.allowed) << what;
      EXPECT_TRUE(c.unavailable) << what;
      EXPECT_EQ(Check(*store, local, 1, now_ns).allowed, i == 0) << what;  // the fallback's own 1
      EXPECT_LT(absl::Now() - start, absl::Milliseconds(3 * 400)) << what;
    }
  };
  server_->Pause();
  all_failure_modes("paused");
  server_->Resume();
  const RedisStoreStats stats = store->GetRedisStats();
  EXPECT_GE(stats.failed_ops_open, 2u);
  EXPECT_GE(stats.failed_ops_closed, 2u);
  EXPECT_GE(stats.failed_ops_local, 2u);

  server_->Kill();
  const Decision down = Check(*store, closed, 1, now_ns);
  EXPECT_TRUE(down.unavailable);
  ASSERT_TRUE(server_->Restart().ok());
  // Back: the restarted server lost its state (and its script cache: NOSCRIPT, then loaded).
  bool recovered = false;
  for (int i = 0; i < 200 && !recovered; ++i) {
    const Decision d = Check(*store, closed, 1, now_ns + kSecond);
    recovered = !d.unavailable;
    if (!recovered) {
      absl::SleepFor(absl::Milliseconds(20));  // polling a restarting process, not syncing
    }
  }
  EXPECT_TRUE(recovered);
  EXPECT_FALSE(Check(*store, closed, 1, now_ns + kSecond).allowed);  // its limit of 1 is spent
}

// Redis CPU per check under load, from INFO commandstats (EVALSHA's usec over the checks it
// decided): with batching, far below one script call per check. Prints the figure; the bound is
// loose, as other builds share this machine.
TEST_F(RedisStoreTest, RedisCpuPerCheckUnderLoad) {
  constexpr int kChecks = 20000;
  std::vector<Limit> limits;
  for (int i = 0; i < 1000; ++i) {
    limits.push_back(MakeLimit(Spec(Algorithm::kTokenBucket, 100, kSecond), absl::StrCat("u", i)));
  }
  Command({"CONFIG", "RESETSTAT"});
  boost::asio::io_context loop;
  std::vector<Decision> decisions(kChecks);
  int done = 0;
  const absl::Time start = absl::Now();
  for (int i = 0; i < kChecks; ++i) {
    const StoreOp op = limits[i % limits.size()].Op(1);
    store_->ApplyAsync(absl::MakeConstSpan(&op, 1), kStartNs + i * kUs,
                       absl::MakeSpan(&decisions[i], 1), loop, [&](bool) { ++done; });
  }
  auto guard = boost::asio::make_work_guard(loop);
  while (done < kChecks && absl::Now() - start < absl::Seconds(60)) {
    loop.run_one_for(std::chrono::milliseconds(100));
  }
  const absl::Duration elapsed = absl::Now() - start;
  ASSERT_EQ(done, kChecks);
  const redis::Reply info = Command({"INFO", "commandstats"});
  const size_t at = info.str.find("cmdstat_evalsha:calls=");
  ASSERT_NE(at, std::string::npos) << info.str;
  int64_t calls = 0;
  int64_t usec = 0;
  ASSERT_EQ(sscanf(info.str.c_str() + at, "cmdstat_evalsha:calls=%ld,usec=%ld", &calls, &usec), 2);
  const double per_check_us = static_cast<double>(usec) / kChecks;
  std::printf("redis cpu: %.2f us per check (%ld EVALSHA for %d checks, %.0f checks/s)\n",
              per_check_us, calls, kChecks, kChecks / absl::ToDoubleSeconds(elapsed));
  EXPECT_LT(calls, kChecks / 4);
  EXPECT_LT(per_check_us, 20.0);
}

}  // namespace
}  // namespace floodgate::redis_store
