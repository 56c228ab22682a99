#pragma once

// PeerTransport over grpc++ (proto/floodgate/peer/v1/peer.proto): one persistent channel per
// member, with a sender thread that batches forwarded transactions, replicated states and
// local-share reports; and a callback-API peer server that answers the other members through a
// PeerHandler (forwarded batches on a worker pool of its own). See docs/cluster.md.

#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "floodgate/clock.h"
#include "src/cluster/membership.h"
#include "src/cluster/peer_transport.h"

namespace floodgate::cluster {

struct GrpcPeerTransportOptions {
  std::string self_id;
  int self = 0;                 // index of this node in `members`
  std::vector<Member> members;  // sorted by id (ParsePeers)
  std::string listen_address;   // host:port; port 0 picks a free one (see port())
  absl::Duration heartbeat = absl::Milliseconds(200);  // a ping's deadline is twice this
  absl::Duration forward_timeout = absl::Milliseconds(500);
  absl::Duration batch_wait = absl::Microseconds(500);  // a batch waits at most this long
  int batch_max = 128;                                  // and goes early when this full
  int max_in_flight = 4;                                // batches in flight per peer
  bool batching = true;                                 // false: one transaction per Forward RPC
  const Clock* clock = SystemClock::Get();              // stamps replication batches
};

// Returns a transport for `options.self`; it listens once Start() is called.
std::unique_ptr<PeerTransport> NewGrpcPeerTransport(GrpcPeerTransportOptions options);

}  // namespace floodgate::cluster
