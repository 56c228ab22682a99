// The connection side of overload_load: keep-alive HTTP/1.1 connections to one node on loopback,
// driven by one epoll loop on one thread. The driver (overload_load.cc) decides what is due and
// when; LoadClient owns the sockets, what each one has in flight, and the /metrics poller.
//
// Not thread-safe: one thread owns a LoadClient.

#pragma once

#include <time.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace floodgate::overload {

using Clock = std::chrono::steady_clock;

// A request sent (or queued to be sent) on a connection, waiting for its answer.
struct Pending {
  Clock::time_point due;
  Clock::time_point sent;
  int32_t user;    // tracked user index, -1 for background
  uint32_t phase;  // the phase it was due in
};

struct Conn {
  int fd = -1;
  bool tracked = false;
  bool dead = false;
  bool ready = false;  // in the ready list (fewer than depth in flight)
  std::deque<Pending> inflight;
  std::string out;
  std::string in;
  size_t in_off = 0;
};

// Latest values read from GET /metrics.
struct ServerMetrics {
  double store_keys = 0, store_bytes = 0, evicted = 0, refused_full = 0, fast_refusals = 0;
  double shed = 0, connections = 0;
};

// Finds one complete response at `buf[off..]`: returns its length (0 if incomplete) and sets the
// status and the body's offset and length.
size_t CompleteResponse(const std::string& buf, size_t off, int* status, size_t* body,
                        size_t* body_len);

// Returns the figures of a Prometheus text page that the overload scenarios plot.
ServerMetrics ParseMetrics(const std::string& text);

// Connects to 127.0.0.1:`port` (TCP_NODELAY, non-blocking). Returns the socket, or -1 after
// printing why.
int Connect(int port);

class LoadClient {
 public:
  // Called once per answer, in the order the connection's requests were sent.
  using ResponseHandler = std::function<void(const Pending& request, int status,
                                             std::string_view body, Clock::time_point got_at)>;

  LoadClient() = default;
  LoadClient(const LoadClient&) = delete;
  LoadClient& operator=(const LoadClient&) = delete;

  // Opens `background` connections, then `tracked` ones, then (with `metrics`) one for GET
  // /metrics. Returns false, after printing why, when one of them cannot connect.
  bool Open(int port, int background, int tracked, bool metrics);

  // Returns a ready connection of the background (or tracked) pool with fewer than `max_depth`
  // requests in flight, round robin, or nullptr when every one is at `max_depth`.
  Conn* TakeReady(bool tracked, int max_depth);

  // Records `request` as in flight on `c` and returns the buffer its bytes go to; Flush sends
  // them.
  std::string& Enqueue(Conn& c, const Pending& request);

  // Writes what Enqueue queued; keeps what a socket did not take for the next call.
  void Flush();

  // Sends GET /metrics unless the previous one is still unanswered.
  void RequestMetrics();

  // Waits up to `timeout` for answers and hands each complete one to `on_response`.
  void Wait(const timespec& timeout, const ResponseHandler& on_response);

  size_t in_flight() const { return in_flight_; }
  // Connections that broke, and the requests they had in flight.
  uint64_t broken() const { return broken_; }
  uint64_t lost() const { return lost_; }
  const ServerMetrics& server_metrics() const { return server_metrics_; }

 private:
  int Index(const Conn& c) const { return static_cast<int>(&c - conns_.data()); }
  // A connection the server closed (or that failed): its requests in flight are lost.
  void Drop(Conn& c);
  void ReadMetrics();
  void ReadAnswers(int i, Clock::time_point got_at, const ResponseHandler& on_response);

  int epoll_fd_ = -1;
  std::vector<Conn> conns_;
  std::deque<int> ready_bg_, ready_tr_;  // connections with fewer than depth in flight
  std::vector<int> dirty_;               // connections with bytes to write
  size_t in_flight_ = 0;                 // requests sent and not answered
  uint64_t broken_ = 0, lost_ = 0;
  // The /metrics connection: one request at a time, epoll tag = UINT32_MAX.
  int metrics_fd_ = -1;
  bool metrics_busy_ = false;
  std::string metrics_in_;
  ServerMetrics server_metrics_;
  char buf_[1 << 16];
};

}  // namespace floodgate::overload
