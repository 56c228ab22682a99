#include "src/frontends/grpc/grpc_native.h"

#include <nghttp2/nghttp2.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "envoy/service/ratelimit/v3/rls.pb.h"
#include "grpc/health/v1/health.pb.h"
#include "src/common/host_port.h"
#include "src/common/text.h"
#include "src/common/worker_pool.h"
#include "src/frontends/grpc/grpc_wire.h"
#include "src/net/client_caps.h"
#include "src/service/rate_limit_service.h"

namespace floodgate::server {
namespace {

namespace asio = boost::asio;
namespace rls = ::envoy::service::ratelimit::v3;
namespace health = ::grpc::health::v1;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;
using Executor = asio::io_context::executor_type;
using Socket = tcp::socket::rebind_executor<Executor>::other;
using Timer = asio::basic_waitable_timer<std::chrono::steady_clock,
                                         asio::wait_traits<std::chrono::steady_clock>, Executor>;

constexpr std::string_view kShouldRateLimitPath =
    "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";
constexpr std::string_view kHealthCheckPath = "/grpc.health.v1.Health/Check";
constexpr std::string_view kRlsServiceName = "envoy.service.ratelimit.v3.RateLimitService";

// Bounds per connection. Request headers above kMaxHeaderBytes reset their stream; request
// bodies buffered at once (calls whose message has not fully arrived) above the budget get
// RESOURCE_EXHAUSTED; one write carries at most kMaxWriteBytes, and reading pauses while a
// write is pending, so a client that does not read cannot grow our buffers.
constexpr size_t kMaxHeaderBytes = 16 * 1024;
constexpr size_t kMinBodyBudgetBytes = 4 << 20;
constexpr size_t kMaxWriteBytes = 256 * 1024;
// Read at most this much from one connection per turn, so that one busy connection cannot
// starve the others on its thread.
constexpr size_t kMaxReadPerTurn = 256 * 1024;
constexpr size_t kReadBufferBytes = 64 * 1024;
// The connection's receive window: large enough that flow control never waits on a round trip
// for small calls (streams keep the default 64 KiB each).
constexpr int32_t kConnectionWindowBytes = 1 << 20;
// A connection told to close (GOAWAY sent) whose peer does not read gets this long.
constexpr int64_t kCloseGraceNs = 2'000'000'000;
constexpr std::chrono::milliseconds kAcceptBackoff(10);

int64_t SteadyNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int64_t ToNs(absl::Duration d) { return std::max<int64_t>(absl::ToInt64Nanoseconds(d), 1); }

nghttp2_nv StaticHeader(std::string_view name, std::string_view value) {
  return nghttp2_nv{const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(name.data())),
                    const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(value.data())),
                    name.size(), value.size(),
                    NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE};
}

// A header whose value nghttp2 copies (the name is a literal).
nghttp2_nv CopiedHeader(std::string_view name, std::string_view value) {
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
  size_t header_bytes = 0;
  std::string path;
  std::string body;      // the request as received: prefix + message
  std::string response;  // prefix + message, read by nghttp2 through ReadResponse
  size_t response_offset = 0;
  Stream* prev = nullptr;
  Stream* next = nullptr;
};

class Session;
class ServerImpl;

// One io thread: its own io_context, its connections, a sweeper for their timeouts and a read
// buffer they share (reads are synchronous within a turn, so one buffer serves all).
struct Worker {
  explicit Worker(ServerImpl* s) : server(s), ioc(1), sweep_timer(ioc.get_executor()) {}

  ServerImpl* const server;
  // Touched only on this worker's thread. Declared before the io_context: the context is
  // destroyed first, and the handlers it destroys (which own sessions) still find the set.
  absl::flat_hash_set<Session*> sessions;
  int64_t now_ns = 0;  // refreshed every read turn and every sweep
  std::array<uint8_t, kReadBufferBytes> read_buffer{};
  asio::io_context ioc;
  std::optional<asio::executor_work_guard<Executor>> work;
  Timer sweep_timer;
  std::thread thread;
};

class ServerImpl {
 public:
  ServerImpl(GrpcServerOptions options, RateLimitService* service, ServerMetrics* metrics)
      : options_(std::move(options)),
        service_(service),
        metrics_(metrics),
        idle_timeout_ns_(ToNs(options_.idle_timeout)),
        request_timeout_ns_(ToNs(options_.request_timeout)),
        body_budget_bytes_(std::max(kMinBodyBudgetBytes, 2 * options_.max_receive_bytes + 64)),
        max_queue_delay_(absl::ToChronoNanoseconds(options_.max_queue_delay)) {
    if (options_.worker_threads > 0) {
      pool_ = std::make_unique<common::WorkerPool>(options_.worker_threads, options_.max_queued);
    }
    const int threads = std::max(options_.io_threads, 1);
    for (int i = 0; i < threads; ++i) {
      workers_.push_back(std::make_unique<Worker>(this));
    }
    acceptor_.emplace(workers_[0]->ioc.get_executor());
    accept_backoff_.emplace(workers_[0]->ioc.get_executor());
  }
  ~ServerImpl() { Shutdown(absl::ZeroDuration()); }

