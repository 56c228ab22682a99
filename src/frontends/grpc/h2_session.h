#pragma once

// The native gRPC server's HTTP/2 connection plumbing (libnghttp2 over Boost.Asio), apart from
// request handling: the read loop, the write path, the nghttp2 callbacks, the streams of a
// connection, its timeouts and its drain. NativeGrpcServer's session (grpc_native.cc) derives
// from H2Session and answers the calls. Internal to the gRPC front end.
//
// Threads: a session runs on one io thread (net::IoModel::kPerThread) and is touched only
// there, so it takes no lock; the listener's calls (net::Connection) come on that thread too.

#include <nghttp2/nghttp2.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "src/net/connection.h"
#include "src/net/listener.h"
#include "src/net/tls.h"

namespace floodgate::frontends::grpc_internal {

inline constexpr std::string_view kShouldRateLimitPath =
    "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";
inline constexpr std::string_view kHealthCheckPath = "/grpc.health.v1.Health/Check";

// Bounds per connection. Request headers above kMaxHeaderBytes reset their stream; request
// bodies buffered at once (calls whose message has not fully arrived) above the budget get
// RESOURCE_EXHAUSTED; one write carries at most kMaxWriteBytes, and reading pauses while a
// write is pending, so a client that does not read cannot grow our buffers.
inline constexpr size_t kMaxHeaderBytes = 16 * 1024;
inline constexpr size_t kMinBodyBudgetBytes = 4 << 20;
inline constexpr size_t kMaxWriteBytes = 256 * 1024;
// Read at most this much from one connection per turn, so that one busy connection cannot
// starve the others on its thread.
inline constexpr size_t kMaxReadPerTurn = 256 * 1024;
inline constexpr size_t kReadBufferBytes = 64 * 1024;
// A TLS session's read buffer: one TLS record's plaintext at most.
inline constexpr size_t kTlsReadBytes = 16 * 1024;
// The connection's receive window: large enough that flow control never waits on a round trip
// for small calls (streams keep the default 64 KiB each).
inline constexpr int32_t kConnectionWindowBytes = 1 << 20;
// A connection told to close (GOAWAY sent) whose peer does not read gets this long.
inline constexpr int64_t kCloseGraceNs = 2'000'000'000;

int64_t SteadyNowNs();

inline nghttp2_nv StaticHeader(std::string_view name, std::string_view value) {
  return nghttp2_nv{const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(name.data())),
                    const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(value.data())),
                    name.size(), value.size(),
                    NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE};
}

// A header whose value nghttp2 copies (the name is a literal).
inline nghttp2_nv CopiedHeader(std::string_view name, std::string_view value) {
  nghttp2_nv nv = StaticHeader(name, value);
  nv.flags = NGHTTP2_NV_FLAG_NO_COPY_NAME;
  return nv;
}

enum class Method { kUnknown, kShouldRateLimit, kHealthCheck };

// One call. Lives from its HEADERS until nghttp2 closes the stream; linked into its session's
// list, oldest first, for the request timeout.
struct Stream {
  int32_t id = 0;
  int64_t opened_ns = 0;
  Method method = Method::kUnknown;
  bool post = false;
  bool grpc_content_type = false;
  bool headers_done = false;
  bool request_done = false;          // END_STREAM received
  bool responded = false;             // a response was submitted; later request bytes are dropped
  bool reset_after_response = false;  // RST_STREAM(NO_ERROR) once the response is sent
  bool cancelled = false;             // RST_STREAM(CANCEL) submitted by the sweep
  size_t header_bytes = 0;
  std::string path;
  std::string body;      // the request as received: prefix + message
  std::string response;  // prefix + message, read by nghttp2 through ReadResponse
  size_t response_offset = 0;
  Stream* prev = nullptr;
  Stream* next = nullptr;
};

// Follows the frame boundaries of what a client sends (the 24-byte preface, then frames: a
// 9-byte header whose first 3 bytes give the payload's length), so that a frame begun can be
// given a deadline: nghttp2 takes every byte it is given and says nothing of where a frame
// stands. Lengths are not checked here (nghttp2 refuses a frame above SETTINGS_MAX_FRAME_SIZE).
class FrameTracker {
 public:
  static constexpr size_t kPrefaceBytes = 24;
  static constexpr size_t kFrameHeaderBytes = 9;

