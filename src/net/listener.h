#pragma once

// A TCP listener written once for every server of ours: resolves and binds "host:port",
// accepts (backing off on errors such as EMFILE), enforces the total and per-client connection
// caps, hands each admitted connection to its server on an io thread (io_threads.h), sweeps the
// live connections for due timeouts, and drains them on Shutdown.
//
// Ownership: the server creates its session for an admitted connection in the accept callback,
// keeping the ConnectionSlot it gets with the socket. The session calls slot.Register(this) once
// it is ready to be drained and swept, and slot.Release() first thing in its destructor; the
// slot's place under the caps is given back then. Connections stay owned by their own handler
// chains (usually through shared_ptr); the listener keeps only raw pointers, valid while
// registered (see connection.h for the threads its calls come from).
//
// Errors name the server: "HTTP server cannot bind 127.0.0.1:80: Address already in use".
//
// Thread-safety: Start/Shutdown from one thread; port(), draining(), now_ns() and
// open_connections() from any.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "src/net/client_caps.h"
#include "src/net/connection.h"
#include "src/net/io_threads.h"

namespace floodgate::net {

// Sockets on the io_context's own executor: no type erasure on the hot path.
using Executor = boost::asio::io_context::executor_type;
using Socket = boost::asio::ip::tcp::socket::rebind_executor<Executor>::other;

struct ListenerOptions {
  std::string address = "127.0.0.1:0";  // host:port; port 0 picks a free one (see port())
  // Names the server in errors: "<name> cannot bind ...", "cannot resolve <protocol> listen
  // host ...".
  std::string name = "server";
  std::string protocol = "TCP";
  IoModel io_model = IoModel::kShared;
  int io_threads = 1;
  // Connections accepted beyond these are closed at once and counted in `refused`.
  size_t max_connections = std::numeric_limits<size_t>::max();
  size_t max_connections_per_client = 0;  // 0: no cap
  // How often the sweeper looks for due deadlines (SweepInterval below picks one).
  absl::Duration sweep_interval = absl::Seconds(1);
  // Shutdown first calls DrainNotice on every connection and waits a moment (a quarter of the
  // grace, at most 100 ms) before Drain: HTTP/2's two-step GOAWAY (RFC 9113 section 6.8).
  bool drain_notice = false;
  // Counts connections refused by the caps (a front end's `shed` metric). May be null.
  std::atomic<uint64_t>* refused = nullptr;
  // The clock deadlines are read against (ns). Null: the steady clock. Tests inject a fake.
  std::function<int64_t()> clock;
};

// Returns the sweep interval for a timeout: a quarter of it, within [10 ms, 1 s].
absl::Duration SweepInterval(absl::Duration timeout);

class Listener;

// A connection's place in the listener: its io thread, its client key and its share of the
// caps. Move-only; given back when released or destroyed.
class ConnectionSlot {
 public:
  ConnectionSlot() = default;
  ConnectionSlot(ConnectionSlot&& other) noexcept { *this = std::move(other); }
  ConnectionSlot& operator=(ConnectionSlot&& other) noexcept;
  ~ConnectionSlot() { Release(); }

  // Makes `connection` visible to the sweeper and to Shutdown. Call once, on its io thread.
  void Register(Connection* connection);
  // Unregisters the connection and gives its place under the caps back. Call first thing in
  // the connection's destructor: once it returns, the listener no longer calls the connection.
  void Release();

  // Returns the index of the io thread (IoModel::kPerThread) the connection runs on.
  int io_thread() const { return io_thread_; }
  // Returns the client's address when connections per client are capped, "" otherwise.
  const std::string& client() const { return client_; }

 private:
  friend class Listener;
  Listener* listener_ = nullptr;
  int io_thread_ = 0;
  std::string client_;
  Connection* connection_ = nullptr;
};

// An admitted connection, given to the accept callback: with IoModel::kPerThread on its own io
// thread, with kShared on the acceptor's strand.
struct Accepted {
  Socket socket;  // socket.get_executor() is its io context's
  ConnectionSlot slot;
};

class Listener {
 public:
  using AcceptFn = std::function<void(Accepted)>;

  Listener(ListenerOptions options, AcceptFn on_accept);
  // Shuts down (no grace) if still running.
  ~Listener();

  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  // Binds and starts the io threads. InvalidArgument for a bad address, Unavailable when the
  // port cannot be bound, FailedPrecondition when already started.
  absl::Status Start();
  // Returns the bound port (after Start).
  int port() const { return port_; }
  // Returns the listener's io threads (their contexts, for a server's own timers).
  IoThreads& io() { return io_; }
  // Returns whether Shutdown has begun.
  bool draining() const { return draining_.load(std::memory_order_acquire); }
  // Returns the listener clock as of the last sweep (ns): cheap, at most one sweep old.
  int64_t now_ns() const { return now_ns_.load(std::memory_order_relaxed); }
  // Returns the connections admitted and not yet released.
  size_t open_connections() const;

  // Drains: stops accepting, [DrainNotice, pause,] Drain on every connection, waits up to
  // `grace` for them to end, then ShutdownSocket on the rest and waits up to 1 s more; then
  // stops sweeping and joins the io threads. Idempotent.
  void Shutdown(absl::Duration grace);

 private:
  friend class ConnectionSlot;
  using Timer =
      boost::asio::basic_waitable_timer<std::chrono::steady_clock,
                                        boost::asio::wait_traits<std::chrono::steady_clock>,
                                        boost::asio::any_io_executor>;
  using Acceptor =
      boost::asio::basic_socket_acceptor<boost::asio::ip::tcp, boost::asio::any_io_executor>;

  // The live connections of one io context.
  struct Shard {
    absl::Mutex mu;
    absl::flat_hash_set<Connection*> live ABSL_GUARDED_BY(mu);
  };

  int64_t Now() const;
  void Accept();
  void OnAccept(boost::system::error_code ec, Socket socket, int io_thread);
  void Sweep(int shard);
  // Runs `fn` on every registered connection (each on its own thread with kPerThread) and
  // returns when all have run.
  void ForEachConnection(const std::function<void(Connection&)>& fn);
  bool AwaitNoConnections(absl::Duration timeout);
  void Register(int shard, Connection* connection);
  void Unregister(int shard, Connection* connection);
  void ReleaseSlot(const std::string& client);

  const ListenerOptions options_;
  const AcceptFn on_accept_;
  const std::chrono::nanoseconds sweep_interval_;
  std::atomic<bool> draining_{false};
  std::atomic<bool> stop_sweeping_{false};
  std::atomic<int64_t> now_ns_{0};
  int port_ = 0;
  bool started_ = false;
  bool stopped_ = false;
  int next_thread_ = 0;  // on the acceptor's executor

  mutable absl::Mutex count_mu_;
  size_t open_ ABSL_GUARDED_BY(count_mu_) = 0;
  ClientCaps client_caps_;
  // Declared before the io threads: destroying a context destroys the handlers that own
  // connections, and those release their slots into these.
  std::vector<std::unique_ptr<Shard>> shards_;

  IoThreads io_;
  // After the io threads: I/O objects go before their contexts.
  std::optional<boost::asio::any_io_executor> accept_executor_;  // a strand with kShared
  std::optional<Acceptor> acceptor_;
  std::optional<Timer> accept_backoff_;
  std::vector<std::unique_ptr<Timer>> sweep_timers_;  // one per shard, on its executor
};

}  // namespace floodgate::net