  absl::Status Start();
  int port() const { return port_; }
  void Shutdown(absl::Duration grace);

  // For sessions.
  const GrpcServerOptions& options() const { return options_; }
  RateLimitService& service() const { return *service_; }
  ServerMetrics& metrics() const { return *metrics_; }
  bool draining() const { return draining_.load(std::memory_order_acquire); }
  int64_t idle_timeout_ns() const { return idle_timeout_ns_; }
  int64_t request_timeout_ns() const { return request_timeout_ns_; }
  size_t body_budget_bytes() const { return body_budget_bytes_; }
  const nghttp2_session_callbacks* callbacks() const { return callbacks_; }
  // Cluster mode: the pool rate limit calls run on (null: they run on the io thread).
  common::WorkerPool* pool() const { return pool_.get(); }
  std::chrono::nanoseconds max_queue_delay() const { return max_queue_delay_; }
  const nghttp2_option* h2_option() const { return h2_option_; }
  void SessionOpened() {
    absl::MutexLock lock(&mu_);
    ++open_sessions_;
  }
  void SessionClosed() {
    absl::MutexLock lock(&mu_);
    --open_sessions_;
  }

 private:
  void Accept();
  void OnAccept(error_code ec, Socket socket, Worker* worker);
  void Sweep(Worker* worker);
  // Runs `fn(session)` on every session, each on its own thread; returns when all have run.
  template <typename Fn>
  void ForEachSession(Fn fn);
  bool AwaitNoSessions(absl::Duration timeout);

  const GrpcServerOptions options_;
  RateLimitService* const service_;
  ServerMetrics* const metrics_;
  const int64_t idle_timeout_ns_;
  const int64_t request_timeout_ns_;
  const size_t body_budget_bytes_;
  nghttp2_session_callbacks* callbacks_ = nullptr;
  nghttp2_option* h2_option_ = nullptr;
  std::atomic<bool> draining_{false};
  std::atomic<bool> stopped_timers_{false};
  std::atomic<size_t> open_connections_{0};
  net::ClientCaps client_caps_{options_.max_connections_per_client};
  int port_ = 0;
  bool started_ = false;
  bool stopped_ = false;
  size_t next_worker_ = 0;  // on workers_[0]'s thread (the acceptor's)

  absl::Mutex mu_;
  int open_sessions_ ABSL_GUARDED_BY(mu_) = 0;

  const std::chrono::nanoseconds max_queue_delay_;

  // Last: the workers (and the sessions their contexts own) go first.
  std::vector<std::unique_ptr<Worker>> workers_;
  std::optional<asio::basic_socket_acceptor<tcp, Executor>> acceptor_;  // on workers_[0]
  std::optional<Timer> accept_backoff_;                                 // on workers_[0]
  // After the workers: destroyed first, once Shutdown has stopped the io threads. Calls still
  // queued then run, and post their answers to io contexts that are stopped but alive.
  std::unique_ptr<common::WorkerPool> pool_;

  friend class Session;
};

