// DNS discovery (src/discovery/dns_discovery.h) against a real dnsmasq on a free port
// (testing/dnsmasq_server.h): records added and removed are followed, on Refresh and by the
// interval; IPv6 members are written [addr]:port; a DNS server going away keeps the list and says
// so; coming back is followed. Every wait is on what the source reports, with a deadline.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "src/discovery/dns_discovery.h"
#include "testing/dnsmasq_server.h"

namespace floodgate::discovery {
namespace {

using ::floodgate::testing::DnsmasqServer;
using ::testing::AnyOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kName[] = "peers.floodgate.test";
constexpr uint16_t kPort = 7946;
constexpr absl::Duration kDeadline = absl::Seconds(10);

Node Member(const std::string& ip) { return Node{ip, ip + ":7946"}; }

// Collects what the source reports, on its thread; the test waits on it.
class Watcher {
 public:
  void OnChange(const std::vector<Node>& members) {
    absl::MutexLock lock(&mu_);
    lists_.push_back(members);
  }
  void OnLookup(const DiscoveryStatus& status) {
    absl::MutexLock lock(&mu_);
    status_ = status;
  }

  // Waits, at most kDeadline, for the last reported list to be `expected`.
  bool AwaitList(const std::vector<Node>& expected) {
    absl::MutexLock lock(&mu_);
    const auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return !lists_.empty() && lists_.back() == expected;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&done), kDeadline);
  }
  // Waits, at most kDeadline, for a lookup to leave a status satisfying `wanted`; returns the
  // last status seen.
  DiscoveryStatus AwaitStatus(const std::function<bool(const DiscoveryStatus&)>& wanted) {
    absl::MutexLock lock(&mu_);
    const auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return wanted(status_); };
    EXPECT_TRUE(mu_.AwaitWithTimeout(absl::Condition(&done), kDeadline)) << status_.last_error;
    return status_;
  }
  std::vector<std::vector<Node>> lists() {
    absl::MutexLock lock(&mu_);
    return lists_;
  }

 private:
  absl::Mutex mu_;
  std::vector<std::vector<Node>> lists_ ABSL_GUARDED_BY(mu_);
  DiscoveryStatus status_ ABSL_GUARDED_BY(mu_);
};

class DnsDiscoveryIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<DnsmasqServer>> dns =
        DnsmasqServer::Start({{kName, {"127.0.0.2", "127.0.0.3"}}});
    ASSERT_TRUE(dns.ok()) << dns.status();
    dns_ = *std::move(dns);
  }

  // Makes a source asking dnsmasq; `interval` long means: only at Start and on Refresh.
  std::unique_ptr<Discovery> Make(absl::Duration interval = absl::Hours(1),
                                  absl::Duration start_timeout = absl::Seconds(5)) {
    DnsDiscoveryOptions options{.name = kName, .port = kPort, .servers = dns_->address()};
    options.interval = interval;
    options.query_timeout = absl::Seconds(1);
    options.start_timeout = start_timeout;
    options.retry_initial = absl::Milliseconds(50);
    options.on_lookup = [this](const DiscoveryStatus& status) { watcher_.OnLookup(status); };
    absl::StatusOr<std::unique_ptr<Discovery>> source = NewDnsDiscovery(std::move(options));
    EXPECT_TRUE(source.ok()) << source.status();
    return source.ok() ? *std::move(source) : nullptr;
  }
  absl::Status Start(Discovery& source) {
    return source.Start([this](const std::vector<Node>& members) { watcher_.OnChange(members); });
  }

  std::unique_ptr<DnsmasqServer> dns_;
  Watcher watcher_;
};

TEST_F(DnsDiscoveryIntegrationTest, FollowsRecordsOnRefresh) {
  std::unique_ptr<Discovery> source = Make();
  ASSERT_TRUE(Start(*source).ok()) << dns_->Log();
  EXPECT_THAT(watcher_.lists(), ElementsAre(ElementsAre(Member("127.0.0.2"), Member("127.0.0.3"))));

  ASSERT_TRUE(dns_->SetRecords({{kName, {"127.0.0.2", "127.0.0.3", "127.0.0.4"}}}).ok());
  source->Refresh();
  EXPECT_TRUE(watcher_.AwaitList({Member("127.0.0.2"), Member("127.0.0.3"), Member("127.0.0.4")}));

  ASSERT_TRUE(dns_->SetRecords({{kName, {"127.0.0.3", "127.0.0.4"}}}).ok());
  source->Refresh();
  EXPECT_TRUE(watcher_.AwaitList({Member("127.0.0.3"), Member("127.0.0.4")}));

  // updates counts a list once on_change returned, which AwaitList does not wait for.
  const DiscoveryStatus status =
      watcher_.AwaitStatus([](const DiscoveryStatus& s) { return s.updates == 3; });
  EXPECT_EQ(status.source, "dns");
  EXPECT_TRUE(status.connected);
  EXPECT_EQ(status.updates, 3u);
  EXPECT_EQ(status.errors, 0u);
  EXPECT_EQ(watcher_.lists().size(), 3u);  // nothing reported twice
}

