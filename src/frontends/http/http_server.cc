#include "src/frontends/http/http_server.h"

#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
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
#include "src/common/json.h"
#include "src/common/text.h"
#include "src/frontends/http/http_handlers.h"
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

// What a request carries that the handlers read. Owned by the session and reused, so that the
// strings keep their capacity from one request to the next.
struct RequestData {
  http::verb method = http::verb::unknown;
  int version = 11;
  std::string target;
  std::string authorization;
  std::string body;
  bool expect_continue = false;
  // Framing checks that Beast leaves to us (RFC 9112): Host lines seen, whether one was not a
  // host, every Transfer-Encoding line joined, whether a header line was folded.
  int host_lines = 0;
  bool bad_host = false;
  std::string transfer_encoding;
  bool obs_fold = false;
  // Why the header section was refused (set with a parse error): answered with its status.
  absl::Status refusal;
  // The body limit for this request's route (RequestParser sets it from the request line).
  size_t body_limit = 0;
  bool config_write = false;  // PUT /v1/config/{domain}

  void Reset() {
    method = http::verb::unknown;
    version = 11;
    target.clear();
    authorization.clear();
    body.clear();
    expect_continue = false;
    host_lines = 0;
    bad_host = false;
    transfer_encoding.clear();
    obs_fold = false;
    body_limit = 0;
    config_write = false;
    refusal = absl::OkStatus();
  }
};

// Returns why a parsed header section must be refused, or OK. Beast already refuses a bad or
// conflicting Content-Length and Content-Length with chunked; these are the rest of RFC 9112's
// musts a proxy in front relies on.
absl::Status CheckHeaderSection(const RequestData& data) {
  if (data.obs_fold) {
    return absl::InvalidArgumentError(
        "a header line is continued on the next line (obs-fold); send each header on one line");
  }
  if (data.host_lines > 1) {
    return absl::InvalidArgumentError("more than one Host header");
  }
  if (data.host_lines == 0 && data.version >= 11) {
    return absl::InvalidArgumentError("an HTTP/1.1 request needs a Host header");
  }
  if (data.bad_host) {
    return absl::InvalidArgumentError("the Host header is not a host name or address");
  }
  if (!data.transfer_encoding.empty()) {
    if (data.version < 11) {
      return absl::InvalidArgumentError("Transfer-Encoding is not allowed in an HTTP/1.0 request");
    }
    return http_internal::CheckTransferEncoding(data.transfer_encoding);
  }
  return absl::OkStatus();
}

// A request parser that keeps only what RequestData holds: no header container, no allocation
// once the connection's strings are warm. Beast parsers parse one message; the session emplaces
// a fresh one (no heap) for every request.
//
// The body limit is the route's, set from the request line (before Beast checks a declared
// Content-Length against it): an admin config write (PUT /v1/config/{domain}) may carry as much
// YAML as a config file may hold (RequestLimits::max_config_body_bytes); every other body is
// held to max_body_bytes.
class RequestParser final : public http::basic_parser<true> {
 public:
  RequestParser(RequestData* data, const service::RequestLimits& limits)
      : data_(data), limits_(limits) {
    data_->body_limit = limits_.max_body_bytes;
    body_limit(data_->body_limit);
  }

 private:
  void on_request_impl(http::verb method, beast::string_view /*method_str*/,
                       beast::string_view target, int version, error_code& /*ec*/) override {
    data_->method = method;
    data_->version = version;
    data_->target.assign(target.data(), target.size());
    data_->config_write = method == http::verb::put && IsConfigDomain(data_->target);
    data_->body_limit =
        data_->config_write ? limits_.max_config_body_bytes : limits_.max_body_bytes;
    body_limit(data_->body_limit);
  }
  static bool IsConfigDomain(std::string_view target) {
    std::string_view path;
    std::string_view query;
    http_internal::SplitTarget(target, path, query);
    return http_internal::MatchPath(path).endpoint == http_internal::Endpoint::kConfigDomain;
  }
  void on_response_impl(int, beast::string_view, int, error_code& ec) override {
    ec = http::error::bad_method;  // unreachable for a request parser
  }
  void on_field_impl(http::field name, beast::string_view name_string, beast::string_view value,
                     error_code& /*ec*/) override {
    if (name == http::field::authorization) {
      data_->authorization.assign(value.data(), value.size());
    } else if (name == http::field::expect) {
      data_->expect_continue = beast::iequals(value, "100-continue");
    } else if (name == http::field::host) {
      ++data_->host_lines;
      data_->bad_host =
          data_->bad_host || !http_internal::IsValidHost({value.data(), value.size()});
    } else if (name == http::field::transfer_encoding) {
      if (!data_->transfer_encoding.empty()) {
        data_->transfer_encoding.append(", ");
      }
      data_->transfer_encoding.append(value.data(), value.size());
    }
    data_->obs_fold = data_->obs_fold || IsFolded(name_string);
  }
  void on_header_impl(error_code& ec) override {
    data_->refusal = CheckHeaderSection(*data_);
    if (!data_->refusal.ok()) {
      ec = http::error::bad_value;
    }
  }
  // Returns whether the field line that starts with `name` goes on past its first line. Beast
  // replaces an obs-fold with a space (allowed too), so the raw bytes are looked at: Beast
  // parses fields only once the whole header section, which ends with CRLF CRLF, is in one
  // buffer, and `name` points into it; so the scan to the line's LF stays in the buffer, and
  // one byte follows that LF.
  static bool IsFolded(beast::string_view name) {
    const char* p = name.data() + name.size();
    while (*p != '\n') {
      ++p;
    }
    return p[1] == ' ' || p[1] == '\t';
  }
  void on_body_init_impl(const boost::optional<std::uint64_t>& content_length,
                         error_code& /*ec*/) override {
    // The parser has already refused a length above the body limit.
    if (content_length.has_value()) {
      data_->body.reserve(static_cast<size_t>(*content_length));
    }
  }
  size_t on_body_impl(beast::string_view body, error_code& /*ec*/) override {
    data_->body.append(body.data(), body.size());
    return body.size();
  }
  void on_chunk_header_impl(std::uint64_t, beast::string_view, error_code&) override {}
  size_t on_chunk_body_impl(std::uint64_t, beast::string_view body, error_code&) override {
    data_->body.append(body.data(), body.size());
    return body.size();
  }
  void on_finish_impl(error_code& /*ec*/) override {}

