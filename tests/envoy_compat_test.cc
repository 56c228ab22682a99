// The compatibility suite: configs in the shapes of envoyproxy/ratelimit's documented examples
// (tests/envoy_compat/*.yaml, written by us) and request sequences with the answers
// envoyproxy/ratelimit gives, checked against the real binary over gRPC ShouldRateLimit and
// over HTTP POST /json alike: overall code, each status's code, current_limit and
// limit_remaining, and /json's HTTP status. docs/migrating.md points here.

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "envoy/service/ratelimit/v3/rls.grpc.pb.h"
#include "testing/http_client.h"
#include "testing/server_process.h"
#include "testing/service_harness.h"

namespace floodgate {
namespace {

namespace rls = ::envoy::service::ratelimit::v3;
namespace fs = std::filesystem;
using Response = rls::RateLimitResponse;
using Entries = testing::EnvoyEntries;
using ::testing::HasSubstr;

constexpr auto OK = Response::OK;
constexpr auto OVER = Response::OVER_LIMIT;

// What one descriptor's status must say: its code, and its current_limit's requests_per_unit
// with limit_remaining (limit 0: no current_limit).
struct Want {
  Response::Code code;
  uint32_t limit = 0;
  uint32_t remaining = 0;
};

rls::RateLimitRequest Request(const std::string& domain, const std::vector<Entries>& descriptors,
                              uint32_t hits = 0) {
  return testing::EnvoyRequest(domain, descriptors, hits);
}

// The caller's own limit on the first descriptor.
rls::RateLimitRequest WithLimit(rls::RateLimitRequest request, uint32_t per_day) {
  auto* limit = request.mutable_descriptors(0)->mutable_limit();
  limit->set_requests_per_unit(per_day);
  limit->set_unit(envoy::type::v3::DAY);
  return request;
}

enum class Transport { kGrpc, kJson };

class EnvoyCompatTest : public ::testing::TestWithParam<Transport> {
 protected:
  void SetUp() override { Start({}); }

  // Starts the server on the suite's configs, with `flags` besides.
  void Start(std::vector<std::string> flags) {
    server_.reset();
    flags.insert(flags.begin(),
                 {"--config", std::string(FLOODGATE_SOURCE_DIR) + "/tests/envoy_compat"});
    auto server = testing::ServerProcess::Start(testing::FloodgateBinary(), flags);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    stub_ = rls::RateLimitService::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(server_->grpc_port()), grpc::InsecureChannelCredentials()));
  }

  // Asks over the transport under test; a failed call is a test failure and an empty answer.
  Response Ask(const rls::RateLimitRequest& request) {
    Response response;
    if (GetParam() == Transport::kGrpc) {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
      grpc::Status status = stub_->ShouldRateLimit(&context, request, &response);
      EXPECT_TRUE(status.ok()) << status.error_message();
      return response;
    }
    std::string body;
    EXPECT_TRUE(google::protobuf::util::MessageToJsonString(request, &body).ok());
    testing::HttpClient client(server_->http_port());
    testing::HttpResponse http = client.Request("POST", "/json", body);
    auto parsed = google::protobuf::util::JsonStringToMessage(http.body, &response);
    EXPECT_TRUE(parsed.ok()) << http.status << " " << http.body;
    // envoyproxy/ratelimit's /json answers 429 for OVER_LIMIT, 200 otherwise.
    EXPECT_EQ(http.status, response.overall_code() == OVER ? 429 : 200) << http.body;
    return response;
  }