// One HTTP/2 connection, driven on its worker's thread only: a wait for readability (then
// non-blocking reads into the worker's buffer, fed to nghttp2), at most one write in flight
// (what nghttp2 produced, gathered into out_), and the worker's sweeper. Handlers own the
// session through shared_ptr; closing the socket fails them and the session goes.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Socket socket, Worker* worker, std::string client)
      : socket_(std::move(socket)),
        worker_(worker),
        server_(worker->server),
        client_(std::move(client)) {
    server_->SessionOpened();
    worker_->sessions.insert(this);
    last_read_ns_ = worker_->now_ns;
  }

  ~Session() {
    worker_->sessions.erase(this);
    if (h2_ != nullptr) {
      nghttp2_session_del(h2_);  // calls no callbacks
    }
    while (head_ != nullptr) {
      Stream* s = head_;
      head_ = s->next;
      delete s;
    }
    server_->open_connections_.fetch_sub(1, std::memory_order_relaxed);
    if (!client_.empty()) {
      server_->client_caps_.Release(client_);
    }
    server_->SessionClosed();
  }

  void Start() {
    error_code ec;
    socket_.non_blocking(true, ec);
    if (!ec) {
      socket_.set_option(tcp::no_delay(true), ec);
    }
    if (ec ||
        nghttp2_session_server_new2(&h2_, server_->callbacks(), this, server_->h2_option()) != 0) {
      Close();
      return;
    }
    const std::array<nghttp2_settings_entry, 2> settings = {{
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, server_->options().max_concurrent_streams},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, static_cast<uint32_t>(kMaxHeaderBytes)},
    }};
    if (nghttp2_submit_settings(h2_, NGHTTP2_FLAG_NONE, settings.data(), settings.size()) != 0 ||
        nghttp2_session_set_local_window_size(h2_, NGHTTP2_FLAG_NONE, 0, kConnectionWindowBytes) !=
            0) {
      Close();
      return;
    }
    if (server_->draining()) {
      GoAway();
    }
    Flush();
    WaitReadable();
  }

  // Drain, first step: tells the client to open no more streams (GOAWAY with the largest id).
  void ShutdownNotice() {
    if (!closed_ && h2_ != nullptr) {
      nghttp2_submit_shutdown_notice(h2_);
      Flush();
    }
  }

  // Drain, second step: GOAWAY with the last stream seen; the calls up to it finish, then the
  // connection closes.
  void GoAway() {
    if (closed_ || h2_ == nullptr || goaway_sent_) {
      return;
    }
    goaway_sent_ = true;
    close_deadline_ns_ = worker_->now_ns + kCloseGraceNs;
    nghttp2_submit_goaway(h2_, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(h2_),
                          NGHTTP2_NO_ERROR, nullptr, 0);
    Flush();
  }

  // Enforces the timeouts: a request not received in full within request_timeout has its
  // stream reset (a header block still arriving then closes the connection: CONTINUATION frames
  // block every other stream); a connection with no call for idle_timeout gets GOAWAY; one
  // that does not take its GOAWAY within kCloseGraceNs is closed.
  void Sweep(int64_t now_ns) {
    if (closed_) {
      return;
    }
    if (goaway_sent_ && now_ns >= close_deadline_ns_ && !draining_streams()) {
      Close();
      return;
    }
    bool reset = false;
    for (Stream* s = head_; s != nullptr; s = s->next) {
      if (s->request_done || s->responded ||
          now_ns - s->opened_ns < server_->request_timeout_ns()) {
        continue;
      }
      if (!s->headers_done) {
        Close();
        return;
      }
      s->responded = true;
      ReleaseBody(*s);
      nghttp2_submit_rst_stream(h2_, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
      reset = true;
    }
    if (head_ == nullptr && !goaway_sent_ && now_ns - last_read_ns_ >= server_->idle_timeout_ns()) {
      GoAway();
      return;
    }
    if (reset) {
      Flush();
    }
  }

  void Close() {
    if (closed_) {
      return;
    }
    closed_ = true;
    error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
  }

  // nghttp2 callbacks (set up once in ServerImpl::Start), each forwarding to the session.
  static int OnBeginHeaders(nghttp2_session* h2, const nghttp2_frame* frame, void* user) {
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
      static_cast<Session*>(user)->OpenStream(frame->hd.stream_id);
    }
    return 0;
  }
  static int OnHeader(nghttp2_session* h2, const nghttp2_frame* frame, const uint8_t* name,
                      size_t namelen, const uint8_t* value, size_t valuelen, uint8_t flags,
                      void* user) {
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
      return 0;  // request trailers: nothing in them matters to a unary call
    }
    auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id));
    if (s == nullptr) {
      return 0;
    }
    s->header_bytes += namelen + valuelen + 32;  // RFC 9113's accounting
    if (s->header_bytes > kMaxHeaderBytes) {
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  // resets the stream
    }
    const std::string_view n(reinterpret_cast<const char*>(name), namelen);
    const std::string_view v(reinterpret_cast<const char*>(value), valuelen);
    if (n == ":method") {
      s->post = v == "POST";
    } else if (n == ":path") {
      s->method = v == kShouldRateLimitPath ? Method::kShouldRateLimit
                  : v == kHealthCheckPath   ? Method::kHealthCheck
                                            : Method::kUnknown;
      if (s->method == Method::kUnknown) {
        s->path.assign(v.substr(0, 256));
      }
    } else if (n == "content-type") {
      s->grpc_content_type = grpc_wire::IsGrpcContentType(v);
    }
    return 0;
  }
  static int OnFrameRecv(nghttp2_session* h2, const nghttp2_frame* frame, void* user) {
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) {
      return 0;
    }
    auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id));
    if (s == nullptr) {
      return 0;
    }
    auto* self = static_cast<Session*>(user);
    const bool end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    s->request_done |= end;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
      s->headers_done = true;
      self->CheckHeaders(*s);
    }
    if (end) {
      self->HandleRequest(*s);
    }
    return 0;
  }
  static int OnDataChunk(nghttp2_session* h2, uint8_t flags, int32_t stream_id, const uint8_t* data,
                         size_t len, void* user) {
    auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(h2, stream_id));
    if (s != nullptr && !s->responded) {
      static_cast<Session*>(user)->AppendBody(*s, data, len);
    }
    return 0;
  }
  // Sends the RST_STREAM an early response asked for. Only after the response: queued together,
  // nghttp2 would drop the response's HEADERS for a stream already being reset.
  static int OnFrameSend(nghttp2_session* h2, const nghttp2_frame* frame, void* user) {
    if (frame->hd.type != NGHTTP2_HEADERS || (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) == 0) {
      return 0;
    }
    auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id));
    if (s != nullptr && s->reset_after_response && !s->request_done) {
      s->reset_after_response = false;
      nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_NO_ERROR);
    }
    return 0;
  }
  static int OnStreamClose(nghttp2_session* h2, int32_t stream_id, uint32_t error_code,
                           void* user) {
    auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(h2, stream_id));
    if (s != nullptr) {
      static_cast<Session*>(user)->CloseStream(s);
    }
    return 0;
  }
  // The response's DATA: the prefixed message, then trailers with grpc-status 0.
  static ssize_t ReadResponse(nghttp2_session* h2, int32_t stream_id, uint8_t* buf, size_t length,
                              uint32_t* data_flags, nghttp2_data_source* source, void* user) {
    auto* s = static_cast<Stream*>(source->ptr);
    const size_t n = std::min(length, s->response.size() - s->response_offset);
    std::memcpy(buf, s->response.data() + s->response_offset, n);
    s->response_offset += n;
    if (s->response_offset == s->response.size()) {
      *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
      static const nghttp2_nv kOkTrailers[] = {StaticHeader("grpc-status", "0")};
      if (nghttp2_submit_trailer(h2, stream_id, kOkTrailers, 1) != 0) {
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
      }
    }
    return static_cast<ssize_t>(n);
  }

 private:
  bool draining_streams() const { return head_ != nullptr; }

  // Reads now, on a later turn of the loop, instead of waiting for readiness: for when bytes may
  // already be buffered (the read cap was hit, or reading paused for a write). Asio's epoll
  // reactor is edge-triggered and drops an edge that comes while no wait is queued, so waiting
  // then could sleep until the client sends again.
  void ResumeReading() {
    if (closed_ || waiting_read_) {
      return;
    }
    waiting_read_ = true;
    asio::post(socket_.get_executor(), [self = shared_from_this()] {
      self->waiting_read_ = false;
      self->OnReadable();
    });
  }

  void WaitReadable() {
    if (closed_ || waiting_read_) {
      return;
    }
    waiting_read_ = true;
    socket_.async_wait(tcp::socket::wait_read, [self = shared_from_this()](error_code ec) {
      self->waiting_read_ = false;
      if (ec) {
        self->Close();
        return;
      }
      self->OnReadable();
    });
  }

  // One turn: read what the socket holds (bounded), let nghttp2 process it (calls are decided
  // inside, in its callbacks), then write everything that produced at once.
  void OnReadable() {
    if (closed_) {
      return;
    }
    worker_->now_ns = SteadyNowNs();
    last_read_ns_ = worker_->now_ns;
    size_t total = 0;
    bool fatal = false;
    bool drained = false;
    while (total < kMaxReadPerTurn) {
      error_code ec;
      const size_t n = socket_.read_some(asio::buffer(worker_->read_buffer), ec);
      if (ec == asio::error::would_block || ec == asio::error::try_again) {
        drained = true;
        break;
      }
      if (ec) {  // EOF or error: nothing more will arrive; nothing sent would be read
        Close();
        return;
      }
      total += n;
      const ssize_t used = nghttp2_session_mem_recv(h2_, worker_->read_buffer.data(), n);
      if (used < 0) {  // not HTTP/2, or a fatal protocol error
        fatal = true;
        break;
      }
      if (n < worker_->read_buffer.size()) {
        // Drained as of this read; bytes arriving from now on raise an edge that the wait
        // queued before this handler returns will see.
        drained = true;
        break;
      }
    }
    if (fatal) {
      // nghttp2 may have queued a GOAWAY: send it, then close.
      close_after_write_ = true;
    }
    Flush();
    if (!closed_ && !writing_) {
      if (drained || fatal) {
        WaitReadable();
      } else {
        ResumeReading();  // the read cap was hit: the rest after the other connections' turns
      }
    }
  }

  // Gathers what nghttp2 has to send and writes it: directly if the socket takes it all, else
  // with one asynchronous write (reading waits meanwhile; see kMaxWriteBytes).
  void Flush() {
    while (!closed_ && !writing_) {
      out_.clear();
      while (out_.size() < kMaxWriteBytes) {
        const uint8_t* data = nullptr;
        const ssize_t n = nghttp2_session_mem_send(h2_, &data);
        if (n < 0) {
          Close();
          return;
        }
        if (n == 0) {
          break;
        }
        out_.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
      }
      if (out_.empty()) {
        MaybeClose();
        return;
      }
      error_code ec;
      const size_t written = socket_.write_some(asio::buffer(out_), ec);
      if (ec && ec != asio::error::would_block && ec != asio::error::try_again) {
        Close();
        return;
      }
      if (written < out_.size()) {
        writing_ = true;
        asio::async_write(socket_, asio::buffer(out_.data() + written, out_.size() - written),
                          [self = shared_from_this()](error_code ec, size_t) {
                            self->writing_ = false;
                            if (ec) {
                              self->Close();
                              return;
                            }
                            self->Flush();
                            if (!self->closed_ && !self->writing_) {
                              self->ResumeReading();  // edges during the write were dropped
                            }
                          });
        return;
      }
    }
  }

  void MaybeClose() {
    if (close_after_write_ ||
        (nghttp2_session_want_read(h2_) == 0 && nghttp2_session_want_write(h2_) == 0)) {
      Close();
    }
  }

  void OpenStream(int32_t id) {
    auto* s = new Stream();
    s->id = id;
    s->opened_ns = worker_->now_ns;
    s->prev = tail_;
    (tail_ != nullptr ? tail_->next : head_) = s;
    tail_ = s;
    nghttp2_session_set_stream_user_data(h2_, id, s);
  }

  void CloseStream(Stream* s) {
    ReleaseBody(*s);
    (s->prev != nullptr ? s->prev->next : head_) = s->next;
    (s->next != nullptr ? s->next->prev : tail_) = s->prev;
    nghttp2_session_set_stream_user_data(h2_, s->id, nullptr);
    delete s;
  }

  void ReleaseBody(Stream& s) {
    body_bytes_ -= s.body.size();
    std::string().swap(s.body);
  }

  // Answers at once what the headers alone decide: not a gRPC call, or an unknown method.
  void CheckHeaders(Stream& s) {
    if (!s.post) {
      RespondStatus(s, absl::StatusCode::kInternal, "gRPC calls use POST", "405");
    } else if (!s.grpc_content_type) {
      RespondStatus(s, absl::StatusCode::kInternal,
                    "content-type must be application/grpc (this is a gRPC port)", "415");
    } else if (s.method == Method::kUnknown) {
      RespondStatus(s, absl::StatusCode::kUnimplemented,
                    absl::StrCat("unknown method ", s.path,
                                 " (served: ShouldRateLimit, grpc.health.v1.Health/Check)"));
    }
  }

  void AppendBody(Stream& s, const uint8_t* data, size_t len) {
    if (body_bytes_ + len > server_->body_budget_bytes()) {
      RespondStatus(s, absl::StatusCode::kResourceExhausted,
                    "too many request bytes buffered on this connection; retry later");
      return;
    }
    s.body.append(reinterpret_cast<const char*>(data), len);
    body_bytes_ += len;
    const std::optional<uint32_t> length = grpc_wire::DeclaredLength(s.body);
    if (!length.has_value()) {
      return;
    }
    const size_t max = server_->options().max_receive_bytes;
    if (*length > max) {
      CountBadRequest(s);
      RespondStatus(s, absl::StatusCode::kResourceExhausted,
                    grpc_wire::TooLargeMessage(*length, max));
    } else if (s.body.size() > grpc_wire::kPrefixBytes + *length) {
      CountBadRequest(s);
      RespondStatus(s, absl::StatusCode::kInternal,
                    "a unary call takes exactly one request message");
    } else if (s.body.capacity() < grpc_wire::kPrefixBytes + *length) {
      s.body.reserve(grpc_wire::kPrefixBytes + *length);
    }
  }

  void CountBadRequest(const Stream& s) {
    if (s.method == Method::kShouldRateLimit) {
      server_->service().CountMalformed(Frontend::kGrpc);
    }
  }

  void HandleRequest(Stream& s) {
    if (s.responded) {
      return;
    }
    absl::StatusOr<std::string_view> message =
        grpc_wire::ParseUnaryBody(s.body, server_->options().max_receive_bytes);
    if (!message.ok()) {
      CountBadRequest(s);
      RespondStatus(s, message.status().code(), common::StdView(message.status().message()));
      return;
    }
    if (s.method == Method::kShouldRateLimit) {
      request_.Clear();
      if (!request_.ParseFromArray(message->data(), static_cast<int>(message->size()))) {
        CountBadRequest(s);
        RespondStatus(s, absl::StatusCode::kInvalidArgument,
                      "the request is not a valid envoy.service.ratelimit.v3.RateLimitRequest");
        return;
      }
      ReleaseBody(s);
      if (server_->pool() != nullptr) {
        Offload(s);
        return;
      }
      response_.Clear();
      absl::Status decided =
          server_->service().ShouldRateLimit(CallContext{Frontend::kGrpc}, request_, &response_);
      if (!decided.ok()) {
        RespondStatus(s, decided.code(), common::StdView(decided.message()));
        return;
      }
      RespondMessage(s, response_);
    } else {
      health::HealthCheckRequest request;
      if (!request.ParseFromArray(message->data(), static_cast<int>(message->size()))) {
        RespondStatus(s, absl::StatusCode::kInvalidArgument,
                      "the request is not a valid grpc.health.v1.HealthCheckRequest");
        return;
      }
      if (!request.service().empty() && request.service() != kRlsServiceName) {
        RespondStatus(s, absl::StatusCode::kNotFound,
                      absl::StrCat("unknown service ", request.service().substr(0, 256)));
        return;
      }
      health::HealthCheckResponse response;
      response.set_status(server_->draining() ? health::HealthCheckResponse::NOT_SERVING
                                              : health::HealthCheckResponse::SERVING);
      RespondMessage(s, response);
    }
  }

  // Cluster mode: decides request_ for `s` on the worker pool, since a check may wait for its
  // key's owner and the io thread must not. The answer is posted back to this connection's
  // thread; if the stream is gone by then (reset by the client, connection closed), it is
  // dropped. A call that finds the pool's queue full is shed and decided here at once; one that
  // waited in the queue longer than max_queue_delay is shed on the worker (a shed check waits
  // for no other node).
  struct Call {
    rls::RateLimitRequest request;
    rls::RateLimitResponse response;
    absl::Status status;
  };
  void Offload(Stream& s) {
    auto call = std::make_shared<Call>();
    call->request.Swap(&request_);
    server_->pool()->SubmitOrShed(
        server_->max_queue_delay(), [this, self = shared_from_this(), call, id = s.id](bool shed) {
          call->status = server_->service().ShouldRateLimit(CallContext{Frontend::kGrpc, shed},
                                                            call->request, &call->response);
          asio::post(worker_->ioc, [self, call, id] { self->FinishCall(id, *call); });
        });
  }

  void FinishCall(int32_t id, const Call& call) {
    if (closed_) {
      return;
    }
    auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(h2_, id));
    if (s == nullptr || s->responded) {
      return;
    }
    Answer(*s, call);
    Flush();
  }

  void Answer(Stream& s, const Call& call) {
    if (!call.status.ok()) {
      RespondStatus(s, call.status.code(), common::StdView(call.status.message()));
    } else {
      RespondMessage(s, call.response);
    }
  }

  void RespondMessage(Stream& s, const google::protobuf::MessageLite& message) {
    s.responded = true;
    ReleaseBody(s);
    const size_t size = message.ByteSizeLong();
    s.response.clear();
    grpc_wire::AppendPrefix(static_cast<uint32_t>(size), s.response);
    s.response.resize(grpc_wire::kPrefixBytes + size);
    message.SerializeWithCachedSizesToArray(
        reinterpret_cast<uint8_t*>(s.response.data() + grpc_wire::kPrefixBytes));
    static const nghttp2_nv kHeaders[] = {StaticHeader(":status", "200"),
                                          StaticHeader("content-type", "application/grpc")};
    nghttp2_data_provider provider;
    provider.source.ptr = &s;
    provider.read_callback = &Session::ReadResponse;
    if (nghttp2_submit_response(h2_, s.id, kHeaders, 2, &provider) != 0) {
      nghttp2_submit_rst_stream(h2_, NGHTTP2_FLAG_NONE, s.id, NGHTTP2_INTERNAL_ERROR);
    }
  }

  // A Trailers-Only response: one HEADERS frame with the status, ending the stream. If the
  // request is still arriving, RST_STREAM(NO_ERROR) then asks the client to stop sending it
  // (RFC 9113 section 8.1).
  void RespondStatus(Stream& s, absl::StatusCode code, std::string_view message,
                     std::string_view http_status = "200") {
    s.responded = true;
    ReleaseBody(s);
    s.response = grpc_wire::PercentEncode(message);  // kept until the frame is sent
    const nghttp2_nv headers[] = {CopiedHeader(":status", http_status),
                                  StaticHeader("content-type", "application/grpc"),
                                  StaticHeader("grpc-status", grpc_wire::StatusCodeText(code)),
                                  CopiedHeader("grpc-message", s.response)};
    if (nghttp2_submit_response(h2_, s.id, headers, 4, nullptr) != 0) {
      nghttp2_submit_rst_stream(h2_, NGHTTP2_FLAG_NONE, s.id, NGHTTP2_INTERNAL_ERROR);
    } else {
      s.reset_after_response = !s.request_done;
    }
  }

  Socket socket_;
  Worker* const worker_;
  ServerImpl* const server_;
  // The client's address when connections per client are capped; "" otherwise.
  const std::string client_;
  nghttp2_session* h2_ = nullptr;
  bool closed_ = false;
  bool writing_ = false;
  bool waiting_read_ = false;
  bool close_after_write_ = false;
  bool goaway_sent_ = false;
  int64_t close_deadline_ns_ = 0;
  int64_t last_read_ns_ = 0;
  size_t body_bytes_ = 0;  // sum of the streams' buffered request bodies
  Stream* head_ = nullptr;
  Stream* tail_ = nullptr;
  std::string out_;
  // Reused from call to call (Clear keeps their memory).
  rls::RateLimitRequest request_;
  rls::RateLimitResponse response_;
};

