#include "src/net/tls.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace floodgate::net
