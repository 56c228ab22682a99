#include "src/frontends/http/http_server.h"

#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/buffer.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/socket_base.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/bind_handler.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "src/common/host_port.h"
#include "src/common/in_flight.h"
#include "src/common/json.h"
#include "src/common/text.h"
#include "src/frontends/http/http_handlers.h"
#include "src/frontends/http/http_request.h"
#include "src/frontends/http/http_util.h"
#include "src/net/listener.h"
#include "src/net/tls.h"

namespace floodgate::frontends {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using beast::error_code;
using http_internal::Connection;
using http_internal::Endpoint;
using http_internal::ReadRefusal;
using http_internal::RefusalFor;
using http_internal::RequestData;
using http_internal::RequestParser;

constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";

// After an error response the server reads and drops what the client still sends, for at most
// this long and this many bytes, so that closing does not reset the connection before the client
// has read the response (nginx's lingering close).
constexpr int64_t kLingerTimeoutNs = 2'000'000'000;
constexpr size_t kMinLingerBytes = 1 << 20;
constexpr int64_t kNoDeadline = net::kNoDeadline;

// Sessions run on the io_context's own executor type: no strand (a connection has one chain of
// operations at a time) and no type-erased executor on the hot path. Their bytes go through a
// net::Stream: the socket, or TLS over it.
using Socket = net::Socket;

class HttpSession;

// The server (NewHttpServer returns one).
//
// Threads: `options.threads` threads run one io_context (net::IoModel::kShared); the listener
// (net/listener.h) accepts, caps, sweeps idle timeouts and drains. Every connection is an
// HttpSession with a single chain of operations, so its own fields need no lock. Other threads
// touch a session only through its net::Connection methods, under the listener's registry lock,
// and those only shut its socket down, which makes its pending operation fail on its own thread.
class HttpServerImpl final : public net::Server {
 public:
  HttpServerImpl(HttpServerOptions options, service::RateLimitService* service,
                 service::AdminApi* admin, service::ServerMetrics* metrics)
      : options_(std::move(options)),
        service_(service),
        handlers_(options_.admin_token, service, admin, &metrics->http),
        metrics_(metrics),
        idle_timeout_ns_(std::max<int64_t>(absl::ToInt64Nanoseconds(options_.idle_timeout), 1)),
        max_queue_delay_(absl::ToChronoNanoseconds(options_.max_queue_delay)),
        may_suspend_(service->may_suspend()),
        checks_in_flight_(options_.max_checks_in_flight),
        listener_(MakeListenerOptions(options_, metrics_),
                  [this](net::Accepted accepted) { OnAccept(std::move(accepted)); }) {}

  ~HttpServerImpl() override { Shutdown(absl::ZeroDuration()); }

  absl::Status Start() override;
  int port() const override { return listener_.port(); }
  void Shutdown(absl::Duration grace) override { listener_.Shutdown(grace); }

  // For sessions.
  const HttpServerOptions& options() const { return options_; }
  // Null: plain HTTP.
  net::TlsContext* tls() const { return tls_.get(); }
  const HttpHandlers& handlers() const { return handlers_; }
  const service::RequestLimits& limits() const { return service_->limits(); }
  service::ServerMetrics* metrics() const { return metrics_; }
  bool draining() const { return listener_.draining(); }
  // Returns the deadline for an operation starting now (the listener's sweeper keeps the clock,
  // so that sessions do not read it for this).
  int64_t DeadlineNs(int64_t timeout_ns) const {
    const int64_t now = listener_.now_ns();
    return timeout_ns >= kNoDeadline - now ? kNoDeadline : now + timeout_ns;  // saturate
  }
  int64_t idle_timeout_ns() const { return idle_timeout_ns_; }
  std::chrono::nanoseconds max_queue_delay() const { return max_queue_delay_; }
  // Whether a rate limit call may be suspended (the service's may_suspend()).
  bool may_suspend() const { return may_suspend_; }
  // Counts a rate limit call in flight. Returns false, counting nothing, when
  // max_checks_in_flight are already: the call is to be shed.
  bool BeginCheck() { return checks_in_flight_.TryBegin(); }
  void EndCheck() { checks_in_flight_.End(); }

