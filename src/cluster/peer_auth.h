#pragma once

// The peer handshake: both ends of a peer connection prove they hold the cluster key
// (--cluster-key) before any other frame is accepted (docs/cluster.md, "Peer protocol").
//
//   connecting node (client)                  accepting node (server)
//   Hello {version, id_c, nonce_c}      ->
//                                       <-    Challenge {version, id_s, nonce_s, proof_s}
//   Auth {proof_c}                      ->
//
//   proof_r = HMAC-SHA256(key, "floodgate-peer-auth" | r | nonce_c | nonce_s | id_c | id_s |
//                              version)        (each field length-prefixed; r = role)
//
// Both nonces are fresh random bytes (OpenSSL RAND_bytes), so a recorded handshake replayed
// against either side fails: the other side's nonce is new. Proofs are compared in constant
// time (CRYPTO_memcmp). The server also checks that id_c is a member, and the client that id_s
// is the member it meant to reach.
//
// These classes are the handshake's logic without sockets: the connection code feeds them the
// decoded messages and sends what they return.
//
// Thread-safety: one object per connection, used by one thread at a time.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "floodgate/peer/v1/peer.pb.h"

namespace floodgate::cluster {

// The peer protocol version of this release (1 was grpc++'s; no rolling upgrade from it).
inline constexpr uint32_t kPeerProtocolVersion = 2;
inline constexpr size_t kNonceBytes = 32;

// Why a handshake was refused, for the auth-failure metric's `reason` label.
enum class AuthFailure { kBadKey = 0, kNotMember = 1, kVersion = 2, kMalformed = 3 };
inline constexpr int kAuthFailureReasons = 4;
// Returns the metric label of `reason`: "bad_key", "not_member", "version", "malformed".
const char* AuthFailureName(AuthFailure reason);

// A refused handshake: the reason (counted) and a line for the log.
struct AuthError {
  AuthFailure reason;
  std::string message;
};

// Returns HMAC-SHA256 over the transcript, as described above (`role`: "client" or "server").
std::string HandshakeProof(std::string_view key, std::string_view role, std::string_view nonce_c,
                           std::string_view nonce_s, std::string_view id_c, std::string_view id_s,
                           uint32_t version);
// Returns `n` fresh random bytes.
std::string RandomNonce(size_t n = kNonceBytes);

// The connecting side.
class ClientHandshake {
 public:
  // `expected_server` is the id of the member being dialled. `nonce` "" draws a fresh one (tests
  // pass a fixed one).
  ClientHandshake(std::string key, std::string self_id, std::string expected_server,
                  uint32_t version = kPeerProtocolVersion, std::string nonce = "");
  // Returns the Hello to send first.
  peer::v1::Hello Hello() const;
  // Checks the server's Challenge and returns the Auth to send, or why the server is refused.
  absl::StatusOr<peer::v1::Auth> OnChallenge(const peer::v1::Challenge& challenge,
                                             AuthError* error) const;

 private:
  const std::string key_;
  const std::string self_id_;
  const std::string expected_server_;
  const uint32_t version_;
  const std::string nonce_;
};

// The accepting side.
class ServerHandshake {
 public:
  // `members`: every member id (self included); a Hello from another id is refused, unless
  // `accept_unknown` (discovery: a node may dial before this node has heard it joined; it must
  // still prove the cluster key, and client() is then -1).
  ServerHandshake(std::string key, std::string self_id, std::vector<std::string> members,
                  uint32_t version = kPeerProtocolVersion, std::string nonce = "",
                  bool accept_unknown = false);
  // Checks a Hello and returns the Challenge to answer, or why the client is refused.
  absl::StatusOr<peer::v1::Challenge> OnHello(const peer::v1::Hello& hello, AuthError* error);
  // Checks the client's Auth: OK when it holds the key (the connection is then authenticated).
  absl::Status OnAuth(const peer::v1::Auth& auth, AuthError* error) const;
  // Returns the client's member index (valid after OnHello succeeded; -1 for an id accepted
  // with accept_unknown).
  int client() const { return client_; }
  const std::string& client_id() const { return client_id_; }

 private:
  const std::string key_;
  const std::string self_id_;
  const std::vector<std::string> members_;
  const uint32_t version_;
  const std::string nonce_;
  const bool accept_unknown_;
  std::string client_id_;
  std::string client_nonce_;
  int client_ = -1;
};

}  // namespace floodgate::cluster