  // Asks and checks the whole answer.
  void Expect(const rls::RateLimitRequest& request, Response::Code overall,
              const std::vector<Want>& statuses, const std::string& what) {
    SCOPED_TRACE(what);
    Response r = Ask(request);
    EXPECT_EQ(r.overall_code(), overall);
    ASSERT_EQ(r.statuses_size(), static_cast<int>(statuses.size()));
    for (size_t i = 0; i < statuses.size(); ++i) {
      SCOPED_TRACE("status " + std::to_string(i));
      const auto& s = r.statuses(static_cast<int>(i));
      EXPECT_EQ(s.code(), statuses[i].code);
      EXPECT_EQ(s.has_current_limit(), statuses[i].limit != 0);
      EXPECT_EQ(s.current_limit().requests_per_unit(), statuses[i].limit);
      if (statuses[i].limit != 0) {
        EXPECT_EQ(s.limit_remaining(), statuses[i].remaining);
      }
    }
  }

  std::string Metrics() {
    testing::HttpClient client(server_->http_port());
    return client.Request("GET", "/metrics").body;
  }

  std::unique_ptr<testing::ServerProcess> server_;
  std::unique_ptr<rls::RateLimitService::Stub> stub_;
};

TEST_P(EnvoyCompatTest, NestedDescriptorsAndKeyOnlyDefaults) {
  const auto marketing =
      Request("messaging", {{{"message_type", "marketing"}, {"to_number", "1"}}});
  Expect(marketing, OK, {{OK, 3, 2}}, "the nested limit");
  Expect(marketing, OK, {{OK, 3, 1}}, "");
  Expect(marketing, OK, {{OK, 3, 0}}, "");
  Expect(marketing, OVER, {{OVER, 3, 0}}, "spent");
  Expect(Request("messaging", {{{"to_number", "1"}}}), OK, {{OK, 50, 49}},
         "the top-level default is its own counter");
  Expect(Request("messaging", {{{"to_number", "2"}}}, 10), OK, {{OK, 50, 40}}, "hits_addend");
  Expect(Request("messaging", {{{"message_type", "transactional"}, {"to_number", "1"}}}), OK,
         {{OK}}, "no match: no limit");
  Expect(Request("messaging", {{{"database", "users"}}}), OK, {{OK, 2, 1}}, "exact value first");
  Expect(Request("messaging", {{{"database", "orders"}}}), OK, {{OK, 4, 3}}, "then key alone");
}

TEST_P(EnvoyCompatTest, DepthShadowReplacesAndUnlimited) {
  Expect(Request("gateway", {{{"remote_address", "10.0.0.1"}}}), OK, {{OK, 4, 3}}, "");
  Expect(Request("gateway", {{{"key", "value"}, {"subkey", "s"}}}), OK, {{OK, 2, 1}}, "");
  Expect(Request("gateway", {{{"key", "value"}}}), OK, {{OK}}, "a node without a limit");
  Expect(Request("gateway", {{{"remote_address", "10.0.0.1"}, {"extra", "x"}}}), OK, {{OK}},
         "deeper than the config: no limit");
  const auto audit = Request("gateway", {{{"audit", "a"}}});
  Expect(audit, OK, {{OK, 1, 0}}, "");
  Expect(audit, OK, {{OK, 1, 0}}, "shadow mode: over, but OK");
  Expect(Request("gateway", {{{"api_key", "partner"}}, {{"api_key", "bob"}}}), OK,
         {{OK, 5, 4}, {OK}}, "partner replaces per_key for the whole request");
  Expect(Request("gateway", {{{"api_key", "bob"}}}), OK, {{OK, 2, 1}}, "not replaced alone");
  Response unlimited = Ask(Request("gateway", {{{"internal", "x"}}}));
  EXPECT_EQ(unlimited.overall_code(), OK);
  EXPECT_FALSE(unlimited.statuses(0).has_current_limit());
  EXPECT_EQ(unlimited.statuses(0).limit_remaining(), UINT32_MAX);
}

