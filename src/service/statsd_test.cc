// The StatsD sink: envoyproxy/ratelimit's names, deltas across flushes, datagram packing, a real
// UDP socket, send errors, and the flush thread. Flushes are called directly (no thread) unless
// the thread is what is tested.

#include "src/service/statsd.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "floodgate/store.h"
#include "src/service/rate_limit_service.h"
#include "testing/fake_clock.h"
#include "testing/limiter_helpers.h"
#include "testing/service_harness.h"

namespace floodgate::service {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::StartsWith;

constexpr char kYaml[] =
    "domain: api\n"
    "descriptors:\n"
    "  - {key: user, rate_limit: {unit: minute, requests_per_unit: 2}}\n"
    "  - {key: ip, rate_limit: {unit: minute, requests_per_unit: 100}}\n";

// What a FakeSender saw; shared with the test, which keeps it after the sink owns the sender.
struct Sent {
  absl::Mutex mu;
  std::vector<std::string> datagrams ABSL_GUARDED_BY(mu);
  bool fail ABSL_GUARDED_BY(mu) = false;
};

class FakeSender final : public DatagramSender {
 public:
  explicit FakeSender(std::shared_ptr<Sent> sent) : sent_(std::move(sent)) {}
  absl::Status Send(std::string_view datagram) override {
    absl::MutexLock lock(&sent_->mu);
    if (sent_->fail) {
      return absl::UnavailableError("refused");
    }
    sent_->datagrams.emplace_back(datagram);
    return absl::OkStatus();
  }

 private:
  std::shared_ptr<Sent> sent_;
};

// Returns every line of `datagrams`, without their '\n'.
std::vector<std::string> Lines(const std::vector<std::string>& datagrams) {
  std::vector<std::string> lines;
  for (const std::string& d : datagrams) {
    EXPECT_EQ(d.back(), '\n') << d;
    for (absl::string_view line : absl::StrSplit(d, '\n', absl::SkipEmpty())) {
      lines.emplace_back(line);
    }
  }
  return lines;
}

class StatsdTest : public ::testing::Test, protected floodgate::testing::ServiceHarness {
 protected:
  StatsdTest() { StartService(kYaml); }

  StatsdSources Sources() {
    return StatsdSources{limiter_.get(), &metrics_, [this] { return config_; }};
  }

  std::unique_ptr<StatsdSink> Sink(StatsdOptions options = {}) {
    options.address = "fake:1";
    options.clock = &clock_;
    return std::make_unique<StatsdSink>(options, Sources(), std::make_unique<FakeSender>(sent_));
  }

  std::vector<std::string> SentLines() {
    absl::MutexLock lock(&sent_->mu);
    std::vector<std::string> lines = Lines(sent_->datagrams);
    sent_->datagrams.clear();
    return lines;
  }

  void Check(const std::string& key, const std::string& value, int times = 1) {
    for (int i = 0; i < times; ++i) {
      limiter::CheckRequest request = floodgate::testing::MakeRequest("api", {{{key, value}}});
      ASSERT_TRUE(service_->Check(CallContext{Frontend::kGrpc}, request).ok());
    }
  }