absl::Status ServerImpl::Start() {
  if (started_) {
    return absl::FailedPreconditionError("the gRPC server was already started");
  }
  std::string host;
  uint16_t port = 0;
  if (absl::Status split = common::SplitHostPort(options_.address, host, port); !split.ok()) {
    return split;
  }
  error_code ec;
  tcp::endpoint endpoint;
  if (host.empty()) {
    endpoint = tcp::endpoint(tcp::v4(), port);
  } else {
    asio::ip::address address = asio::ip::make_address(host, ec);
    if (!ec) {
      endpoint = tcp::endpoint(address, port);
    } else {
      tcp::resolver resolver(workers_[0]->ioc);
      auto results = resolver.resolve(host, std::to_string(port), ec);
      if (ec || results.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("cannot resolve gRPC listen host \"", host, "\": ", ec.message()));
      }
      endpoint = results.begin()->endpoint();
    }
  }
  const auto unavailable = [&](std::string_view what) {
    return absl::UnavailableError(absl::StrCat("gRPC cannot ", common::AbslView(what), " ",
                                               options_.address, ": ", ec.message()));
  };
  acceptor_->open(endpoint.protocol(), ec);
  if (ec) {
    return unavailable("open a socket for");
  }
  acceptor_->set_option(asio::socket_base::reuse_address(true), ec);
  if (ec) {
    return unavailable("set SO_REUSEADDR for");
  }
  acceptor_->bind(endpoint, ec);
  if (!ec) {
    acceptor_->listen(asio::socket_base::max_listen_connections, ec);
  }
  if (ec) {
    return unavailable("listen on");
  }
  port_ = acceptor_->local_endpoint(ec).port();
  if (ec) {
    return unavailable("read the bound port of");
  }

  nghttp2_session_callbacks_new(&callbacks_);
  nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks_, &Session::OnBeginHeaders);
  nghttp2_session_callbacks_set_on_header_callback(callbacks_, &Session::OnHeader);
  nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks_, &Session::OnFrameRecv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks_, &Session::OnDataChunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(callbacks_, &Session::OnStreamClose);
  nghttp2_session_callbacks_set_on_frame_send_callback(callbacks_, &Session::OnFrameSend);
  nghttp2_option_new(&h2_option_);
  nghttp2_option_set_max_send_header_block_length(h2_option_, 64 * 1024);

  started_ = true;
  const int64_t now = SteadyNowNs();
  for (auto& worker : workers_) {
    worker->now_ns = now;
    worker->work.emplace(worker->ioc.get_executor());
  }
  // No thread runs yet, so the acceptor and timers may be used directly.
  Accept();
  for (auto& worker : workers_) {
    Sweep(worker.get());
    worker->thread = std::thread([w = worker.get()] { w->ioc.run(); });
  }
  return absl::OkStatus();
}

