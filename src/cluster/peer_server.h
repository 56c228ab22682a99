#pragma once

// The accepting side of the peer transport (tcp_peer_transport.h): a net::Listener on the
// --peer address whose sessions run the handshake (peer_auth.h) and then answer the members'
// calls through a PeerHandler, inline on the connection's io thread (a forwarded check is
// decided where it is read), writing the answers of one read in one write. The exception is a
// forward the handler says may wait on another member (PeerHandler::ForwardMayWait: a warm-up
// fetch): it is decided on the server's off-loop threads and answered when done, so an io thread
// never waits on a peer. (Two members whose io threads each waited on the other's fetch would
// both stall until the forward timeout.)
//
// With a TLS context (--peer-tls-*), every connection runs the TLS handshake first, which
// requires a client certificate the CA signed, and then the peer handshake inside it; both
// within the handshake timeout.
//
// A connection that fails the TLS handshake, sends anything but the handshake first, fails it, or
// sends a malformed or oversized frame is closed; the reason is logged (rate-limited) and, for
// handshakes, counted in AuthCounters. A call with bad content (an unknown algorithm, an empty
// transaction) gets an error answer and the connection stays up.
//
// Thread-safety: Start and Shutdown from one thread; port() from any. The handler is called
// from the io threads, several at once.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/thread_pool.hpp>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "floodgate/clock.h"
#include "src/cluster/peer_link.h"
#include "src/cluster/peer_transport.h"
#include "src/net/listener.h"
#include "src/net/tls.h"

namespace floodgate::cluster {

struct PeerServerOptions {
  std::string address;  // host:port; port 0 picks one
  std::string self_id;
  std::vector<std::string> members;  // every member id, by slot (self included); SetMembers
  // Discovery: accept a node id not (yet) among `members` when it proves the cluster key.
  bool accept_unknown = false;
  std::string key;  // the cluster key ("" with --insecure-peers)
  uint32_t protocol_version = kPeerProtocolVersion;
  int io_threads = 2;
  int off_loop_threads = 4;  // for forwards that may wait on another member
  // A connection must finish the handshake within this.
  absl::Duration handshake_timeout = absl::Seconds(5);
  const Clock* clock = SystemClock::Get();
  AuthCounters* auth = nullptr;  // may be null
  // A server-side TLS context with the CA (net::TlsContext::New, mutual): every connection is
  // TLS with a verified client certificate. Null: plain.
  std::shared_ptr<net::TlsContext> tls;
};

class PeerServer {
 public:
  // `handler` must outlive the server.
  PeerServer(PeerServerOptions options, PeerHandler* handler);
  ~PeerServer();

  absl::Status Start();
  int port() const { return listener_.port(); }
  // Closes the listener and every connection.
  void Shutdown();

  const PeerServerOptions& options() const { return options_; }
  // The member ids by slot that new connections are checked against; SetMembers replaces them.
  std::vector<std::string> members() const;
  void SetMembers(std::vector<std::string> members);
  PeerHandler* handler() const { return handler_; }
  net::Listener& listener() { return listener_; }
  // Runs `work` on an off-loop thread (never an io thread); dropped unrun after Shutdown.
  void RunOffLoop(absl::AnyInvocable<void() &&> work);

 private:
  const PeerServerOptions options_;
  PeerHandler* const handler_;
  net::Listener listener_;
  mutable absl::Mutex members_mu_;
  std::vector<std::string> members_ ABSL_GUARDED_BY(members_mu_);
  boost::asio::thread_pool off_loop_;
};

}  // namespace floodgate::cluster
