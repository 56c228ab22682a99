#include "src/frontends/http/http_server.h"

#include <gmock/gmock.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_replace.h"
#include "envoy/service/ratelimit/v3/rls.pb.h"
#include "floodgate/store.h"
#include "floodgate/v1/check.pb.h"
#include "src/admin/node_admin.h"
#include "src/common/json.h"
#include "src/core/config.h"
#include "src/frontends/http/http_handlers.h"
#include "src/frontends/http/http_util.h"
#include "testing/fake_clock.h"
#include "testing/gated_store.h"
#include "testing/held_store.h"
#include "testing/http_client.h"
#include "testing/temp_dir.h"
#include "testing/tls_certs.h"

namespace floodgate::frontends {
namespace {

namespace http = boost::beast::http;
using floodgate::testing::HttpClient;
using floodgate::testing::HttpResponse;
using http_internal::Endpoint;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// ---------------------------------------------------------------------------------------------
// Pure helpers.

TEST(SplitTargetTest, PathQueryAndFragment) {
  std::string_view path;
  std::string_view query;
  http_internal::SplitTarget("/v1/check?domain=a&k=v", path, query);
  EXPECT_EQ(path, "/v1/check");
  EXPECT_EQ(query, "domain=a&k=v");
  http_internal::SplitTarget("/healthcheck", path, query);
  EXPECT_EQ(path, "/healthcheck");
  EXPECT_EQ(query, "");
  http_internal::SplitTarget("/v1/check?a=b#frag", path, query);
  EXPECT_EQ(path, "/v1/check");
  EXPECT_EQ(query, "a=b");
  http_internal::SplitTarget("http://host:8080/metrics?x", path, query);
  EXPECT_EQ(path, "/metrics");
  EXPECT_EQ(query, "x");
  http_internal::SplitTarget("http://host", path, query);
  EXPECT_EQ(path, "/");
}

TEST(PercentDecodeTest, DecodesEscapesAndPlus) {
  std::string out;
  EXPECT_TRUE(http_internal::PercentDecode("a%20b+c%2B%2fd", true, out));
  EXPECT_EQ(out, "a b c+/d");
  out.clear();
  EXPECT_TRUE(http_internal::PercentDecode("a+b", false, out));
  EXPECT_EQ(out, "a+b");
  out.clear();
  EXPECT_TRUE(http_internal::PercentDecode("caf%C3%A9", true, out));
  EXPECT_EQ(out, "caf\xC3\xA9");
  out.clear();
  EXPECT_TRUE(http_internal::PercentDecode("", true, out));
  EXPECT_EQ(out, "");
}

TEST(PercentDecodeTest, RefusesMalformedEscapes) {
  for (std::string_view bad : {"%", "%4", "a%zz", "%g0", "abc%"}) {
    std::string out;
    EXPECT_FALSE(http_internal::PercentDecode(bad, true, out)) << bad;
  }
}

TEST(ParseCheckQueryTest, OneDescriptorInQueryOrder) {
  limiter::CheckRequest request;
  service::RequestLimits limits;
  ASSERT_TRUE(http_internal::ParseCheckQuery("user=alice&domain=api&path=%2Flogin&hits=3&bare",
                                             limits, request)
                  .ok());
  EXPECT_EQ(request.domain, "api");
  ASSERT_EQ(request.descriptors.size(), 1u);
  const auto& d = request.descriptors[0];
  ASSERT_TRUE(d.hits_addend.has_value());
  EXPECT_EQ(*d.hits_addend, 3u);
  ASSERT_EQ(d.entries.size(), 3u);
  EXPECT_EQ(d.entries[0].key, "user");
  EXPECT_EQ(d.entries[0].value, "alice");
  EXPECT_EQ(d.entries[1].key, "path");
  EXPECT_EQ(d.entries[1].value, "/login");
  EXPECT_EQ(d.entries[2].key, "bare");
  EXPECT_EQ(d.entries[2].value, "");
}

TEST(ParseCheckQueryTest, PlusIsSpaceAndEmptyParametersAreSkipped) {
  limiter::CheckRequest request;
  ASSERT_TRUE(
      http_internal::ParseCheckQuery("&&domain=my+app&&user%20id=bob+smith&", {}, request).ok());
  EXPECT_EQ(request.domain, "my app");
  ASSERT_EQ(request.descriptors[0].entries.size(), 1u);
  EXPECT_EQ(request.descriptors[0].entries[0].key, "user id");
  EXPECT_EQ(request.descriptors[0].entries[0].value, "bob smith");
  EXPECT_FALSE(request.descriptors[0].hits_addend.has_value());
}

TEST(ParseCheckQueryTest, ReusesStorageAcrossShapes) {
  limiter::CheckRequest request;
  ASSERT_TRUE(
      http_internal::ParseCheckQuery("domain=a&k1=v1&k2=v2&k3=v3&hits=2", {}, request).ok());
  ASSERT_EQ(request.descriptors[0].entries.size(), 3u);
  ASSERT_TRUE(http_internal::ParseCheckQuery("domain=b&only=one", {}, request).ok());
  EXPECT_EQ(request.domain, "b");
  ASSERT_EQ(request.descriptors.size(), 1u);
  ASSERT_EQ(request.descriptors[0].entries.size(), 1u);
  EXPECT_EQ(request.descriptors[0].entries[0].key, "only");
  EXPECT_EQ(request.descriptors[0].entries[0].value, "one");
  EXPECT_FALSE(request.descriptors[0].hits_addend.has_value());
}

TEST(ParseCheckQueryTest, Errors) {
  service::RequestLimits limits;
  limits.max_entries = 2;
  struct Case {
    const char* query;
    const char* error;
  };
  for (const Case& c : {
           Case{"user=alice", "missing query parameter `domain`"},
           Case{"domain=api", "at least one KEY=VALUE"},
           Case{"domain=api&hits=2", "at least one KEY=VALUE"},
           Case{"domain=a&domain=b&k=v", "more than once"},
           Case{"domain=a&hits=1&hits=2&k=v", "more than once"},
           Case{"domain=a&hits=-1&k=v",
                "`hits` must be a whole number from 0 to 1000000000, got \"-1\""},
           Case{"domain=a&hits=&k=v", "whole number"},
           Case{"domain=a&hits=99999999999999999999999&k=v", "whole number"},
           Case{"domain=a&k=%zz", "malformed percent-escape"},
           Case{"domain=a&k=%FF", "not valid UTF-8"},
           Case{"domain=a&%C0%AF=v", "not valid UTF-8"},
           Case{"domain=%ED%A0%80&k=v", "not valid UTF-8"},
           Case{"domain=a&k1=v&k2=v&k3=v", "too many"},
       }) {
    limiter::CheckRequest request;
    absl::Status status = http_internal::ParseCheckQuery(c.query, limits, request);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.query;
    EXPECT_THAT(std::string(status.message()), HasSubstr(c.error)) << c.query;
  }
}

// The error quotes the bad value, whose storage the refusal drops: it must be quoted before
// (ASan found a heap-use-after-free here, through http_request_fuzzer and check_query_fuzzer).
TEST(ParseCheckQueryTest, BadHitsIsQuotedFromLiveStorage) {
  limiter::CheckRequest request;
  const std::string bad(40, '7');  // longer than the small-string buffer: on the heap
  const absl::Status status = http_internal::ParseCheckQuery(
      "domain=api&user=alice&hits=" + bad + "x", service::RequestLimits(), request);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("got \"" + bad.substr(0, 40)));
  ASSERT_EQ(request.descriptors.size(), 1u);
  EXPECT_EQ(request.descriptors[0].entries.size(), 1u);
}

TEST(RoutingTest, MatchPath) {
  EXPECT_EQ(http_internal::MatchPath("/json").endpoint, Endpoint::kEnvoyJson);
  EXPECT_EQ(http_internal::MatchPath("/v1/check").endpoint, Endpoint::kCheck);
  EXPECT_EQ(http_internal::MatchPath("/v1/auth").endpoint, Endpoint::kAuth);
  EXPECT_EQ(http_internal::MatchPath("/v1/release").endpoint, Endpoint::kRelease);
  EXPECT_EQ(http_internal::MatchPath("/healthcheck").endpoint, Endpoint::kHealthcheck);
  EXPECT_EQ(http_internal::MatchPath("/metrics").endpoint, Endpoint::kMetrics);
  EXPECT_EQ(http_internal::MatchPath("/v1/config").endpoint, Endpoint::kConfig);
  http_internal::Route route = http_internal::MatchPath("/v1/config/my%20domain");
  EXPECT_EQ(route.endpoint, Endpoint::kConfigDomain);
  EXPECT_EQ(route.domain, "my%20domain");
  for (std::string_view path : {"", "/", "/v1/check/", "/v1/checks", "/V1/check", "/v1/config/",
                                "/v1/config/a/b", "/healthcheck/x", "*"}) {
    EXPECT_EQ(http_internal::MatchPath(path).endpoint, Endpoint::kNotFound) << path;
  }
}

TEST(RoutingTest, MethodAllowed) {
  using http_internal::MethodAllowed;
  EXPECT_TRUE(MethodAllowed(Endpoint::kCheck, http::verb::get));
  EXPECT_TRUE(MethodAllowed(Endpoint::kCheck, http::verb::head));
  EXPECT_TRUE(MethodAllowed(Endpoint::kHealthcheck, http::verb::head));
  EXPECT_FALSE(MethodAllowed(Endpoint::kEnvoyJson, http::verb::head));
  EXPECT_FALSE(MethodAllowed(Endpoint::kConfigDomain, http::verb::head));
  EXPECT_TRUE(MethodAllowed(Endpoint::kCheck, http::verb::post));
  EXPECT_FALSE(MethodAllowed(Endpoint::kCheck, http::verb::put));
  EXPECT_TRUE(MethodAllowed(Endpoint::kEnvoyJson, http::verb::post));
  EXPECT_FALSE(MethodAllowed(Endpoint::kEnvoyJson, http::verb::get));
  EXPECT_TRUE(MethodAllowed(Endpoint::kRelease, http::verb::post));
  EXPECT_FALSE(MethodAllowed(Endpoint::kHealthcheck, http::verb::post));
  EXPECT_TRUE(MethodAllowed(Endpoint::kConfig, http::verb::get));
  EXPECT_FALSE(MethodAllowed(Endpoint::kConfig, http::verb::put));
  EXPECT_TRUE(MethodAllowed(Endpoint::kConfigDomain, http::verb::put));
  EXPECT_TRUE(MethodAllowed(Endpoint::kConfigDomain, http::verb::delete_));
  EXPECT_FALSE(MethodAllowed(Endpoint::kConfigDomain, http::verb::get));
  EXPECT_FALSE(MethodAllowed(Endpoint::kNotFound, http::verb::get));
  EXPECT_EQ(http_internal::AllowedMethods(Endpoint::kCheck), "GET, HEAD, POST");
  EXPECT_EQ(http_internal::AllowedMethods(Endpoint::kMetrics), "GET, HEAD");
  EXPECT_TRUE(http_internal::MethodImplemented(http::verb::head));
  EXPECT_TRUE(http_internal::MethodImplemented(http::verb::delete_));
  EXPECT_FALSE(http_internal::MethodImplemented(http::verb::options));
  EXPECT_FALSE(http_internal::MethodImplemented(http::verb::unknown));
}

TEST(HttpStatusForTest, MapsCodes) {
  EXPECT_EQ(http_internal::HttpStatusFor(absl::InvalidArgumentError("x")), 400);
  EXPECT_EQ(http_internal::HttpStatusFor(absl::NotFoundError("x")), 404);
  EXPECT_EQ(http_internal::HttpStatusFor(absl::FailedPreconditionError("x")), 409);
  EXPECT_EQ(http_internal::HttpStatusFor(absl::UnavailableError("x")), 503);
  EXPECT_EQ(http_internal::HttpStatusFor(absl::InternalError("x")), 500);
  EXPECT_EQ(http_internal::HttpStatusFor(absl::UnknownError("x")), 500);
}

TEST(FormatResponseTest, ExactBytes) {
  std::string out = "earlier|";  // appended to, as pipelined answers are
  std::vector<service::Header> headers = {{"RateLimit", "\"a\";r=1;t=2"},
                                          {"X-Bad", "a\r\nInjected: 1"}};
  http_internal::FormatResponse(429, "application/json", headers, "{}",
                                http_internal::Connection::kClose, out);
  EXPECT_EQ(out,
            "earlier|"
            "HTTP/1.1 429 Too Many Requests\r\n"
            "Content-Type: application/json\r\n"
            "Content-Length: 2\r\n"
            "Connection: close\r\n"
            "RateLimit: \"a\";r=1;t=2\r\n"
            "X-Bad: a  Injected: 1\r\n"
            "\r\n"
            "{}");
  out.clear();
  http_internal::FormatResponse(200, "", {}, "", http_internal::Connection::kKeepAlive, out);
  EXPECT_EQ(out, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n");
  // The answer to HEAD: GET's Content-Length, no body.
  out.clear();
  http_internal::FormatResponse(200, "text/plain", {}, "OK", http_internal::Connection::kDefault,
                                out, /*head_request=*/true);
  EXPECT_EQ(out, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n");
}

TEST(FramingTest, TransferEncodingHostAndTargetForms) {
  using http_internal::CheckTransferEncoding;
  EXPECT_TRUE(CheckTransferEncoding("chunked").ok());
  EXPECT_TRUE(CheckTransferEncoding(" CHUNKED ").ok());
  EXPECT_TRUE(CheckTransferEncoding("chunked,").ok());  // empty list elements are ignored
  for (std::string_view te : {"gzip", "chunked, gzip", "identity", ",", "chunked;x"}) {
    EXPECT_EQ(CheckTransferEncoding(te).code(), absl::StatusCode::kInvalidArgument) << te;
  }
  for (std::string_view te : {"gzip, chunked", "chunked, chunked", "x,\tchunked"}) {
    EXPECT_EQ(CheckTransferEncoding(te).code(), absl::StatusCode::kUnimplemented) << te;
  }
  for (std::string_view host : {"", "x", "example.com:8080", "127.0.0.1", "[::1]:80", "a%20b"}) {
    EXPECT_TRUE(http_internal::IsValidHost(host)) << host;
  }
  for (std::string_view host : {"a b", "a/b", "a@b", "a?b", "a#b", "\x01", "\xc3\xa9"}) {
    EXPECT_FALSE(http_internal::IsValidHost(host)) << host;
  }
  for (std::string_view target : {"/", "/v1/check?x=1", "http://h/x", "HTTPS://h"}) {
    EXPECT_TRUE(http_internal::IsServedTargetForm(target)) << target;
  }
  for (std::string_view target : {"", "*", "h:80", "v1/check", "ftp://h/x"}) {
    EXPECT_FALSE(http_internal::IsServedTargetForm(target)) << target;
  }
}

floodgate::v1::CheckResponse SampleResponse() {
  floodgate::v1::CheckResponse response;
  response.set_allowed(false);
  response.set_code("OVER_LIMIT");
  response.set_retry_after_seconds(17);
  response.set_lease(-1'700'000'000'123'456'789);  // any int64, quoted in proto3 JSON
  auto* d = response.add_descriptors();
  d->set_code("OVER_LIMIT");
  auto* l = d->add_limits();
  l->set_name("per \"user\"");
  l->set_algorithm("fixed_window");
  l->set_allowed(false);
  l->set_limit(100);
  l->set_remaining(0);
  l->set_window_seconds(60);
  l->set_reset_after_seconds(16.5);
  l->set_retry_after_seconds(1.0 / 3);
  auto* l2 = d->add_limits();
  l2->set_name("burst");
  l2->set_algorithm("token_bucket");
  l2->set_allowed(true);
  l2->set_shadow(true);
  l2->set_limit(18446744073709551615ull);
  l2->set_remaining(12345678901234ull);
  l2->set_window_seconds(0.001);
  l2->set_delay_seconds(-1);
  auto* d2 = response.add_descriptors();
  d2->set_code("OK");
  d2->set_unlimited(true);
  response.set_unknown_domain(true);
  return response;
}

TEST(JsonTest, CheckResponseMatchesProtobufJson) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  for (const floodgate::v1::CheckResponse& response :
       {SampleResponse(), floodgate::v1::CheckResponse()}) {
    std::string mine;
    http_internal::AppendCheckResponseJson(response, mine);
    std::string theirs;
    ASSERT_TRUE(google::protobuf::util::MessageToJsonString(response, &theirs, options).ok());
    // Byte for byte, but for doubles that need 17 digits in protobuf's form (1/3 here).
    EXPECT_EQ(mine, absl::StrReplaceAll(theirs, {{"0.33333333333333331", "0.3333333333333333"}}));
    floodgate::v1::CheckResponse parsed;
    ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(mine, &parsed).ok()) << mine;
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(parsed, response)) << mine;
  }
}

