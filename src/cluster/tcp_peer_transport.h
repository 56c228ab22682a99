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
// TLS (`tls`, --peer-tls-*): every connection, both ways, is TLS 1.2 or later; the listener
// requires a client certificate the CA signed, and a link verifies the listener's against the
// same CA. The peer handshake (the cluster key) still runs inside, and proves which member is at
// the other end, so certificate names are not checked. A plain member and a TLS member cannot
// talk: the connection fails at once, and both log why (rate-limited).
//
// Thread-safety: as PeerTransport. Blocking calls must not be made on the transport's own io
// thread (they never are: answers only notify, merge corrections or run Ping's `done`).

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "floodgate/clock.h"
#include "src/cluster/membership.h"
#include "src/cluster/peer_transport.h"
#include "src/net/tls.h"

namespace floodgate::cluster {

struct TcpPeerTransportOptions {
  std::string self_id;
  int self = 0;                 // index of this node in `members`
  std::vector<Member> members;  // sorted by id (ParsePeers)
  std::string listen_address;   // host:port; port 0 picks a free one (see port())
  // Discovery: accept connections from node ids not (yet) in `members` that prove the cluster
  // key (a node may dial before this one has heard it joined). Needs a cluster key.
  bool accept_unknown_members = false;
  // The cluster key both ends of every connection prove (peer_auth.h); "" only with
  // --insecure-peers (then only member ids are checked).
  std::string cluster_key;
  absl::Duration heartbeat = absl::Milliseconds(200);  // a ping's deadline is twice this
  absl::Duration forward_timeout = absl::Milliseconds(500);
  size_t max_queued_bytes = size_t{8} << 20;  // per link: unsent bytes beyond this fail calls
  size_t max_queued_frames = 100'000;         // per link: calls in flight beyond this fail
  int listener_threads = 2;                   // the peer listener's io threads
  // After a failed connection, calls to that member fail at once for a backoff that starts at
  // the first and doubles up to the second (PeerIsUp ends it early).
  absl::Duration min_reconnect_backoff = absl::Milliseconds(100);
  absl::Duration max_reconnect_backoff = absl::Milliseconds(500);
  const Clock* clock = SystemClock::Get();  // stamps replication batches, decides forwards
  // How long replication and consistency: local reports wait on their queue before they leave,
  // so that more share a frame (zero: on the transport loop's next turn).
  absl::Duration background_delay = absl::ZeroDuration();
  // Peer TLS: this member's certificate and key, and the CA every member's certificate must
  // chain to (client_ca_pem, required). Unset: plain TCP.
  std::optional<net::TlsCredentials> tls;
};

// The ALPN protocol peer connections offer and select under TLS.
inline constexpr char kPeerAlpn[] = "floodgate-peer";

// Returns a transport for `options.self`; it listens once Start() is called.
std::unique_ptr<PeerTransport> NewTcpPeerTransport(TcpPeerTransportOptions options);

}  // namespace floodgate::cluster
