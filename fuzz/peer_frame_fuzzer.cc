// Fuzzes the first thing a peer connection reads: the byte stream cut into frames by
// FrameDecoder (peer_frame.h), fed in chunks whose size the first input byte picks (1 to 64
// bytes, or all at once), and each complete handshake frame handed to the handshake's parsing
// and checks (peer_auth.h) the way the peer server and a link use them:
//   Hello     -> ServerHandshake::OnHello
//   Challenge -> ClientHandshake::OnChallenge
//   Auth      -> ServerHandshake::OnAuth, after a member's Hello was accepted
// Beyond the sanitizers, it checks the decoder's promises: frames come out contiguous and
// byte-exact (header re-encoded + payload == the input), of a known type and within kMaxPayload;
// and the handshake's: an accepted Hello names a member, an accepted Challenge or Auth carries
// exactly the proof the key gives. Nonces are fixed, so every run is deterministic.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "floodgate/peer/v1/peer.pb.h"
#include "src/cluster/peer_auth.h"
#include "src/cluster/peer_frame.h"

namespace {

namespace pb = floodgate::peer::v1;
using floodgate::cluster::AuthError;
using floodgate::cluster::AuthFailure;
using floodgate::cluster::ClientHandshake;
using floodgate::cluster::Frame;
using floodgate::cluster::FrameDecoder;
using floodgate::cluster::FrameHeader;
using floodgate::cluster::FrameType;
using floodgate::cluster::HandshakeProof;
using floodgate::cluster::kFrameHeaderSize;
using floodgate::cluster::kMaxPayload;
using floodgate::cluster::kNonceBytes;
using floodgate::cluster::kPeerProtocolVersion;
using floodgate::cluster::ServerHandshake;

constexpr char kKey[] = "fuzz-cluster-key";
const std::string kClientNonce(kNonceBytes, 'c');
const std::string kServerNonce(kNonceBytes, 's');

void Check(bool ok) {
  if (!ok) {
    abort();
  }
}

void OnHello(std::string_view payload) {
  pb::Hello hello;
  if (!hello.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    return;
  }
  ServerHandshake server(kKey, "a", {"a", "b", "c"}, kPeerProtocolVersion, kServerNonce);
  AuthError error{AuthFailure::kMalformed, ""};
  auto challenge = server.OnHello(hello, &error);
  if (!challenge.ok()) {
    Check(!error.message.empty());
    return;
  }
  // Accepted: a member other than this node, this version, a proof for that transcript.
  Check(hello.node_id() == "b" || hello.node_id() == "c");
  Check(server.client() == (hello.node_id() == "b" ? 1 : 2));
  Check(challenge->protocol_version() == kPeerProtocolVersion);
  Check(challenge->proof() == HandshakeProof(kKey, "server", hello.nonce(), kServerNonce,
                                             hello.node_id(), "a", kPeerProtocolVersion));
}

void OnChallenge(std::string_view payload) {
  pb::Challenge challenge;
  if (!challenge.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    return;
  }
  ClientHandshake client(kKey, "b", "a", kPeerProtocolVersion, kClientNonce);
  AuthError error{AuthFailure::kMalformed, ""};
  auto auth = client.OnChallenge(challenge, &error);
  if (!auth.ok()) {
    Check(!error.message.empty());
    return;
  }
  Check(challenge.node_id() == "a");
  Check(challenge.proof() == HandshakeProof(kKey, "server", kClientNonce, challenge.nonce(), "b",
                                            "a", kPeerProtocolVersion));
  Check(auth->proof() == HandshakeProof(kKey, "client", kClientNonce, challenge.nonce(), "b", "a",
                                        kPeerProtocolVersion));
}

void OnAuth(std::string_view payload) {
  pb::Auth auth;
  if (!auth.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    return;
  }
  ServerHandshake server(kKey, "a", {"a", "b", "c"}, kPeerProtocolVersion, kServerNonce);
  AuthError error{AuthFailure::kMalformed, ""};
  // Before any Hello: always refused.
  Check(!server.OnAuth(auth, &error).ok());
  pb::Hello hello;
  hello.set_protocol_version(kPeerProtocolVersion);
  hello.set_node_id("b");
  hello.set_nonce(kClientNonce);
  Check(server.OnHello(hello, &error).ok());
  const bool accepted = server.OnAuth(auth, &error).ok();
  Check(accepted == (auth.proof() == HandshakeProof(kKey, "client", kClientNonce, kServerNonce, "b",
                                                    "a", kPeerProtocolVersion)));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) {
    return 0;
  }
  // The first byte: the chunk size (0 = everything in one Feed).
  const size_t chunk = data[0] % 65 == 0 ? size : data[0] % 65;
  const std::string_view stream(reinterpret_cast<const char*>(data + 1), size - 1);
  FrameDecoder decoder;
  size_t fed = 0;
  size_t taken = 0;  // bytes of whole frames taken so far
  while (true) {
    Frame frame;
    bool got = false;
    if (!decoder.Next(&frame, &got).ok()) {
      return 0;  // a broken stream: the connection would be closed
    }
    if (!got) {
      if (fed == stream.size()) {
        break;
      }
      const size_t n = std::min(chunk, stream.size() - fed);
      decoder.Feed(stream.substr(fed, n));
      fed += n;
      continue;
    }
    const uint8_t raw_type = static_cast<uint8_t>(frame.type);
    Check(floodgate::cluster::KnownFrameType(raw_type));
    Check(frame.payload.size() <= kMaxPayload);
    // Contiguous and byte-exact: the header re-encoded and the payload are the input's bytes.
    char header[kFrameHeaderSize];
    floodgate::cluster::EncodeFrameHeader(
        FrameHeader{static_cast<uint32_t>(frame.payload.size()), frame.type, frame.call_id},
        header);
    Check(taken + kFrameHeaderSize + frame.payload.size() <= fed);
    Check(stream.substr(taken, kFrameHeaderSize) == std::string_view(header, kFrameHeaderSize));
    Check(stream.substr(taken + kFrameHeaderSize, frame.payload.size()) == frame.payload);
    taken += kFrameHeaderSize + frame.payload.size();
    switch (frame.type) {
      case FrameType::kHello:
        OnHello(frame.payload);
        break;
      case FrameType::kChallenge:
        OnChallenge(frame.payload);
        break;
      case FrameType::kAuth:
        OnAuth(frame.payload);
        break;
      default:
        break;
    }
  }
  Check(taken + decoder.buffered() == fed);
  return 0;
}
