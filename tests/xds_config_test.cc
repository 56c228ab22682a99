// The xDS config client (src/admin/xds_config.h) against a management server of our own, written
// here on grpc++ and speaking the published Rate Limit Config discovery protocol (state of the
// world), with a real ConfigManager and Limiter in process: a pushed set goes live and is ACKed,
// a bad one is NACKed with the loader's error while the old config serves, a later set replaces
// the whole xDS layer, and after the server is killed and restarted on the same port the client
// reconnects, resumes from its version and resyncs.
//
// Waits are on conditions with deadlines (the server's record of the requests it received, under
// its mutex); the client answers a push only after applying it, so an ACK seen by the server
// means the config is live. No sleep stands in for synchronisation.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "floodgate/store.h"
#include "ratelimit/config/ratelimit/v3/rls_conf.pb.h"
#include "ratelimit/service/ratelimit/v3/rls_conf_ds.grpc.pb.h"
#include "src/admin/config_manager.h"
#include "src/admin/xds_config.h"
#include "src/admin/xds_yaml.h"
#include "testing/http_client.h"
#include "testing/limiter_helpers.h"
#include "testing/server_process.h"
#include "testing/temp_dir.h"
#include "testing/tls_certs.h"

namespace floodgate::admin {
namespace {

using ::envoy::service::discovery::v3::DiscoveryRequest;
using ::envoy::service::discovery::v3::DiscoveryResponse;
namespace rls = ::ratelimit::config::ratelimit::v3;

constexpr absl::Duration kTimeout = absl::Seconds(20);

// A management server: holds one snapshot (version + resources), pushes it to every stream when
// the stream subscribes and again whenever it changes, and records every request it receives.
class ManagementServer final
    : public ::ratelimit::service::ratelimit::v3::RateLimitConfigDiscoveryService::Service {
 public:
  // Starts on `address` ("127.0.0.1:0" picks a port); port() is the one bound (0 on failure).
  explicit ManagementServer(
      const std::string& address,
      std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials()) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort(address, credentials, &port_);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
  }
  ~ManagementServer() override { Kill(); }

  int port() const { return port_; }

  // Ends every stream (the client sees the connection go) and stops listening.
  void Kill() {
    if (server_ == nullptr) {
      return;
    }
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    server_->Shutdown(std::chrono::system_clock::now());
    server_->Wait();
    server_.reset();
  }

  // Replaces the snapshot; open streams push it. Returns the nonce it will be pushed with on the
  // stream that is open now (each push takes the next nonce).
  std::string SetSnapshot(const std::string& version,
                          const std::vector<rls::RateLimitConfig>& configs) {
    absl::MutexLock lock(&mu_);
    snapshot_.Clear();
    snapshot_.set_version_info(version);
    snapshot_.set_type_url(std::string(kRateLimitConfigTypeUrl));
    for (const rls::RateLimitConfig& config : configs) {
      snapshot_.add_resources()->PackFrom(config);
    }
    ++generation_;
    return absl::StrCat("n", nonce_ + 1);
  }

  // Waits until a request answering `nonce` arrived; returns it (a test failure on timeout).
  DiscoveryRequest AwaitAnswer(const std::string& nonce) {
    absl::MutexLock lock(&mu_);
    const DiscoveryRequest* found = nullptr;
    auto arrived = [&] {
      mu_.AssertHeld();
      for (const DiscoveryRequest& r : requests_) {
        if (r.response_nonce() == nonce) {
          found = &r;
          return true;
        }
      }
      return false;
    };
    if (!mu_.AwaitWithTimeout(absl::Condition(&arrived), kTimeout)) {
      ADD_FAILURE() << "no answer to nonce " << nonce;
      return DiscoveryRequest();
    }
    return *found;
  }

  // Waits for the first request of a stream (a subscription: no nonce) and returns it.
  DiscoveryRequest AwaitSubscription() {
    absl::MutexLock lock(&mu_);
    auto arrived = [&] {
      mu_.AssertHeld();
      return !requests_.empty();
    };
    if (!mu_.AwaitWithTimeout(absl::Condition(&arrived), kTimeout)) {
      ADD_FAILURE() << "no subscription";
      return DiscoveryRequest();
    }
    return requests_.front();
  }