TEST_P(EnvoyCompatTest, WildcardsAnywhereAndSharedThresholds) {
  Expect(Request("wild", {{{"path", "/api/7/action"}}}), OK, {{OK, 2, 1}}, "middle");
  Expect(Request("wild", {{{"path", "/api/v1/resource/9/action"}}}), OK, {{OK, 3, 2}}, "several");
  Expect(Request("wild", {{{"path", "/api/7/other"}}}), OK, {{OK, 4, 3}}, "trailing");
  Expect(Request("wild", {{{"path", "/apix"}}}), OK, {{OK, 4, 3}}, "each value its own counter");
  Expect(Request("wild", {{{"files", "files/a.pdf"}}}), OK, {{OK, 2, 1}}, "");
  Expect(Request("wild", {{{"files", "files/b.csv"}}}), OK, {{OK, 2, 0}}, "one shared counter");
  Expect(Request("wild", {{{"files", "files/c.txt"}}}), OVER, {{OVER, 2, 0}}, "shared: spent");
  Expect(Request("wild", {{{"own", "own/a"}}}), OK, {{OK, 1, 0}}, "");
  Expect(Request("wild", {{{"own", "own/b"}}}), OK, {{OK, 1, 0}}, "not shared");
  Expect(Request("wild", {{{"route", "r1"}, {"method", "GET"}}}), OK, {{OK, 9, 8}}, "");
  const std::string metrics = Metrics();
  EXPECT_THAT(metrics, HasSubstr("total_hits{domain=\"wild\",key=\"wild.route_r1.method\","
                                 "key1=\"route_r1\",key2=\"method\"} 1"))
      << "value_to_metric";
  EXPECT_THAT(metrics, HasSubstr("total_hits{domain=\"wild\",key=\"wild.files_files/*\","
                                 "key1=\"files_files/*\"} 3"));
}

TEST_P(EnvoyCompatTest, QuotaModeAndOurExtensionsBesideIt) {
  const auto monthly = Request("quota", {{{"plan", "monthly"}}});
  const auto both = Request("quota", {{{"plan", "monthly"}}, {{"plan", "burst"}}});
  Expect(monthly, OK, {{OK, 1, 0}}, "");
  Expect(monthly, OVER, {{OVER, 1, 0}}, "its only quota is over");
  Expect(both, OK, {{OVER, 1, 0}, {OK, 1, 0}}, "one quota still open");
  Expect(both, OVER, {{OVER, 1, 0}, {OVER, 1, 0}}, "every quota over");
  Expect(Request("quota", {{{"user", "u"}}, {{"plan", "monthly"}}}), OVER,
         {{OK, 2, 1}, {OVER, 1, 0}}, "the only quota over");
  Expect(Request("quota", {{{"user", "u"}}}), OK, {{OK, 2, 0}},
         "the quota's refusal did not undo the user's hit");
  Expect(Request("quota", {{{"user", "u"}}, {{"plan", "burst"}}}), OVER,
         {{OVER, 2, 0}, {OVER, 1, 0}}, "a non-quota descriptor over");
  // Several limits on one descriptor (ours): the tighter is current_limit.
  Expect(Request("quota", {{{"tiered", "t"}}}), OK, {{OK, 2, 1}}, "hourly is tighter");
}

TEST_P(EnvoyCompatTest, CallersLimitsOnlyOnKnownDomains) {
  const auto unknown = WithLimit(Request("nowhere", {{{"k", "v"}}}), 1);
  Expect(unknown, OK, {{OK}}, "unknown domain: no limit, not even the caller's");
  Expect(unknown, OK, {{OK}}, "");
  EXPECT_THAT(Metrics(),
              HasSubstr("ratelimit_service_rate_limit_domain_not_found{domain=\"nowhere\"} 2"));
  const auto known = WithLimit(Request("gateway", {{{"audit", "o"}}}), 1);
  Expect(known, OK, {{OK, 1, 0}}, "the caller's limit replaces the config's");
  Expect(known, OVER, {{OVER, 1, 0}}, "and is never in shadow mode");
}