TEST(BearerTokenTest, Matches) {
  EXPECT_TRUE(http_internal::BearerTokenMatches("Bearer s3cret", "s3cret"));
  EXPECT_TRUE(http_internal::BearerTokenMatches("bearer  s3cret ", "s3cret"));
  EXPECT_FALSE(http_internal::BearerTokenMatches("Bearer s3cre", "s3cret"));
  EXPECT_FALSE(http_internal::BearerTokenMatches("Bearer s3cretx", "s3cret"));
  EXPECT_FALSE(http_internal::BearerTokenMatches("Basic s3cret", "s3cret"));
  EXPECT_FALSE(http_internal::BearerTokenMatches("", "s3cret"));
  EXPECT_FALSE(http_internal::BearerTokenMatches("Bearer ", ""));
}

// ---------------------------------------------------------------------------------------------
// The server, in process, with a real limiter and config manager.

constexpr int64_t kSecond = 1'000'000'000;
constexpr char kToken[] = "t0ken";

constexpr char kApiYaml[] = R"(domain: api
descriptors:
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 2, name: per_user}
  - key: conc
    rate_limit: {algorithm: concurrency, unit: minute, requests_per_unit: 1}
  - key: banned
    rate_limit: {unit: second, requests_per_unit: 0}
  - key: upload
    rate_limit: {algorithm: token_bucket, unit: second, requests_per_unit: 5, burst: 20}
)";

constexpr char kWebYaml[] = R"(domain: web
descriptors:
  - key: ip
    rate_limit: {unit: second, requests_per_unit: 1}
)";

floodgate::v1::CheckResponse ParseNative(const std::string& json) {
  floodgate::v1::CheckResponse response;
  auto status = google::protobuf::util::JsonStringToMessage(json, &response);
  EXPECT_TRUE(status.ok()) << status.ToString() << " in " << json;
  return response;
}

std::vector<std::pair<std::string, std::string>> Auth(const std::string& token) {
  return {{"Authorization", "Bearer " + token}};
}

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = temp_.path();
    std::ofstream(dir_ + "/api.yaml") << kApiYaml;

    StoreOptions store_options;
    store_options.shards = 4;
    auto store = NewShardedStore(store_options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    clock_.Set(1'700'000'040LL * kSecond);  // the start of a minute
    limiter::LimiterOptions limiter_options;
    limiter_options.clock = &clock_;
    auto empty = core::BuildConfig({}, 0);
    ASSERT_TRUE(empty.ok());
    limiter_ =
        std::make_unique<limiter::Limiter>(store_.get(), KeyHasher(1, 2), *empty, limiter_options);
    auto config = admin::ConfigManager::Create(dir_, limiter_.get());
    ASSERT_TRUE(config.ok()) << config.status();
    config_ = *std::move(config);
    StartServer(BaseOptions());
  }

  void TearDown() override {
    if (server_ != nullptr) {
      server_->Shutdown(absl::Seconds(5));
    }
  }

  HttpServerOptions BaseOptions() {
    HttpServerOptions options;
    options.address = "127.0.0.1:0";
    options.threads = 2;
    options.admin_token = kToken;
    return options;
  }

  void StartServer(HttpServerOptions options) {
    if (server_ != nullptr) {
      server_->Shutdown(absl::Seconds(5));
    }
    service::RequestLimits limits;
    limits.max_body_bytes = 4096;
    limits.max_descriptors = 8;
    service_ = service::NewRateLimitService(limiter_.get(), limits, &metrics_);
    admin_ = std::make_unique<admin::NodeAdmin>(config_.get(), limiter_.get(), &metrics_);
    server_ = NewHttpServer(options, service_.get(), admin_.get(), &metrics_);
    absl::Status started = server_->Start();
    ASSERT_TRUE(started.ok()) << started;
    port_ = server_->port();
    ASSERT_GT(port_, 0);
  }

  HttpResponse Get(const std::string& target) {
    return floodgate::testing::Request(port_, "GET", target);
  }
  HttpResponse Post(const std::string& target, const std::string& body) {
    return floodgate::testing::Request(port_, "POST", target, body,
                                       {{"Content-Type", "application/json"}});
  }

  floodgate::testing::TempDir temp_{"fg-http-test"};
  std::string dir_;
  floodgate::testing::FakeClock clock_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<limiter::Limiter> limiter_;
  std::unique_ptr<admin::ConfigManager> config_;
  service::ServerMetrics metrics_;
  std::unique_ptr<service::RateLimitService> service_;
  std::unique_ptr<admin::NodeAdmin> admin_;
  std::unique_ptr<net::Server> server_;
  int port_ = 0;
};

TEST_F(HttpServerTest, Healthcheck) {
  HttpResponse r = Get("/healthcheck");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "OK");
  EXPECT_THAT(r.Header("Content-Type"), StartsWith("text/plain"));
}

// HttpServerOptions::ready (the server's --healthy-with-config): 503 NOT READY while it is false,
// asked again at each health check; other endpoints are unaffected.
TEST_F(HttpServerTest, HealthcheckFollowsReady) {
  std::atomic<bool> ready{false};
  HttpServerOptions options = BaseOptions();
  options.ready = [&ready] { return ready.load(); };
  StartServer(options);
  HttpResponse r = Get("/healthcheck");
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.body, "NOT READY");
  EXPECT_EQ(Get("/v1/check?domain=api&user=alice").status, 200);
  ready = true;
  r = Get("/healthcheck");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "OK");
}

TEST_F(HttpServerTest, GetCheckCountsAndRefusesWithHeadersOnOneConnection) {
  HttpClient client(port_);
  HttpResponse first = client.Request("GET", "/v1/check?domain=api&user=alice");
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_EQ(first.Header("Content-Type"), "application/json");
  EXPECT_THAT(first.Header("RateLimit-Policy"), HasSubstr("q=2"));
  EXPECT_THAT(first.Header("RateLimit"), HasSubstr("r=1"));
  EXPECT_FALSE(first.HasHeader("Retry-After"));
  floodgate::v1::CheckResponse body = ParseNative(first.body);
  EXPECT_TRUE(body.allowed());
  EXPECT_EQ(body.code(), "OK");
  ASSERT_EQ(body.descriptors_size(), 1);
  ASSERT_EQ(body.descriptors(0).limits_size(), 1);
  EXPECT_EQ(body.descriptors(0).limits(0).limit(), 2u);
  EXPECT_EQ(body.descriptors(0).limits(0).remaining(), 1u);
  EXPECT_THAT(first.body, HasSubstr("\"allowed\":true"));

  EXPECT_EQ(client.Request("GET", "/v1/check?domain=api&user=alice").status, 200);
  HttpResponse refused = client.Request("GET", "/v1/check?domain=api&user=alice");
  ASSERT_EQ(refused.status, 429) << refused.body;
  EXPECT_FALSE(refused.Header("Retry-After").empty());
  EXPECT_THAT(refused.Header("RateLimit"), HasSubstr("r=0"));
  body = ParseNative(refused.body);
  EXPECT_FALSE(body.allowed());
  EXPECT_EQ(body.code(), "OVER_LIMIT");
  EXPECT_GT(body.retry_after_seconds(), 0);
  EXPECT_THAT(refused.body, HasSubstr("\"allowed\":false"));

  // Another user has their own counter; everything went over one keep-alive connection.
  EXPECT_EQ(client.Request("GET", "/v1/check?domain=api&user=bob").status, 200);
  EXPECT_EQ(client.connects(), 1);
  EXPECT_GE(metrics_.http.over_limit.load(), 1u);
  EXPECT_GE(metrics_.http.requests.load(), 4u);
}

// A limit of 0, or more hits than a limit holds: 429 without Retry-After (waiting cannot help),
// retryAfterSeconds -1 and a Floodgate-Refusal header that says so.
TEST_F(HttpServerTest, HitsThatCanNeverPassHaveNoRetryAfter) {
  for (const std::string target :
       {"/v1/check?domain=api&banned=x", "/v1/check?domain=api&upload=x&hits=21",
        "/v1/auth?domain=api&banned=x"}) {
    HttpResponse r = Get(target);
    EXPECT_EQ(r.status, target.starts_with("/v1/auth") ? 403 : 429) << target << r.body;
    EXPECT_FALSE(r.HasHeader("Retry-After")) << target;
    EXPECT_THAT(r.Header("Floodgate-Refusal"), StartsWith("never;")) << target;
    floodgate::v1::CheckResponse body = ParseNative(r.body);
    EXPECT_EQ(body.code(), "OVER_LIMIT") << target;
    EXPECT_EQ(body.retry_after_seconds(), -1) << target;
  }
  // A spent limit still says when to come back, and is no "never".
  ASSERT_EQ(Get("/v1/check?domain=api&upload=y&hits=20").status, 200);
  HttpResponse spent = Get("/v1/check?domain=api&upload=y");
  EXPECT_EQ(spent.status, 429);
  EXPECT_EQ(spent.Header("Retry-After"), "1");
  EXPECT_FALSE(spent.HasHeader("Floodgate-Refusal"));
}

