#pragma once

// What the listener (listener.h) needs from an accepted connection: a way to drain it, to close
// it, and when its next timeout falls due. The front ends' sessions implement it; the listener
// keeps a registry of the live ones for its sweeper and for Shutdown.
//
// Threads: the listener calls these methods while it holds its registry lock for the
// connection's io thread. With IoModel::kShared (one io_context, many threads) that may be any
// thread, so implementations must be thread-safe; with IoModel::kPerThread it is always the
// connection's own io thread, so they need no lock. Either way a method must not end the
// connection synchronously (close or shut the socket down and let the pending operation fail:
// the connection then ends on its own thread, later).

#include <cstdint>
#include <limits>

namespace floodgate::net {

// deadline_ns() of a connection with nothing due.
inline constexpr int64_t kNoDeadline = std::numeric_limits<int64_t>::max();

class Connection {
 public:
  virtual ~Connection() = default;

  // Drain, optional first step, when ListenerOptions::drain_notice is set: warns the peer that
  // the server is going away (HTTP/2's GOAWAY notice) while it may still open calls.
  virtual void DrainNotice() {}
  // Drain: an idle connection closes now; a busy one finishes what it is doing, then closes.
  virtual void Drain() = 0;
  // Closes now (drain grace over): the pending operation fails and the connection ends.
  virtual void ShutdownSocket() = 0;
  // Returns when (listener clock, ns) the sweeper should call OnDeadline; kNoDeadline: never.
  virtual int64_t deadline_ns() const = 0;
  // Called by the sweeper once `now_ns` >= deadline_ns(). By default closes the connection.
  virtual void OnDeadline(int64_t now_ns) { ShutdownSocket(); }
};

}  // namespace floodgate::net
