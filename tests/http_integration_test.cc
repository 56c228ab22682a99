// Every HTTP endpoint over the wire, against the real binary started with an admin token:
// checks (GET, POST, Envoy's /json, nginx's /v1/auth), release, health, metrics, config read and
// admin edits, live file reload, and bad input answered with clear errors while serving on.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "testing/http_client.h"
#include "testing/server_process.h"

namespace floodgate {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using testing::HttpClient;
using testing::HttpResponse;

constexpr char kToken[] = "s3cret";
constexpr char kConfig[] = R"(domain: web
descriptors:
  - key: user
    rate_limit: {unit: day, requests_per_unit: 2, name: per-user}
  - key: job
    rate_limit: {algorithm: concurrency, unit: hour, requests_per_unit: 1}
)";

class HttpIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir();
    ASSERT_FALSE(dir_.empty());
    std::ofstream(fs::path(dir_) / "web.yaml") << kConfig;
    auto server = testing::ServerProcess::Start(testing::FloodgateBinary(),
                                                {"--config", dir_, "--admin-token", kToken});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }
  void TearDown() override {
    server_.reset();
    fs::remove_all(dir_);
  }

  HttpResponse Do(std::string_view method, std::string_view target, std::string_view body = {},
                  std::vector<std::pair<std::string, std::string>> headers = {}) {
    HttpClient client(server_->http_port());
    return client.Request(method, target, body, headers);
  }

  std::string dir_;
  std::unique_ptr<testing::ServerProcess> server_;
};

TEST_F(HttpIntegrationTest, GetCheckPassesThenRefusesWithHeaders) {
  HttpClient client(server_->http_port());  // one keep-alive connection for all three
  HttpResponse first = client.Request("GET", "/v1/check?domain=web&user=alice");
  EXPECT_EQ(first.status, 200);
  EXPECT_EQ(first.Header("RateLimit-Policy"), "\"per-user\";q=2;w=86400");
  EXPECT_THAT(first.Header("RateLimit"), HasSubstr("\"per-user\";r=1;t="));
  EXPECT_THAT(first.body, HasSubstr("\"allowed\":true"));
  EXPECT_EQ(client.Request("GET", "/v1/check?domain=web&user=alice").status, 200);
  HttpResponse refused = client.Request("GET", "/v1/check?domain=web&user=alice");
  EXPECT_EQ(refused.status, 429);
  EXPECT_FALSE(refused.Header("Retry-After").empty());
  EXPECT_THAT(refused.body, HasSubstr("OVER_LIMIT"));
  // nginx's auth_request flavour: 403 when refused.
  EXPECT_EQ(client.Request("GET", "/v1/auth?domain=web&user=alice").status, 403);
  EXPECT_EQ(client.Request("GET", "/v1/auth?domain=web&user=bob").status, 200);
}

TEST_F(HttpIntegrationTest, PostCheckEnvoyJsonAndRelease) {
  const std::string check =
      R"({"domain":"web","descriptors":[{"entries":[{"key":"job","value":"j1"}]}]})";
  const HttpResponse acquired = Do("POST", "/v1/check", check);
  EXPECT_EQ(acquired.status, 200);
  // The lease token, proto3 JSON's quoted int64: "lease":"1700000000123456789".
  const std::string field = "\"lease\":\"";
  const size_t at = acquired.body.find(field);
  ASSERT_NE(at, std::string::npos) << acquired.body;
  const size_t start = at + field.size();
  const std::string lease = acquired.body.substr(start, acquired.body.find('"', start) - start);
  ASSERT_FALSE(lease.empty());
  EXPECT_EQ(Do("POST", "/v1/check", check).status, 429);  // one slot, held
  EXPECT_EQ(Do("POST", "/v1/release", check).status, 400) << "the lease is required";
  const std::string release = check.substr(0, check.size() - 1) + ",\"lease\":\"" + lease + "\"}";
  const std::string forged =
      check.substr(0, check.size() - 1) + R"(,"lease":"9000000000000000000"})";
  const HttpResponse refused = Do("POST", "/v1/release", forged);
  EXPECT_EQ(refused.status, 409) << "a made-up lease frees nothing";
  EXPECT_THAT(refused.body, HasSubstr("the lease is unknown, already released or expired"));
  EXPECT_EQ(Do("POST", "/v1/release", release).status, 200);
  EXPECT_EQ(Do("POST", "/v1/release", release).status, 409) << "replayed";
  EXPECT_EQ(Do("POST", "/v1/check", check).status, 200);

  const std::string envoy =
      R"({"domain":"web","descriptors":[{"entries":[{"key":"user","value":"carol"}]}]})";
  HttpResponse ok = Do("POST", "/json", envoy);
  EXPECT_EQ(ok.status, 200);
  EXPECT_THAT(ok.body, HasSubstr("\"overallCode\":\"OK\""));
  EXPECT_THAT(ok.body, HasSubstr("\"requestsPerUnit\":2"));
  Do("POST", "/json", envoy);
  HttpResponse over = Do("POST", "/json", envoy);
  EXPECT_EQ(over.status, 429);
  EXPECT_THAT(over.body, HasSubstr("OVER_LIMIT"));
}