  ConfigStats config_;
  std::shared_ptr<Sent> sent_ = std::make_shared<Sent>();
};

TEST_F(StatsdTest, SendsEnvoysNamesAndTypes) {
  Check("user", "alice", 3);  // 2 within, 1 over
  Check("ip", "10.1.2.3");
  config_.reload_success = 1;
  metrics_.global_shadow_mode.store(4);
  metrics_.http.bad_requests.store(2);
  metrics_.grpc.errors.store(5);
  auto sink = Sink();
  sink->Flush();
  const std::vector<std::string> lines = SentLines();
  EXPECT_THAT(lines, Contains("ratelimit.service.rate_limit.api.user.total_hits:3|c"));
  EXPECT_THAT(lines, Contains("ratelimit.service.rate_limit.api.user.within_limit:2|c"));
  EXPECT_THAT(lines, Contains("ratelimit.service.rate_limit.api.user.over_limit:1|c"));
  EXPECT_THAT(lines, Contains("ratelimit.service.rate_limit.api.user.near_limit:1|c"));
  EXPECT_THAT(lines, Contains("ratelimit.service.rate_limit.api.ip.total_hits:1|c"));
  EXPECT_THAT(lines, Contains("ratelimit.service.config_load_success:1|c"));
  EXPECT_THAT(lines, Contains("ratelimit.service.global_shadow_mode:4|c"));
  EXPECT_THAT(lines, Contains("ratelimit.service.call.should_rate_limit.service_error:2|c"));
  EXPECT_THAT(lines, Contains("ratelimit.service.call.should_rate_limit.redis_error:5|c"));
  EXPECT_THAT(lines, Contains("ratelimit_server.ShouldRateLimit.total_requests:4|c"));
  EXPECT_THAT(lines, Contains("floodgate.config_version:1|g"));
  EXPECT_THAT(lines, Contains(StartsWith("floodgate.store.keys:")));
  // Zero counters are not sent.
  EXPECT_THAT(lines, Not(Contains("ratelimit.service.rate_limit.api.user.shadow_mode:0|c")));
  EXPECT_THAT(lines, Not(Contains("ratelimit.service.config_load_error:0|c")));
}

TEST_F(StatsdTest, UnknownDomainsAsEnvoyNamesThem) {
  for (int i = 0; i < 2; ++i) {
    limiter::CheckRequest request = floodgate::testing::MakeRequest("nowhere", {{{"k", "v"}}});
    ASSERT_TRUE(service_->Check(CallContext{Frontend::kHttp}, request).ok());
  }
  auto sink = Sink();
  sink->Flush();
  EXPECT_THAT(SentLines(), Contains("ratelimit.service.rate_limit.nowhere.domain_not_found:2|c"));
}

TEST_F(StatsdTest, RuleKeysAreSanitizedAsEnvoyDoes) {
  config_ = {};
  auto sink = Sink();
  // A request value under an override limit goes into the stats key as is.
  limiter::CheckRequest request =
      floodgate::testing::MakeRequest("api", {{{"peer", "10.0.0.1:80|x"}}});
  limiter::LimitOverride limit;
  limit.requests_per_unit = 10;
  limit.unit = core::TimeUnit::kMinute;
  request.descriptors[0].limit = limit;
  ASSERT_TRUE(service_->Check(CallContext{Frontend::kGrpc}, request).ok());
  sink->Flush();
  EXPECT_THAT(SentLines(),
              Contains("ratelimit.service.rate_limit.api.peer_10_0_0_1_80_x.total_hits:1|c"));
}

TEST_F(StatsdTest, CountersAreDeltasSinceTheLastFlush) {
  auto sink = Sink();
  Check("user", "alice", 2);
  sink->Flush();
  EXPECT_THAT(SentLines(), Contains("ratelimit.service.rate_limit.api.user.total_hits:2|c"));

  sink->Flush();  // nothing happened: no counter line, only the gauges
  for (const std::string& line : SentLines()) {
    EXPECT_THAT(line, ::testing::EndsWith("|g"));
  }

  Check("user", "alice", 3);  // 3 more: all over the limit of 2
  config_.reload_failure = 1;
  sink->Flush();
  const std::vector<std::string> lines = SentLines();
  EXPECT_THAT(lines, Contains("ratelimit.service.rate_limit.api.user.total_hits:3|c"));
  EXPECT_THAT(lines, Contains("ratelimit.service.rate_limit.api.user.over_limit:3|c"));
  EXPECT_THAT(lines, Not(Contains(StartsWith("ratelimit.service.rate_limit.api.user.within"))));
  EXPECT_THAT(lines, Contains("ratelimit.service.config_load_error:1|c"));
  EXPECT_THAT(lines, Contains("ratelimit_server.ShouldRateLimit.total_requests:3|c"));
}

TEST_F(StatsdTest, LatenciesAreSampledTimers) {
  auto sink = Sink();
  for (int i = 0; i < 3; ++i) {
    metrics_.grpc.latency.Record(200'000);  // 0.2 ms: the 0.25 ms bucket
  }
  metrics_.grpc.latency.Record(2'000'000'000);  // 2 s: past the last bound
  sink->Flush();
  std::vector<std::string> timers;
  for (const std::string& line : SentLines()) {
    if (absl::StartsWith(line, "ratelimit_server.ShouldRateLimit.response_time:")) {
      timers.push_back(line);
    }
  }
  ASSERT_EQ(timers.size(), 2u);
  EXPECT_THAT(timers[0], StartsWith("ratelimit_server.ShouldRateLimit.response_time:0.25|ms|@"));
  const double rate = std::stod(timers[0].substr(timers[0].find('@') + 1));
  EXPECT_EQ(static_cast<int>(1.0 / rate), 3);  // a server counts 3 samples
  EXPECT_EQ(timers[1], "ratelimit_server.ShouldRateLimit.response_time:1000|ms");

  sink->Flush();  // no new latencies: no timer line
  EXPECT_THAT(SentLines(),
              Not(Contains(StartsWith("ratelimit_server.ShouldRateLimit.response_time"))));
}

TEST(PackDatagramsTest, PacksLinesInOrderUnderTheBound) {
  EXPECT_THAT(PackDatagrams({}, 10), IsEmpty());
  EXPECT_THAT(PackDatagrams({"a:1|c\n", "b:2|c\n", "c:3|c\n"}, 12),
              ElementsAre("a:1|c\nb:2|c\n", "c:3|c\n"));
  // A line longer than the bound goes alone.
  EXPECT_THAT(PackDatagrams({"a:1|c\n", "long_name:1|c\n", "b:2|c\n"}, 8),
              ElementsAre("a:1|c\n", "long_name:1|c\n", "b:2|c\n"));
}

TEST_F(StatsdTest, SplitsAFlushIntoDatagramsUnderTheBound) {
  for (int i = 0; i < 40; ++i) {
    Check("user", absl::StrCat("u", i));  // one rule: the values share its counters
    Check("ip", absl::StrCat("10.0.0.", i));
  }
  StatsdOptions options;
  options.max_datagram_bytes = 120;
  auto sink = Sink(options);
  const std::vector<std::string> lines = sink->Flush();
  absl::MutexLock lock(&sent_->mu);
  ASSERT_GT(sent_->datagrams.size(), 2u);
  std::string joined;
  for (const std::string& d : sent_->datagrams) {
    EXPECT_LE(d.size(), 120u);
    joined += d;
  }
  std::string expected;
  for (const std::string& line : lines) {
    expected += line;
  }
  EXPECT_EQ(joined, expected);
  EXPECT_EQ(metrics_.statsd_datagrams.load(), sent_->datagrams.size());
}

TEST_F(StatsdTest, SendErrorsAreCountedNotFatal) {
  auto sink = Sink();
  Check("user", "alice");
  {
    absl::MutexLock lock(&sent_->mu);
    sent_->fail = true;
  }
  sink->Flush();
  sink->Flush();
  EXPECT_EQ(metrics_.statsd_send_errors.load(), 2u);  // one datagram each
  EXPECT_EQ(metrics_.statsd_datagrams.load(), 0u);
  {
    absl::MutexLock lock(&sent_->mu);
    sent_->fail = false;
  }
  Check("user", "alice");
  sink->Flush();
  // The lost deltas are not sent again: a flush sends what changed since the last one.
  EXPECT_THAT(SentLines(), Contains("ratelimit.service.rate_limit.api.user.total_hits:1|c"));
  EXPECT_EQ(metrics_.statsd_datagrams.load(), 1u);
}

TEST_F(StatsdTest, SendErrorsAreLoggedAtMostOnceAMinute) {
  std::vector<std::string> logged;
  StatsdOptions options;
  options.log_sink = [&logged](std::string_view line) { logged.emplace_back(line); };
  auto sink = Sink(options);
  {
    absl::MutexLock lock(&sent_->mu);
    sent_->fail = true;
  }
  sink->Flush();
  sink->Flush();
  sink->Flush();
  ASSERT_EQ(logged.size(), 1u);
  EXPECT_EQ(logged[0], "statsd: a datagram to fake:1 was lost: refused");
  clock_.Advance(61 * floodgate::testing::kSecond);
  sink->Flush();
  ASSERT_EQ(logged.size(), 2u);
  EXPECT_THAT(logged[1], ::testing::HasSubstr("(2 earlier lines suppressed)"));
  EXPECT_EQ(metrics_.statsd_send_errors.load(), 4u);
}

// A UDP socket bound on 127.0.0.1 (port 0); Receive waits at most 10 s for a datagram.
class UdpReceiver {
 public:
  UdpReceiver() {
    fd_ = ::socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    socklen_t len = sizeof(addr);
    EXPECT_EQ(::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len), 0);
    port_ = ntohs(addr.sin_port);
    timeval timeout{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  }
  ~UdpReceiver() { ::close(fd_); }
  int port() const { return port_; }
  std::string Receive() {
    char buf[65536];
    const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    return n < 0 ? std::string() : std::string(buf, static_cast<size_t>(n));
  }

 private:
  int fd_ = -1;
  int port_ = 0;
};

TEST_F(StatsdTest, SendsOverARealUdpSocket) {
  UdpReceiver receiver;
  Check("user", "alice", 2);
  StatsdOptions options;
  options.address = absl::StrCat("127.0.0.1:", receiver.port());
  auto sink = NewStatsdSink(options, Sources());
  ASSERT_TRUE(sink.ok()) << sink.status();
  const std::vector<std::string> lines = (*sink)->Flush();
  ASSERT_EQ(metrics_.statsd_datagrams.load(), 1u);  // a few lines: one datagram
  const std::string datagram = receiver.Receive();
  std::string expected;
  for (const std::string& line : lines) {
    expected += line;
  }
  EXPECT_EQ(datagram, expected);
  EXPECT_THAT(Lines({datagram}), Contains("ratelimit.service.rate_limit.api.user.total_hits:2|c"));
}

TEST(UdpSenderTest, BadAddressesAndOversizedDatagramsFail) {
  EXPECT_EQ(NewUdpSender("no-port").status().code(), absl::StatusCode::kInvalidArgument);
  UdpReceiver receiver;
  auto sender = NewUdpSender(absl::StrCat("127.0.0.1:", receiver.port()));
  ASSERT_TRUE(sender.ok()) << sender.status();
  EXPECT_TRUE((*sender)->Send("a:1|c\n").ok());
  EXPECT_EQ(receiver.Receive(), "a:1|c\n");
  // Over the largest UDP payload: the kernel refuses it (EMSGSIZE), an error not a crash.
  EXPECT_EQ((*sender)->Send(std::string(70'000, 'x')).code(), absl::StatusCode::kUnavailable);
}

TEST_F(StatsdTest, NewStatsdSinkRefusesANonPositiveInterval) {
  StatsdOptions options;
  options.address = "127.0.0.1:8125";
  options.flush_interval = absl::ZeroDuration();
  EXPECT_EQ(NewStatsdSink(options, Sources()).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(StatsdTest, TheThreadFlushesOnItsTimer) {
  StatsdOptions options;
  options.flush_interval = absl::Milliseconds(1);
  auto sink = Sink(options);
  Check("user", "alice");
  sink->Start();
  {
    // Wait (on a condition, not a sleep) until the thread has sent something.
    absl::MutexLock lock(&sent_->mu);
    sent_->mu.Await(absl::Condition(
        +[](std::vector<std::string>* d) { return !d->empty(); }, &sent_->datagrams));
  }
  sink->Stop();
  EXPECT_THAT(SentLines(), Contains("ratelimit.service.rate_limit.api.user.total_hits:1|c"));
}

TEST_F(StatsdTest, StopIsPromptAndFlushesTheRest) {
  StatsdOptions options;
  options.flush_interval = absl::Hours(1);  // the timer never fires in this test
  auto sink = Sink(options);
  sink->Start();
  Check("user", "alice", 2);
  const absl::Time start = absl::Now();
  sink->Stop();
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));  // woken, not waiting out the hour
  EXPECT_THAT(SentLines(), Contains("ratelimit.service.rate_limit.api.user.total_hits:2|c"));
  sink->Stop();  // idempotent
  EXPECT_THAT(SentLines(), IsEmpty());
}

}  // namespace
}  // namespace floodgate::service
