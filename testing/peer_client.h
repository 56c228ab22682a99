#pragma once

// A raw peer-protocol client for tests: one TCP connection to a node's --peer port that
// speaks the framing (src/cluster/peer_frame.h) and the handshake (src/cluster/peer_auth.h) by
// hand, so a test can act as a member, as a forger (a wrong key, an id that is not a member, an
// unknown protocol version) or as a member sending calls with bad content.
//
// The node never acknowledges an Auth: a refused handshake shows as the connection closing
// (ClosedByPeer), an accepted one as answers to the calls that follow.
//
// Every read has a timeout, so a node that stops answering fails the test instead of hanging it.
// Writes never raise SIGPIPE (a node that closed the connection gives an error instead).
//
// Thread-safety: a PeerClient is used by one thread at a time.

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "floodgate/peer/v1/peer.pb.h"
#include "src/cluster/peer_auth.h"
#include "src/cluster/peer_frame.h"

namespace floodgate::testing {

// One frame as read from the node, with its payload copied out of the decoder.
struct PeerAnswer {
  cluster::FrameType type = cluster::FrameType::kError;
  uint64_t call_id = 0;
  std::string payload;

  // Parses the payload as `message`; false when it does not parse.
  bool ParseTo(google::protobuf::MessageLite* message) const {
    return message->ParseFromString(payload);
  }
};

// What the client claims in its handshake.
struct PeerIdentity {
  std::string key;        // the cluster key it proves (a wrong one for a forger)
  std::string self_id;    // the id it claims
  std::string server_id;  // the member it dialled
  uint32_t version = cluster::kPeerProtocolVersion;
};

class PeerClient {
 public:
  // Connects to host:port (IPv4). Unavailable when the connection is refused or times out.
  static absl::StatusOr<std::unique_ptr<PeerClient>> Connect(
      const std::string& host, int port, absl::Duration timeout = absl::Seconds(10));
  // Wraps a connected socket (e.g. one a test accepted to play a member's accepting side); the
  // client closes it.
  static std::unique_ptr<PeerClient> Adopt(int fd);
  ~PeerClient();
  PeerClient(const PeerClient&) = delete;
  PeerClient& operator=(const PeerClient&) = delete;

  // Runs the handshake as a member: Hello, reads the Challenge, checks the node's proof with
  // `who.key`, sends Auth. Returns the refusal (the node closed the connection, or its proof does
  // not match). OK does not mean the node accepted the Auth: only an answer to a call says so.
  absl::Status Handshake(const PeerIdentity& who);
  // Like Handshake, but proves `who.key` whatever the node proved (a forger that does not know
  // the real key still answers the challenge). Returns the Challenge the node sent.
  absl::StatusOr<peer::v1::Challenge> HandshakeUnchecked(const PeerIdentity& who);
  // Sends only a Hello (with a fresh nonce) for `who`.
  absl::Status SendHello(const PeerIdentity& who);

  // Writes one frame.
  absl::Status Send(cluster::FrameType type, uint64_t call_id,
                    const google::protobuf::MessageLite& message);
  // Writes raw bytes.
  absl::Status SendBytes(const std::string& bytes);
  // Reads the next frame: Unavailable when the node closed the connection, DeadlineExceeded
  // after `timeout`, InvalidArgument for a frame the decoder refuses.
  absl::StatusOr<PeerAnswer> Read(absl::Duration timeout = absl::Seconds(10));
  // Sends `request` with the next call id and reads the answer, which must carry that id.
  absl::StatusOr<PeerAnswer> Call(cluster::FrameType type,
                                  const google::protobuf::MessageLite& request,
                                  absl::Duration timeout = absl::Seconds(10));
  // Returns whether the node closes the connection within `timeout` (any frames it sends before
  // are skipped).
  bool ClosedByPeer(absl::Duration timeout = absl::Seconds(10));

 private:
  explicit PeerClient(int fd) : fd_(fd) {}

  const int fd_;
  cluster::FrameDecoder decoder_;
  uint64_t next_call_id_ = 1;
};

}  // namespace floodgate::testing