// A token bucket of 5/s with bursts of 20 advertises its rate, not its burst, as the quota.
TEST_F(HttpServerTest, TokenBucketPolicyIsItsRate) {
  HttpResponse r = Get("/v1/check?domain=api&upload=z");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Header("RateLimit-Policy"), "\"api.upload\";q=5;w=1;floodgate-burst=20");
  EXPECT_EQ(r.Header("RateLimit"), "\"api.upload\";r=19;t=1");
}

TEST_F(HttpServerTest, GetCheckHitsAndReadOnlyPeek) {
  HttpResponse r = Get("/v1/check?domain=api&user=carol&hits=2");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(ParseNative(r.body).descriptors(0).limits(0).remaining(), 0u);
  // hits=0 only reads.
  r = Get("/v1/check?domain=api&user=dan&hits=0");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(ParseNative(r.body).descriptors(0).limits(0).remaining(), 2u);
  r = Get("/v1/check?domain=api&user=carol&hits=1");
  EXPECT_EQ(r.status, 429);
}

TEST_F(HttpServerTest, GetCheckDecodesQuery) {
  // "bob%20smith" and "bob+smith" are the same user.
  EXPECT_EQ(Get("/v1/check?domain=api&user=bob%20smith").status, 200);
  EXPECT_EQ(Get("/v1/check?domain=%61pi&user=bob+smith").status, 200);
  EXPECT_EQ(Get("/v1/check?domain=api&user=bob+smith").status, 429);
}

TEST_F(HttpServerTest, GetCheckBadQueries) {
  for (const char* target : {
           "/v1/check?domain=api&user=%FF",  // not UTF-8 after decoding
           "/v1/check?domain=api&user=%zz",  // bad escape
           "/v1/check?user=alice",           // no domain
           "/v1/check?domain=api",           // no entries
           "/v1/check?domain=api&user=a&hits=x",
           "/v1/check",
       }) {
    HttpResponse r = Get(target);
    EXPECT_EQ(r.status, 400) << target;
    EXPECT_THAT(r.body, StartsWith("{\"error\":")) << target;
  }
  EXPECT_GE(metrics_.http.bad_requests.load(), 6u);
}

// A check of a domain the config does not define (a typo) passes, as no limit applies, but its
// answer says so (in the JSON and a header) and /metrics counts it: never a silent fail-open.
TEST_F(HttpServerTest, UnknownDomainIsNamedInTheAnswerAndCounted) {
  HttpResponse known = Get("/v1/check?domain=api&user=uma");
  ASSERT_EQ(known.status, 200);
  EXPECT_THAT(known.body, HasSubstr("\"unknownDomain\":false"));
  EXPECT_FALSE(known.HasHeader("Floodgate-Warning"));
  for (HttpResponse r :
       {Get("/v1/check?domain=apii&user=uma"), Get("/v1/auth?domain=apii&user=uma"),
        Post("/v1/check",
             R"({"domain":"apii","descriptors":[{"entries":[{"key":"user","value":"uma"}]}]})")}) {
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_THAT(r.body, HasSubstr("\"unknownDomain\":true"));
    EXPECT_TRUE(ParseNative(r.body).unknown_domain());
    EXPECT_THAT(r.Header("Floodgate-Warning"), HasSubstr("unknown domain"));
  }
  // Envoy's /json answer stays Envoy's, but the check is counted too.
  HttpResponse envoy = Post(
      "/json", R"({"domain":"apii","descriptors":[{"entries":[{"key":"user","value":"uma"}]}]})");
  EXPECT_EQ(envoy.status, 200);
  EXPECT_THAT(envoy.body, Not(HasSubstr("nknown")));
  HttpResponse metrics = Get("/metrics");
  EXPECT_THAT(metrics.body, HasSubstr("floodgate_unknown_domain_total{frontend=\"http\"} 4\n"));
  EXPECT_THAT(metrics.body, HasSubstr("floodgate_unknown_domain_total{frontend=\"grpc\"} 0\n"));
}

TEST_F(HttpServerTest, AuthAnswers403WhenRefused) {
  EXPECT_EQ(Get("/v1/auth?domain=api&user=erin&hits=2").status, 200);
  HttpResponse r = Get("/v1/auth?domain=api&user=erin");
  EXPECT_EQ(r.status, 403);
  EXPECT_FALSE(r.Header("Retry-After").empty());
  EXPECT_FALSE(r.Header("RateLimit").empty());
}

TEST_F(HttpServerTest, PostCheckMatchesGetCheck) {
  const std::string json =
      R"({"domain":"api","descriptors":[{"entries":[{"key":"user","value":"frank"}]}]})";
  HttpResponse post = Post("/v1/check", json);
  ASSERT_EQ(post.status, 200) << post.body;
  EXPECT_FALSE(post.Header("RateLimit-Policy").empty());
  floodgate::v1::CheckResponse from_post = ParseNative(post.body);
  EXPECT_EQ(from_post.descriptors(0).limits(0).remaining(), 1u);
  HttpResponse get = Get("/v1/check?domain=api&user=frank");
  ASSERT_EQ(get.status, 200);
  EXPECT_EQ(ParseNative(get.body).descriptors(0).limits(0).remaining(), 0u);
  EXPECT_EQ(Post("/v1/check", json).status, 429);
}

// Body errors are in the caller's terms: our field names as the JSON writes them, the value
// given, what is allowed; never protobuf's type names or our internal names.
TEST_F(HttpServerTest, PostCheckErrors) {
  struct Case {
    std::string_view target;
    std::string_view body;
    std::string_view error;
  };
  for (
      const Case& c : std::initializer_list<Case>{
          {"/v1/check", "{not json",
           "the body is not valid JSON: Expected : between key:value pair"},
          {"/v1/check", "", "the body is empty; it must be a JSON object"},
          {"/v1/check", "[1]", "the body must be a JSON object"},
          {"/v1/check", R"("api")", "the body must be a JSON object"},
          {"/v1/check", R"({"domain":"api","descriptors":[]})",
           "`descriptors` must not be empty: give at least one descriptor"},
          {"/v1/check", R"({"domain":"api","unknownField":1})",
           "unknown field `unknownField`; the fields are `domain`, `descriptors`, `hits`, "
           "`release`, `lease`"},
          {"/v1/check", R"({"domain":"api","descriptors":[{"entries":[{"kee":"a"}]}]})",
           "unknown field `kee` in `descriptors[0].entries[0]`; the fields are `key`, `value`"},
          {"/v1/check", R"({"domain":"api","hits":-1})",
           "`hits` must be a whole number from 0 to 1000000000, got -1"},
          {"/v1/check", R"({"domain":"api","descriptors":[{"hits":1.5}]})",
           "`descriptors[0].hits` must be a whole number from 0 to 1000000000, got 1.5"},
          {"/v1/check", R"({"domain":5})", "`domain` must be a string, got 5"},
          {"/v1/check", R"({"descriptors":[5]})", "`descriptors[0]` must be a JSON object, got 5"},
          {"/v1/check",
           R"({"domain":"api","hits":5000000000,"descriptors":[{"entries":[{"key":"u","value":"v"}]}]})",
           "`hits` must be a whole number from 0 to 1000000000, got 5000000000"},
          {"/v1/release", R"({"lease":"soon"})",
           "`lease` must be a whole number from -9223372036854775808 to 9223372036854775807, "
           "got \"soon\""},
          {"/json", R"({"domain":"api","hitsAddend":-1})",
           "`hitsAddend` must be a whole number from 0 to 1000000000, got -1"},
          {"/json", R"({"domain":"api","descriptors":[{"limit":{"unit":"FORTNIGHT"}}]})",
           "`descriptors[0].limit.unit` must be one of UNKNOWN, SECOND, MINUTE, HOUR, DAY, "
           "MONTH, YEAR, WEEK, got \"FORTNIGHT\""},
          {"/json",
           R"({"domain":"api","hitsAddend":2000000000,"descriptors":[{"entries":[{"key":"u","value":"v"}]}]})",
           "`hits_addend` must be a whole number from 0 to 1000000000, got 2000000000"},
      }) {
    HttpResponse r = Post(std::string(c.target), std::string(c.body));
    EXPECT_EQ(r.status, 400) << c.body;
    EXPECT_EQ(r.body, common::ErrorJson(c.error)) << c.body;
    for (std::string_view leak : {"TYPE_", "Root element", "hits_addend is", "type.googleapis"}) {
      EXPECT_THAT(r.body, Not(HasSubstr(leak))) << c.body;
    }
  }
  // A GET query names its parameters.
  HttpResponse r = Get("/v1/check?domain=api&user=" + std::string(600, 'x'));
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.body, common::ErrorJson("query parameter `user`: its value is 600 bytes long; at "
                                      "most 512 are allowed"));
  r = Get("/v1/check?domain=api&user=a&hits=1000000001");
  EXPECT_EQ(r.body, common::ErrorJson("query parameter `hits` must be a whole number from 0 to "
                                      "1000000000, got 1000000001"));
}

TEST_F(HttpServerTest, EnvoyJson) {
  const std::string json =
      R"({"domain":"api","descriptors":[{"entries":[{"key":"user","value":"gina"}]}],)"
      R"("hitsAddend":2})";
  HttpResponse r = Post("/json", json);
  ASSERT_EQ(r.status, 200) << r.body;
  envoy::service::ratelimit::v3::RateLimitResponse response;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.body, &response).ok()) << r.body;
  EXPECT_EQ(response.overall_code(), envoy::service::ratelimit::v3::RateLimitResponse::OK);
  ASSERT_EQ(response.statuses_size(), 1);
  EXPECT_EQ(response.statuses(0).current_limit().requests_per_unit(), 2u);
  EXPECT_EQ(response.statuses(0).limit_remaining(), 0u);

  r = Post("/json", json);
  ASSERT_EQ(r.status, 429) << r.body;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.body, &response).ok()) << r.body;
  EXPECT_EQ(response.overall_code(), envoy::service::ratelimit::v3::RateLimitResponse::OVER_LIMIT);
  EXPECT_THAT(r.body, HasSubstr("\"overallCode\":\"OVER_LIMIT\""));
}

TEST_F(HttpServerTest, EnvoyJsonErrors) {
  HttpResponse r = Post("/json", "[1,2");
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, HasSubstr("the body is not valid JSON: Unexpected end of string"));
  // More descriptors than limits.max_descriptors (8).
  std::string json = R"({"domain":"api","descriptors":[)";
  for (int i = 0; i < 9; ++i) {
    json += std::string(i > 0 ? "," : "") + R"({"entries":[{"key":"user","value":"u)" +
            std::to_string(i) + R"("}]})";
  }
  json += "]}";
  r = Post("/json", json);
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body,
              HasSubstr("too many descriptors: `descriptors` has 9; at most 8 are allowed"));
  r = Post("/json", R"({"domain":"","descriptors":[{"entries":[{"key":"a","value":"b"}]}]})");
  EXPECT_EQ(r.status, 400);
}

// Returns the "lease" of a /v1/check response body (proto3 JSON writes int64 as a string), or ""
// if there is none.
std::string LeaseOf(std::string_view body) {
  const std::string_view field = "\"lease\":\"";
  const size_t at = body.find(field);
  if (at == std::string_view::npos) {
    return "";
  }
  const size_t start = at + field.size();
  return std::string(body.substr(start, body.find('"', start) - start));
}

