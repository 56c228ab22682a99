#include "src/discovery/dns_discovery.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "src/discovery/dns_members.h"

namespace floodgate::discovery {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// --- The pure parts. ---

TEST(ParseDnsTargetTest, ReadsNameAndPort) {
  absl::StatusOr<DnsTarget> target =
      ParseDnsTarget("floodgate-peers.default.svc.cluster.local:7946");
  ASSERT_TRUE(target.ok()) << target.status();
  EXPECT_EQ(*target, (DnsTarget{"floodgate-peers.default.svc.cluster.local", 7946}));
  EXPECT_EQ(*ParseDnsTarget("peers:1"), (DnsTarget{"peers", 1}));
  EXPECT_EQ(*ParseDnsTarget("peers.:65535"), (DnsTarget{"peers.", 65535}));
}

TEST(ParseDnsTargetTest, SaysWhatIsWrong) {
  const auto error = [](std::string_view text) {
    absl::StatusOr<DnsTarget> target = ParseDnsTarget(text);
    EXPECT_EQ(target.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(target.status().message(), HasSubstr("--peers-dns"));
    return std::string(target.status().message());
  };
  EXPECT_THAT(error("peers"), HasSubstr("expected NAME:PORT"));
  EXPECT_THAT(error("peers:"), HasSubstr("port after ':' is missing"));
  EXPECT_THAT(error(":7946"), HasSubstr("name before ':' is empty"));
  EXPECT_THAT(error("peers:0"), HasSubstr("port 0"));
  EXPECT_THAT(error("peers:65536"), HasSubstr("from 1 to 65535"));
  EXPECT_THAT(error("peers:79x"), HasSubstr("from 1 to 65535"));
  EXPECT_THAT(error("peers:-1"), HasSubstr("from 1 to 65535"));
  EXPECT_THAT(error("10.0.0.7:7946"), HasSubstr("not an IP address"));
  EXPECT_THAT(error("[::1]:7946"), HasSubstr("not an IP address"));
  EXPECT_THAT(error("http://peers:7946"), HasSubstr("DNS name"));
  EXPECT_THAT(error("my peers:7946"), HasSubstr("DNS name"));
  EXPECT_THAT(error("a..b:7946"), HasSubstr("DNS name"));
}

TEST(MembersFromAddressesTest, FormatsSortsAndDeduplicates) {
  EXPECT_THAT(MembersFromAddresses({"127.0.0.3", "::1", "127.0.0.2", "127.0.0.3"}, 7946),
              ElementsAre(Node{"127.0.0.2", "127.0.0.2:7946"}, Node{"127.0.0.3", "127.0.0.3:7946"},
                          Node{"::1", "[::1]:7946"}));
  EXPECT_TRUE(MembersFromAddresses({}, 7946).empty());
}

// --- The source's behaviour, against a scripted resolver. ---

// Answers every Resolve with what the test last set.
class FakeResolver : public DnsResolver {
 public:
  void Set(absl::StatusOr<std::vector<std::string>> answer) {
    absl::MutexLock lock(&mu_);
    answer_ = std::move(answer);
  }
  absl::StatusOr<std::vector<std::string>> Resolve(const std::string& name) override {
    absl::MutexLock lock(&mu_);
    if (interrupted_) {
      return absl::CancelledError("stopped");
    }
    return answer_;
  }
  void Interrupt() override {
    absl::MutexLock lock(&mu_);
    interrupted_ = true;
  }

 private:
  absl::Mutex mu_;
  absl::StatusOr<std::vector<std::string>> answer_ ABSL_GUARDED_BY(mu_) =
      absl::UnavailableError("no answer set");
  bool interrupted_ ABSL_GUARDED_BY(mu_) = false;
};

// Records what the source reports; tests wait on it with deadlines.
class Recorder {
 public:
  void OnChange(const std::vector<Node>& members) {
    absl::MutexLock lock(&mu_);
    lists_.push_back(members);
  }
  void OnLookup(const DiscoveryStatus& status) {
    absl::MutexLock lock(&mu_);
    ++lookups_;
    last_status_ = status;
  }
  // Waits (at most 10 s) for a lookup after the `after`th; returns the status it left.
  DiscoveryStatus AwaitLookupAfter(int after) {
    absl::MutexLock lock(&mu_);
    const auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return lookups_ > after; };
    EXPECT_TRUE(mu_.AwaitWithTimeout(absl::Condition(&done), absl::Seconds(10)));
    return last_status_;
  }
  int lookups() {
    absl::MutexLock lock(&mu_);
    return lookups_;
  }
  std::vector<std::vector<Node>> lists() {
    absl::MutexLock lock(&mu_);
    return lists_;
  }

 private:
  absl::Mutex mu_;
  std::vector<std::vector<Node>> lists_ ABSL_GUARDED_BY(mu_);
  int lookups_ ABSL_GUARDED_BY(mu_) = 0;
  DiscoveryStatus last_status_ ABSL_GUARDED_BY(mu_);
};

class DnsDiscoveryTest : public ::testing::Test {
 protected:
  // Makes a source on `resolver_` that looks up only at Start and on Refresh (a 1 h interval).
  std::unique_ptr<Discovery> Make(absl::Duration start_timeout = absl::Seconds(10)) {
    auto resolver = std::make_unique<FakeResolver>();
    resolver_ = resolver.get();
    resolver_->Set(answer_);
    DnsDiscoveryOptions options{.name = "peers.test", .port = 7946};
    options.interval = absl::Hours(1);
    options.retry_initial = absl::Hours(1);
    options.start_timeout = start_timeout;
    options.on_lookup = [this](const DiscoveryStatus& status) { recorder_.OnLookup(status); };
    absl::StatusOr<std::unique_ptr<Discovery>> source =
        NewDnsDiscovery(std::move(options), std::move(resolver));
    EXPECT_TRUE(source.ok()) << source.status();
    return source.ok() ? *std::move(source) : nullptr;
  }
  // Starts `source` and waits for its first lookup to finish (Start returns after the first
  // on_change, before that lookup's on_lookup).
  absl::Status Start(Discovery& source) {
    const absl::Status started =
        source.Start([this](const std::vector<Node>& members) { recorder_.OnChange(members); });
    if (started.code() != absl::StatusCode::kFailedPrecondition) {
      recorder_.AwaitLookupAfter(0);
    }
    return started;
  }
  // Refreshes and waits for the lookup it causes.
  DiscoveryStatus RefreshAndWait(Discovery& source) {
    const int before = recorder_.lookups();
    source.Refresh();
    return recorder_.AwaitLookupAfter(before);
  }

