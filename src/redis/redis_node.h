#pragma once

// One Redis server as the client sees it: a pool of `connections_per_node` pipelined
// connections to one address, the queue of commands waiting for them, a circuit breaker and the
// counters. Sentinel and Cluster modes are made of Nodes; single mode is one.
//
// How a command travels: Send encodes it on the caller's thread and appends it to a
// mutex-guarded inbox; the first command of a batch posts one drain to the io_context. The drain
// moves commands to the node's FIFO and from there to a ready connection (round robin), where
// it is appended to the bytes waiting to be written (everything queued while a write is in
// flight goes out in the next single write) and its callback to the connection's FIFO of
// replies to come: Redis answers in order, so the n-th reply is the n-th callback's. Order is
// kept per connection only: two commands sent one after the other may go out on two
// connections and run in either order (a caller that needs order waits for the first reply,
// or sends one script).
//
// Connections: connect (connect_timeout_ms covers resolve, TCP, TLS and the handshake), TLS
// when asked, then AUTH and SELECT pipelined ahead of any command; a refused AUTH or SELECT is
// the connection's failure, with Redis' own words. A lost connection is re-established after a
// backoff from reconnect_min_ms doubling to reconnect_max_ms, with jitter (half to all of it).
// When no connection is ready and an attempt fails, the commands waiting fail at once
// (Unavailable with the reason) instead of waiting out their timeouts.
//
// Timeouts: every command has a deadline (Send + timeout_ms). A command still waiting for a
// connection at its deadline gets DeadlineExceeded. One written and unanswered at its deadline
// gets DeadlineExceeded too, and its connection is closed: its reply may still come, and
// matching replies in order would then hand it to the wrong callback. (A tombstone would keep
// the connection, but a stalled server would pile them up; closing is simpler and bounded.)
// The other commands in flight on that connection fail Unavailable, since they may or may not
// have run; they are never sent again.
//
// Circuit breaker: `breaker_failures` failed commands in a row (timeouts and lost connections;
// not error replies, which are answers) open it: Send fails Unavailable at once for
// `breaker_open_ms`. Then one command goes through as a probe; its reply closes the breaker,
// its failure opens it again. Commands sent while the probe is out fail Unavailable.
//
// Threading: the io_context must be run by ONE thread (all of a node's state lives on it; there
// is no strand). Send, Healthy, endpoint and AddStats may be called from any thread. Callbacks
// run on the io thread, never inline in Send. Stop may be called from any thread: on the io
// thread it fails everything at once; elsewhere it waits for the io thread to have done so (or
// for the io_context to be stopped). The destructor calls Stop; handlers still queued keep the
// node's state alive and find it stopped.

#include <memory>
#include <string_view>

#include <boost/asio/io_context.hpp>

#include "absl/types/span.h"
#include "src/redis/redis_client.h"

namespace floodgate::redis {

class Node {
 public:
  Node(boost::asio::io_context& io, Endpoint endpoint, const ClientOptions& options);
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // Sends one command; `asking`: writes ASKING first on the same connection (its reply is
  // swallowed). Callback exactly once, on the io thread: reply or failed Status
  // (DeadlineExceeded after options.timeout_ms, Unavailable when the breaker is open or the
  // connection is lost, ResourceExhausted past max_pending_per_node, Cancelled on Stop).
  void Send(absl::Span<const std::string_view> args, Client::Callback callback,
            bool asking = false);
  // Returns whether a connection is ready and the breaker closed.
  bool Healthy() const;
  const Endpoint& endpoint() const;
  // Adds this node's counters to `stats` (connected_nodes: 1 when a connection is ready).
  void AddStats(ClientStats& stats) const;
  // Fails everything pending with Cancelled and closes the connections. Idempotent.
  void Stop();

  class State;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace floodgate::redis