 private:
  static net::ListenerOptions MakeListenerOptions(const HttpServerOptions& options,
                                                  service::ServerMetrics* metrics);
  // Starts a session for an admitted connection (on the listener's strand).
  void OnAccept(net::Accepted accepted);

  const HttpServerOptions options_;
  service::RateLimitService* const service_;
  const HttpHandlers handlers_;
  service::ServerMetrics* const metrics_;
  const int64_t idle_timeout_ns_;
  const std::chrono::nanoseconds max_queue_delay_;
  const bool may_suspend_;
  common::InFlightLimit checks_in_flight_;  // across the io threads
  std::unique_ptr<net::TlsContext> tls_;    // made by Start when options_.tls is set
  bool started_ = false;
  // Last: its io threads (and the sessions their context owns) go first.
  net::Listener listener_;
};

// One connection: a chain of operations (read header, [100 Continue], read body, handle, write,
// read header...), each started by the completion of the one before, so that its fields need no
// lock. The chain owns the session through shared_ptr; the session ends when the chain stops.
class HttpSession : public net::Connection, public std::enable_shared_from_this<HttpSession> {
 public:
  // In this class `Connection` is the response's Connection header, not the base class.
  using Connection = http_internal::Connection;

  HttpSession(Socket socket, HttpServerImpl* server, net::ConnectionSlot slot)
      : stream_(std::move(socket), server->tls()),
        fd_(stream_.socket().native_handle()),
        server_(server),
        slot_(std::move(slot)) {
    server_->metrics()->http_connections.fetch_add(1, std::memory_order_relaxed);
  }

  ~HttpSession() override {
    // First: after this no other thread looks at the session.
    slot_.Release();
    server_->metrics()->http_connections.fetch_sub(1, std::memory_order_relaxed);
  }

  void Start() {
    slot_.Register(this);
    if (!stream_.is_tls()) {
      ReadHeader();
      return;
    }
    // The handshake is read under the idle timeout like a request header, and counts as idle
    // for a drain: a client that connects and sends nothing, or dribbles its ClientHello, is
    // closed by the sweeper. A failed handshake (no or an untrusted client certificate, plain
    // HTTP, not TLS 1.2+) closes the connection; OpenSSL has sent the client its alert.
    idle_.store(true, std::memory_order_release);
    SetDeadline(server_->idle_timeout_ns());
    stream_.AsyncHandshake([self = shared_from_this()](error_code ec) {
      self->idle_.store(false, std::memory_order_release);
      if (ec) {
        self->CloseNow();
        return;
      }
      self->ReadHeader();
    });
  }

  // Thread-safe. Shuts the socket down if the connection is waiting for a request, which ends
  // the session; a request in progress finishes and its response closes the connection.
  void Drain() override {
    if (idle_.load(std::memory_order_acquire)) {
      ShutdownSocket();
    }
  }

  // Thread-safe. Shuts the socket down (both ways): the pending operation fails on its own
  // thread and the session ends. The socket stays open until then, so `fd_` cannot be reused.
  void ShutdownSocket() override {
    absl::MutexLock lock(&close_mu_);
    if (!closed_) {
      ::shutdown(fd_, SHUT_RDWR);
    }
  }

  int64_t deadline_ns() const override { return deadline_ns_.load(std::memory_order_relaxed); }

 private:
  void SetDeadline(int64_t timeout_ns) {
    deadline_ns_.store(server_->DeadlineNs(timeout_ns), std::memory_order_relaxed);
  }

  void ReadHeader() {
    if (server_->draining() && buffer_.size() == 0) {
      CloseNow();
      return;
    }
    request_.Reset();
    parser_.emplace(&request_, server_->limits());
    parser_->header_limit(server_->options().max_header_bytes);
    // Idle: between requests with nothing of the next one read yet (pipelined bytes count).
    idle_.store(buffer_.size() == 0, std::memory_order_release);
    SetDeadline(server_->idle_timeout_ns());
    http::async_read_header(stream_, buffer_, *parser_,
                            beast::bind_front_handler(&HttpSession::OnHeader, shared_from_this()));
  }