  // Consumes `n` bytes of the stream. Returns whether the preface or a frame ended among them.
  bool Feed(const uint8_t* data, size_t n);
  // Returns whether the bytes so far end inside the preface or a frame.
  bool inside() const {
    return preface_left_ > 0 ? preface_left_ < kPrefaceBytes
                             : header_have_ > 0 || payload_left_ > 0;
  }
  // Returns whether the preface and the first frame (the client's SETTINGS) are in.
  bool handshake_done() const { return frames_ > 0; }

 private:
  size_t preface_left_ = kPrefaceBytes;
  size_t header_have_ = 0;  // bytes of the current frame's header seen
  std::array<uint8_t, 3> length_{};
  size_t payload_left_ = 0;
  uint64_t frames_ = 0;
};

// One io thread's share: its context, a clock refreshed every read turn, and a read buffer its
// connections share (reads are synchronous within a turn, so one buffer serves all).
struct Worker {
  explicit Worker(boost::asio::io_context& context) : ioc(context) {}

  boost::asio::io_context& ioc;
  int64_t now_ns = 0;
  std::array<uint8_t, kReadBufferBytes> read_buffer{};
};

// What every session of one server shares. The callbacks and option outlive the sessions'
// use of them (nghttp2_session_del needs neither).
struct H2Config {
  // Returns the time (ns) the timeouts are read against.
  int64_t Now() const { return clock ? clock() : SteadyNowNs(); }

  uint32_t max_concurrent_streams = 1000;
  int64_t idle_timeout_ns = 0;
  int64_t request_timeout_ns = 0;
  std::function<int64_t()> clock;                        // null: SteadyNowNs
  const nghttp2_session_callbacks* callbacks = nullptr;  // NewCallbacks()
  const nghttp2_option* option = nullptr;
};

// One HTTP/2 connection, driven on its worker's thread only: a wait for readability (then
// non-blocking reads into the worker's buffer, fed to nghttp2), at most one write in flight
// (what nghttp2 produced, gathered into out_), and the listener's sweeper. Over TLS (a
// TlsContext given), the handshake comes first (bounded like the preface, by request_timeout),
// then reads are asynchronous through the TLS stream into the session's own buffer and every
// write is asynchronous; the rest is the same. Handlers own the
// session through shared_ptr; closing the socket fails them and the session goes.
class H2Session : public net::Connection, public std::enable_shared_from_this<H2Session> {
 public:
  // `tls` null: plain HTTP/2 (h2c). Otherwise it must outlive the session.
  H2Session(net::Socket socket, Worker* worker, net::ConnectionSlot slot, const H2Config* config,
            net::TlsContext* tls = nullptr);
  ~H2Session() override;

  // Returns the callbacks every session uses (delete with nghttp2_session_callbacks_del).
  static nghttp2_session_callbacks* NewCallbacks();

  // Registers with the listener, runs the TLS handshake if any, sends SETTINGS (and GOAWAY
  // when `draining`), starts reading.
  void Start(bool draining);

  // Drain, first step: tells the client to open no more streams (GOAWAY with the largest id).
  void ShutdownNotice();
  // Drain, second step: GOAWAY with the last stream seen; the calls up to it finish, then the
  // connection closes.
  void GoAway();
  // Enforces the timeouts, as the HTTP/1 server does for a request (docs/grpc.md):
  // - request_timeout from the accept for the connection preface and the client's SETTINGS,
  //   and from its first byte for every frame: a read that stalls there closes the connection
  //   (nothing behind a partial frame can be read);
  // - request_timeout from its HEADERS for a call's request to arrive in full, and for its
  //   response to leave (a client that keeps its flow control window shut): else the stream is
  //   reset (CANCEL); a header block still arriving then closes the connection (CONTINUATION
  //   frames block every other stream). A call being decided (cluster mode) is left alone;
  // - idle_timeout from the end of the last call (or the accept) with no call open: GOAWAY.
  //   Other frames (PING, SETTINGS, WINDOW_UPDATE) do not hold a connection open;
  // - a connection that does not take its GOAWAY within kCloseGraceNs is closed.
  void Sweep(int64_t now_ns);
  void Close();