void ServerImpl::Accept() {
  Worker* worker = workers_[next_worker_].get();
  next_worker_ = (next_worker_ + 1) % workers_.size();
  acceptor_->async_accept(worker->ioc.get_executor(), [this, worker](error_code ec, Socket socket) {
    OnAccept(ec, std::move(socket), worker);
  });
}

void ServerImpl::OnAccept(error_code ec, Socket socket, Worker* worker) {
  if (!acceptor_->is_open() || draining()) {
    return;
  }
  if (ec) {
    // EMFILE and the like: try again shortly rather than spin.
    accept_backoff_->expires_after(kAcceptBackoff);
    accept_backoff_->async_wait([this](error_code wait_ec) {
      if (!wait_ec && acceptor_->is_open()) {
        Accept();
      }
    });
    return;
  }
  std::string client;
  if (client_caps_.enabled()) {
    const tcp::endpoint remote = socket.remote_endpoint(ec);
    client = ec ? "?" : remote.address().to_string();
  }
  if (open_connections_.load(std::memory_order_relaxed) >= options_.max_connections ||
      (!client.empty() && !client_caps_.Admit(client))) {
    metrics_->grpc.shed.fetch_add(1, std::memory_order_relaxed);
    socket.close(ec);
  } else {
    open_connections_.fetch_add(1, std::memory_order_relaxed);
    // The session lives on its worker's thread from its first instruction on.
    asio::post(worker->ioc,
               [worker, socket = std::move(socket), client = std::move(client)]() mutable {
                 std::make_shared<Session>(std::move(socket), worker, std::move(client))->Start();
               });
  }
  Accept();
}