  void OnHeader(error_code ec, size_t /*bytes*/) {
    idle_.store(false, std::memory_order_release);
    if (ec) {
      OnReadError(ec);
      return;
    }
    if (parser_->is_done()) {
      HandleAndWrite();
      return;
    }
    if (request_.expect_continue && request_.version >= 11) {
      SetDeadline(server_->idle_timeout_ns());
      asio::async_write(stream_, asio::buffer(kContinue.data(), kContinue.size()),
                        [self = shared_from_this()](error_code ec, size_t) {
                          if (ec) {
                            self->CloseNow();
                            return;
                          }
                          self->ReadBody();
                        });
      return;
    }
    ReadBody();
  }

  void ReadBody() {
    SetDeadline(server_->idle_timeout_ns());
    http::async_read(stream_, buffer_, *parser_,
                     beast::bind_front_handler(&HttpSession::OnBody, shared_from_this()));
  }

  void OnBody(error_code ec, size_t /*bytes*/) {
    if (ec) {
      OnReadError(ec);
      return;
    }
    HandleAndWrite();
  }

  // Answers the request just read, then every complete request the client has already
  // pipelined behind it (those bytes are in buffer_), and writes all the answers with one send.
  // Under load a pipelining client then costs one read and one write per batch, not per request.
  //
  // In a cluster a check may wait for its key's owner. It is then suspended, not waited for:
  // the io thread goes on serving other connections, and the answer resumes this batch on the
  // io context (AnswerBatch). Requests behind a suspended one are parsed and answered only once
  // it is answered, so answers keep their order. Past max_checks_in_flight rate limit calls at
  // once the server sheds: a shed check waits for no other node.
  //
  // With a worker pool (for a store that blocks in Apply), rate limit calls are answered on a
  // worker instead and the write is posted back to the io thread. Only this chain touches the
  // session meanwhile. A call that finds the pool's queue full is shed and answered here at
  // once; one that waited in the queue longer than max_queue_delay is shed on the worker.
  void HandleAndWrite() {
    common::WorkerPool* workers = server_->options().workers;
    if (workers == nullptr || !HttpHandlers::IsRateLimitCall(request_.target)) {
      AnswerBatch(/*have_request=*/true);
      return;
    }
    workers->SubmitOrShed(server_->max_queue_delay(), [self = shared_from_this()](bool shed) {
      self->HandleBatch(shed);
      asio::post(self->stream_.get_executor(), [self] { self->Write(); });
    });
  }

  // The worker pool's batch: answers every request on the worker, blocking while it decides.
  void HandleBatch(bool shed) {
    shed_ = shed;
    Handle();
    while (!close_after_write_ && buffer_.size() > 0 && out_.size() < kMaxBatchBytes &&
           ParseBuffered()) {
      Handle();
    }
    shed_ = false;
  }

  // Answers request_ (when `have_request`) and the requests pipelined behind it, then writes;
  // returns early when an answer is suspended (OnReply calls it again to go on).
  void AnswerBatch(bool have_request) {
    while (have_request || (!close_after_write_ && buffer_.size() > 0 &&
                            out_.size() < kMaxBatchBytes && ParseBuffered())) {
      have_request = false;
      if (!server_->may_suspend()) {
        Handle();  // a single node: every answer is ready at once
      } else if (!AnswerOrSuspend()) {
        return;
      }
    }
    Write();
  }

  // Answers request_ through HttpHandlers::HandleAsync. Returns true when the answer is in
  // out_, false when the call is suspended. The answer may come on another io thread of the
  // shared context while this one is still in here: whichever of the two (this call returning,
  // OnReply) comes second goes on with the batch.
  bool AnswerOrSuspend() {
    const bool rate_limit_call = HttpHandlers::IsRateLimitCall(request_.target);
    shed_ = rate_limit_call && !server_->BeginCheck();
    counted_check_ = rate_limit_call && !shed_;
    call_state_.store(kCalling, std::memory_order_relaxed);
    const HttpRequest request = BeginAnswer();
    server_->handlers().HandleAsync(
        request, scratch_, stream_.get_executor().context(),
        [self = shared_from_this()](HttpReply reply) { self->OnReply(std::move(reply)); });
    shed_ = false;
    if (call_state_.exchange(kReturned, std::memory_order_acq_rel) != kReplied) {
      return false;  // suspended: OnReply resumes the batch
    }
    FinishAnswer();
    return true;
  }