TEST_F(HttpIntegrationTest, HealthMetricsAndConfig) {
  HttpResponse health = Do("GET", "/healthcheck");
  EXPECT_EQ(health.status, 200);
  Do("GET", "/v1/check?domain=web&user=m");
  HttpResponse metrics = Do("GET", "/metrics");
  EXPECT_EQ(metrics.status, 200);
  EXPECT_THAT(metrics.body, HasSubstr("ratelimit_service_rate_limit_total_hits{domain=\"web\",key="
                                      "\"web.user\",key1=\"user\"} 1"));
  EXPECT_THAT(metrics.body, HasSubstr("floodgate_decision_latency_seconds_bucket"));
  EXPECT_THAT(metrics.body, HasSubstr("floodgate_store_keys"));
  EXPECT_THAT(metrics.body, HasSubstr("floodgate_config_version 1"));
  HttpResponse config = Do("GET", "/v1/config");
  EXPECT_EQ(config.status, 200);
  EXPECT_THAT(config.body, HasSubstr("\"version\""));
  EXPECT_THAT(config.body, HasSubstr("per-user"));
}

TEST_F(HttpIntegrationTest, AdminEditsNeedTheTokenAndPersist) {
  const std::string api =
      "domain: api\ndescriptors:\n  - key: k\n"
      "    rate_limit: {unit: minute, requests_per_unit: 1}\n";
  const std::vector<std::pair<std::string, std::string>> auth = {
      {"Authorization", std::string("Bearer ") + kToken}};
  EXPECT_EQ(Do("PUT", "/v1/config/api", api).status, 401);
  EXPECT_EQ(Do("PUT", "/v1/config/api", api, {{"Authorization", "Bearer wrong"}}).status, 401);
  HttpResponse bad =
      Do("PUT", "/v1/config/api", "domain: api\ndescriptors: [{key: k, nope: 1}]\n", auth);
  EXPECT_EQ(bad.status, 400);
  EXPECT_THAT(bad.body, HasSubstr(":2"));  // file:line in the error
  ASSERT_EQ(Do("PUT", "/v1/config/api", api, auth).status, 200);
  // Admin changes go to the state folder, never into the operator's config folder.
  EXPECT_TRUE(fs::exists(fs::path(dir_) / ".floodgate-state" / "api.yaml"));
  EXPECT_FALSE(fs::exists(fs::path(dir_) / "api.yaml"));
  EXPECT_EQ(Do("GET", "/v1/check?domain=api&k=v").status, 200);
  EXPECT_EQ(Do("GET", "/v1/check?domain=api&k=v").status, 429);
  EXPECT_EQ(Do("DELETE", "/v1/config/api", "", auth).status, 200);
  EXPECT_EQ(Do("GET", "/v1/check?domain=api&k=v").status, 200);  // no domain: no limit
  EXPECT_EQ(Do("DELETE", "/v1/config/api", "", auth).status, 404);
}

TEST_F(HttpIntegrationTest, FileEditIsPickedUpAndBadEditIsCounted) {
  {
    std::ofstream out(fs::path(dir_) / "web.yaml", std::ios::trunc);
    out << "domain: web\ndescriptors:\n  - key: user\n    rate_limit: {unit: fortnight}\n";
  }
  // Bounded wait for the watcher (it polls every 200 ms): the failure metric moves.
  bool counted = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!counted && std::chrono::steady_clock::now() < deadline) {
    counted = Do("GET", "/metrics").body.find("floodgate_config_reload_failure_total 1") !=
              std::string::npos;
  }
  EXPECT_TRUE(counted);
  EXPECT_EQ(Do("GET", "/v1/check?domain=web&user=z").status, 200);  // old config serves
  EXPECT_THAT(server_->Stderr(), HasSubstr("web.yaml:4"));
}