void ServerImpl::Sweep(Worker* worker) {
  worker->now_ns = SteadyNowNs();
  // Sessions may close while swept: collect first.
  std::vector<std::shared_ptr<Session>> sessions;
  sessions.reserve(worker->sessions.size());
  for (Session* session : worker->sessions) {
    sessions.push_back(session->shared_from_this());
  }
  for (auto& session : sessions) {
    session->Sweep(worker->now_ns);
  }
  if (stopped_timers_.load(std::memory_order_acquire)) {
    return;
  }
  const int64_t interval_ns = std::clamp<int64_t>(
      std::min(idle_timeout_ns_, request_timeout_ns_) / 4, 10'000'000, 1'000'000'000);
  worker->sweep_timer.expires_after(std::chrono::nanoseconds(interval_ns));
  worker->sweep_timer.async_wait([this, worker](error_code ec) {
    if (!ec) {
      Sweep(worker);
    }
  });
}

template <typename Fn>
void ServerImpl::ForEachSession(Fn fn) {
  for (auto& worker : workers_) {
    absl::Notification done;
    asio::post(worker->ioc, [w = worker.get(), &fn, &done] {
      std::vector<std::shared_ptr<Session>> sessions;
      for (Session* session : w->sessions) {
        sessions.push_back(session->shared_from_this());
      }
      for (auto& session : sessions) {
        fn(*session);
      }
      done.Notify();
    });
    done.WaitForNotification();
  }
}

bool ServerImpl::AwaitNoSessions(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(
                                  +[](int* open) { return *open == 0; }, &open_sessions_),
                              timeout);
}