  grpc::Status StreamRlsConfigs(
      grpc::ServerContext* /*context*/,
      grpc::ServerReaderWriter<DiscoveryResponse, DiscoveryRequest>* stream) override {
    DiscoveryRequest request;
    if (!stream->Read(&request)) {
      return grpc::Status::OK;
    }
    Record(request);
    uint64_t pushed = 0;
    while (true) {
      DiscoveryResponse response;
      {
        absl::MutexLock lock(&mu_);
        auto ready = [&] {
          mu_.AssertHeld();
          return stopping_ || generation_ != pushed;
        };
        mu_.Await(absl::Condition(&ready));
        if (stopping_) {
          return grpc::Status(grpc::StatusCode::UNAVAILABLE, "shutting down");
        }
        pushed = generation_;
        response = snapshot_;
        response.set_nonce(absl::StrCat("n", ++nonce_));
      }
      if (!stream->Write(response) || !stream->Read(&request)) {
        return grpc::Status::OK;
      }
      Record(request);
    }
  }

 private:
  void Record(const DiscoveryRequest& request) {
    absl::MutexLock lock(&mu_);
    requests_.push_back(request);
  }

  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  DiscoveryResponse snapshot_ ABSL_GUARDED_BY(mu_);
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;  // 0: no snapshot yet
  uint64_t nonce_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<DiscoveryRequest> requests_ ABSL_GUARDED_BY(mu_);
};

// One domain with one limit `user` of `per_minute` requests a minute (`unit` 0: none, invalid).
rls::RateLimitConfig Domain(const std::string& name, uint32_t per_minute,
                            rls::RateLimitUnit unit = rls::MINUTE) {
  rls::RateLimitConfig config;
  config.set_name("res-" + name);
  config.set_domain(name);
  rls::RateLimitDescriptor* d = config.add_descriptors();
  d->set_key("user");
  d->mutable_rate_limit()->set_unit(unit);
  d->mutable_rate_limit()->set_requests_per_unit(per_minute);
  return config;
}

class XdsConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    temp_.Write("files.yaml",
                "domain: files\ndescriptors:\n  - key: user\n"
                "    rate_limit: {unit: minute, requests_per_unit: 3}\n");
    store_ = *NewShardedStore({});
    limiter_ = std::make_unique<limiter::Limiter>(store_.get(), KeyHasher(1, 1), nullptr);
    auto manager = ConfigManager::Create(temp_.path(), limiter_.get());
    ASSERT_TRUE(manager.ok()) << manager.status();
    manager_ = std::move(*manager);
  }

  XdsOptions Options(int port) {
    XdsOptions options;
    options.server = absl::StrCat("127.0.0.1:", port);
    options.node_id = "floodgate-test";
    options.node_metadata = {{"team", "edge"}};
    options.initial_backoff = absl::Milliseconds(20);
    options.max_backoff = absl::Milliseconds(200);
    return options;
  }

  uint64_t Limit(std::string_view domain) {
    return floodgate::testing::FirstLimit(*limiter_, domain);
  }

  floodgate::testing::TempDir temp_{"floodgate-xds-test"};
  std::unique_ptr<Store> store_;
  std::unique_ptr<limiter::Limiter> limiter_;
  std::unique_ptr<ConfigManager> manager_;
};