// A UDP socket on 127.0.0.1 standing where a statsd server would, collecting what arrives.
class StatsdReceiver {
 public:
  StatsdReceiver() {
    fd_ = ::socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    timeval timeout{0, 100'000};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  }
  ~StatsdReceiver() { ::close(fd_); }
  int port() const { return port_; }

  // Reads datagrams until `line` has arrived or `timeout` passed (the server flushes on its own
  // timer: an outside process's schedule, so this waits on what it sends, bounded).
  bool AwaitLine(const std::string& line, absl::Duration timeout) {
    const absl::Time end = absl::Now() + timeout;
    while (absl::Now() < end) {
      if (received_.find(line + "\n") != std::string::npos ||
          (received_.size() >= line.size() &&
           received_.compare(received_.size() - line.size(), line.size(), line) == 0)) {
        return true;
      }
      char buffer[2048];
      const ssize_t n = ::recv(fd_, buffer, sizeof(buffer), 0);
      if (n > 0) {
        received_.append(buffer, static_cast<size_t>(n)).push_back('\n');
      }
    }
    return false;
  }
  const std::string& received() const { return received_; }

 private:
  int fd_ = -1;
  int port_ = 0;
  std::string received_;
};

// envoyproxy/ratelimit's switches, given as our flags (cli_test.sh gives them as Envoy's
// environment variables): its limit headers, dynamic metadata and statsd names.
TEST_P(EnvoyCompatTest, LimitHeadersDynamicMetadataAndStatsd) {
  StatsdReceiver statsd;
  Start({"--limit-response-headers", "--limit-remaining-header", "X-RateLimit-Remaining",
         "--response-dynamic-metadata", "--statsd", absl::StrCat("127.0.0.1:", statsd.port()),
         "--statsd-flush-interval", "100ms"});
  Response r = Ask(Request("quota", {{{"user", "h"}}, {{"plan", "monthly"}}}));
  EXPECT_EQ(r.overall_code(), OK);
  std::map<std::string, std::string> headers;
  for (const auto& h : r.response_headers_to_add()) {
    headers[h.key()] = h.value();
  }
  ASSERT_EQ(headers.size(), 3u);  // only Envoy's three: the closest limit is monthly's, spent
  EXPECT_EQ(headers["RateLimit-Limit"], "1");
  EXPECT_EQ(headers["X-RateLimit-Remaining"], "0");
  EXPECT_GT(std::stoi(headers["RateLimit-Reset"]), 0);
  EXPECT_LE(std::stoi(headers["RateLimit-Reset"]), 86400);
  const auto& fields = r.dynamic_metadata().fields();
  EXPECT_EQ(fields.at("domain").string_value(), "quota");
  EXPECT_EQ(fields.at("descriptors").list_value().values_size(), 2);
  EXPECT_EQ(fields.at("metadata").struct_value().fields().at("tier").string_value(), "gold");

  EXPECT_TRUE(
      statsd.AwaitLine("ratelimit.service.rate_limit.quota.user.total_hits:1|c", absl::Seconds(10)))
      << statsd.received();
  EXPECT_TRUE(statsd.AwaitLine("ratelimit.service.rate_limit.quota.plan_monthly.within_limit:1|c",
                               absl::Seconds(10)))
      << statsd.received();
}

TEST_P(EnvoyCompatTest, GlobalShadowModeNeverRefuses) {
  Start({"--shadow-mode"});
  const auto user = Request("quota", {{{"user", "s"}}});
  Expect(user, OK, {{OK, 2, 1}}, "");
  Expect(user, OK, {{OK, 2, 0}}, "");
  Expect(user, OK, {{OVER, 2, 0}}, "over, answered OK");
  EXPECT_THAT(Metrics(), HasSubstr("ratelimit_service_global_shadow_mode 1"));
}

INSTANTIATE_TEST_SUITE_P(Transports, EnvoyCompatTest,
                         ::testing::Values(Transport::kGrpc, Transport::kJson),
                         [](const ::testing::TestParamInfo<Transport>& info) {
                           return info.param == Transport::kGrpc ? "Grpc" : "Json";
                         });

}  // namespace
}  // namespace floodgate
