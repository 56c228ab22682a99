// TLS and mTLS against the real binary, with real clients: curl for HTTPS (GET /v1/check and
// /healthcheck; with and without a client certificate; one from another CA; plain HTTP to the
// TLS port) and a grpc++ client with SslCredentials calling ShouldRateLimit. Certificates are
// made at test time with the openssl command line (testing/tls_certs.h). After every refused
// handshake the server must still serve. Also TLS on the gRPC port alone, from
// envoyproxy/ratelimit's variables (GRPC_SERVER_USE_TLS, ...) or our --grpc-tls-* flags, with a
// client SAN check, while the HTTP port stays plain.

#include <grpcpp/grpcpp.h>
#include <stdio.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "envoy/service/ratelimit/v3/rls.grpc.pb.h"
#include "testing/server_process.h"
#include "testing/tls_certs.h"

namespace floodgate {
namespace {

namespace rls = ::envoy::service::ratelimit::v3;
namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr char kConfig[] = R"(domain: api
descriptors:
  - key: user
    rate_limit: {unit: day, requests_per_unit: 1000}
)";

struct Result {
  int exit_code = -1;
  std::string out;  // stdout and stderr
};

// Runs a shell command (bounded in time by the caller's flags) and returns its exit code and
// output.
Result Shell(const std::string& command) {
  Result run;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) {
    return run;
  }
  char buffer[4096];
  size_t n = 0;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) {
    run.out.append(buffer, n);
  }
  const int status = pclose(pipe);
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return run;
}

// Each test runs against both gRPC servers: native (the default) and grpc++.
class TlsIntegrationTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir();
    ASSERT_FALSE(dir_.empty());
    fs::create_directory(fs::path(dir_) / "config");
    std::ofstream(fs::path(dir_) / "config" / "api.yaml") << kConfig;
    absl::StatusOr<testing::TestPki> pki = testing::MakeTestPki(dir_);
    ASSERT_TRUE(pki.ok()) << pki.status();
    pki_ = *pki;
  }
  void TearDown() override {
    server_.reset();
    fs::remove_all(dir_);
  }

  void StartServer(bool mutual) {
    std::vector<std::string> args = {"--config",  dir_ + "/config", "--grpc-impl",
                                     GetParam(),  "--tls-cert",     pki_.server_cert,
                                     "--tls-key", pki_.server_key};
    if (mutual) {
      args.insert(args.end(), {"--tls-client-ca", pki_.ca_cert});
    }
    auto server = testing::ServerProcess::Start(testing::FloodgateBinary(), args);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }

  // curl over HTTPS to the HTTP port, trusting our CA; `extra` adds flags (a client cert).
  // Returns curl's exit code and "<status> <body>" (or curl's error).
  Result Curl(const std::string& path, const std::string& extra = "",
              const std::string& scheme = "https") {
    return Shell(absl::StrCat("curl -sS --max-time 10 --cacert ", pki_.ca_cert, " ", extra,
                              " -w ' %{http_code}' '", scheme,
                              "://localhost:", server_->http_port(), path, "'"));
  }
  std::string ClientCert() const {
    return absl::StrCat("--cert ", pki_.client_cert, " --key ", pki_.client_key);
  }
  std::string OtherClientCert() const {
    return absl::StrCat("--cert ", pki_.other_client_cert, " --key ", pki_.other_client_key);
  }

  // ShouldRateLimit over TLS with grpc++, trusting our CA, with the given client certificate
  // ("" for none).
  grpc::Status Check(const std::string& cert_file, const std::string& key_file,
                     rls::RateLimitResponse* response, int calls = 1) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = testing::ReadFileText(pki_.ca_cert);
    if (!cert_file.empty()) {
      ssl.pem_cert_chain = testing::ReadFileText(cert_file);
      ssl.pem_private_key = testing::ReadFileText(key_file);
    }
    auto channel = grpc::CreateChannel(absl::StrCat("localhost:", server_->grpc_port()),
                                       grpc::SslCredentials(ssl));
    auto stub = rls::RateLimitService::NewStub(channel);
    rls::RateLimitRequest request;
    request.set_domain("api");
    auto* entry = request.add_descriptors()->add_entries();
    entry->set_key("user");
    entry->set_value("alice");
    grpc::Status status;
    for (int i = 0; i < calls && status.ok(); ++i) {  // one channel, one connection
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
      status = stub->ShouldRateLimit(&context, request, response);
    }
    return status;
  }

  // ShouldRateLimit in plain text (h2c) to the TLS port.
  grpc::Status PlainCheck() {
    auto channel = grpc::CreateChannel(absl::StrCat("localhost:", server_->grpc_port()),
                                       grpc::InsecureChannelCredentials());
    auto stub = rls::RateLimitService::NewStub(channel);
    rls::RateLimitRequest request;
    request.set_domain("api");
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    rls::RateLimitResponse response;
    return stub->ShouldRateLimit(&context, request, &response);
  }

  std::string dir_;
  testing::TestPki pki_;
  std::unique_ptr<testing::ServerProcess> server_;
};