TEST_F(XdsConfigTest, PushAckNackReplaceAndResyncAfterRestart) {
  auto server = std::make_unique<ManagementServer>("127.0.0.1:0");
  const int port = server->port();
  ASSERT_NE(port, 0);
  XdsConfigClient client(Options(port), manager_.get());
  client.Start();

  // The subscription: node, metadata, type URL, no version yet.
  const DiscoveryRequest subscribe = server->AwaitSubscription();
  EXPECT_EQ(subscribe.node().id(), "floodgate-test");
  EXPECT_EQ(subscribe.node().metadata().fields().at("team").string_value(), "edge");
  EXPECT_EQ(subscribe.type_url(), kRateLimitConfigTypeUrl);
  EXPECT_EQ(subscribe.version_info(), "");
  EXPECT_EQ(subscribe.response_nonce(), "");

  // A push goes live and is ACKed.
  std::string nonce = server->SetSnapshot("v1", {Domain("api", 5)});
  DiscoveryRequest ack = server->AwaitAnswer(nonce);
  EXPECT_EQ(ack.version_info(), "v1");
  EXPECT_FALSE(ack.has_error_detail());
  EXPECT_EQ(Limit("api"), 5u);
  EXPECT_EQ(Limit("files"), 3u);  // the file source still serves beside it
  EXPECT_EQ(limiter_->config()->FindDomain("api")->file, "xds:res-api");
  auto response = floodgate::testing::CheckOk(
      *limiter_, floodgate::testing::MakeRequest("api", {{{"user", "alice"}}}));
  ASSERT_EQ(response.descriptors.size(), 1u);
  ASSERT_EQ(response.descriptors[0].limits.size(), 1u);
  EXPECT_EQ(response.descriptors[0].limits[0].rule->requests_per_unit, 5u);
  EXPECT_FALSE(response.unknown_domain);
  EXPECT_EQ(client.status().acks, 1u);
  EXPECT_EQ(client.status().acked_version, "v1");
  EXPECT_TRUE(client.status().connected);

  // A bad push (a limit with no unit) is NACKed with the loader's error; v1 keeps serving.
  nonce = server->SetSnapshot("v2", {Domain("api", 50), Domain("broken", 1, rls::UNKNOWN)});
  DiscoveryRequest nack = server->AwaitAnswer(nonce);
  EXPECT_EQ(nack.version_info(), "v1");
  ASSERT_TRUE(nack.has_error_detail());
  EXPECT_EQ(nack.error_detail().code(), 3);
  EXPECT_NE(nack.error_detail().message().find("xds:res-broken:4: rate limit needs a 'unit'"),
            std::string::npos)
      << nack.error_detail().message();
  EXPECT_EQ(Limit("api"), 5u);
  EXPECT_EQ(limiter_->config()->FindDomain("broken"), nullptr);
  EXPECT_EQ(client.status().nacks, 1u);
  EXPECT_EQ(client.status().last_nack_error, nack.error_detail().message());
  EXPECT_EQ(client.status().acked_version, "v1");

  // A good new version: ACKed and live.
  nonce = server->SetSnapshot("v3", {Domain("api", 7), Domain("web", 11)});
  ack = server->AwaitAnswer(nonce);
  EXPECT_EQ(ack.version_info(), "v3");
  EXPECT_FALSE(ack.has_error_detail());
  EXPECT_EQ(Limit("api"), 7u);
  EXPECT_EQ(Limit("web"), 11u);

  // State of the world: a domain missing from the next set goes.
  nonce = server->SetSnapshot("v4", {Domain("web", 12)});
  ack = server->AwaitAnswer(nonce);
  EXPECT_EQ(ack.version_info(), "v4");
  EXPECT_EQ(limiter_->config()->FindDomain("api"), nullptr);
  EXPECT_EQ(Limit("web"), 12u);
  EXPECT_EQ(manager_->xds_domains(), (std::set<std::string>{"web"}));

  // The server dies: the config stays; a new server on the same port gets a new subscription
  // that resumes from v4, and its set replaces the old one.
  const uint64_t streams_before = client.status().streams;
  server->Kill();
  EXPECT_TRUE(client.AwaitStatus([](const XdsStatus& s) { return !s.connected; }, kTimeout));
  EXPECT_EQ(Limit("web"), 12u);
  server = std::make_unique<ManagementServer>(absl::StrCat("127.0.0.1:", port));
  ASSERT_EQ(server->port(), port);
  const DiscoveryRequest resubscribe = server->AwaitSubscription();
  EXPECT_EQ(resubscribe.version_info(), "v4");
  EXPECT_EQ(resubscribe.node().id(), "floodgate-test");
  EXPECT_EQ(resubscribe.response_nonce(), "");
  nonce = server->SetSnapshot("v5", {Domain("api", 9)});
  ack = server->AwaitAnswer(nonce);
  EXPECT_EQ(ack.version_info(), "v5");
  EXPECT_EQ(Limit("api"), 9u);
  EXPECT_EQ(limiter_->config()->FindDomain("web"), nullptr);
  const XdsStatus status = client.status();
  EXPECT_GT(status.streams, streams_before);
  EXPECT_GE(status.stream_failures, 1u);
  EXPECT_EQ(status.acks, 4u);
  EXPECT_EQ(status.acked_version, "v5");

  client.Stop();
  EXPECT_FALSE(client.status().connected);
  EXPECT_EQ(Limit("api"), 9u);  // stopping the client leaves the config as it is
}

// The server is not there when the client starts: it keeps trying (with backoff) and takes the
// first snapshot once a server listens.
TEST_F(XdsConfigTest, ConnectsOnceTheServerComesUp) {
  int port = 0;
  {
    ManagementServer probe("127.0.0.1:0");  // find a free port, then free it
    port = probe.port();
  }
  ASSERT_NE(port, 0);
  XdsConfigClient client(Options(port), manager_.get());
  client.Start();
  EXPECT_TRUE(
      client.AwaitStatus([](const XdsStatus& s) { return s.stream_failures >= 3; }, kTimeout));
  EXPECT_EQ(client.status().acks, 0u);
  EXPECT_FALSE(client.status().connected);
  ManagementServer server(absl::StrCat("127.0.0.1:", port));
  ASSERT_EQ(server.port(), port);
  const std::string nonce = server.SetSnapshot("first", {Domain("api", 4)});
  const DiscoveryRequest ack = server.AwaitAnswer(nonce);
  EXPECT_EQ(ack.version_info(), "first");
  EXPECT_EQ(Limit("api"), 4u);
  client.Stop();
}