  absl::StatusOr<std::vector<std::string>> answer_ =
      std::vector<std::string>{"10.0.0.2", "10.0.0.1"};
  FakeResolver* resolver_ = nullptr;
  Recorder recorder_;
};

const Node kOne{"10.0.0.1", "10.0.0.1:7946"};
const Node kTwo{"10.0.0.2", "10.0.0.2:7946"};
const Node kThree{"10.0.0.3", "10.0.0.3:7946"};

TEST_F(DnsDiscoveryTest, StartReportsTheFirstAnswerAndRefreshFollowsChangesOnly) {
  std::unique_ptr<Discovery> source = Make();
  ASSERT_TRUE(Start(*source).ok());
  EXPECT_THAT(recorder_.lists(), ElementsAre(ElementsAre(kOne, kTwo)));

  RefreshAndWait(*source);  // the same records in another order: no call
  EXPECT_EQ(recorder_.lists().size(), 1u);

  resolver_->Set(std::vector<std::string>{"10.0.0.3", "10.0.0.1", "10.0.0.2"});
  const DiscoveryStatus status = RefreshAndWait(*source);
  EXPECT_THAT(recorder_.lists().back(), ElementsAre(kOne, kTwo, kThree));
  EXPECT_EQ(status.source, "dns");
  EXPECT_TRUE(status.connected);
  EXPECT_EQ(status.updates, 2u);
  EXPECT_EQ(status.errors, 0u);
  EXPECT_EQ(status.last_error, "");
  EXPECT_EQ(source->Deregister(), absl::OkStatus());
  source->Stop();
  source->Stop();  // idempotent
}

TEST_F(DnsDiscoveryTest, AFailureKeepsTheListAndTheNextAnswerIsAReconnect) {
  std::unique_ptr<Discovery> source = Make();
  ASSERT_TRUE(Start(*source).ok());
  resolver_->Set(absl::UnavailableError("DNS lookup of peers.test failed: no answer within 1s"));
  DiscoveryStatus status = RefreshAndWait(*source);
  EXPECT_FALSE(status.connected);
  EXPECT_EQ(status.last_error, "DNS lookup of peers.test failed: no answer within 1s");
  EXPECT_EQ(status.errors, 1u);
  EXPECT_EQ(recorder_.lists().size(), 1u);

  resolver_->Set(std::vector<std::string>{"10.0.0.1"});
  status = RefreshAndWait(*source);
  EXPECT_TRUE(status.connected);
  EXPECT_EQ(status.reconnects, 1u);
  EXPECT_THAT(recorder_.lists().back(), ElementsAre(kOne));
}

TEST_F(DnsDiscoveryTest, NoRecordsKeepsTheLastListAndSaysSo) {
  std::unique_ptr<Discovery> source = Make();
  ASSERT_TRUE(Start(*source).ok());
  resolver_->Set(std::vector<std::string>{});
  const DiscoveryStatus status = RefreshAndWait(*source);
  EXPECT_TRUE(status.connected);
  EXPECT_EQ(status.errors, 0u);
  EXPECT_THAT(status.last_error, HasSubstr("peers.test has no A or AAAA records"));
  EXPECT_THAT(status.last_error, HasSubstr("keeping the last 2 members"));
  EXPECT_EQ(recorder_.lists().size(), 1u);
}

TEST_F(DnsDiscoveryTest, NoRecordsAtFirstIsReportedAsAnEmptyList) {
  answer_ = std::vector<std::string>{};
  std::unique_ptr<Discovery> source = Make();
  ASSERT_TRUE(Start(*source).ok());
  EXPECT_THAT(recorder_.lists(), ElementsAre(ElementsAre()));
  resolver_->Set(std::vector<std::string>{"10.0.0.1"});
  RefreshAndWait(*source);
  EXPECT_THAT(recorder_.lists().back(), ElementsAre(kOne));
}

TEST_F(DnsDiscoveryTest, StartFailsWithoutAnAnswerAndKeepsTrying) {
  answer_ = absl::UnavailableError("DNS lookup of peers.test failed: connection refused");
  std::unique_ptr<Discovery> source = Make(absl::Milliseconds(300));
  const absl::Status started = Start(*source);
  EXPECT_EQ(started.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(started.message(), HasSubstr("still trying"));
  EXPECT_THAT(started.message(), HasSubstr("connection refused"));
  EXPECT_TRUE(recorder_.lists().empty());

  resolver_->Set(std::vector<std::string>{"10.0.0.2"});
  RefreshAndWait(*source);
  EXPECT_THAT(recorder_.lists(), ElementsAre(ElementsAre(kTwo)));
}

TEST_F(DnsDiscoveryTest, RejectsBadOptions) {
  EXPECT_EQ(NewDnsDiscovery(DnsDiscoveryOptions{.name = "", .port = 1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(NewDnsDiscovery(DnsDiscoveryOptions{.name = "peers", .port = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::StatusOr<std::unique_ptr<Discovery>> bad_servers =
      NewDnsDiscovery(DnsDiscoveryOptions{.name = "peers", .port = 1, .servers = "not a server"});
  EXPECT_EQ(bad_servers.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_servers.status().message(), HasSubstr("bad DNS servers"));
  DnsDiscoveryOptions zero{.name = "peers", .port = 1};
  zero.interval = absl::ZeroDuration();
  EXPECT_EQ(NewDnsDiscovery(zero).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(DnsDiscoveryTest, StartTwiceOrAfterStopIsRefused) {
  std::unique_ptr<Discovery> source = Make();
  ASSERT_TRUE(Start(*source).ok());
  EXPECT_EQ(Start(*source).code(), absl::StatusCode::kFailedPrecondition);
  std::unique_ptr<Discovery> stopped = Make();
  stopped->Stop();
  EXPECT_EQ(Start(*stopped).code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace floodgate::discovery