  void OnReply(HttpReply reply) {
    reply_ = std::move(reply);
    if (call_state_.exchange(kReplied, std::memory_order_acq_rel) == kReturned) {
      // The call was suspended and AnswerOrSuspend has returned: resume the batch here.
      FinishAnswer();
      AnswerBatch(/*have_request=*/false);
    }
  }

  // Frames the reply OnReply got.
  void FinishAnswer() {
    if (counted_check_) {
      server_->EndCheck();
      counted_check_ = false;
    }
    FormatReply(reply_);
  }

  // Parses one whole request from buffer_ into request_ and consumes it. Returns false, and
  // consumes nothing, when buffer_ does not hold a whole valid request: the normal read path
  // then parses those bytes again from the start (and reports any error in order).
  bool ParseBuffered() {
    request_.Reset();
    parser_.emplace(&request_, server_->limits());
    parser_->header_limit(server_->options().max_header_bytes);
    parser_->eager(true);
    error_code ec;
    const size_t used = parser_->put(buffer_.data(), ec);
    if (ec || !parser_->is_done()) {
      return false;
    }
    buffer_.consume(used);
    return true;
  }

  void OnReadError(const error_code& ec) {
    if (std::optional<ReadRefusal> refusal = RefusalFor(
            request_, ec, server_->limits().max_body_bytes, server_->options().max_header_bytes)) {
      RespondAndClose(refusal->status, refusal->message);
    } else {
      // The client went away, the connection idled out, or the server is closing it.
      CloseNow();
    }
  }

  // Answers a request that could not be read and closes the connection after lingering.
  void RespondAndClose(int status, std::string_view message) {
    service::ServerMetrics* metrics = server_->metrics();
    metrics->http.requests.fetch_add(1, std::memory_order_relaxed);
    metrics->http.bad_requests.fetch_add(1, std::memory_order_relaxed);
    http_internal::FormatResponse(status, kJsonType, {}, common::ErrorJson(message),
                                  Connection::kClose, out_,
                                  /*head_request=*/request_.method == http::verb::head);
    close_after_write_ = true;
    linger_after_write_ = true;
    Write();
  }

  // Answers request_ and appends its response to out_, blocking until it is decided.
  void Handle();
  // Sets up the answer to request_ (connection handling, deadline) and returns the request as
  // the handlers see it.
  HttpRequest BeginAnswer();
  // Appends `reply` to out_, framed for request_.
  void FormatReply(const HttpReply& reply);
  // Returns whether the client is on this machine.
  bool FromLoopback();
  // Returns the client's address, "ip:port" ("[ip]:port" for IPv6), for the admin audit log.
  std::string ClientAddress();

  void Write() {
    SetDeadline(server_->idle_timeout_ns());
    asio::async_write(stream_, asio::buffer(out_),
                      beast::bind_front_handler(&HttpSession::OnWrite, shared_from_this()));
  }

  void OnWrite(error_code ec, size_t /*bytes*/) {
    if (ec) {
      CloseNow();
      return;
    }
    if (linger_after_write_) {
      LingeringClose();
      return;
    }
    if (close_after_write_) {
      error_code ignored;
      stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
      CloseNow();
      return;
    }
    // A large answer (/metrics) must not pin its memory for the life of the connection.
    if (out_.capacity() > kMaxRetainedBytes) {
      std::string().swap(out_);
    }
    out_.clear();
    ReadHeader();
  }

  void LingeringClose() {
    error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    buffer_.consume(buffer_.size());
    linger_budget_ = std::max(kMinLingerBytes, 2 * request_.body_limit);
    SetDeadline(std::min(kLingerTimeoutNs, server_->idle_timeout_ns()));
    DiscardInput();
  }

  void DiscardInput() {
    stream_.async_read_some(buffer_.prepare(16 * 1024),
                            [self = shared_from_this()](error_code ec, size_t bytes) {
                              if (ec || bytes >= self->linger_budget_) {
                                self->CloseNow();
                                return;
                              }
                              self->linger_budget_ -= bytes;
                              self->DiscardInput();
                            });
  }