// Over mutual TLS: a client that trusts another CA never gets a config; one with the right CA and
// a client certificate the server accepts does.
TEST_F(XdsConfigTest, OverMutualTls) {
  floodgate::testing::TempDir pki_dir{"floodgate-xds-pki"};
  auto pki = floodgate::testing::MakeTestPki(pki_dir.path());
  ASSERT_TRUE(pki.ok()) << pki.status();
  grpc::SslServerCredentialsOptions ssl(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  ssl.pem_root_certs = floodgate::testing::ReadFileText(pki->ca_cert);
  ssl.pem_key_cert_pairs.push_back({floodgate::testing::ReadFileText(pki->server_key),
                                    floodgate::testing::ReadFileText(pki->server_cert)});
  ManagementServer server("127.0.0.1:0", grpc::SslServerCredentials(ssl));
  ASSERT_NE(server.port(), 0);
  server.SetSnapshot("tls-1", {Domain("api", 6)});

  XdsOptions wrong_ca = Options(server.port());
  wrong_ca.use_tls = true;
  wrong_ca.tls_ca_file = pki->other_ca_cert;
  wrong_ca.tls_cert_file = pki->client_cert;
  wrong_ca.tls_key_file = pki->client_key;
  {
    XdsConfigClient client(wrong_ca, manager_.get());
    client.Start();
    EXPECT_TRUE(
        client.AwaitStatus([](const XdsStatus& s) { return s.stream_failures >= 2; }, kTimeout));
    client.Stop();
    EXPECT_EQ(client.status().acks, 0u);
  }
  EXPECT_EQ(Limit("api"), 0u);

  XdsOptions right = wrong_ca;
  right.tls_ca_file = pki->ca_cert;
  XdsConfigClient client(right, manager_.get());
  client.Start();
  const DiscoveryRequest ack = server.AwaitAnswer("n1");
  EXPECT_EQ(ack.version_info(), "tls-1");
  EXPECT_EQ(Limit("api"), 6u);
  client.Stop();
}

// The real binary with no config of its own (CONFIG_TYPE=GRPC_XDS_SOTW as Envoy Gateway runs
// it): it serves what the management server pushes, Envoy's descriptor options included.
TEST(XdsServerTest, TheServerTakesItsConfigFromXdsAlone) {
  ManagementServer server("127.0.0.1:0");
  ASSERT_NE(server.port(), 0);
  rls::RateLimitConfig config = Domain("edge", 2);
  rls::RateLimitDescriptor* quota = config.add_descriptors();
  quota->set_key("plan");
  quota->set_value("p*");
  quota->set_quota_mode(true);
  quota->mutable_rate_limit()->set_unit(rls::DAY);
  quota->mutable_rate_limit()->set_requests_per_unit(1);
  const std::string nonce = server.SetSnapshot("v1", {config});
  auto process = floodgate::testing::ServerProcess::Start(
      floodgate::testing::FloodgateBinary(),
      {"--xds-server", absl::StrCat("127.0.0.1:", server.port()), "--xds-node-id", "gw-1"});
  ASSERT_TRUE(process.ok()) << process.status();
  const DiscoveryRequest ack = server.AwaitAnswer(nonce);
  EXPECT_EQ(ack.version_info(), "v1");
  EXPECT_EQ(ack.node().id(), "gw-1");
  EXPECT_FALSE(ack.has_error_detail());

  // An ACK means live: the limit answers at once.
  floodgate::testing::HttpClient http((*process)->http_port());
  const std::string user =
      R"({"domain":"edge","descriptors":[{"entries":[{"key":"user","value":"u"}]}]})";
  EXPECT_EQ(http.Request("POST", "/json", user).status, 200);
  EXPECT_EQ(http.Request("POST", "/json", user).status, 200);
  EXPECT_EQ(http.Request("POST", "/json", user).status, 429);
  // The quota-mode wildcard: its only quota spent, the answer is over.
  const std::string plan =
      R"({"domain":"edge","descriptors":[{"entries":[{"key":"plan","value":"pro"}]}]})";
  EXPECT_EQ(http.Request("POST", "/json", plan).status, 200);
  EXPECT_EQ(http.Request("POST", "/json", plan).status, 429);
  EXPECT_EQ((*process)->Stop(), 0);
}

}  // namespace
}  // namespace floodgate::admin