TEST_F(HttpIntegrationTest, BadInputGetsClearErrorsAndServerKeepsServing) {
  HttpResponse r = Do("POST", "/v1/check", "{not json");
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, HasSubstr("error"));
  EXPECT_EQ(Do("POST", "/json", "[1,2,3]").status, 400);
  EXPECT_EQ(Do("POST", "/v1/check", std::string(2 << 20, 'x')).status, 413);
  std::string many = R"({"domain":"web","descriptors":[)";
  for (int i = 0; i < 300; ++i) {
    many += std::string(i ? "," : "") + R"({"entries":[{"key":"user","value":"u"}]})";
  }
  many += "]}";
  r = Do("POST", "/v1/check", many);
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, HasSubstr("too many descriptors"));
  EXPECT_EQ(Do("GET", "/v1/check?domain=web&" + std::string(5000, 'k') + "=v").status, 400);
  EXPECT_EQ(Do("GET", "/v1/check?domain=web&user=%FF%FE").status, 400);
  EXPECT_EQ(Do("GET", "/v1/check?user=nodomain").status, 400);
  HttpClient raw(server_->http_port());
  HttpResponse garbage = raw.SendRaw("\x16\x03\x01 this is not http\r\n\r\n");
  EXPECT_TRUE(garbage.status == 400 || garbage.status == 0);
  EXPECT_EQ(Do("GET", "/nope").status, 404);
  EXPECT_EQ(Do("GET", "/v1/check?domain=web&user=fine").status, 200);
}

// Runs curl with `args` and returns what it printed (its stdout).
std::string Curl(const std::string& args) {
  std::string out;
  FILE* pipe = ::popen(("curl --silent --show-error --max-time 10 " + args + " 2>&1").c_str(), "r");
  if (pipe == nullptr) {
    return "popen failed";
  }
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0) {
    out.append(buf, n);
  }
  ::pclose(pipe);
  return out;
}

// A load balancer's probe: curl's HEAD gets GET's status and length with no body, and the
// connection is reused for the next HEAD (curl would drop it on excess bytes).
TEST_F(HttpIntegrationTest, HeadProbesWithCurlKeepTheConnection) {
  const std::string base = "http://127.0.0.1:" + std::to_string(server_->http_port());
  // Each URL's output to /dev/null; --write-out prints one line per URL.
  auto urls = [&](std::initializer_list<std::string_view> paths) {
    std::string args;
    for (std::string_view path : paths) {
      args += " --output /dev/null " + base + std::string(path);
    }
    return args;
  };
  EXPECT_EQ(Curl("--head --write-out '%{http_code} %{num_connects} %{size_download}\\n'" +
                 urls({"/healthcheck", "/healthcheck", "/v1/config"})),
            "200 1 0\n200 0 0\n200 0 0\n");
  EXPECT_THAT(Curl("--head " + base + "/healthcheck"), HasSubstr("Content-Length: 2"));
  // A method no endpoint takes: 501, and the connection is still reused.
  EXPECT_EQ(Curl("--request OPTIONS --write-out '%{http_code} %{num_connects}\\n'" +
                 urls({"/v1/check", "/healthcheck"})),
            "501 1\n501 0\n");
}

// A typo in the domain passes (no limit applies) but is named in the answer and counted.
TEST_F(HttpIntegrationTest, UnknownDomainIsNamedAndCounted) {
  const std::string base = "http://127.0.0.1:" + std::to_string(server_->http_port());
  const std::string out = Curl("--include '" + base + "/v1/check?domain=wbe&user=alice'");
  EXPECT_THAT(out, HasSubstr("HTTP/1.1 200 OK"));
  EXPECT_THAT(out, HasSubstr("Floodgate-Warning: unknown domain"));
  EXPECT_THAT(out, HasSubstr("\"unknownDomain\":true"));
  EXPECT_THAT(Curl("'" + base + "/v1/check?domain=web&user=alice'"),
              HasSubstr("\"unknownDomain\":false"));
  EXPECT_THAT(Curl(base + "/metrics"),
              HasSubstr("floodgate_unknown_domain_total{frontend=\"http\"} 1\n"));
}

TEST_F(HttpIntegrationTest, ThousandsOfConnectionsAreServed) {
  // 2000 client sockets here and 2000 in the server: raise our own descriptor limit as the
  // server raises its own.
  rlimit files{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &files), 0);
  files.rlim_cur = files.rlim_max;
  setrlimit(RLIMIT_NOFILE, &files);
  const int kConnections = std::min<int>(2000, static_cast<int>(files.rlim_cur / 2) - 64);
  ASSERT_GE(kConnections, 1000) << "descriptor limit too low for this test";
  std::vector<std::unique_ptr<HttpClient>> clients;
  for (int i = 0; i < kConnections; ++i) {
    clients.push_back(std::make_unique<HttpClient>(server_->http_port()));
    // Send on every connection first, so all of them are open and busy at once.
    ASSERT_TRUE(clients.back()->Send("GET /v1/check?domain=web&user=c" + std::to_string(i) +
                                     " HTTP/1.1\r\nHost: x\r\n\r\n"))
        << i;
  }
  int ok = 0;
  for (auto& client : clients) {
    ok += client->ReadResponse().status == 200;
  }
  EXPECT_EQ(ok, kConnections);
  // A second round on the same keep-alive connections.
  ok = 0;
  for (auto& client : clients) {
    ok += client->Request("GET", "/healthcheck").status == 200;
  }
  EXPECT_EQ(ok, kConnections);
}

}  // namespace
}  // namespace floodgate