  RequestData* const data_;
  const service::RequestLimits& limits_;
};

bool IsParseError(const error_code& ec) {
  return ec.category() == beast::http::make_error_code(http::error::bad_target).category();
}

// What a request that could not be read is answered (the connection then closes).
struct ReadRefusal {
  int status;
  std::string message;
};

// Returns the answer to a request whose read failed with `ec`, or nullopt when there is none to
// give (the client went away or stopped mid-request, the connection idled out or is closing).
std::optional<ReadRefusal> RefusalFor(const RequestData& request, const error_code& ec,
                                      size_t max_body_bytes, uint32_t max_header_bytes) {
  if (!request.refusal.ok()) {
    return ReadRefusal{http_internal::HttpStatusFor(request.refusal),
                       std::string(common::StdView(request.refusal.message()))};
  }
  if (ec == http::error::body_limit && request.config_write) {
    return ReadRefusal{413, absl::StrCat("config body is larger than ", request.body_limit,
                                         " bytes, the most a config file may hold")};
  }
  if (ec == http::error::body_limit) {
    return ReadRefusal{
        413, absl::StrCat("request body is larger than ",
                          request.body_limit != 0 ? request.body_limit : max_body_bytes, " bytes")};
  }
  if (ec == http::error::header_limit) {
    return ReadRefusal{
        431, absl::StrCat("request header section is larger than ", max_header_bytes, " bytes")};
  }
  if (IsParseError(ec) && ec != http::error::end_of_stream && ec != http::error::partial_message) {
    return ReadRefusal{400, absl::StrCat("malformed HTTP request: ", ec.message())};
  }
  return std::nullopt;
}

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
  std::unique_ptr<net::TlsContext> tls_;  // made by Start when options_.tls is set
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
  // With a worker pool (cluster mode, where a check may wait for its key's owner), rate limit
  // calls are answered on a worker, so that the io threads never block; the write is posted back
  // to the io thread. Only this chain touches the session meanwhile. A call that finds the
  // pool's queue full is shed and answered here at once; one that waited in the queue longer
  // than max_queue_delay is shed on the worker. A shed check waits for no other node.
  void HandleAndWrite() {
    common::WorkerPool* workers = server_->options().workers;
    if (workers == nullptr || !HttpHandlers::IsRateLimitCall(request_.target)) {
      HandleBatch(/*shed=*/false);
      Write();
      return;
    }
    workers->SubmitOrShed(server_->max_queue_delay(), [self = shared_from_this()](bool shed) {
      self->HandleBatch(shed);
      asio::post(self->stream_.get_executor(), [self] { self->Write(); });
    });
  }

  void HandleBatch(bool shed) {
    shed_ = shed;
    Handle();
    while (!close_after_write_ && buffer_.size() > 0 && out_.size() < kMaxBatchBytes &&
           ParseBuffered()) {
      Handle();
    }
    shed_ = false;
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

  // Answers request_: appends its response to out_.
  void Handle();
  // Returns whether the client is on this machine.
  bool FromLoopback();

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
  size_t linger_budget_ = 0;
  HttpScratch scratch_;  // per-connection storage for the handlers, reused across requests
};

void HttpSession::Handle() {
  // The read's deadline no longer applies; the write sets its own.
  deadline_ns_.store(kNoDeadline, std::memory_order_relaxed);
  const bool keep_alive = parser_->keep_alive() && !server_->draining();
  const Connection connection = !keep_alive             ? Connection::kClose
                                : request_.version < 11 ? Connection::kKeepAlive
                                                        : Connection::kDefault;
  close_after_write_ = !keep_alive;
  // Named: the FunctionRef in the request refers to it, so it must outlive the call.
  const auto from_loopback = [this] { return FromLoopback(); };
  const HttpRequest request{.method = request_.method,
                            .target = request_.target,
                            .authorization = request_.authorization,
                            .body = request_.body,
                            .from_loopback = from_loopback,
                            .shed = shed_,
                            .draining = server_->draining()};
  const HttpReply reply = server_->handlers().Handle(request, scratch_);
  http_internal::FormatResponse(reply.status, reply.content_type, reply.headers, reply.body,
                                connection, out_,
                                /*head_request=*/request_.method == http::verb::head);
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
