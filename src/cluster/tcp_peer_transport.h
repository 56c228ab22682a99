#pragma once

// PeerTransport over our own framed protocol on TCP (docs/cluster.md, "Peer protocol"):
// persistent, authenticated connections between members (peer_link.h), answered by a peer
// listener (peer_server.h) that decides forwarded checks inline on its io threads.
//
// Which connection carries what:
//  - ForwardAsync(member, ..., loop, done): the link to `member` on `loop` itself (one per
//    member and io_context, opened on first use); `done` runs on `loop` when the answer is read,
//    with no thread hand-off.
//  - Everything else (blocking Forward, Replicate, Report, FlushReports, Fetch, Ping, GetConfig,
//    PushConfig): the link to `member` on the transport's own io thread. Replication keeps one
//    batch in flight per member, coalescing queued states per key (the first record's `before_*`
//    with the latest state), so a replica applies a key's states in the owner's order.
//
// Thread-safety: as PeerTransport. Blocking calls must not be made on the transport's own io
// thread (they never are: answers only notify, merge corrections or run Ping's `done`).

#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "floodgate/clock.h"
#include "src/cluster/membership.h"
#include "src/cluster/peer_transport.h"

namespace floodgate::cluster {

struct TcpPeerTransportOptions {
  std::string self_id;
  int self = 0;                 // index of this node in `members`
  std::vector<Member> members;  // sorted by id (ParsePeers)
  std::string listen_address;   // host:port; port 0 picks a free one (see port())
  // The cluster key both ends of every connection prove (peer_auth.h); "" only with
  // --insecure-peers (then only member ids are checked).
  std::string cluster_key;
  absl::Duration heartbeat = absl::Milliseconds(200);  // a ping's deadline is twice this
  absl::Duration forward_timeout = absl::Milliseconds(500);
  size_t max_queued_bytes = size_t{8} << 20;  // per link: unsent bytes beyond this fail calls
  size_t max_queued_frames = 100'000;         // per link: calls in flight beyond this fail
  int listener_threads = 2;                   // the peer listener's io threads
  const Clock* clock = SystemClock::Get();    // stamps replication batches, decides forwards
  // How long replication and consistency: local reports wait on their queue before they leave,
  // so that more share a frame (zero: on the transport loop's next turn).
  absl::Duration background_delay = absl::ZeroDuration();
};

// Returns a transport for `options.self`; it listens once Start() is called.
std::unique_ptr<PeerTransport> NewTcpPeerTransport(TcpPeerTransportOptions options);

}  // namespace floodgate::cluster