void ServerImpl::Shutdown(absl::Duration grace) {
  if (!started_ || stopped_) {
    if (!started_) {
      nghttp2_session_callbacks_del(callbacks_);
      nghttp2_option_del(h2_option_);
      callbacks_ = nullptr;
      h2_option_ = nullptr;
    }
    return;
  }
  stopped_ = true;
  draining_.store(true, std::memory_order_release);
  const absl::Time deadline = absl::Now() + grace;

  absl::Notification closed;
  asio::post(workers_[0]->ioc, [this, &closed] {
    error_code ignored;
    acceptor_->close(ignored);
    accept_backoff_->cancel();
    closed.Notify();
  });
  closed.WaitForNotification();

  // GOAWAY in two steps (RFC 9113 section 6.8): a notice that no new stream will be taken, then,
  // a moment later, the last stream processed. Calls up to it finish; then connections close.
  ForEachSession([](Session& s) { s.ShutdownNotice(); });
  absl::SleepFor(std::clamp(grace / 4, absl::ZeroDuration(), absl::Milliseconds(100)));
  ForEachSession([](Session& s) { s.GoAway(); });
  if (!AwaitNoSessions(deadline - absl::Now())) {
    ForEachSession([](Session& s) { s.Close(); });
    AwaitNoSessions(absl::Seconds(1));
  }
  stopped_timers_.store(true, std::memory_order_release);
  for (auto& worker : workers_) {
    asio::post(worker->ioc, [w = worker.get()] { w->sweep_timer.cancel(); });
    worker->work.reset();
    worker->ioc.stop();
  }
  for (auto& worker : workers_) {
    if (worker->thread.joinable()) {
      worker->thread.join();
    }
  }
  nghttp2_session_callbacks_del(callbacks_);
  nghttp2_option_del(h2_option_);
  callbacks_ = nullptr;
  h2_option_ = nullptr;
}

}  // namespace

class NativeGrpcServer::Impl : public ServerImpl {
 public:
  using ServerImpl::ServerImpl;
};

NativeGrpcServer::NativeGrpcServer(GrpcServerOptions options, RateLimitService* service,
                                   ServerMetrics* metrics)
    : impl_(std::make_unique<Impl>(std::move(options), service, metrics)) {}
NativeGrpcServer::~NativeGrpcServer() = default;
absl::Status NativeGrpcServer::Start() { return impl_->Start(); }
int NativeGrpcServer::port() const { return impl_->port(); }
void NativeGrpcServer::Shutdown(absl::Duration grace) { impl_->Shutdown(grace); }

}  // namespace floodgate::server
