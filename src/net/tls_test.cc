#include "src/net/tls.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include "testing/temp_dir.h"
#include "testing/tls_certs.h"

namespace floodgate::net {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<testing::TestPki> pki = testing::MakeTestPki(dir_.path());
    ASSERT_TRUE(pki.ok()) << pki.status();
    pki_ = *pki;
  }

  std::string LoadError(const TlsFiles& files) {
    absl::StatusOr<TlsCredentials> loaded = LoadTlsCredentials(files);
    EXPECT_FALSE(loaded.ok());
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(loaded.status().message());
  }

  testing::TempDir dir_{"floodgate-tls-test"};
  testing::TestPki pki_;
};

TEST_F(TlsTest, LoadsTlsAndMutualTls) {
  absl::StatusOr<TlsCredentials> tls = LoadTlsCredentials({pki_.server_cert, pki_.server_key, ""});
  ASSERT_TRUE(tls.ok()) << tls.status();
  EXPECT_FALSE(tls->mutual());
  EXPECT_THAT(tls->cert_chain_pem, HasSubstr("BEGIN CERTIFICATE"));
  EXPECT_TRUE(TlsContext::New(*tls, "http/1.1").ok());

  absl::StatusOr<TlsCredentials> mtls =
      LoadTlsCredentials({pki_.server_cert, pki_.server_key, pki_.ca_cert});
  ASSERT_TRUE(mtls.ok()) << mtls.status();
  EXPECT_TRUE(mtls->mutual());
  EXPECT_TRUE(TlsContext::New(*mtls, "h2").ok());
}

TEST_F(TlsTest, BadFilesAreRefusedNamingTheFlagAndTheFile) {
  const std::string missing = dir_.path() + "/missing.pem";
  EXPECT_THAT(LoadError({missing, pki_.server_key, ""}),
              AllOf(HasSubstr("--tls-cert " + missing), HasSubstr("No such file")));
  EXPECT_THAT(LoadError({pki_.server_cert, missing, ""}),
              AllOf(HasSubstr("--tls-key " + missing), HasSubstr("No such file")));
  EXPECT_THAT(LoadError({pki_.server_cert, pki_.server_key, missing}),
              HasSubstr("--tls-client-ca " + missing));
  EXPECT_THAT(LoadError({dir_.path(), pki_.server_key, ""}),
              HasSubstr("--tls-cert " + dir_.path() + ": cannot read it"));

  const std::string junk = dir_.Write("junk.pem", "not a certificate\n");
  EXPECT_THAT(LoadError({junk, pki_.server_key, ""}),
              AllOf(HasSubstr("--tls-cert " + junk), HasSubstr("no PEM certificate")));
  EXPECT_THAT(LoadError({pki_.server_cert, junk, ""}),
              AllOf(HasSubstr("--tls-key " + junk), HasSubstr("no PEM private key")));
  EXPECT_THAT(LoadError({pki_.server_cert, pki_.server_key, junk}),
              AllOf(HasSubstr("--tls-client-ca " + junk), HasSubstr("no PEM certificate")));
  // A certificate where the key should be, and the other way round.
  EXPECT_THAT(LoadError({pki_.server_cert, pki_.server_cert, ""}),
              HasSubstr("--tls-key " + pki_.server_cert + " holds no PEM private key"));
  EXPECT_THAT(LoadError({pki_.server_key, pki_.server_key, ""}),
              HasSubstr("--tls-cert " + pki_.server_key + " holds no PEM certificate"));
}

TEST_F(TlsTest, KeyThatIsNotTheCertificatesIsRefused) {
  EXPECT_THAT(LoadError({pki_.server_cert, pki_.client_key, ""}),
              HasSubstr("--tls-key " + pki_.client_key +
                        " does not match the certificate in --tls-cert " + pki_.server_cert));
}

TEST_F(TlsTest, FlagsThatDoNotGoTogether) {
  EXPECT_THAT(LoadError({pki_.server_cert, "", ""}), HasSubstr("go together"));
  EXPECT_THAT(LoadError({"", pki_.server_key, ""}), HasSubstr("go together"));
  EXPECT_THAT(LoadError({"", "", pki_.ca_cert}),
              HasSubstr("--tls-client-ca needs --tls-cert and --tls-key"));
}