TEST_P(TlsIntegrationTest, HttpsAndGrpcOverTls) {
  StartServer(/*mutual=*/false);
  Result check = Curl("/v1/check?domain=api&user=alice");
  EXPECT_EQ(check.exit_code, 0) << check.out;
  EXPECT_THAT(check.out, HasSubstr("\"allowed\":true"));
  EXPECT_THAT(check.out, HasSubstr(" 200"));
  Result health = Curl("/healthcheck");
  EXPECT_EQ(health.exit_code, 0) << health.out;
  EXPECT_THAT(health.out, HasSubstr(" 200"));
  // HTTP/1.1 over TLS 1.2 too (the minimum), and ALPN picks http/1.1 though curl offers h2.
  Result tls12 = Curl("/healthcheck", "--tlsv1.2 --tls-max 1.2 -v");
  EXPECT_EQ(tls12.exit_code, 0) << tls12.out;
  EXPECT_THAT(tls12.out, HasSubstr("ALPN: server accepted http/1.1"));
  // Below TLS 1.2: refused in the handshake.
  Result tls11 = Curl("/healthcheck", "--tls-max 1.1");
  EXPECT_NE(tls11.exit_code, 0) << tls11.out;
  // Plain HTTP to the TLS port: the connection closes without an answer.
  Result plain = Curl("/healthcheck", "", "http");
  EXPECT_NE(plain.exit_code, 0) << plain.out;
  EXPECT_THAT(plain.out, ::testing::Not(HasSubstr(" 200")));

  rls::RateLimitResponse response;
  grpc::Status status = Check("", "", &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.overall_code(), rls::RateLimitResponse::OK);
  // Many calls on one TLS connection (reads and writes through the TLS stream, in turn).
  status = Check("", "", &response, /*calls=*/200);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.overall_code(), rls::RateLimitResponse::OK);
  // Plain HTTP/2 to the TLS port: the handshake fails, the call is UNAVAILABLE.
  EXPECT_EQ(PlainCheck().error_code(), grpc::StatusCode::UNAVAILABLE);
  status = Check("", "", &response);
  EXPECT_TRUE(status.ok()) << status.error_message();

  // Still serving after the refused handshakes.
  EXPECT_THAT(Curl("/healthcheck").out, HasSubstr(" 200"));
}

