#include "src/cluster/peer_auth.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace floodgate::cluster {
namespace {

const std::vector<std::string> kMembers = {"n0", "n1", "n2"};

// Runs a whole handshake between a client `id` holding `client_key` and server n0 holding
// `server_key`. Returns OK when both sides accept; otherwise the side that refused says why.
struct Outcome {
  bool client_ok = false;
  bool server_ok = false;
  AuthError error{AuthFailure::kMalformed, ""};
};

Outcome Handshake(const std::string& client_key, const std::string& server_key,
                  const std::string& id = "n1", uint32_t client_version = kPeerProtocolVersion) {
  Outcome outcome;
  ClientHandshake client(client_key, id, "n0", client_version);
  ServerHandshake server(server_key, "n0", kMembers);
  absl::StatusOr<peer::v1::Challenge> challenge = server.OnHello(client.Hello(), &outcome.error);
  if (!challenge.ok()) {
    return outcome;
  }
  absl::StatusOr<peer::v1::Auth> auth = client.OnChallenge(*challenge, &outcome.error);
  outcome.client_ok = auth.ok();
  if (!auth.ok()) {
    return outcome;
  }
  outcome.server_ok = server.OnAuth(*auth, &outcome.error).ok();
  return outcome;
}

TEST(PeerAuthTest, SameKeyIsAcceptedBothWays) {
  const Outcome outcome = Handshake("secret", "secret");
  EXPECT_TRUE(outcome.client_ok);
  EXPECT_TRUE(outcome.server_ok);
}

TEST(PeerAuthTest, DifferentKeyIsRefusedByTheClientFirst) {
  // The server proves first: a client with another key refuses it before proving anything.
  const Outcome outcome = Handshake("secret", "other");
  EXPECT_FALSE(outcome.client_ok);
  EXPECT_EQ(outcome.error.reason, AuthFailure::kBadKey);
  EXPECT_NE(outcome.error.message.find("--cluster-key"), std::string::npos);
}

TEST(PeerAuthTest, ClientWithoutTheKeyCannotProveIt) {
  // A forger that ignores the server's proof and sends its own guess is refused by the server.
  ClientHandshake forger("guess", "n1", "n0");
  ServerHandshake server("secret", "n0", kMembers);
  AuthError error{AuthFailure::kMalformed, ""};
  absl::StatusOr<peer::v1::Challenge> challenge = server.OnHello(forger.Hello(), &error);
  ASSERT_TRUE(challenge.ok());
  peer::v1::Auth auth;
  auth.set_proof(HandshakeProof("guess", "client", forger.Hello().nonce(), challenge->nonce(), "n1",
                                "n0", kPeerProtocolVersion));
  EXPECT_FALSE(server.OnAuth(auth, &error).ok());
  EXPECT_EQ(error.reason, AuthFailure::kBadKey);
  auth.set_proof("");
  EXPECT_FALSE(server.OnAuth(auth, &error).ok());
}

TEST(PeerAuthTest, ReplayedTranscriptIsRefused) {
  // Record a good handshake, then replay the client's messages to a new server connection: the
  // new server's nonce differs, so the recorded proof no longer matches.
  ClientHandshake client("secret", "n1", "n0");
  ServerHandshake first("secret", "n0", kMembers);
  AuthError error{AuthFailure::kMalformed, ""};
  const peer::v1::Hello hello = client.Hello();
  absl::StatusOr<peer::v1::Challenge> challenge = first.OnHello(hello, &error);
  ASSERT_TRUE(challenge.ok());
  absl::StatusOr<peer::v1::Auth> auth = client.OnChallenge(*challenge, &error);
  ASSERT_TRUE(auth.ok());
  ASSERT_TRUE(first.OnAuth(*auth, &error).ok());

  ServerHandshake second("secret", "n0", kMembers);
  ASSERT_TRUE(second.OnHello(hello, &error).ok());
  EXPECT_FALSE(second.OnAuth(*auth, &error).ok());
  EXPECT_EQ(error.reason, AuthFailure::kBadKey);

  // And a recorded challenge replayed to a new client fails its fresh nonce.
  ClientHandshake fresh("secret", "n1", "n0");
  EXPECT_FALSE(fresh.OnChallenge(*challenge, &error).ok());
  EXPECT_EQ(error.reason, AuthFailure::kBadKey);
}

TEST(PeerAuthTest, NonMemberIsRefused) {
  const Outcome outcome = Handshake("secret", "secret", "intruder");
  EXPECT_FALSE(outcome.client_ok);
  EXPECT_EQ(outcome.error.reason, AuthFailure::kNotMember);
  EXPECT_NE(outcome.error.message.find("intruder"), std::string::npos);
  // Nor may a node claim the server's own id.
  EXPECT_EQ(Handshake("secret", "secret", "n0").error.reason, AuthFailure::kNotMember);
}

TEST(PeerAuthTest, ClientRefusesAnotherMemberAnswering) {
  ClientHandshake client("secret", "n1", "n0");
  ServerHandshake impostor("secret", "n2", kMembers);
  AuthError error{AuthFailure::kMalformed, ""};
  absl::StatusOr<peer::v1::Challenge> challenge = impostor.OnHello(client.Hello(), &error);
  ASSERT_TRUE(challenge.ok());
  EXPECT_FALSE(client.OnChallenge(*challenge, &error).ok());
  EXPECT_EQ(error.reason, AuthFailure::kNotMember);
}

TEST(PeerAuthTest, VersionMismatchIsRefusedClearly) {
  const Outcome outcome = Handshake("secret", "secret", "n1", 1);
  EXPECT_FALSE(outcome.client_ok);
  EXPECT_EQ(outcome.error.reason, AuthFailure::kVersion);
  EXPECT_NE(outcome.error.message.find("peer protocol version 1 refused"), std::string::npos)
      << outcome.error.message;
}

TEST(PeerAuthTest, MalformedHelloIsRefused) {
  ServerHandshake server("secret", "n0", kMembers);
  peer::v1::Hello hello;
  hello.set_protocol_version(kPeerProtocolVersion);
  hello.set_node_id("n1");
  hello.set_nonce("short");
  AuthError error{AuthFailure::kBadKey, ""};
  EXPECT_FALSE(server.OnHello(hello, &error).ok());
  EXPECT_EQ(error.reason, AuthFailure::kMalformed);
  peer::v1::Auth auth;
  EXPECT_FALSE(ServerHandshake("secret", "n0", kMembers).OnAuth(auth, &error).ok());
  EXPECT_EQ(error.reason, AuthFailure::kMalformed);
}

TEST(PeerAuthTest, ProofCoversEveryField) {
  const std::string base = HandshakeProof("k", "client", "a", "b", "n1", "n0", 2);
  EXPECT_EQ(base.size(), 32u);
  EXPECT_EQ(base, HandshakeProof("k", "client", "a", "b", "n1", "n0", 2));
  EXPECT_NE(base, HandshakeProof("k2", "client", "a", "b", "n1", "n0", 2));
  EXPECT_NE(base, HandshakeProof("k", "server", "a", "b", "n1", "n0", 2));
  EXPECT_NE(base, HandshakeProof("k", "client", "b", "a", "n1", "n0", 2));
  EXPECT_NE(base, HandshakeProof("k", "client", "a", "b", "n0", "n1", 2));
  EXPECT_NE(base, HandshakeProof("k", "client", "a", "b", "n1", "n0", 3));
  // Fields are length-prefixed: moving a byte between fields changes the proof.
  EXPECT_NE(base, HandshakeProof("k", "client", "ab", "", "n1", "n0", 2));
  EXPECT_NE(RandomNonce(), RandomNonce());
}

TEST(PeerAuthTest, InsecurePeersStillCheckIds) {
  // --insecure-peers: no key on either side; members still get in, others do not.
  EXPECT_TRUE(Handshake("", "").server_ok);
  EXPECT_EQ(Handshake("", "", "intruder").error.reason, AuthFailure::kNotMember);
  EXPECT_FALSE(Handshake("", "secret").client_ok);
}

}  // namespace
}  // namespace floodgate::cluster