  void CloseNow() {
    absl::MutexLock lock(&close_mu_);
    if (closed_) {
      return;
    }
    closed_ = true;
    deadline_ns_.store(kNoDeadline, std::memory_order_relaxed);
    error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.socket().close(ignored);
  }

  static constexpr size_t kMaxRetainedBytes = 256 * 1024;
  // Pipelined requests are answered together until their answers reach this size.
  static constexpr size_t kMaxBatchBytes = 64 * 1024;

  net::Stream stream_;
  const int fd_;
  HttpServerImpl* const server_;
  // Its place in the listener (registration, caps); released first in the destructor.
  net::ConnectionSlot slot_;
  absl::Mutex close_mu_;
  bool closed_ ABSL_GUARDED_BY(close_mu_) = false;
  std::atomic<bool> idle_{false};
  std::atomic<int64_t> deadline_ns_{kNoDeadline};

  beast::flat_buffer buffer_;
  RequestData request_;
  std::optional<RequestParser> parser_;
  std::string out_;  // the serialized responses not yet written
  bool close_after_write_ = false;
  bool linger_after_write_ = false;
  bool shed_ = false;  // the checks being answered are shed (see HandleAndWrite)
  Connection connection_ = Connection::kDefault;  // of the request being answered
  // AnswerOrSuspend's hand-over with OnReply, and the reply it passes.
  static constexpr uint8_t kCalling = 0;
  static constexpr uint8_t kReturned = 1;
  static constexpr uint8_t kReplied = 2;
  std::atomic<uint8_t> call_state_{kCalling};
  HttpReply reply_;
  bool counted_check_ = false;  // the call being answered counts in max_checks_in_flight
  // HttpRequest::from_loopback for every request of this connection.
  const std::function<bool()> from_loopback_ = [this] { return FromLoopback(); };
  // HttpRequest::client_address.
  const std::function<std::string()> client_address_ = [this] { return ClientAddress(); };
  size_t linger_budget_ = 0;
  HttpScratch scratch_;  // per-connection storage for the handlers, reused across requests
};

HttpRequest HttpSession::BeginAnswer() {
  // The read's deadline no longer applies; the write sets its own. A suspended call is bounded
  // by the store (the peer transport's forward timeout), not by this session.
  deadline_ns_.store(kNoDeadline, std::memory_order_relaxed);
  const bool keep_alive = parser_->keep_alive() && !server_->draining();
  connection_ = !keep_alive             ? Connection::kClose
                : request_.version < 11 ? Connection::kKeepAlive
                                        : Connection::kDefault;
  close_after_write_ = !keep_alive;
  return HttpRequest{.method = request_.method,
                     .target = request_.target,
                     .authorization = request_.authorization,
                     .body = request_.body,
                     .from_loopback = from_loopback_,
                     .shed = shed_,
                     .draining = server_->draining(),
                     .ready = &server_->options().ready,
                     .client_address = &client_address_};
}

void HttpSession::FormatReply(const HttpReply& reply) {
  http_internal::FormatResponse(reply.status, reply.content_type, reply.headers, reply.body,
                                connection_, out_,
                                /*head_request=*/request_.method == http::verb::head);
}

void HttpSession::Handle() {
  const HttpRequest request = BeginAnswer();
  FormatReply(server_->handlers().Handle(request, scratch_));
}

bool HttpSession::FromLoopback() {
  boost::system::error_code ec;
  const tcp::endpoint peer = stream_.socket().remote_endpoint(ec);
  asio::ip::address address = peer.address();
  if (address.is_v6() && address.to_v6().is_v4_mapped()) {
    address = asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6());
  }
  return !ec && address.is_loopback();
}

std::string HttpSession::ClientAddress() {
  boost::system::error_code ec;
  const tcp::endpoint peer = stream_.socket().remote_endpoint(ec);
  if (ec) {
    return "unknown";
  }
  asio::ip::address address = peer.address();
  if (address.is_v6() && address.to_v6().is_v4_mapped()) {
    address = asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6());
  }
  return address.is_v6() ? absl::StrCat("[", address.to_string(), "]:", peer.port())
                         : absl::StrCat(address.to_string(), ":", peer.port());
}