TEST_F(DnsDiscoveryIntegrationTest, FollowsRecordsByTheInterval) {
  std::unique_ptr<Discovery> source = Make(absl::Milliseconds(100));
  ASSERT_TRUE(Start(*source).ok()) << dns_->Log();

  ASSERT_TRUE(dns_->SetRecords({{kName, {"127.0.0.2", "127.0.0.3", "127.0.0.4"}}}).ok());
  EXPECT_TRUE(watcher_.AwaitList({Member("127.0.0.2"), Member("127.0.0.3"), Member("127.0.0.4")}));

  ASSERT_TRUE(dns_->SetRecords({{kName, {"127.0.0.2", "127.0.0.4"}}}).ok());
  EXPECT_TRUE(watcher_.AwaitList({Member("127.0.0.2"), Member("127.0.0.4")}));
}

TEST_F(DnsDiscoveryIntegrationTest, WritesIpv6MembersInBrackets) {
  ASSERT_TRUE(dns_->SetRecords({{kName, {"127.0.0.2", "::1"}}}).ok());
  std::unique_ptr<Discovery> source = Make();
  ASSERT_TRUE(Start(*source).ok()) << dns_->Log();
  EXPECT_THAT(watcher_.lists(),
              ElementsAre(ElementsAre(Member("127.0.0.2"), Node{"::1", "[::1]:7946"})));
}

TEST_F(DnsDiscoveryIntegrationTest, NoRecordsKeepsTheListAndSaysSo) {
  std::unique_ptr<Discovery> source = Make();
  ASSERT_TRUE(Start(*source).ok()) << dns_->Log();

  ASSERT_TRUE(dns_->SetRecords({{"other.floodgate.test", {"127.0.0.9"}}}).ok());  // NXDOMAIN
  source->Refresh();
  const DiscoveryStatus status =
      watcher_.AwaitStatus([](const DiscoveryStatus& s) { return !s.last_error.empty(); });
  EXPECT_TRUE(status.connected);
  EXPECT_EQ(status.errors, 0u);
  EXPECT_THAT(status.last_error, HasSubstr("peers.floodgate.test has no A or AAAA records"));
  EXPECT_THAT(watcher_.lists(), ElementsAre(ElementsAre(Member("127.0.0.2"), Member("127.0.0.3"))));
}

TEST_F(DnsDiscoveryIntegrationTest, AStoppedServerKeepsTheListAndARestartedOneIsFollowed) {
  std::unique_ptr<Discovery> source = Make();
  ASSERT_TRUE(Start(*source).ok()) << dns_->Log();

  dns_->Stop();
  source->Refresh();
  // Waits for a failed lookup, not for !connected: the watcher's status before its first lookup
  // report is also "not connected" (Start may return before on_lookup has run).
  DiscoveryStatus status =
      watcher_.AwaitStatus([](const DiscoveryStatus& s) { return s.errors >= 1; });
  EXPECT_FALSE(status.connected);
  EXPECT_GE(status.errors, 1u);
  EXPECT_THAT(status.last_error, HasSubstr("DNS lookup of peers.floodgate.test"));
  EXPECT_THAT(status.last_error, HasSubstr(dns_->address()));
  // c-ares 1.18 reports the closed UDP port as a timeout (it may say refused elsewhere).
  EXPECT_THAT(status.last_error,
              AnyOf(HasSubstr("connection refused"), HasSubstr("no answer within")));
  EXPECT_EQ(source->status().connected, false);
  EXPECT_EQ(watcher_.lists().size(), 1u);  // the list is kept

  ASSERT_TRUE(dns_->SetRecords({{kName, {"127.0.0.3", "127.0.0.5"}}}).ok());
  ASSERT_TRUE(dns_->Restart().ok());
  source->Refresh();
  EXPECT_TRUE(watcher_.AwaitList({Member("127.0.0.3"), Member("127.0.0.5")}));
  status = source->status();
  EXPECT_TRUE(status.connected);
  EXPECT_EQ(status.reconnects, 1u);
}

TEST_F(DnsDiscoveryIntegrationTest, StartWithoutAServerFailsAndKeepsTrying) {
  dns_->Stop();
  std::unique_ptr<Discovery> source = Make(absl::Milliseconds(100), absl::Milliseconds(500));
  const absl::Time started_at = absl::Now();
  const absl::Status started = Start(*source);
  EXPECT_EQ(started.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(started.message(), HasSubstr("still trying"));
  EXPECT_LT(absl::Now() - started_at, absl::Seconds(5));
  EXPECT_TRUE(watcher_.lists().empty());

  // The retries (backoff from 50 ms up to the 100 ms interval) find it once it is back.
  ASSERT_TRUE(dns_->Restart().ok());
  EXPECT_TRUE(watcher_.AwaitList({Member("127.0.0.2"), Member("127.0.0.3")}));
}

TEST_F(DnsDiscoveryIntegrationTest, StopEndsReportsAndIsIdempotent) {
  std::unique_ptr<Discovery> source = Make(absl::Milliseconds(10));
  ASSERT_TRUE(Start(*source).ok()) << dns_->Log();
  source->Stop();
  const size_t reported = watcher_.lists().size();
  ASSERT_TRUE(dns_->SetRecords({{kName, {"127.0.0.7"}}}).ok());
  source->Refresh();
  source->Stop();
  EXPECT_EQ(watcher_.lists().size(), reported);
}

}  // namespace
}  // namespace floodgate::discovery
