#pragma once

// PeerLink: this node's connection to one member on one io_context (the "loop"), for the peer
// transport (tcp_peer_transport.h). Opened lazily on the first call, authenticated with the
// handshake (peer_auth.h), then kept; many calls may be in flight, matched by call id and
// answered in any order.
//
// Batching comes from the loop, not from timers: a call's frame is appended to the link's
// buffer, and when the buffer goes non-empty one flush is posted to the loop, so everything
// queued during one turn of the loop leaves in one write (and whatever is queued while a write
// is in progress leaves in the next one).
//
// Bounds: beyond `max_queued_bytes` unsent, or `max_pending` calls unanswered, Call fails at
// once with kUnavailable: a stalled peer never makes this node's memory grow without bound.
//
// TLS (PeerLinkOptions::tls, --peer-tls-*): the connection runs a TLS handshake first (within
// the connect timeout), then the peer handshake inside it. Every operation of a TLS link runs
// on a strand of the loop, since a loop may be run by several threads and a TLS stream's read
// and write share its state; a plain link needs none.
//
// Failure: a connection that breaks, a handshake (TLS or peer) that fails, or a call not answered
// within its timeout fails every call in flight (kUnavailable; kDeadlineExceeded for the late one)
// and closes the connection; calls then fail at once for a backoff (100 ms, doubling up to 500 ms)
// after which the next call connects again.
//
// Thread-safety: Call and Close may be called from any thread. Answers (`AnswerFn`) run on a
// thread running the loop, never inside Call.

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "src/cluster/peer_auth.h"
#include "src/cluster/peer_frame.h"
#include "src/net/tls.h"

namespace floodgate::cluster {

// Handshake failures by reason, counted by every link and by the peer server.
struct AuthCounters {
  std::atomic<uint64_t> failures[kAuthFailureReasons] = {};
  void Count(AuthFailure reason) {
    failures[static_cast<int>(reason)].fetch_add(1, std::memory_order_relaxed);
  }
};

struct PeerLinkOptions {
  std::string self_id;
  std::string member_id;
  std::string address;  // host:port
  std::string key;      // the cluster key ("" with --insecure-peers)
  uint32_t protocol_version = kPeerProtocolVersion;
  absl::Duration connect_timeout = absl::Milliseconds(500);  // connect and handshake
  size_t max_queued_bytes = size_t{8} << 20;
  size_t max_pending = 100'000;
  absl::Duration min_backoff = absl::Milliseconds(100);
  absl::Duration max_backoff = absl::Milliseconds(500);
  AuthCounters* auth = nullptr;  // may be null
  // A client-side TLS context (net::TlsContext::NewClient): every connection is TLS, the
  // server's certificate verified against its CA. Null: plain.
  std::shared_ptr<net::TlsContext> tls;
};

class PeerLink : public std::enable_shared_from_this<PeerLink> {
 public:
  // Runs once per accepted call: with OK and the answer frame (valid during the call only; its
  // type may be kError), or with the error that ended the call.
  using AnswerFn = absl::AnyInvocable<void(absl::Status status, const Frame& answer) &&>;

  static std::shared_ptr<PeerLink> Create(PeerLinkOptions options, boost::asio::io_context& loop);
  ~PeerLink();

  // Queues a call; `on_answer` runs on the loop when it is answered, fails or times out. Returns
  // kUnavailable without queuing (and never runs `on_answer`) when the link is full, backing
  // off after a failure, or closed.
  absl::Status Call(FrameType type, const google::protobuf::MessageLite& request,
                    absl::Duration timeout, AnswerFn on_answer);
  // Fails every call (kUnavailable) and closes the connection, on the loop; later calls fail.
  void Close();
  // The peer was heard from just now (it dialled this node, or it joined): a link waiting out
  // a reconnect backoff stops waiting, so the next call connects at once instead of failing
  // with "unreachable (reconnecting)". A restarted peer is then reached as soon as it speaks.
  void EndBackoff();

  boost::asio::io_context& loop() { return loop_; }
  // Writes that carried at least one forward frame (the forward "batches").
  uint64_t forward_writes() const { return forward_writes_.load(std::memory_order_relaxed); }
  // Returns the bytes queued and not yet written (tests).
  size_t queued_bytes() const;

 private:
  struct Conn;
  struct Pending {
    AnswerFn on_answer;
    absl::Time deadline;
  };
  enum class State { kIdle, kConnecting, kHandshake, kReady, kBackoff, kClosed };

  PeerLink(PeerLinkOptions options, boost::asio::io_context& loop);

  // Runs `initiate(handler)`, the handler bound to the strand when the link has one.
  template <typename Initiate, typename Handler>
  void Async(Initiate&& initiate, Handler&& handler);
  // Posts `fn` to the loop (through the strand when the link has one).
  template <typename Fn>
  void Post(Fn&& fn);

  void StartConnect();
  void OnTcpConnected(std::shared_ptr<Conn> conn);
  void OnConnected(std::shared_ptr<Conn> conn);
  void Read(std::shared_ptr<Conn> conn);
  void OnRead(std::shared_ptr<Conn> conn, size_t bytes);
  // Runs on the loop: writes what is queued, if nothing is being written.
  void Flush();
  void WriteLocked(const std::shared_ptr<Conn>& conn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A write of `conn` ended: the next one goes if bytes wait, or the link fails on an error.
  void Written(const std::shared_ptr<Conn>& conn, boost::system::error_code ec);
  void OnTick();
  void ArmTimerLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends the connection `conn` (if still current) and fails its calls with `status`.
  void Fail(const std::shared_ptr<Conn>& conn, absl::Status status, bool count_log = true);
  void CloseNow();

  const PeerLinkOptions options_;
  boost::asio::io_context& loop_;
  // TLS only: every handler of the link runs on it.
  std::optional<boost::asio::strand<boost::asio::io_context::executor_type>> strand_;
  boost::asio::steady_timer timer_;  // on the loop: call and connect deadlines
  std::atomic<uint64_t> forward_writes_{0};

  mutable absl::Mutex mu_;
  State state_ ABSL_GUARDED_BY(mu_) = State::kIdle;
  std::shared_ptr<Conn> conn_ ABSL_GUARDED_BY(mu_);
  absl::Time backoff_until_ ABSL_GUARDED_BY(mu_);
  absl::Duration backoff_ ABSL_GUARDED_BY(mu_);
  absl::Time connect_deadline_ ABSL_GUARDED_BY(mu_);
  std::string out_ ABSL_GUARDED_BY(mu_);
  size_t out_forwards_ ABSL_GUARDED_BY(mu_) = 0;
  size_t writing_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool flush_posted_ ABSL_GUARDED_BY(mu_) = false;
  bool ticking_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_call_id_ ABSL_GUARDED_BY(mu_) = 1;
  absl::flat_hash_map<uint64_t, Pending> pending_ ABSL_GUARDED_BY(mu_);
};

}  // namespace floodgate::cluster