TEST_P(TlsIntegrationTest, MutualTlsNeedsATrustedClientCertificate) {
  StartServer(/*mutual=*/true);
  Result check = Curl("/v1/check?domain=api&user=alice", ClientCert());
  EXPECT_EQ(check.exit_code, 0) << check.out;
  EXPECT_THAT(check.out, HasSubstr("\"allowed\":true"));
  Result health = Curl("/healthcheck", ClientCert());
  EXPECT_THAT(health.out, HasSubstr(" 200"));

  // No client certificate, or one from another CA: refused in the handshake.
  Result none = Curl("/healthcheck");
  EXPECT_NE(none.exit_code, 0) << none.out;
  EXPECT_THAT(none.out, HasSubstr("certificate required"));
  Result other = Curl("/healthcheck", OtherClientCert());
  EXPECT_NE(other.exit_code, 0) << other.out;
  EXPECT_THAT(other.out, HasSubstr("unknown ca"));
  EXPECT_THAT(Curl("/healthcheck", ClientCert()).out, HasSubstr(" 200"));

  rls::RateLimitResponse response;
  grpc::Status ok = Check(pki_.client_cert, pki_.client_key, &response);
  ASSERT_TRUE(ok.ok()) << ok.error_message();
  EXPECT_EQ(response.overall_code(), rls::RateLimitResponse::OK);
  EXPECT_EQ(Check("", "", &response).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Check(pki_.other_client_cert, pki_.other_client_key, &response).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  // Still serving after the refused handshakes.
  ok = Check(pki_.client_cert, pki_.client_key, &response);
  EXPECT_TRUE(ok.ok()) << ok.error_message();
  EXPECT_THAT(Curl("/healthcheck", ClientCert()).out, HasSubstr(" 200"));
}

// Bad files stop the start with the flag and the file named; nothing listens.
TEST_P(TlsIntegrationTest, BadFilesRefuseToStart) {
  const std::string binary = testing::FloodgateBinary();
  const std::string base = absl::StrCat(binary, " serve --config ", dir_,
                                        "/config --http 127.0.0.1:0 --grpc "
                                        "127.0.0.1:0 --grpc-impl ",
                                        GetParam(), " ");
  const std::string missing = dir_ + "/missing.pem";
  Result run = Shell(absl::StrCat(base, "--tls-cert ", missing, " --tls-key ", pki_.server_key));
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.out, HasSubstr("--tls-cert " + missing + ": cannot read it"));
  run = Shell(absl::StrCat(base, "--tls-cert ", pki_.server_cert, " --tls-key ", pki_.client_key));
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.out, HasSubstr("--tls-key " + pki_.client_key + " does not match"));
  run = Shell(absl::StrCat(base, "--tls-cert ", pki_.server_key, " --tls-key ", pki_.server_key));
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.out, HasSubstr("no PEM certificate"));
  run = Shell(absl::StrCat(base, "--tls-cert ", pki_.server_cert, " --tls-key ", pki_.server_key,
                           " --tls-client-ca ", pki_.server_key));
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.out, HasSubstr("--tls-client-ca " + pki_.server_key));
}