TEST_F(HttpServerTest, ReleaseFreesAConcurrencySlot) {
  const std::string json =
      R"({"domain":"api","descriptors":[{"entries":[{"key":"conc","value":"job"}]}]})";
  const auto with = [&](const std::string& fields) {
    return json.substr(0, json.size() - 1) + "," + fields + "}";
  };
  HttpResponse acquired = Post("/v1/check", json);
  EXPECT_EQ(acquired.status, 200);
  const std::string lease = LeaseOf(acquired.body);
  EXPECT_NE(lease, "") << acquired.body;
  EXPECT_NE(lease, absl::StrCat(clock_.NowNs())) << "not the check's time: " << acquired.body;
  EXPECT_EQ(Post("/v1/check", json).status, 429);
  // The lease token is required: without it the slot's epoch is unknown.
  for (const std::string& body : {json, with(R"("lease":0)"), with(R"("lease":"0")")}) {
    HttpResponse missing = Post("/v1/release", body);
    EXPECT_EQ(missing.status, 400) << body;
    EXPECT_THAT(missing.body, HasSubstr("needs \\\"lease\\\"")) << missing.body;
  }
  EXPECT_EQ(Post("/v1/check", json).status, 429) << "a refused release frees nothing";
  HttpResponse released = Post("/v1/release", with(absl::StrCat("\"lease\":\"", lease, "\"")));
  EXPECT_EQ(released.status, 200) << released.body;
  EXPECT_EQ(released.body, "{}");
  acquired = Post("/v1/check", json);
  EXPECT_EQ(acquired.status, 200);
  // The `release` field of /v1/check does the same, and needs the lease too (here as a number).
  EXPECT_EQ(Post("/v1/check", with(R"("release":true)")).status, 400);
  EXPECT_EQ(
      Post("/v1/check", with(absl::StrCat(R"("release":true,"lease":)", LeaseOf(acquired.body))))
          .status,
      200);
  EXPECT_EQ(Post("/v1/check", json).status, 200);
  EXPECT_EQ(Post("/v1/release", "nope").status, 400);
}

// Issue 11: `POST /v1/release` with a made-up lease freed a held slot and answered 200 {}, and
// the same real lease released twice freed another caller's slot. Both now free nothing: 409.
TEST_F(HttpServerTest, ForgedOrReplayedLeaseIsAConflict) {
  const std::string json =
      R"({"domain":"api","descriptors":[{"entries":[{"key":"conc","value":"job"}]}]})";
  const auto release = [&](const std::string& lease) {
    return Post("/v1/release", json.substr(0, json.size() - 1) + R"(,"lease":")" + lease + R"("})");
  };
  HttpResponse held = Post("/v1/check", json);
  ASSERT_EQ(held.status, 200);
  const std::string lease = LeaseOf(held.body);
  for (const std::string& forged :
       {std::string("9000000000000000000"), absl::StrCat(clock_.NowNs())}) {
    HttpResponse r = release(forged);
    EXPECT_EQ(r.status, 409) << forged << ": " << r.body;
    EXPECT_THAT(r.body, HasSubstr("the lease is unknown, already released or expired"));
  }
  EXPECT_EQ(Post("/v1/check", json).status, 429) << "the slot is still held";
  EXPECT_EQ(release(lease).status, 200);
  HttpResponse again = Post("/v1/check", json);
  ASSERT_EQ(again.status, 200) << "the real lease freed the slot";
  HttpResponse replayed = release(lease);
  EXPECT_EQ(replayed.status, 409) << replayed.body;
  EXPECT_EQ(Post("/v1/check", json).status, 429) << "the replay did not free the new holder's";
  EXPECT_EQ(release(LeaseOf(again.body)).status, 200);
}

TEST_F(HttpServerTest, Metrics) {
  Get("/v1/check?domain=api&user=hal");
  HttpResponse r = Get("/metrics");
  ASSERT_EQ(r.status, 200);
  EXPECT_THAT(r.Header("Content-Type"), HasSubstr("version=0.0.4"));
  EXPECT_THAT(r.body, HasSubstr("floodgate_http_connections"));
  EXPECT_THAT(r.body, HasSubstr("frontend=\"http\""));
}

TEST_F(HttpServerTest, GetConfig) {
  HttpResponse r = Get("/v1/config");
  ASSERT_EQ(r.status, 200);
  EXPECT_THAT(r.body, HasSubstr("\"version\":1"));
  EXPECT_THAT(r.body, HasSubstr("\"api\":\"domain: api\\ndescriptors:"));
}

TEST_F(HttpServerTest, AdminPutAndDelete) {
  // No token, a wrong token: 401.
  HttpResponse r = floodgate::testing::Request(port_, "PUT", "/v1/config/web", kWebYaml);
  EXPECT_EQ(r.status, 401);
  EXPECT_THAT(r.body, HasSubstr("Authorization"));
  r = floodgate::testing::Request(port_, "PUT", "/v1/config/web", kWebYaml, Auth("wrong"));
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(Get("/v1/check?domain=web&ip=1").status, 200);  // no such domain yet: no limit
  EXPECT_EQ(Get("/v1/check?domain=web&ip=1").status, 200);

  r = floodgate::testing::Request(port_, "PUT", "/v1/config/web", kWebYaml, Auth(kToken));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_THAT(r.body, HasSubstr("\"version\":2"));
  EXPECT_EQ(Get("/v1/check?domain=web&ip=2").status, 200);
  EXPECT_EQ(Get("/v1/check?domain=web&ip=2").status, 429);
  EXPECT_THAT(Get("/v1/config").body, HasSubstr("\"web\":"));

  // Bad YAML: 400 with the reason; the old config keeps serving.
  r = floodgate::testing::Request(port_, "PUT", "/v1/config/web",
                                  "domain: web\ndescriptors: [{key: ip, rate_limit: {unit: "
                                  "fortnight, requests_per_unit: 1}}]\n",
                                  Auth(kToken));
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, HasSubstr("error"));
  r = floodgate::testing::Request(port_, "PUT", "/v1/config/web", "{{{", Auth(kToken));
  EXPECT_EQ(r.status, 400);
  r = floodgate::testing::Request(port_, "PUT", "/v1/config/other", kWebYaml, Auth(kToken));
  EXPECT_EQ(r.status, 400);  // the body's domain is not the path's
  EXPECT_THAT(Get("/v1/config").body, HasSubstr("\"version\":2"));
  EXPECT_EQ(Get("/v1/check?domain=web&ip=2").status, 429);

  r = floodgate::testing::Request(port_, "DELETE", "/v1/config/web", "", Auth(kToken));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Get("/v1/check?domain=web&ip=2").status, 200);
  r = floodgate::testing::Request(port_, "DELETE", "/v1/config/web", "", Auth(kToken));
  EXPECT_EQ(r.status, 404);
  r = floodgate::testing::Request(port_, "DELETE", "/v1/config/web", "");
  EXPECT_EQ(r.status, 401);
  // GET /v1/config is not an admin call.
  EXPECT_EQ(Get("/v1/config").status, 200);
}

TEST_F(HttpServerTest, AdminWithoutATokenIsForThisMachineOnly) {
  HttpServerOptions options = BaseOptions();
  options.admin_token.clear();
  StartServer(options);
  // From 127.0.0.1 an admin call needs no token (the client's address is read for it).
  HttpResponse r = floodgate::testing::Request(port_, "PUT", "/v1/config/web", kWebYaml);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Get("/v1/check?domain=web&ip=3").status, 200);
  EXPECT_EQ(Get("/v1/check?domain=web&ip=3").status, 429);
  r = floodgate::testing::Request(port_, "DELETE", "/v1/config/web", "");
  EXPECT_EQ(r.status, 200) << r.body;
}

TEST_F(HttpServerTest, NotFoundAndMethodNotAllowed) {
  HttpResponse r = Get("/nope");
  EXPECT_EQ(r.status, 404);
  EXPECT_THAT(r.body, HasSubstr("/nope"));
  r = Post("/healthcheck", "");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.Header("Allow"), "GET, HEAD");
  r = Get("/json");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.Header("Allow"), "POST");
  // No endpoint takes PATCH: 501, with the methods this path takes.
  r = floodgate::testing::Request(port_, "PATCH", "/v1/check", "");
  EXPECT_EQ(r.status, 501);
  EXPECT_EQ(r.Header("Allow"), "GET, HEAD, POST");
}

TEST_F(HttpServerTest, BodyTooLargeIs413AndCloses) {
  HttpClient client(port_);
  const std::string big(64 * 1024, 'x');  // limit is 4096
  HttpResponse r = client.Request("POST", "/v1/check", big);
  EXPECT_EQ(r.status, 413);
  EXPECT_THAT(r.body, HasSubstr("larger than 4096 bytes"));
  EXPECT_EQ(r.Header("Connection"), "close");
  EXPECT_FALSE(client.connected());
  // A declared length over the limit is refused before the body is sent.
  HttpClient declared(port_);
  r = declared.SendRaw("POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n");
  EXPECT_EQ(r.status, 413);
  // A chunked body over the limit as well.
  HttpClient chunked(port_);
  std::string request = "POST /v1/check HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 3; ++i) {
    request += "800\r\n" + std::string(0x800, 'y') + "\r\n";
  }
  request += "0\r\n\r\n";
  r = chunked.SendRaw(request);
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(Get("/healthcheck").status, 200);
}

// PUT /v1/config/{domain} takes a config as large as `floodgate validate` does (1 MiB of YAML);
// every other body keeps the small limit (4096 here).
TEST_F(HttpServerTest, ConfigPutTakesAsMuchAsAConfigFileMayHold) {
  std::string yaml = kWebYaml;
  while (yaml.size() < 200 * 1024) {
    yaml += "# " + std::string(98, 'c') + "\n";
  }
  HttpResponse r = floodgate::testing::Request(port_, "PUT", "/v1/config/web", yaml, Auth(kToken));
  EXPECT_EQ(r.status, 200) << r.body;

  const std::string over(core::kMaxConfigFileBytes + 1, '#');
  HttpClient client(port_);
  r = client.Request("PUT", "/v1/config/web", over, Auth(kToken));
  EXPECT_EQ(r.status, 413);
  EXPECT_THAT(
      r.body,
      HasSubstr("config body is larger than 1048576 bytes, the most a config file may hold"));
  EXPECT_FALSE(client.connected());
  HttpClient declared(port_);
  r = declared.SendRaw("PUT /v1/config/web HTTP/1.1\r\nHost: x\r\nContent-Length: 1048577\r\n\r\n");
  EXPECT_EQ(r.status, 413);
  HttpClient chunked(port_);
  std::string request =
      "PUT /v1/config/web HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 17; ++i) {
    request += "10000\r\n" + std::string(0x10000, '#') + "\r\n";
  }
  request += "0\r\n\r\n";
  r = chunked.SendRaw(request);
  EXPECT_EQ(r.status, 413);

  // The larger limit is the config write's alone.
  for (const char* method : {"POST", "DELETE"}) {
    r = floodgate::testing::Request(port_, method, "/v1/config/web", std::string(5000, '#'),
                                    Auth(kToken));
    EXPECT_EQ(r.status, 413) << method;
    EXPECT_THAT(r.body, HasSubstr("request body is larger than 4096 bytes")) << method;
  }
  r = floodgate::testing::Request(port_, "POST", "/v1/check", std::string(5000, '{'));
  EXPECT_EQ(r.status, 413);
  r = floodgate::testing::Request(port_, "POST", "/v1/release", std::string(5000, '{'));
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(Get("/healthcheck").status, 200);
}

TEST_F(HttpServerTest, ChunkedBodyIsAccepted) {
  HttpClient client(port_);
  const std::string json =
      R"({"domain":"api","descriptors":[{"entries":[{"key":"user","value":"ivy"}]}]})";
  char size[16];
  std::snprintf(size, sizeof(size), "%zx", json.size());
  HttpResponse r =
      client.SendRaw("POST /v1/check HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
                     std::string(size) + "\r\n" + json + "\r\n0\r\n\r\n");
  EXPECT_EQ(r.status, 200) << r.body;
}

