#include "src/cluster/peer_auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <utility>

#include "absl/base/internal/endian.h"
#include "absl/strings/str_cat.h"

namespace floodgate::cluster {

namespace {

constexpr std::string_view kLabel = "floodgate-peer-auth";
// Bounds on handshake fields: anything longer is malformed.
constexpr size_t kMaxIdBytes = 256;
constexpr size_t kProofBytes = 32;

void AppendField(std::string* out, std::string_view field) {
  char size[4];
  absl::little_endian::Store32(size, static_cast<uint32_t>(field.size()));
  out->append(size, sizeof(size));
  out->append(field);
}

bool ProofMatches(const std::string& expected, const std::string& got) {
  return got.size() == expected.size() &&
         CRYPTO_memcmp(expected.data(), got.data(), expected.size()) == 0;
}

}  // namespace

const char* AuthFailureName(AuthFailure reason) {
  switch (reason) {
    case AuthFailure::kBadKey:
      return "bad_key";
    case AuthFailure::kNotMember:
      return "not_member";
    case AuthFailure::kVersion:
      return "version";
    case AuthFailure::kMalformed:
      return "malformed";
  }
  return "malformed";
}

std::string HandshakeProof(std::string_view key, std::string_view role, std::string_view nonce_c,
                           std::string_view nonce_s, std::string_view id_c, std::string_view id_s,
                           uint32_t version) {
  std::string transcript;
  AppendField(&transcript, kLabel);
  AppendField(&transcript, role);
  AppendField(&transcript, nonce_c);
  AppendField(&transcript, nonce_s);
  AppendField(&transcript, id_c);
  AppendField(&transcript, id_s);
  AppendField(&transcript, absl::StrCat(version));
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_size = 0;
  // An empty key (--insecure-peers) still gives a well-defined MAC: only the ids are checked.
  static const unsigned char kEmpty = 0;
  HMAC(EVP_sha256(), key.empty() ? static_cast<const void*>(&kEmpty) : key.data(),
       static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(transcript.data()),
       transcript.size(), mac, &mac_size);
  return std::string(reinterpret_cast<const char*>(mac), mac_size);
}

std::string RandomNonce(size_t n) {
  std::string nonce(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(nonce.data()), static_cast<int>(n)) != 1) {
    // OpenSSL's generator failing is not something to run on: no handshake can be fresh.
    abort();
  }
  return nonce;
}

ClientHandshake::ClientHandshake(std::string key, std::string self_id, std::string expected_server,
                                 uint32_t version, std::string nonce)
    : key_(std::move(key)),
      self_id_(std::move(self_id)),
      expected_server_(std::move(expected_server)),
      version_(version),
      nonce_(nonce.empty() ? RandomNonce() : std::move(nonce)) {}

peer::v1::Hello ClientHandshake::Hello() const {
  peer::v1::Hello hello;
  hello.set_protocol_version(version_);
  hello.set_node_id(self_id_);
  hello.set_nonce(nonce_);
  return hello;
}

absl::StatusOr<peer::v1::Auth> ClientHandshake::OnChallenge(const peer::v1::Challenge& challenge,
                                                            AuthError* error) const {
  auto refuse = [&](AuthFailure reason, std::string message) {
    *error = AuthError{reason, message};
    return absl::PermissionDeniedError(std::move(message));
  };
  if (challenge.protocol_version() != version_) {
    return refuse(AuthFailure::kVersion,
                  absl::StrCat("peer ", expected_server_, " speaks peer protocol version ",
                               challenge.protocol_version(), ", this node ", version_,
                               " (no rolling upgrade across versions: stop all, then start)"));
  }
  if (challenge.nonce().size() != kNonceBytes || challenge.proof().size() != kProofBytes) {
    return refuse(AuthFailure::kMalformed,
                  absl::StrCat("peer ", expected_server_, " sent a malformed challenge"));
  }
  if (challenge.node_id() != expected_server_) {
    return refuse(AuthFailure::kNotMember,
                  absl::StrCat("dialled ", expected_server_, " but \"",
                               challenge.node_id().substr(0, kMaxIdBytes), "\" answered"));
  }
  const std::string expected = HandshakeProof(key_, "server", nonce_, challenge.nonce(), self_id_,
                                              expected_server_, version_);
  if (!ProofMatches(expected, challenge.proof())) {
    return refuse(AuthFailure::kBadKey,
                  absl::StrCat("peer ", expected_server_,
                               " does not prove the cluster key (--cluster-key differs)"));
  }
  peer::v1::Auth auth;
  auth.set_proof(HandshakeProof(key_, "client", nonce_, challenge.nonce(), self_id_,
                                expected_server_, version_));
  return auth;
}

ServerHandshake::ServerHandshake(std::string key, std::string self_id,
                                 std::vector<std::string> members, uint32_t version,
                                 std::string nonce, bool accept_unknown)
    : key_(std::move(key)),
      self_id_(std::move(self_id)),
      members_(std::move(members)),
      version_(version),
      nonce_(nonce.empty() ? RandomNonce() : std::move(nonce)),
      accept_unknown_(accept_unknown && !key_.empty()) {}

absl::StatusOr<peer::v1::Challenge> ServerHandshake::OnHello(const peer::v1::Hello& hello,
                                                             AuthError* error) {
  auto refuse = [&](AuthFailure reason, std::string message) {
    *error = AuthError{reason, message};
    return absl::PermissionDeniedError(std::move(message));
  };
  if (hello.protocol_version() != version_) {
    return refuse(AuthFailure::kVersion,
                  absl::StrCat("peer protocol version ", hello.protocol_version(),
                               " refused (this node speaks ", version_,
                               "; no rolling upgrade across versions: stop all, then start)"));
  }
  if (hello.nonce().size() != kNonceBytes || hello.node_id().size() > kMaxIdBytes) {
    return refuse(AuthFailure::kMalformed, "malformed hello");
  }
  client_ = -1;
  for (size_t i = 0; i < members_.size(); ++i) {
    if (members_[i] == hello.node_id() && members_[i] != self_id_) {
      client_ = static_cast<int>(i);
    }
  }
  const bool accepted =
      client_ >= 0 || (accept_unknown_ && !hello.node_id().empty() && hello.node_id() != self_id_);
  if (!accepted) {
    return refuse(AuthFailure::kNotMember,
                  absl::StrCat("node id \"", hello.node_id(), "\" is not a member (--peers)"));
  }
  client_id_ = hello.node_id();
  client_nonce_ = hello.nonce();
  peer::v1::Challenge challenge;
  challenge.set_protocol_version(version_);
  challenge.set_node_id(self_id_);
  challenge.set_nonce(nonce_);
  challenge.set_proof(
      HandshakeProof(key_, "server", client_nonce_, nonce_, client_id_, self_id_, version_));
  return challenge;
}

absl::Status ServerHandshake::OnAuth(const peer::v1::Auth& auth, AuthError* error) const {
  if (client_id_.empty()) {
    *error = AuthError{AuthFailure::kMalformed, "auth before hello"};
    return absl::PermissionDeniedError(error->message);
  }
  const std::string expected =
      HandshakeProof(key_, "client", client_nonce_, nonce_, client_id_, self_id_, version_);
  if (!ProofMatches(expected, auth.proof())) {
    *error = AuthError{AuthFailure::kBadKey,
                       absl::StrCat("node \"", client_id_,
                                    "\" does not prove the cluster key (--cluster-key differs)")};
    return absl::PermissionDeniedError(error->message);
  }
  return absl::OkStatus();
}

}  // namespace floodgate::cluster