  // net::Connection, on this session's thread.
  void DrainNotice() override { ShutdownNotice(); }
  void Drain() override { GoAway(); }
  void ShutdownSocket() override { Close(); }
  // The earliest time Sweep may have something to do.
  int64_t deadline_ns() const override;
  void OnDeadline(int64_t now_ns) override;

  // The response's DATA: the prefixed message, then trailers with grpc-status 0.
  static ssize_t ReadResponse(nghttp2_session* h2, int32_t stream_id, uint8_t* buf, size_t length,
                              uint32_t* data_flags, nghttp2_data_source* source, void* user);

 protected:
  // Request handling, in the derived session. CheckHeaders runs once a request's headers are
  // in, AppendBody for each DATA chunk of a stream not yet answered, HandleRequest at its end.
  virtual void CheckHeaders(Stream& s) = 0;
  virtual void AppendBody(Stream& s, const uint8_t* data, size_t len) = 0;
  virtual void HandleRequest(Stream& s) = 0;

  // Gathers what nghttp2 has to send and writes it: directly if the socket takes it all, else
  // with one asynchronous write (reading waits meanwhile; see kMaxWriteBytes).
  void Flush();
  void ReleaseBody(Stream& s);

  net::Stream stream_;   // the socket, or TLS over it
  net::Socket& socket_;  // stream_'s socket
  Worker* const worker_;
  nghttp2_session* h2_ = nullptr;
  bool closed_ = false;
  size_t body_bytes_ = 0;  // sum of the streams' buffered request bodies

 private:
  static int OnBeginHeaders(nghttp2_session* h2, const nghttp2_frame* frame, void* user);
  static int OnHeader(nghttp2_session* h2, const nghttp2_frame* frame, const uint8_t* name,
                      size_t namelen, const uint8_t* value, size_t valuelen, uint8_t flags,
                      void* user);
  static int OnFrameRecv(nghttp2_session* h2, const nghttp2_frame* frame, void* user);
  static int OnDataChunk(nghttp2_session* h2, uint8_t flags, int32_t stream_id, const uint8_t* data,
                         size_t len, void* user);
  static int OnFrameSend(nghttp2_session* h2, const nghttp2_frame* frame, void* user);
  static int OnStreamClose(nghttp2_session* h2, int32_t stream_id, uint32_t error_code, void* user);

  bool draining_streams() const { return head_ != nullptr; }
  // Start, once the TLS handshake (if any) is done.
  void StartHttp2(bool draining);
  void ResumeReading();
  void WaitReadable();
  void OnReadable();
  // TLS: one asynchronous read through stream_ into tls_read_, then Consume.
  void ReadTls();
  // Feeds n read bytes to nghttp2 and the frame tracker; false when they are not HTTP/2 or
  // break the protocol (nghttp2 may have queued a GOAWAY).
  bool Consume(const uint8_t* data, size_t n);
  void MaybeClose();
  void OpenStream(int32_t id);
  void CloseStream(Stream* s);

  net::ConnectionSlot slot_;
  const H2Config* const config_;
  bool writing_ = false;
  bool waiting_read_ = false;
  bool close_after_write_ = false;
  bool goaway_sent_ = false;
  bool goaway_pending_ = false;  // GoAway asked during the TLS handshake
  int64_t close_deadline_ns_ = 0;
  int64_t accepted_ns_ = 0;
  int64_t idle_since_ns_ = 0;                    // when the last call ended (or the accept)
  int64_t frame_started_ns_ = net::kNoDeadline;  // kNoDeadline: at a frame boundary
  FrameTracker frames_;
  Stream* head_ = nullptr;
  Stream* tail_ = nullptr;
  std::string out_;
  std::vector<uint8_t> tls_read_;  // TLS only: reads complete later, so not the worker's buffer
};

}  // namespace floodgate::frontends::grpc_internal