// Sets environment variables (inherited by the server process started meanwhile) and unsets
// them when it goes.
class ScopedEnv {
 public:
  explicit ScopedEnv(std::vector<std::pair<std::string, std::string>> vars)
      : vars_(std::move(vars)) {
    for (const auto& [name, value] : vars_) {
      setenv(name.c_str(), value.c_str(), 1);
    }
  }
  ~ScopedEnv() {
    for (const auto& [name, value] : vars_) {
      unsetenv(name.c_str());
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::vector<std::pair<std::string, std::string>> vars_;
};

// envoyproxy/ratelimit's deployment: mTLS on the gRPC port alone, with a client SAN (native
// server); the HTTP port answers plain HTTP.
TEST_P(TlsIntegrationTest, GrpcPortAloneFromEnvoysVariablesChecksTheClientSan) {
  const std::vector<std::pair<std::string, std::string>> envoy = {
      {"GRPC_SERVER_USE_TLS", "true"},
      {"GRPC_SERVER_TLS_CERT", pki_.server_cert},
      {"GRPC_SERVER_TLS_KEY", pki_.server_key},
      {"GRPC_CLIENT_TLS_CACERT", pki_.ca_cert},
      {"GRPC_CLIENT_TLS_SAN", "envoy.example.internal"}};
  if (GetParam() == "grpcpp") {
    // grpc++ cannot check the SAN: refused, naming the flag, before anything listens.
    std::string command;
    for (const auto& [name, value] : envoy) {
      absl::StrAppend(&command, name, "=", value, " ");
    }
    Result run = Shell(absl::StrCat(command, testing::FloodgateBinary(), " serve --config ", dir_,
                                    "/config --http 127.0.0.1:0 --grpc 127.0.0.1:0 --grpc-impl "
                                    "grpcpp"));
    EXPECT_EQ(run.exit_code, 2) << run.out;
    EXPECT_THAT(run.out, HasSubstr("GRPC_CLIENT_TLS_SAN) needs the native gRPC server"));
    return;
  }
  {
    ScopedEnv env(envoy);
    auto server =
        testing::ServerProcess::Start(testing::FloodgateBinary(), {"--config", dir_ + "/config"});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }
  rls::RateLimitResponse response;
  grpc::Status ok = Check(pki_.san_client_cert, pki_.san_client_key, &response);
  ASSERT_TRUE(ok.ok()) << ok.error_message();
  EXPECT_EQ(response.overall_code(), rls::RateLimitResponse::OK);
  // The CA signed it, but it does not carry the name: refused in the handshake.
  EXPECT_EQ(Check(pki_.client_cert, pki_.client_key, &response).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Check("", "", &response).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(PlainCheck().error_code(), grpc::StatusCode::UNAVAILABLE);
  // The HTTP port is plain: /healthcheck answers over HTTP, and HTTPS there fails.
  Result health = Curl("/healthcheck", "", "http");
  EXPECT_EQ(health.exit_code, 0) << health.out;
  EXPECT_THAT(health.out, HasSubstr(" 200"));
  EXPECT_NE(Curl("/healthcheck").exit_code, 0);
  // Still serving the right client after the refused handshakes.
  ok = Check(pki_.san_client_cert, pki_.san_client_key, &response);
  EXPECT_TRUE(ok.ok()) << ok.error_message();
}

// Our flags: the gRPC port's own certificate and client CA beside a plain HTTP port (both
// servers), and beside HTTPS with --tls-* (whose client CA the gRPC port does not take).
TEST_P(TlsIntegrationTest, GrpcTlsFlagsReplaceTheSharedOnesOnTheGrpcPort) {
  auto server = testing::ServerProcess::Start(
      testing::FloodgateBinary(),
      {"--config", dir_ + "/config", "--grpc-impl", GetParam(), "--grpc-tls-cert", pki_.server_cert,
       "--grpc-tls-key", pki_.server_key, "--grpc-tls-client-ca", pki_.ca_cert});
  ASSERT_TRUE(server.ok()) << server.status();
  server_ = std::move(*server);
  rls::RateLimitResponse response;
  grpc::Status ok = Check(pki_.client_cert, pki_.client_key, &response);
  EXPECT_TRUE(ok.ok()) << ok.error_message();
  EXPECT_EQ(Check("", "", &response).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(Curl("/healthcheck", "", "http").out, HasSubstr(" 200"));

  server_.reset();
  server = testing::ServerProcess::Start(
      testing::FloodgateBinary(),
      {"--config", dir_ + "/config", "--grpc-impl", GetParam(), "--tls-cert", pki_.server_cert,
       "--tls-key", pki_.server_key, "--tls-client-ca", pki_.ca_cert, "--grpc-tls-cert",
       pki_.server_cert, "--grpc-tls-key", pki_.server_key});
  ASSERT_TRUE(server.ok()) << server.status();
  server_ = std::move(*server);
  ok = Check("", "", &response);  // TLS on the gRPC port, no client certificate asked
  EXPECT_TRUE(ok.ok()) << ok.error_message();
  EXPECT_NE(Curl("/healthcheck").exit_code, 0);  // the HTTP port still asks for one
  EXPECT_THAT(Curl("/healthcheck", ClientCert()).out, HasSubstr(" 200"));
}

INSTANTIATE_TEST_SUITE_P(GrpcImpl, TlsIntegrationTest, ::testing::Values("native", "grpcpp"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace floodgate