net::ListenerOptions HttpServerImpl::MakeListenerOptions(const HttpServerOptions& options,
                                                         service::ServerMetrics* metrics) {
  net::ListenerOptions listener;
  listener.address = options.address;
  listener.name = "HTTP server";
  listener.protocol = "HTTP";
  listener.io_model = net::IoModel::kShared;
  listener.io_threads = options.threads;
  listener.max_connections = options.max_connections;
  listener.max_connections_per_client = options.max_connections_per_client;
  listener.sweep_interval = net::SweepInterval(options.idle_timeout);
  listener.refused = &metrics->http.shed;
  return listener;
}

absl::Status HttpServerImpl::Start() {
  if (started_) {
    return absl::FailedPreconditionError("the HTTP server was already started");
  }
  if (options_.tls.has_value() && tls_ == nullptr) {
    absl::StatusOr<std::unique_ptr<net::TlsContext>> tls =
        net::TlsContext::New(*options_.tls, "http/1.1");
    if (!tls.ok()) {
      return tls.status();
    }
    tls_ = *std::move(tls);
  }
  absl::Status started = listener_.Start();
  started_ = started.ok();
  return started;
}

void HttpServerImpl::OnAccept(net::Accepted accepted) {
  error_code ec;
  accepted.socket.set_option(tcp::no_delay(true), ec);
  std::make_shared<HttpSession>(std::move(accepted.socket), this, std::move(accepted.slot))
      ->Start();
}

}  // namespace

std::unique_ptr<net::Server> NewHttpServer(HttpServerOptions options,
                                           service::RateLimitService* service,
                                           service::AdminApi* admin,
                                           service::ServerMetrics* metrics) {
  return std::make_unique<HttpServerImpl>(std::move(options), service, admin, metrics);
}

namespace http_internal {

void AnswerRequestBytes(std::string_view bytes, const HttpHandlers& handlers, size_t max_body_bytes,
                        uint32_t max_header_bytes, std::string& out) {
  RequestData data;
  HttpScratch scratch;
  const auto from_loopback = [] { return false; };
  service::RequestLimits limits;
  limits.max_body_bytes = max_body_bytes;
  while (!bytes.empty()) {
    // One request, parsed as HttpSession parses it: the same parser, limits and header checks.
    data.Reset();
    RequestParser parser(&data, limits);
    parser.header_limit(max_header_bytes);
    parser.eager(true);
    error_code ec;
    while (!parser.is_done() && !ec) {
      const size_t used = parser.put(asio::buffer(bytes.data(), bytes.size()), ec);
      bytes.remove_prefix(used);
      if (ec == http::error::need_more || (!ec && used == 0 && !parser.is_done())) {
        ec = {};
        if (used == 0) {
          parser.put_eof(ec);  // every byte has arrived: the request ends here or nowhere
          if (!ec && !parser.is_done()) {
            ec = http::error::partial_message;
          }
        }
      }
    }
    if (ec) {
      if (std::optional<ReadRefusal> refusal =
              RefusalFor(data, ec, max_body_bytes, max_header_bytes)) {
        FormatResponse(refusal->status, kJsonType, {}, common::ErrorJson(refusal->message),
                       Connection::kClose, out, /*head_request=*/data.method == http::verb::head);
      }
      return;
    }
    const bool keep_alive = parser.keep_alive();
    const HttpRequest request{.method = data.method,
                              .target = data.target,
                              .authorization = data.authorization,
                              .body = data.body,
                              .from_loopback = from_loopback};
    const HttpReply reply = handlers.Handle(request, scratch);
    FormatResponse(reply.status, reply.content_type, reply.headers, reply.body,
                   !keep_alive         ? Connection::kClose
                   : data.version < 11 ? Connection::kKeepAlive
                                       : Connection::kDefault,
                   out, /*head_request=*/data.method == http::verb::head);
    if (!keep_alive) {
      return;
    }
  }
}

}  // namespace http_internal

}  // namespace floodgate::frontends