TEST_F(HttpServerTest, GarbageIs400AndTheServerKeepsServing) {
  for (std::string_view garbage :
       {std::string_view("\x01\x02\x03garbage\r\n\r\n"), std::string_view("GET\r\n\r\n"),
        std::string_view("GET / HTTP/9.9\r\n\r\n"),
        std::string_view("GET / HTTP/1.1\r\nBad\r\n\r\n"),
        std::string_view("POST /v1/check HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
        std::string_view("\0\0\0\0\r\n\r\n", 8)}) {
    HttpClient client(port_);
    HttpResponse r = client.SendRaw(garbage);
    EXPECT_EQ(r.status, 400) << garbage;
    EXPECT_THAT(r.body, HasSubstr("malformed HTTP request")) << garbage;
    EXPECT_TRUE(client.WaitForClose()) << garbage;
  }
  // A client that sends half a request and goes away.
  {
    HttpClient client(port_);
    ASSERT_TRUE(client.Send("GET /v1/check?domain=api&user="));
  }
  HttpClient other(port_);
  EXPECT_EQ(other.Request("GET", "/healthcheck").status, 200);
  EXPECT_EQ(other.Request("GET", "/v1/check?domain=api&user=jo").status, 200);
}

TEST_F(HttpServerTest, HugeHeaderIs431) {
  HttpClient client(port_);
  HttpResponse r = client.Request("GET", "/healthcheck", "", {{"X-Big", std::string(10000, 'a')}});
  EXPECT_EQ(r.status, 431);
  EXPECT_EQ(Get("/healthcheck").status, 200);
}

TEST_F(HttpServerTest, PipelinedRequests) {
  HttpClient client(port_);
  ASSERT_TRUE(
      client.Send("GET /v1/check?domain=api&user=kim HTTP/1.1\r\nHost: x\r\n\r\n"
                  "GET /v1/check?domain=api&user=kim HTTP/1.1\r\nHost: x\r\n\r\n"
                  "GET /v1/check?domain=api&user=kim HTTP/1.1\r\nHost: x\r\n\r\n"));
  EXPECT_EQ(client.ReadResponse().status, 200);
  EXPECT_EQ(client.ReadResponse().status, 200);
  EXPECT_EQ(client.ReadResponse().status, 429);
  EXPECT_EQ(client.connects(), 1);
}

// Pipelined requests are answered together (one send per batch); the answers must still come
// in order, whatever mix of requests, bodies, errors and partial requests the batch holds.
TEST_F(HttpServerTest, PipelinedBatchKeepsOrderAcrossBodiesAndPartialRequests) {
  HttpClient client(port_);
  const std::string post_body =
      R"({"domain":"api","descriptors":[{"entries":[{"key":"user","value":"lee"}]}]})";
  // A GET, a POST with a body, an unknown path, and the first half of a fourth request.
  ASSERT_TRUE(
      client.Send("GET /v1/check?domain=api&user=lee HTTP/1.1\r\nHost: x\r\n\r\n"
                  "POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Length: " +
                  std::to_string(post_body.size()) + "\r\n\r\n" + post_body +
                  "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
                  "GET /v1/check?domain=api&us"));
  HttpResponse first = client.ReadResponse();
  EXPECT_EQ(first.status, 200);
  EXPECT_THAT(first.Header("RateLimit"), HasSubstr("r=1"));
  HttpResponse second = client.ReadResponse();
  EXPECT_EQ(second.status, 200);
  EXPECT_THAT(second.Header("RateLimit"), HasSubstr("r=0"));
  EXPECT_EQ(client.ReadResponse().status, 404);
  // The rest of the fourth request, and a fifth with a body split across two sends.
  ASSERT_TRUE(
      client.Send("er=lee HTTP/1.1\r\nHost: x\r\n\r\nPOST /v1/check HTTP/1.1\r\nHost: x\r\n"
                  "Content-Length: " +
                  std::to_string(post_body.size()) + "\r\n\r\n" + post_body.substr(0, 10)));
  EXPECT_EQ(client.ReadResponse().status, 429);
  ASSERT_TRUE(client.Send(post_body.substr(10)));
  EXPECT_EQ(client.ReadResponse().status, 429);
  EXPECT_EQ(client.connects(), 1);
}

TEST_F(HttpServerTest, PipelinedBatchStopsAtCloseAndAtGarbage) {
  {
    HttpClient client(port_);
    ASSERT_TRUE(client.Send(
        "GET /v1/check?domain=api&user=ada HTTP/1.1\r\nHost: x\r\n\r\n"
        "GET /v1/check?domain=api&user=ada HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        "GET /v1/check?domain=api&user=ada HTTP/1.1\r\nHost: x\r\n\r\n"));
    EXPECT_EQ(client.ReadResponse().status, 200);
    HttpResponse closing = client.ReadResponse();
    EXPECT_EQ(closing.status, 200);
    EXPECT_EQ(closing.Header("Connection"), "close");
    EXPECT_EQ(client.ReadResponse().status, 0);  // nothing after the close
  }
  // The third request was never answered, so it did not count: ada still has no hits left
  // after two, and the next check is refused.
  EXPECT_EQ(Get("/v1/check?domain=api&user=ada").status, 429);
  {
    HttpClient client(port_);
    ASSERT_TRUE(
        client.Send("GET /v1/check?domain=api&user=bo HTTP/1.1\r\nHost: x\r\n\r\n"
                    "NOT HTTP AT ALL\r\n\r\n"
                    "GET /v1/check?domain=api&user=bo HTTP/1.1\r\nHost: x\r\n\r\n"));
    EXPECT_EQ(client.ReadResponse().status, 200);
    EXPECT_EQ(client.ReadResponse().status, 400);
    EXPECT_EQ(client.ReadResponse().status, 0);
  }
  // bo's third request came after the garbage and was dropped: one hit was counted.
  HttpResponse r = Get("/v1/check?domain=api&user=bo");
  EXPECT_EQ(r.status, 200);
  EXPECT_THAT(r.Header("RateLimit"), HasSubstr("r=0"));
}

TEST_F(HttpServerTest, Http10ClosesUnlessKeepAlive) {
  HttpClient client(port_);
  HttpResponse r = client.SendRaw("GET /healthcheck HTTP/1.0\r\n\r\n");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.Header("Connection"), "close");
  EXPECT_FALSE(client.connected());
  r = client.SendRaw("GET /healthcheck HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.Header("Connection"), "keep-alive");
  EXPECT_TRUE(client.connected());
  r = client.Request("GET", "/healthcheck", "", {{"Connection", "close"}});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.Header("Connection"), "close");
  EXPECT_FALSE(client.connected());
}

// HEAD is answered like GET without a body on every GET route: the same status and headers,
// Content-Length as GET sends it, and no body bytes, so the next answer on the connection is
// read correctly (a body after a HEAD answer would be taken for the next response).
TEST_F(HttpServerTest, HeadIsGetWithoutABody) {
  HttpClient client(port_);
  for (std::string_view target : {"/healthcheck", "/v1/config", "/v1/cluster"}) {
    HttpResponse get = client.Request("GET", target);
    HttpResponse head = client.Request("HEAD", target);
    EXPECT_EQ(head.status, get.status) << target;
    EXPECT_EQ(head.Header("Content-Type"), get.Header("Content-Type")) << target;
    EXPECT_EQ(head.Header("Content-Length"), std::to_string(get.body.size())) << target;
    EXPECT_EQ(head.body, "") << target;
  }
  HttpResponse head = client.Request("HEAD", "/metrics");
  EXPECT_EQ(head.status, 200);
  EXPECT_GT(std::stoul(head.Header("Content-Length")), 100u);
  // HEAD /v1/check and /v1/auth decide like GET (they count the hits) and carry the headers.
  head = client.Request("HEAD", "/v1/check?domain=api&user=hana");
  EXPECT_EQ(head.status, 200);
  EXPECT_THAT(head.Header("RateLimit"), HasSubstr("r=1"));
  EXPECT_GT(std::stoul(head.Header("Content-Length")), 10u);
  head = client.Request("HEAD", "/v1/auth?domain=api&user=hana");
  EXPECT_EQ(head.status, 200);
  head = client.Request("HEAD", "/v1/auth?domain=api&user=hana");
  EXPECT_EQ(head.status, 403);
  // Errors to HEAD have no body either: a POST-only route, an unknown path, a bad query.
  head = client.Request("HEAD", "/json");
  EXPECT_EQ(head.status, 405);
  EXPECT_EQ(head.Header("Allow"), "POST");
  head = client.Request("HEAD", "/nope");
  EXPECT_EQ(head.status, 404);
  head = client.Request("HEAD", "/v1/check?user=x");
  EXPECT_EQ(head.status, 400);
  EXPECT_NE(head.Header("Content-Length"), "0");
  EXPECT_EQ(client.Request("GET", "/healthcheck").body, "OK");
  EXPECT_EQ(client.connects(), 1);

  // Pipelined, in raw bytes: the answer to HEAD ends at its header.
  HttpClient raw(port_);
  ASSERT_TRUE(
      raw.Send("HEAD /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n"
               "HEAD /nope HTTP/1.1\r\nHost: x\r\n\r\n"
               "GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n"));
  HttpResponse first = raw.ReadResponse(/*head=*/true);
  EXPECT_EQ(first.status, 200);
  EXPECT_EQ(first.Header("Content-Length"), "2");
  EXPECT_EQ(raw.ReadResponse(/*head=*/true).status, 404);
  HttpResponse last = raw.ReadResponse();
  EXPECT_EQ(last.status, 200);
  EXPECT_EQ(last.body, "OK");
  EXPECT_EQ(raw.connects(), 1);
}

// One answer per request whatever the method: a method no endpoint serves is 501 (with Allow
// on a known path), a served method on a path that does not take it is 405 with Allow; the
// connection stays open either way.
TEST_F(HttpServerTest, EveryMethodGetsExactlyOneAnswer) {
  HttpClient client(port_);
  struct Case {
    std::string_view request;
    int status;
    std::string_view allow;
  };
  for (const Case& c : std::initializer_list<Case>{
           {"OPTIONS /v1/check HTTP/1.1\r\nHost: x\r\n\r\n", 501, "GET, HEAD, POST"},
           {"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 501, ""},
           {"TRACE /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n", 501, "GET, HEAD"},
           {"CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n", 501, ""},
           {"PATCH /v1/check HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 501,
            "GET, HEAD, POST"},
           {"BREW /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n", 501, "GET, HEAD"},
           {"PUT /v1/check HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 405,
            "GET, HEAD, POST"},
           {"DELETE /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n", 405, "GET, HEAD"},
           {"GET /v1/config/api HTTP/1.1\r\nHost: x\r\n\r\n", 405, "PUT, DELETE"},
       }) {
    // The request, then a healthcheck on the same connection: exactly two answers.
    ASSERT_TRUE(
        client.Send(std::string(c.request) + "GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n"))
        << c.request;
    HttpResponse r = client.ReadResponse();
    EXPECT_EQ(r.status, c.status) << c.request;
    EXPECT_EQ(r.Header("Allow"), c.allow) << c.request;
    EXPECT_THAT(r.body, HasSubstr("error")) << c.request;
    HttpResponse next = client.ReadResponse();
    EXPECT_EQ(next.status, 200) << c.request;
    EXPECT_EQ(next.body, "OK") << c.request;
  }
  EXPECT_EQ(client.connects(), 1);
}

// RFC 9112's framing rules that a proxy or load balancer in front relies on: each of these
// requests is refused with one well-framed answer, and the connection is closed (its framing
// cannot be trusted, so nothing after it on the connection may be read as a request).
TEST_F(HttpServerTest, AmbiguousFramingIsRefusedAndCloses) {
  struct Case {
    std::string_view request;
    int status;
    std::string_view error;
  };
  const std::string body =
      R"({"domain":"api","descriptors":[{"entries":[{"key":"u","value":"v"}]}]})";
  const std::string length = std::to_string(body.size());
  for (const Case& c : std::initializer_list<Case>{
           // Transfer-Encoding with Content-Length, in either order.
           {"POST /v1/check HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            "Content-Length: 5\r\n\r\n0\r\n\r\n",
            400, "Content-Length"},
           {"POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400, "Transfer-Encoding"},
           {"POST /v1/check HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n"
            "Content-Length: 5\r\n\r\nhello",
            400, "Transfer-Encoding"},
           // Transfer codings other than chunked alone.
           {"POST /v1/check HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400,
            "chunked"},
           {"POST /v1/check HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400,
            "chunked"},
           {"POST /v1/check HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            "0\r\n\r\n",
            501, "only chunked"},
           {"POST /v1/check HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n"
            "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            501, "only chunked"},
           {"POST /v1/check HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400,
            "HTTP/1.0"},
           // Bad Content-Length values.
           {"POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400,
            "Content-Length"},
           {"POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\n", 400,
            "Content-Length"},
           {"POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            400, "Content-Length"},
           {"POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            400, "Content-Length"},
           // Host: missing in HTTP/1.1, repeated, or not a host.
           {"GET /healthcheck HTTP/1.1\r\n\r\n", 400, "Host"},
           {"GET /healthcheck HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "Host"},
           {"GET /healthcheck HTTP/1.1\r\nHost: a b/c\r\n\r\n", 400, "Host"},
           // A header line continued on the next (obs-fold), and whitespace before the colon.
           {"GET /healthcheck HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400, "fold"},
           {"GET /healthcheck HTTP/1.1\r\nHost: x\r\nX-A:\r\n\tb\r\n\r\n", 400, "fold"},
           {"GET /healthcheck HTTP/1.1\r\nHost : x\r\n\r\n", 400, "malformed"},
       }) {
    HttpClient client(port_);
    // A second request after it must not be answered.
    ASSERT_TRUE(
        client.Send(std::string(c.request) + "GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n"));
    HttpResponse r = client.ReadResponse();
    EXPECT_EQ(r.status, c.status) << c.request;
    EXPECT_THAT(r.body, HasSubstr(c.error)) << c.request;
    EXPECT_EQ(r.Header("Connection"), "close") << c.request;
    EXPECT_EQ(client.ReadResponse().status, 0) << c.request;  // closed, nothing else
  }
  // What is allowed: HTTP/1.0 without Host, an empty Host, Content-Length repeated with one
  // value, chunked in any case.
  for (std::string_view request :
       {"GET /healthcheck HTTP/1.0\r\n\r\n", "GET /healthcheck HTTP/1.1\r\nHost:\r\n\r\n",
        "GET /healthcheck HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"}) {
    HttpClient client(port_);
    EXPECT_EQ(client.SendRaw(request).status, 200) << request;
  }
  HttpClient client(port_);
  HttpResponse r =
      client.SendRaw("POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + ", " +
                     length + "\r\n\r\n" + body);
  EXPECT_EQ(r.status, 200) << r.body;
  char size[16];
  std::snprintf(size, sizeof(size), "%zx", body.size());
  r = client.SendRaw("POST /v1/check HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n" +
                     std::string(size) + "\r\n" + body + "\r\n0\r\n\r\n");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(client.connects(), 1);
}

// Request-target forms: origin-form and absolute-form are served; anything else is 400 (the
// asterisk and authority forms belong to OPTIONS and CONNECT, which are not implemented).
TEST_F(HttpServerTest, RequestTargetForms) {
  HttpClient client(port_);
  HttpResponse r = client.SendRaw("GET http://example.com/healthcheck HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "OK");
  r = client.SendRaw(
      "GET HTTP://example.com:80/v1/check?domain=api&user=tia HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(r.status, 200) << r.body;
  for (std::string_view target : {"*", "healthcheck", "example.com:80"}) {
    r = client.SendRaw("GET " + std::string(target) + " HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_EQ(r.status, 400) << target;
    EXPECT_THAT(r.body, HasSubstr("request target")) << target;
  }
  EXPECT_EQ(client.Request("GET", "/healthcheck").status, 200);
  EXPECT_EQ(client.connects(), 1);
}

// `Connection: close` is honoured (the answer says so and nothing more is read); HTTP/1.1
// stays open by default; HTTP/1.0 stays open only when it asks.
TEST_F(HttpServerTest, ConnectionCloseIsHonoured) {
  HttpClient client(port_);
  ASSERT_TRUE(
      client.Send("GET /healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                  "GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n"));
  HttpResponse r = client.ReadResponse();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.Header("Connection"), "close");
  EXPECT_EQ(client.ReadResponse().status, 0);
  HttpClient other(port_);
  ASSERT_TRUE(
      other.Send("GET /healthcheck HTTP/1.0\r\n\r\nGET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n"));
  EXPECT_EQ(other.ReadResponse().Header("Connection"), "close");
  EXPECT_EQ(other.ReadResponse().status, 0);
}

TEST_F(HttpServerTest, ConnectionsAboveTheLimitAreClosed) {
  HttpServerOptions options = BaseOptions();
  options.max_connections = 1;
  StartServer(options);
  HttpClient first(port_);
  ASSERT_EQ(first.Request("GET", "/healthcheck").status, 200);  // its session now exists
  HttpClient second(port_);
  HttpResponse r = second.Request("GET", "/healthcheck");
  EXPECT_EQ(r.status, 0);
  EXPECT_GE(metrics_.http.shed.load(), 1u);
  EXPECT_EQ(first.Request("GET", "/healthcheck").status, 200);
  EXPECT_EQ(first.connects(), 1);
}

TEST_F(HttpServerTest, ConnectionsAboveThePerClientCapAreClosed) {
  HttpServerOptions options = BaseOptions();
  options.max_connections_per_client = 2;
  StartServer(options);
  HttpClient first(port_);
  HttpClient second(port_);
  ASSERT_EQ(first.Request("GET", "/healthcheck").status, 200);
  ASSERT_EQ(second.Request("GET", "/healthcheck").status, 200);
  HttpClient third(port_);
  EXPECT_EQ(third.Request("GET", "/healthcheck").status, 0);  // closed at once
  EXPECT_GE(metrics_.http.shed.load(), 1u);
  // The first two keep being served; once one leaves, the client may connect again (the
  // server frees the slot when it sees the close, so poll for it, bounded).
  EXPECT_EQ(second.Request("GET", "/healthcheck").status, 200);
  first.Close();
  int status = 0;
  for (int attempt = 0; attempt < 500 && status != 200; ++attempt) {
    HttpClient again(port_);
    status = again.Request("GET", "/healthcheck").status;
    if (status != 200) {
      absl::SleepFor(absl::Milliseconds(10));  // waiting for the server to see the close
    }
  }
  EXPECT_EQ(status, 200);
}

TEST_F(HttpServerTest, IdleAndSlowConnectionsTimeOut) {
  HttpServerOptions options = BaseOptions();
  options.idle_timeout = absl::Milliseconds(200);
  StartServer(options);
  HttpClient silent(port_);
  ASSERT_TRUE(silent.Send(""));  // connects, sends nothing
  HttpClient slow(port_);
  ASSERT_TRUE(slow.Send("GET /healthcheck HTTP/1.1\r\nHost: x\r\n"));  // never ends the header
  HttpClient idle(port_);
  ASSERT_EQ(idle.Request("GET", "/healthcheck").status, 200);
  // The server closes each of them (the client's own timeout is 10 s).
  EXPECT_TRUE(silent.WaitForClose());
  EXPECT_TRUE(slow.WaitForClose());
  EXPECT_TRUE(idle.WaitForClose());
  EXPECT_EQ(Get("/healthcheck").status, 200);
}

// With TLS the handshake is read under the idle timeout: a client that connects and sends
// nothing, or sends part of a ClientHello and stops, is closed like an idle connection; and a
// connection still handshaking holds its place under the per-client cap.
TEST_F(HttpServerTest, TlsHandshakeHasTheIdleDeadlineAndCountsUnderTheCaps) {
  testing::TempDir pki_dir("floodgate-http-tls");
  absl::StatusOr<testing::TestPki> pki = testing::MakeTestPki(pki_dir.path());
  ASSERT_TRUE(pki.ok()) << pki.status();
  absl::StatusOr<net::TlsCredentials> tls =
      net::LoadTlsCredentials({pki->server_cert, pki->server_key, ""});
  ASSERT_TRUE(tls.ok()) << tls.status();
  HttpServerOptions options = BaseOptions();
  options.idle_timeout = absl::Milliseconds(200);
  options.max_connections_per_client = 2;
  options.tls = *tls;
  StartServer(options);

  HttpClient silent(port_);
  ASSERT_TRUE(silent.Send(""));  // connects, sends nothing
  HttpClient dribble(port_);
  // A TLS record header announcing a 512-byte handshake message, then nothing.
  ASSERT_TRUE(dribble.Send(std::string("\x16\x03\x01\x02\x00\x01", 6)));
  // Both places are taken while they handshake: a third connection is closed at once.
  HttpClient third(port_);
  ASSERT_TRUE(third.Send(""));
  EXPECT_TRUE(third.WaitForClose());
  // The server closes each of them (the client's own timeout is 10 s).
  EXPECT_TRUE(silent.WaitForClose());
  EXPECT_TRUE(dribble.WaitForClose());
}

TEST_F(HttpServerTest, NoIdleTimeout) {
  HttpServerOptions options = BaseOptions();
  options.idle_timeout = absl::InfiniteDuration();  // deadlines saturate instead of overflowing
  StartServer(options);
  HttpClient client(port_);
  EXPECT_EQ(client.Request("GET", "/healthcheck").status, 200);
  EXPECT_EQ(client.Request("GET", "/healthcheck").status, 200);
}

TEST_F(HttpServerTest, BadAddresses) {
  service::ServerMetrics metrics;
  HttpServerOptions options = BaseOptions();
  options.address = "127.0.0.1";
  auto no_port = NewHttpServer(options, service_.get(), admin_.get(), &metrics);
  EXPECT_EQ(no_port->Start().code(), absl::StatusCode::kInvalidArgument);
  options.address = "127.0.0.1:" + std::to_string(port_);  // taken
  auto taken = NewHttpServer(options, service_.get(), admin_.get(), &metrics);
  EXPECT_EQ(taken->Start().code(), absl::StatusCode::kUnavailable);
}

TEST_F(HttpServerTest, Ipv6AndHostnames) {
  service::ServerMetrics metrics;
  HttpServerOptions options = BaseOptions();
  options.address = "localhost:0";
  auto by_name = NewHttpServer(options, service_.get(), admin_.get(), &metrics);
  ASSERT_TRUE(by_name->Start().ok());
  EXPECT_GT(by_name->port(), 0);
  by_name->Shutdown(absl::Seconds(1));
  options.address = "[::1]:0";
  auto v6 = NewHttpServer(options, service_.get(), admin_.get(), &metrics);
  absl::Status started = v6->Start();
  // Hosts without IPv6 loopback cannot bind it; anything else must work.
  if (started.ok()) {
    EXPECT_GT(v6->port(), 0);
    v6->Shutdown(absl::Seconds(1));
  } else {
    EXPECT_EQ(started.code(), absl::StatusCode::kUnavailable) << started;
  }
}

TEST_F(HttpServerTest, ShutdownLetsTheRequestInFlightFinish) {
  HttpClient idle(port_);
  ASSERT_EQ(idle.Request("GET", "/healthcheck").status, 200);

  // A request in flight: its header is in (the server said 100 Continue), its body is not.
  const std::string json =
      R"({"domain":"api","descriptors":[{"entries":[{"key":"user","value":"lee"}]}]})";
  HttpClient busy(port_);
  ASSERT_TRUE(
      busy.Send("POST /v1/check HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                "Content-Length: " +
                std::to_string(json.size()) + "\r\n\r\n"));
  ASSERT_EQ(busy.ReadResponse().status, 100);

  // Another one, to the healthcheck (a GET may carry a body).
  HttpClient health(port_);
  ASSERT_TRUE(health.Send(
      "GET /healthcheck HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"));
  ASSERT_EQ(health.ReadResponse().status, 100);

  std::thread shutdown([this] { server_->Shutdown(absl::Seconds(30)); });
  // Once the server refuses new connections it is draining.
  while (Get("/healthcheck").status == 200) {
  }
  ASSERT_TRUE(busy.Send(json));
  HttpResponse r = busy.ReadResponse();
  EXPECT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.Header("Connection"), "close");
  ASSERT_TRUE(health.Send("hi"));
  r = health.ReadResponse();
  EXPECT_EQ(r.status, 503) << r.error;
  EXPECT_EQ(r.body, "DRAINING");
  shutdown.join();
  EXPECT_TRUE(idle.WaitForClose());
  server_.reset();
  EXPECT_EQ(metrics_.http_connections.load(), 0u);
}

// The session's parse-and-answer without a socket (the HTTP fuzz target's entry point): the
// same parser, header checks and refusals as a connection.
TEST_F(HttpServerTest, AnswerRequestBytesAnswersAsTheSessionDoes) {
  const HttpHandlers handlers("", service_.get(), admin_.get(), &metrics_.http);
  const auto answer = [&](std::string_view bytes) {
    std::string out;
    http_internal::AnswerRequestBytes(bytes, handlers, 4096, 8192, out);
    return out;
  };
  // Two whole requests are answered in order; the third has not fully arrived: no answer.
  const std::string two = answer(
      "GET /healthcheck HTTP/1.1\r\nHost: a\r\n\r\n"
      "GET /v1/check?domain=api&user=u HTTP/1.1\r\nHost: a\r\n\r\n"
      "GET /v1/check?domain=api&user=u HTTP/1.1\r\nHo");
  EXPECT_THAT(two, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_EQ(two.find("HTTP/1.1 ", two.find("HTTP/1.1 ", 1) + 1), std::string::npos) << two;
  EXPECT_THAT(two, HasSubstr("\"code\":\"OK\""));
  // Refusals are answered with their status and close the connection.
  const std::string hosts = answer("GET /healthcheck HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
  EXPECT_THAT(hosts, StartsWith("HTTP/1.1 400 "));
  EXPECT_THAT(hosts, HasSubstr("more than one Host header"));
  EXPECT_THAT(hosts, HasSubstr("Connection: close"));
  EXPECT_THAT(answer("GET /healthcheck HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n"),
              HasSubstr("obs-fold"));
  EXPECT_THAT(answer("POST /v1/check HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n"),
              StartsWith("HTTP/1.1 413 "));
  EXPECT_THAT(answer("GET /healthcheck HTTP/1.1\r\nHost: a\r\nX: " + std::string(9000, 'x')),
              StartsWith("HTTP/1.1 431 "));
  EXPECT_THAT(answer("GET /healthcheck HTTP/9.1\r\n\r\n"), StartsWith("HTTP/1.1 400 "));
  // A request cut short (the client went away) is not answered.
  EXPECT_EQ(answer("GET /healthcheck HTTP/1.1\r\nHost: a\r\n"), "");
  EXPECT_EQ(answer(""), "");
}

// Cluster mode: rate limit calls run on a worker pool, so that the io threads never wait for
// another node. GatedStore stands in for the cluster: unshed checks wait at its gate.
// A store whose every limit fails closed: as a cluster node that cannot ask the owners.
class FailClosedStore final : public Store {
 public:
  bool Apply(absl::Span<const StoreOp> ops, int64_t /*now_ns*/,
             absl::Span<Decision> decisions) override {
    for (size_t i = 0; i < ops.size(); ++i) {
      decisions[i] = Decision{.allowed = false,
                              .unavailable = true,
                              .limit = ops[i].spec.requests_per_period,
                              .retry_after_ns = 3 * kSecond};
    }
    return false;
  }
  StoreStats GetStats() const override { return {}; }
  void ReclaimExpired(int64_t) override {}
};

// A `failure_mode: closed` refusal is not an over-limit: 503 with code UNAVAILABLE and a
// Floodgate-Refusal header on the native API (403 on /v1/auth, for nginx), Retry-After kept;
// Envoy's /json answer stays Envoy's OVER_LIMIT (429).
TEST(HttpHandlersTest, AClosedFailureModeRefusalIsUnavailable) {
  auto domain = core::ParseDomainConfig(kApiYaml, "api.yaml");
  ASSERT_TRUE(domain.ok()) << domain.status();
  floodgate::testing::FakeClock clock;
  clock.Set(1'700'000'040LL * kSecond);
  limiter::LimiterOptions options;
  options.clock = &clock;
  FailClosedStore store;
  limiter::Limiter limiter(&store, KeyHasher(1, 2), *core::BuildConfig({*domain}, 1), options);
  service::ServerMetrics metrics;
  auto service = service::NewRateLimitService(&limiter, service::RequestLimits(), &metrics);
  admin::NodeAdmin admin(nullptr, &limiter, &metrics);
  HttpHandlers handlers("", service.get(), &admin, &metrics.http);
  HttpScratch scratch;
  auto handle = [&](http::verb method, std::string_view target, std::string_view body = "") {
    return handlers.Handle(
        HttpRequest{
            .method = method, .target = target, .body = body, .from_loopback = [] { return true; }},
        scratch);
  };
  auto header = [](const HttpReply& reply, std::string_view name) {
    for (const auto& [key, value] : reply.headers) {
      if (key == name) return value;
    }
    return std::string();
  };

  HttpReply get = handle(http::verb::get, "/v1/check?domain=api&user=alice");
  EXPECT_EQ(get.status, 503) << get.body;
  EXPECT_THAT(header(get, "Floodgate-Refusal"), StartsWith("unavailable;"));
  EXPECT_EQ(header(get, "Retry-After"), "3");
  floodgate::v1::CheckResponse body = ParseNative(get.body);
  EXPECT_FALSE(body.allowed());
  EXPECT_EQ(body.code(), "UNAVAILABLE");
  EXPECT_EQ(body.descriptors(0).code(), "UNAVAILABLE");

  HttpReply post =
      handle(http::verb::post, "/v1/check",
             R"({"domain":"api","descriptors":[{"entries":[{"key":"user","value":"a"}]}]})");
  EXPECT_EQ(post.status, 503);
  EXPECT_EQ(ParseNative(post.body).code(), "UNAVAILABLE");

  HttpReply auth = handle(http::verb::get, "/v1/auth?domain=api&user=alice");
  EXPECT_EQ(auth.status, 403);
  EXPECT_THAT(header(auth, "Floodgate-Refusal"), StartsWith("unavailable;"));

  HttpReply envoy =
      handle(http::verb::post, "/json",
             R"({"domain":"api","descriptors":[{"entries":[{"key":"user","value":"a"}]}]})");
  EXPECT_EQ(envoy.status, 429);
  EXPECT_THAT(envoy.body, HasSubstr("\"overallCode\":\"OVER_LIMIT\""));
  EXPECT_THAT(envoy.body, Not(HasSubstr("UNAVAILABLE")));
  EXPECT_THAT(envoy.body, Not(HasSubstr("Floodgate-Refusal")));
}

class HttpWorkersTest : public ::testing::Test {
 protected:
  void Start(size_t max_queued, absl::Duration max_queue_delay) {
    auto domain = core::ParseDomainConfig(kApiYaml, "api.yaml");
    ASSERT_TRUE(domain.ok()) << domain.status();
    limiter::LimiterOptions options;
    options.clock = &clock_;
    limiter_ = std::make_unique<limiter::Limiter>(&store_, KeyHasher(1, 2),
                                                  *core::BuildConfig({*domain}, 1), options);
    workers_ = std::make_unique<common::WorkerPool>(1, max_queued);
    HttpServerOptions http_options;
    http_options.address = "127.0.0.1:0";
    http_options.workers = workers_.get();
    http_options.max_queue_delay = max_queue_delay;
    service_ = service::NewRateLimitService(limiter_.get(), service::RequestLimits(), &metrics_);
    admin_ = std::make_unique<admin::NodeAdmin>(nullptr, limiter_.get(), &metrics_);
    server_ = NewHttpServer(http_options, service_.get(), admin_.get(), &metrics_);
    ASSERT_TRUE(server_->Start().ok());
    port_ = server_->port();
  }

  void TearDown() override {
    store_.Open();
    if (server_ != nullptr) {
      server_->Shutdown(absl::Seconds(5));
    }
    workers_.reset();
  }

  HttpResponse Get(const std::string& target) {
    return floodgate::testing::Request(port_, "GET", target);
  }

  floodgate::testing::FakeClock clock_;
  floodgate::testing::GatedStore store_;
  service::ServerMetrics metrics_;
  std::unique_ptr<service::RateLimitService> service_;
  std::unique_ptr<admin::NodeAdmin> admin_;
  std::unique_ptr<limiter::Limiter> limiter_;
  std::unique_ptr<common::WorkerPool> workers_;
  std::unique_ptr<net::Server> server_;
  int port_ = 0;
};

TEST_F(HttpWorkersTest, ChecksPastTheQueueAreShedAndHealthIsAnsweredMeanwhile) {
  Start(/*max_queued=*/1, /*max_queue_delay=*/absl::Hours(1));
  int health = 0;
  int metrics = 0;
  const floodgate::testing::QueueOverflow seen = floodgate::testing::RunQueueOverflow(
      store_,
      [&](const std::string& user) {
        return Get("/v1/check?domain=api&user=" + user).status == 200;
      },
      [&] {
        // The only worker waits at the gate; the io threads answer health and metrics.
        health = Get("/healthcheck").status;
        metrics = Get("/metrics").status;
      });
  EXPECT_EQ(seen.first_waiting, 1);
  EXPECT_EQ(health, 200);
  EXPECT_EQ(metrics, 200);
  EXPECT_EQ(seen.answered_while_shut, 4);  // shed, and answered while the gate is shut
  EXPECT_EQ(seen.shed_while_shut, 4);
  EXPECT_EQ(seen.unshed_while_shut, 0);
  EXPECT_EQ(metrics_.http.shed.load(), 4u);
  EXPECT_EQ(seen.answered, 5);
  EXPECT_EQ(seen.unshed, 2);
}

TEST_F(HttpWorkersTest, LateCallsAreShedAndAShedReleaseIsRefusedClearly) {
  Start(/*max_queued=*/100, /*max_queue_delay=*/absl::ZeroDuration());
  store_.Open();
  // Every call waits some nanoseconds in the queue, which is past a zero delay.
  HttpResponse check = Get("/v1/check?domain=api&user=late");
  EXPECT_EQ(check.status, 200);
  EXPECT_EQ(store_.shed(), 1);
  EXPECT_EQ(store_.unshed(), 0);
  HttpResponse release =
      floodgate::testing::Request(port_, "POST", "/v1/release",
                                  R"({"domain":"api","lease":"5","descriptors":[{"entries":)"
                                  R"([{"key":"conc","value":"job"}]}]})");
  EXPECT_EQ(release.status, 503);
  EXPECT_THAT(release.body, ::testing::HasSubstr("release was not applied"));
  EXPECT_EQ(metrics_.http.shed.load(), 2u);
}

// ---------------------------------------------------------------------------------------------
// Cluster mode without workers: a check that waits for its key's owner is suspended on the io
// thread (HttpHandlers::HandleAsync). HeldStore stands in for the cluster: it holds the
// transactions of the hourly "slow" limit (a key another node owns) until the test releases
// them, and answers the others at once.

constexpr char kSuspendYaml[] = R"(domain: api
descriptors:
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 2, name: per_user}
  - key: slow
    rate_limit: {unit: hour, requests_per_unit: 5, name: slow}
  - key: job
    rate_limit: {algorithm: concurrency, unit: hour, requests_per_unit: 1, name: job}
)";

std::string GetRequest(const std::string& target) {
  return "GET " + target + " HTTP/1.1\r\nHost: x\r\n\r\n";
}

std::string PostRequest(const std::string& target, const std::string& body) {
  return "POST " + target +
         " HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" +
         body;
}

// Returns a TCP connection to 127.0.0.1:port with `bytes` sent on it, or -1.
int ConnectAndSend(int port, std::string_view bytes) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(bytes.size())) {
    ::close(fd);
    return -1;
  }
  return fd;
}

class HttpSuspendTest : public ::testing::Test {
 protected:
  void Start(HttpServerOptions options) {
    auto domain = core::ParseDomainConfig(kSuspendYaml, "api.yaml");
    ASSERT_TRUE(domain.ok()) << domain.status();
    clock_.Set(1'700'000'040LL * kSecond);
    limiter::LimiterOptions limiter_options;
    limiter_options.clock = &clock_;
    limiter_ = std::make_unique<limiter::Limiter>(
        &store_, KeyHasher(1, 2), *core::BuildConfig({*domain}, 1), limiter_options);
    store_.HoldIf([](absl::Span<const StoreOp> ops) {
      for (const StoreOp& op : ops) {
        if (op.spec.period_ns == 3600 * kSecond) {
          return true;
        }
      }
      return false;
    });
    service_ = service::NewRateLimitService(limiter_.get(), service::RequestLimits(), &metrics_);
    ASSERT_TRUE(service_->may_suspend());
    admin_ = std::make_unique<admin::NodeAdmin>(nullptr, limiter_.get(), &metrics_);
    options.address = "127.0.0.1:0";
    server_ = NewHttpServer(options, service_.get(), admin_.get(), &metrics_);
    ASSERT_TRUE(server_->Start().ok());
    port_ = server_->port();
  }
  HttpServerOptions OneThread() {
    HttpServerOptions options;
    options.threads = 1;  // a blocked io thread would stop every connection
    return options;
  }

  void TearDown() override {
    // Held calls are answered while the server still runs.
    store_.ReleaseAll();
    if (server_ != nullptr) {
      server_->Shutdown(absl::Seconds(5));
    }
  }

  HttpResponse Get(const std::string& target) {
    return floodgate::testing::Request(port_, "GET", target);
  }
  static bool WaitFor(const std::function<bool()>& done) {
    return floodgate::testing::HeldStore::WaitFor(done);
  }

  floodgate::testing::FakeClock clock_;
  floodgate::testing::HeldStore store_;  // outlives the server, whose calls it holds
  std::unique_ptr<limiter::Limiter> limiter_;
  service::ServerMetrics metrics_;
  std::unique_ptr<service::RateLimitService> service_;
  std::unique_ptr<admin::NodeAdmin> admin_;
  std::unique_ptr<net::Server> server_;
  int port_ = 0;
};

// Pipelined requests on one connection, of which the first and the third wait for their owner:
// the io thread serves other connections meanwhile, requests behind a suspended one wait for
// it, and the answers come back in request order.
TEST_F(HttpSuspendTest, PipelinedAnswersKeepRequestOrderAcrossSuspendedChecks) {
  Start(OneThread());
  HttpClient client(port_);
  ASSERT_TRUE(client.Send(GetRequest("/v1/check?domain=api&slow=a") +
                          GetRequest("/v1/check?domain=api&user=b") +
                          GetRequest("/v1/check?domain=api&slow=a&hits=2") +
                          GetRequest("/v1/check?domain=api&user=b") + GetRequest("/healthcheck")));
  ASSERT_TRUE(WaitFor([&] { return store_.held() == 1; }));
  EXPECT_EQ(store_.async_applies(), 1) << "a request behind the suspended one was decided";

  // The only io thread is free: another connection is answered meanwhile, a check included.
  EXPECT_EQ(Get("/healthcheck").status, 200);
  HttpResponse other = Get("/v1/check?domain=api&user=other");
  EXPECT_EQ(other.status, 200);
  EXPECT_THAT(other.Header("RateLimit"), StartsWith("\"per_user\";r=1"));

  ASSERT_TRUE(store_.Release(0));
  // The session resumes: the second request is answered at once, the third is suspended.
  ASSERT_TRUE(WaitFor([&] { return store_.suspended() == 2 && store_.held() == 1; }));
  EXPECT_EQ(Get("/healthcheck").status, 200);
  ASSERT_TRUE(store_.Release(0));

  HttpResponse first = client.ReadResponse();
  EXPECT_EQ(first.status, 200);
  EXPECT_THAT(first.Header("RateLimit"), StartsWith("\"slow\";r=4"));
  HttpResponse second = client.ReadResponse();
  EXPECT_EQ(second.status, 200);
  EXPECT_THAT(second.Header("RateLimit"), StartsWith("\"per_user\";r=1"));
  HttpResponse third = client.ReadResponse();
  EXPECT_EQ(third.status, 200);
  EXPECT_THAT(third.Header("RateLimit"), StartsWith("\"slow\";r=2"));
  HttpResponse fourth = client.ReadResponse();
  EXPECT_EQ(fourth.status, 200);
  EXPECT_THAT(fourth.Header("RateLimit"), StartsWith("\"per_user\";r=0"));
  HttpResponse fifth = client.ReadResponse();
  EXPECT_EQ(fifth.status, 200);
  EXPECT_EQ(fifth.body, "OK");
  EXPECT_EQ(client.connects(), 1);
  // The connection goes on after the batch.
  EXPECT_EQ(client.Request("GET", "/v1/check?domain=api&user=b").status, 429);
  EXPECT_EQ(client.connects(), 1);
  EXPECT_EQ(store_.held(), 0u);
}

// The same with two io threads sharing the context: an answer may resume its batch on the
// other thread, even while the thread that suspended it is still returning. Many pipelined
// checks, every other one held and released as soon as it is seen, still come back whole and
// in order.
TEST_F(HttpSuspendTest, PipelinedOrderHoldsWithTwoIoThreads) {
  HttpServerOptions options;
  options.threads = 2;
  Start(options);
  constexpr int kRequests = 60;
  std::string batch;
  for (int i = 0; i < kRequests; ++i) {
    batch += GetRequest(i % 2 == 0 ? "/v1/check?domain=api&slow=s" + std::to_string(i)
                                   : "/v1/check?domain=api&user=u" + std::to_string(i));
  }
  std::atomic<bool> stop{false};
  std::thread releaser([&] {
    while (!stop.load()) {
      if (!store_.Release(0)) {
        std::this_thread::yield();
      }
    }
  });
  HttpClient client(port_);
  ASSERT_TRUE(client.Send(batch));
  for (int i = 0; i < kRequests; ++i) {
    HttpResponse r = client.ReadResponse();
    ASSERT_EQ(r.status, 200) << i << ": " << r.error;
    EXPECT_THAT(r.Header("RateLimit"), StartsWith(i % 2 == 0 ? "\"slow\";r=4" : "\"per_user\";r=1"))
        << i;
  }
  stop.store(true);
  releaser.join();
  EXPECT_EQ(store_.suspended(), kRequests / 2);
  EXPECT_EQ(client.connects(), 1);
}

// Every form of rate limit call is suspended alike and answered as it would be at once: the
// native POST check, Envoy's /json and nginx's /v1/auth.
TEST_F(HttpSuspendTest, EveryRateLimitCallMaySuspend) {
  Start(OneThread());
  const std::string body =
      R"({"domain":"api","descriptors":[{"entries":[{"key":"slow","value":"p"}]}]})";
  HttpClient client(port_);
  ASSERT_TRUE(client.Send(
      "POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(body.size()) +
      "\r\n\r\n" + body +
      "POST /json HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(body.size()) +
      "\r\n\r\n" + body + GetRequest("/v1/auth?domain=api&slow=p&hits=4")));
  for (int i = 1; i <= 3; ++i) {
    ASSERT_TRUE(WaitFor([&] { return store_.suspended() == i && store_.held() == 1; })) << i;
    ASSERT_TRUE(store_.Release(0));
  }
  HttpResponse native = client.ReadResponse();
  EXPECT_EQ(native.status, 200);
  EXPECT_EQ(ParseNative(native.body).descriptors(0).limits(0).remaining(), 4u);
  HttpResponse envoy = client.ReadResponse();
  EXPECT_EQ(envoy.status, 200);
  EXPECT_THAT(envoy.body, HasSubstr("\"overallCode\":\"OK\""));
  HttpResponse auth = client.ReadResponse();
  EXPECT_EQ(auth.status, 403) << "4 more hits do not fit in the 3 left";
  EXPECT_EQ(metrics_.http.requests.load(), 3u);
  EXPECT_EQ(metrics_.http.over_limit.load(), 1u);
}

// A connection that goes away while its check is suspended: nothing breaks when the answer
// comes (it has no one to go to), the session ends, and the server keeps serving. Closed
// politely (FIN) and abortively (RST), with requests pipelined behind the suspended one.
TEST_F(HttpSuspendTest, ConnectionClosedWhileSuspendedEndsQuietly) {
  Start(OneThread());
  for (const bool reset : {false, true}) {
    const int fd = ConnectAndSend(port_, GetRequest("/v1/check?domain=api&slow=gone") +
                                             GetRequest("/v1/check?domain=api&user=gone") +
                                             GetRequest("/healthcheck"));
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(WaitFor([&] { return store_.held() == 1; })) << reset;
    // This one and no other (the sessions of earlier connections have ended).
    EXPECT_TRUE(WaitFor([&] { return metrics_.http_connections.load() == 1; })) << reset;
    if (reset) {
      const linger abort{.l_onoff = 1, .l_linger = 0};
      ASSERT_EQ(::setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort, sizeof(abort)), 0);
    }
    ::close(fd);
    // Served meanwhile.
    EXPECT_EQ(Get("/healthcheck").status, 200) << reset;
    const int answered = store_.answered();
    ASSERT_TRUE(store_.Release(0));
    ASSERT_TRUE(WaitFor([&] { return store_.answered() > answered; })) << reset;
    // The session notices the closed socket when it writes (or reads) and ends.
    EXPECT_TRUE(WaitFor([&] { return metrics_.http_connections.load() == 0; }))
        << reset << ": the session outlived its connection";
    EXPECT_EQ(Get("/healthcheck").status, 200) << reset;
    EXPECT_EQ(Get("/v1/check?domain=api&user=after").status, 200) << reset;
    EXPECT_EQ(store_.held(), 0u);
  }
  EXPECT_EQ(metrics_.http.errors.load(), 0u);
}

// Past max_checks_in_flight rate limit calls at once the server sheds: while one check is
// suspended, a second is decided at once without waiting for the owner, and the first still
// gets its answer.
TEST_F(HttpSuspendTest, ChecksPastTheInFlightBoundAreShed) {
  HttpServerOptions options = OneThread();
  options.max_checks_in_flight = 1;
  Start(options);
  HttpClient waiting(port_);
  ASSERT_TRUE(waiting.Send(GetRequest("/v1/check?domain=api&slow=s")));
  ASSERT_TRUE(WaitFor([&] { return store_.held() == 1; }));
  HttpResponse shed = Get("/v1/check?domain=api&slow=s");
  EXPECT_EQ(shed.status, 200);
  EXPECT_EQ(metrics_.http.shed.load(), 1u);
  EXPECT_EQ(store_.held(), 1u) << "the shed check waited for the owner";
  ASSERT_TRUE(store_.Release(0));
  HttpResponse first = waiting.ReadResponse();
  EXPECT_EQ(first.status, 200);
  // The bound is free again: the next check is not shed (it waits, and is released).
  HttpClient next(port_);
  ASSERT_TRUE(next.Send(GetRequest("/v1/check?domain=api&slow=s")));
  ASSERT_TRUE(WaitFor([&] { return store_.held() == 1; }));
  ASSERT_TRUE(store_.Release(0));
  EXPECT_EQ(next.ReadResponse().status, 200);
  EXPECT_EQ(metrics_.http.shed.load(), 1u);
}

// A concurrency slot taken by a suspended check is freed by a suspended release (POST
// /v1/release): each waits for the owner, and a lease frees its slot once.
TEST_F(HttpSuspendTest, ReleaseMaySuspendToo) {
  Start(OneThread());
  const std::string job = R"("descriptors":[{"entries":[{"key":"job","value":"j"}]}])";
  HttpClient client(port_);
  auto exchange = [&](const std::string& request) {
    const int suspended = store_.suspended();
    EXPECT_TRUE(client.Send(request));
    EXPECT_TRUE(WaitFor([&] { return store_.suspended() == suspended + 1; }));
    EXPECT_TRUE(store_.Release(0));
    return client.ReadResponse();
  };
  HttpResponse taken = exchange(PostRequest("/v1/check", R"({"domain":"api",)" + job + "}"));
  ASSERT_EQ(taken.status, 200) << taken.body;
  const int64_t lease = ParseNative(taken.body).lease();
  ASSERT_NE(lease, 0);
  EXPECT_EQ(exchange(GetRequest("/v1/check?domain=api&job=j")).status, 429);

  const std::string release = PostRequest(
      "/v1/release", R"({"domain":"api","lease":")" + std::to_string(lease) + R"(",)" + job + "}");
  ASSERT_TRUE(client.Send(release));
  ASSERT_TRUE(WaitFor([&] { return store_.held() == 1; }));
  // Other connections are served while the release waits for the owner.
  EXPECT_EQ(Get("/v1/check?domain=api&user=x").status, 200);
  ASSERT_TRUE(store_.Release(0));
  HttpResponse released = client.ReadResponse();
  EXPECT_EQ(released.status, 200) << released.body;
  EXPECT_EQ(released.body, "{}");
  EXPECT_EQ(exchange(release).status, 409) << "a lease frees its slot once";
  EXPECT_EQ(exchange(GetRequest("/v1/check?domain=api&job=j")).status, 200);
}

// A suspended check is bounded by the store (in a cluster, the forward timeout), not by the
// session: its connection outlives the idle timeout that closes an idle one meanwhile.
TEST_F(HttpSuspendTest, SuspendedCheckOutlivesTheIdleTimeout) {
  HttpServerOptions options = OneThread();
  // Long enough that a loaded machine still reads the request before it (the test waits for
  // one idle timeout).
  options.idle_timeout = absl::Milliseconds(500);
  Start(options);
  HttpClient waiting(port_);
  ASSERT_TRUE(waiting.Send(GetRequest("/v1/check?domain=api&slow=long")));
  ASSERT_TRUE(WaitFor([&] { return store_.held() == 1; }));
  HttpClient idle(port_);
  ASSERT_EQ(idle.Request("GET", "/healthcheck").status, 200);
  EXPECT_TRUE(idle.WaitForClose());  // the sweeper has run past the timeout
  ASSERT_TRUE(store_.Release(0));
  HttpResponse r = waiting.ReadResponse();
  EXPECT_EQ(r.status, 200) << r.error;
  EXPECT_THAT(r.Header("RateLimit"), StartsWith("\"slow\";r=4"));
}

// A drain waits for a suspended check: its answer still reaches the client, then the
// connection closes.
TEST_F(HttpSuspendTest, ShutdownWaitsForASuspendedCheck) {
  Start(OneThread());
  HttpClient client(port_);
  ASSERT_TRUE(client.Send(GetRequest("/v1/check?domain=api&slow=drain")));
  ASSERT_TRUE(WaitFor([&] { return store_.held() == 1; }));
  std::thread shutdown([this] { server_->Shutdown(absl::Seconds(30)); });
  // Once the server refuses new connections it is draining.
  while (Get("/healthcheck").status == 200) {
  }
  ASSERT_TRUE(store_.Release(0));
  HttpResponse r = client.ReadResponse();
  EXPECT_EQ(r.status, 200) << r.error;
  EXPECT_THAT(r.Header("RateLimit"), StartsWith("\"slow\";r=4"));
  EXPECT_TRUE(client.WaitForClose());
  shutdown.join();
  server_.reset();
  EXPECT_EQ(metrics_.http_connections.load(), 0u);
}

// Calls that are answered at once in cluster mode (health, metrics, config, not-found) never
// reach the store and are not held behind anything but their own connection's requests.
TEST_F(HttpSuspendTest, CallsThatNeedNoOwnerAreAnsweredAtOnce) {
  Start(OneThread());
  EXPECT_EQ(Get("/metrics").status, 200);
  EXPECT_EQ(Get("/v1/config").status, 200);
  EXPECT_EQ(Get("/nope").status, 404);
  EXPECT_EQ(Get("/v1/check?domain=api&user=u").status, 200);
  EXPECT_EQ(Get("/v1/check?domain=api").status, 400);
  EXPECT_EQ(store_.suspended(), 0);
  EXPECT_EQ(store_.async_applies(), 1);
}

}  // namespace
}  // namespace floodgate::frontends