TEST_F(TlsTest, ErrorsNameTheFlagsTheFilesCameFrom) {
  const TlsFlagNames peer{
      .cert = "--peer-tls-cert", .key = "--peer-tls-key", .ca = "--peer-tls-ca"};
  absl::StatusOr<TlsCredentials> loaded =
      LoadTlsCredentials({pki_.peer_cert, pki_.client_key, pki_.ca_cert}, peer);
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(loaded.status().message(),
              HasSubstr("--peer-tls-key " + pki_.client_key +
                        " does not match the certificate in --peer-tls-cert " + pki_.peer_cert));
  const std::string junk = dir_.Write("junk.pem", "not a certificate\n");
  loaded = LoadTlsCredentials({pki_.peer_cert, pki_.peer_key, junk}, peer);
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(loaded.status().message(), HasSubstr("--peer-tls-ca " + junk + " holds no PEM"));
}

TEST_F(TlsTest, ClientContextNeedsACaAndPlaysTheClient) {
  absl::StatusOr<TlsCredentials> no_ca = LoadTlsCredentials({pki_.peer_cert, pki_.peer_key, ""});
  ASSERT_TRUE(no_ca.ok()) << no_ca.status();
  absl::StatusOr<std::unique_ptr<TlsContext>> refused = TlsContext::NewClient(*no_ca, "x");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(), HasSubstr("needs a CA"));

  absl::StatusOr<TlsCredentials> member =
      LoadTlsCredentials({pki_.peer_cert, pki_.peer_key, pki_.ca_cert});
  ASSERT_TRUE(member.ok()) << member.status();
  absl::StatusOr<std::unique_ptr<TlsContext>> client = TlsContext::NewClient(*member, "x");
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_EQ((*client)->role(), TlsRole::kClient);
  absl::StatusOr<std::unique_ptr<TlsContext>> server = TlsContext::New(*member, "x");
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_EQ((*server)->role(), TlsRole::kServer);
  // A client that presents no certificate (only verifies the server's).
  TlsCredentials ca_only;
  ca_only.client_ca_pem = member->client_ca_pem;
  EXPECT_TRUE(TlsContext::NewClient(ca_only, "x").ok());
}

// The outcome of one TLS handshake between a server and a client context, run in memory (a BIO
// pair; no sockets, no threads): whether the server accepted the client, and why not.
struct Handshake {
  bool server_ok = false;
  long verify_result = X509_V_OK;  // the server's verdict on the client's certificate
};

Handshake RunHandshake(TlsContext& server_context, TlsContext& client_context) {
  SSL* server = SSL_new(server_context.native().native_handle());
  SSL* client = SSL_new(client_context.native().native_handle());
  BIO* server_bio = nullptr;
  BIO* client_bio = nullptr;
  BIO_new_bio_pair(&server_bio, 0, &client_bio, 0);
  SSL_set_bio(server, server_bio, server_bio);  // each SSL owns its end
  SSL_set_bio(client, client_bio, client_bio);
  SSL_set_accept_state(server);
  SSL_set_connect_state(client);
  Handshake result;
  bool server_done = false;
  bool client_done = false;
  bool failed = false;
  // Each turn moves every byte either side can write; a handshake takes a few turns.
  for (int turn = 0; turn < 20 && !failed && !(server_done && client_done); ++turn) {
    if (!client_done) {
      const int r = SSL_do_handshake(client);
      client_done = r == 1;
      failed = r <= 0 && SSL_get_error(client, r) != SSL_ERROR_WANT_READ;
    }
    if (!server_done && !failed) {
      const int r = SSL_do_handshake(server);
      server_done = r == 1;
      failed = r <= 0 && SSL_get_error(server, r) != SSL_ERROR_WANT_READ;
    }
  }
  // With TLS 1.3 the client is done before the server has judged its certificate: the server's
  // handshake is the verdict.
  result.server_ok = server_done && !failed;
  result.verify_result = SSL_get_verify_result(server);
  ERR_clear_error();
  SSL_free(client);
  SSL_free(server);
  return result;
}

class TlsSanTest : public TlsTest {
 protected:
  // Returns the handshake of a server checking `san` with a client presenting `cert`.
  Handshake With(const std::string& san, const std::string& cert, const std::string& key) {
    absl::StatusOr<TlsCredentials> server =
        LoadTlsCredentials({pki_.server_cert, pki_.server_key, pki_.ca_cert, san});
    EXPECT_TRUE(server.ok()) << server.status();
    EXPECT_EQ(server->client_san, san);
    absl::StatusOr<std::unique_ptr<TlsContext>> server_context = TlsContext::New(*server, "h2");
    EXPECT_TRUE(server_context.ok()) << server_context.status();
    TlsCredentials client;
    client.cert_chain_pem = testing::ReadFileText(cert);
    client.key_pem = testing::ReadFileText(key);
    client.client_ca_pem = testing::ReadFileText(pki_.ca_cert);
    absl::StatusOr<std::unique_ptr<TlsContext>> client_context =
        TlsContext::NewClient(client, "h2");
    EXPECT_TRUE(client_context.ok()) << client_context.status();
    if (!server_context.ok() || !client_context.ok()) {
      return {};
    }
    return RunHandshake(**server_context, **client_context);
  }
};

TEST_F(TlsSanTest, ClientCertificateCarryingTheSanIsAccepted) {
  const Handshake exact = With("envoy.example.internal", pki_.san_client_cert, pki_.san_client_key);
  EXPECT_TRUE(exact.server_ok);
  EXPECT_EQ(exact.verify_result, X509_V_OK);
  // DNS names compare case-insensitively; the certificate's wildcard stands for one label.
  EXPECT_TRUE(With("ENVOY.Example.Internal", pki_.san_client_cert, pki_.san_client_key).server_ok);
  EXPECT_TRUE(With("a.mesh.example.internal", pki_.san_client_cert, pki_.san_client_key).server_ok);
  // An IP address is matched against the IP SANs.
  EXPECT_TRUE(With("10.1.2.3", pki_.san_client_cert, pki_.san_client_key).server_ok);
}

TEST_F(TlsSanTest, ClientCertificateWithoutTheSanIsRefusedAtTheHandshake) {
  const Handshake other =
      With("ratelimit.example.internal", pki_.san_client_cert, pki_.san_client_key);
  EXPECT_FALSE(other.server_ok);
  EXPECT_EQ(other.verify_result, X509_V_ERR_HOSTNAME_MISMATCH);
  EXPECT_FALSE(
      With("a.b.mesh.example.internal", pki_.san_client_cert, pki_.san_client_key).server_ok);
  EXPECT_EQ(With("10.1.2.4", pki_.san_client_cert, pki_.san_client_key).verify_result,
            X509_V_ERR_IP_ADDRESS_MISMATCH);
  // The subject's CN is never taken for a name: "client" is the CN of a certificate with no SAN.
  EXPECT_FALSE(With("client", pki_.client_cert, pki_.client_key).server_ok);
  // Without a SAN to check, the same certificates get in: the check is what refused them.
  EXPECT_TRUE(With("", pki_.client_cert, pki_.client_key).server_ok);
  EXPECT_TRUE(With("", pki_.san_client_cert, pki_.san_client_key).server_ok);
}

TEST_F(TlsSanTest, SanNeedsAClientCaAndIsOneName) {
  EXPECT_THAT(LoadError({pki_.server_cert, pki_.server_key, "", "envoy.example.internal"}),
              HasSubstr("--tls-client-san needs --tls-client-ca"));
  EXPECT_THAT(LoadError({pki_.server_cert, pki_.server_key, pki_.ca_cert, "a.example, b.example"}),
              HasSubstr("--tls-client-san must be one DNS name"));
  const TlsFlagNames grpc{.cert = "--grpc-tls-cert",
                          .key = "--grpc-tls-key",
                          .ca = "--grpc-tls-client-ca",
                          .san = "--grpc-tls-client-san"};
  absl::StatusOr<TlsCredentials> loaded =
      LoadTlsCredentials({pki_.server_cert, pki_.server_key, "", "x.example"}, grpc);
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(loaded.status().message(), HasSubstr("--grpc-tls-client-san needs "
                                                   "--grpc-tls-client-ca"));
  // A dialling side does not check its server against a client SAN.
  TlsCredentials client;
  client.client_ca_pem = testing::ReadFileText(pki_.ca_cert);
  client.client_san = "x.example";
  EXPECT_FALSE(TlsContext::NewClient(client, "h2").ok());
}

}  // namespace
}  // namespace floodgate::net
