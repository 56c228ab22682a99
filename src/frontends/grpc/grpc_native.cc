#include "src/frontends/grpc/grpc_native.h"

#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/post.hpp>

#include "absl/strings/str_cat.h"
#include "envoy/service/ratelimit/v3/rls.pb.h"
#include "grpc/health/v1/health.pb.h"
#include "src/common/in_flight.h"
#include "src/common/text.h"
#include "src/common/worker_pool.h"
#include "src/frontends/grpc/grpc_wire.h"
#include "src/frontends/grpc/h2_session.h"
#include "src/net/listener.h"
#include "src/service/rate_limit_service.h"

namespace floodgate::frontends {
namespace {

namespace asio = boost::asio;
namespace rls = ::envoy::service::ratelimit::v3;
namespace health = ::grpc::health::v1;
using grpc_internal::CopiedHeader;
using grpc_internal::H2Session;
using grpc_internal::kHealthCheckPath;
using grpc_internal::kMinBodyBudgetBytes;
using grpc_internal::kShouldRateLimitPath;
using grpc_internal::Method;
using grpc_internal::StaticHeader;
using grpc_internal::Stream;
using grpc_internal::Worker;

constexpr std::string_view kRlsServiceName = "envoy.service.ratelimit.v3.RateLimitService";

int64_t ToNs(absl::Duration d) { return std::max<int64_t>(absl::ToInt64Nanoseconds(d), 1); }

// The server: a net::Listener with one io_context per io thread (net::IoModel::kPerThread);
// each connection is a Session on the thread the listener placed it on.
class ServerImpl final : public net::Server {
 public:
  ServerImpl(GrpcServerOptions options, service::RateLimitService* service,
             service::ServerMetrics* metrics);
  ~ServerImpl() override { Shutdown(absl::ZeroDuration()); }

  absl::Status Start() override;
  int port() const override { return listener_.port(); }
  void Shutdown(absl::Duration grace) override;

  // For sessions.
  const GrpcServerOptions& options() const { return options_; }
  service::RateLimitService& service() const { return *service_; }
  service::ServerMetrics& metrics() const { return *metrics_; }
  bool draining() const { return listener_.draining(); }
  size_t body_budget_bytes() const { return body_budget_bytes_; }
  // Cluster mode: the pool rate limit calls run on (null: they run on the io thread).
  common::WorkerPool* pool() const { return pool_.get(); }
  std::chrono::nanoseconds max_queue_delay() const { return max_queue_delay_; }
  // Whether a rate limit call may be suspended (the service's may_suspend()).
  bool may_suspend() const { return may_suspend_; }
  // Counts a rate limit call in flight. Returns false, counting nothing, when
  // max_checks_in_flight are already: the call is to be shed.
  bool BeginCheck() { return checks_in_flight_.TryBegin(); }
  void EndCheck() { checks_in_flight_.End(); }

 private:
  void OnAccept(net::Accepted accepted);

  const GrpcServerOptions options_;
  service::RateLimitService* const service_;
  service::ServerMetrics* const metrics_;
  const size_t body_budget_bytes_;
  const std::chrono::nanoseconds max_queue_delay_;
  const bool may_suspend_;
  common::InFlightLimit checks_in_flight_;  // across the io threads
  grpc_internal::H2Config h2_config_;
  bool started_ = false;
  bool stopped_ = false;

  // Before the listener: the sessions its contexts own when destroyed still find these.
  std::vector<std::unique_ptr<Worker>> workers_;  // one per io thread
  std::unique_ptr<net::TlsContext> tls_;          // made by Start when options_.tls is set
  net::Listener listener_;
  // After the listener: destroyed first, once Shutdown has stopped the io threads. Calls still
  // queued then run, and post their answers to io contexts that are stopped but alive.
  std::unique_ptr<common::WorkerPool> pool_;
};

// One HTTP/2 connection of the server: H2Session's plumbing, and the calls answered here.
class Session : public H2Session {
 public:
  Session(net::Socket socket, Worker* worker, net::ConnectionSlot slot,
          const grpc_internal::H2Config* config, net::TlsContext* tls, ServerImpl* server)
      : H2Session(std::move(socket), worker, std::move(slot), config, tls), server_(server) {}

 private:
  std::shared_ptr<Session> shared_from_this() {
    return std::static_pointer_cast<Session>(H2Session::shared_from_this());
  }

  // Answers at once what the headers alone decide: not a gRPC call, or an unknown method.
  void CheckHeaders(Stream& s) override {
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

  void AppendBody(Stream& s, const uint8_t* data, size_t len) override {
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
      server_->service().CountMalformed(service::Frontend::kGrpc);
    }
  }

  void HandleRequest(Stream& s) override {
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
        // protobuf refuses a string that is not UTF-8 as it parses (and logs it: see
        // common::RouteProtobufLog), so that case ends here too.
        RespondStatus(s, absl::StatusCode::kInvalidArgument,
                      "the request is not a valid envoy.service.ratelimit.v3.RateLimitRequest "
                      "(not protobuf, a field of the wrong type, or a domain, key or value "
                      "that is not valid UTF-8)");
        return;
      }
      ReleaseBody(s);
      if (server_->pool() != nullptr) {
        Offload(s);
        return;
      }
      if (server_->may_suspend()) {
        Decide(s);
        return;
      }
      response_.Clear();
      absl::Status decided = server_->service().ShouldRateLimit(
          service::CallContext{service::Frontend::kGrpc}, request_, &response_);
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
      const std::function<bool()>& ready = server_->options().ready;
      response.set_status(server_->draining() || (ready && !ready())
                              ? health::HealthCheckResponse::NOT_SERVING
                              : health::HealthCheckResponse::SERVING);
      RespondMessage(s, response);
    }
  }

  // Cluster mode: decides request_ for `s` without waiting. A check that needs its key's owner
  // is suspended while this thread goes on serving; its answer comes back on this thread (the
  // loop the service resumes it on is this connection's) and is written then. If the stream is
  // gone by then (reset by the client, connection closed), the answer is dropped. Past
  // max_checks_in_flight calls at once on this server, a call is shed (it waits for no other
  // node).
  void Decide(Stream& s) {
    const bool counted = server_->BeginCheck();
    auto response = std::make_unique<rls::RateLimitResponse>();
    rls::RateLimitResponse* out = response.get();  // the callback owns it from here on
    deciding_ = true;
    server_->service().ShouldRateLimitAsync(
        service::CallContext{service::Frontend::kGrpc, /*shed=*/!counted}, request_, out,
        worker_->ioc,
        [self = shared_from_this(), response = std::move(response), id = s.id,
         counted](absl::Status status) mutable {
          if (counted) {
            self->server_->EndCheck();
          }
          self->FinishCall(id, status, *response);
        });
    deciding_ = false;
  }

  // Writes the answer of the call on stream `id`, if it is still there. An answer that came
  // inline (from Decide, inside nghttp2's read callbacks) is sent by the read loop's flush.
  void FinishCall(int32_t id, const absl::Status& status, const rls::RateLimitResponse& response) {
    if (closed_) {
      return;
    }
    auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(h2_, id));
    if (s == nullptr || s->responded) {
      return;
    }
    if (!status.ok()) {
      RespondStatus(*s, status.code(), common::StdView(status.message()));
    } else {
      RespondMessage(*s, response);
    }
    if (!deciding_) {
      Flush();
    }
  }

  // With a worker pool (for a service whose calls block): decides request_ for `s` on the
  // pool, so that the io thread never blocks. The answer is posted back to this connection's
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
          call->status = server_->service().ShouldRateLimit(
              service::CallContext{service::Frontend::kGrpc, shed}, call->request, &call->response);
          asio::post(worker_->ioc, [self, call, id] { self->FinishPooledCall(id, *call); });
        });
  }

  void FinishPooledCall(int32_t id, const Call& call) {
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

  ServerImpl* const server_;
  bool deciding_ = false;  // inside Decide's call to the service
  // Reused from call to call (Clear keeps their memory).
  rls::RateLimitRequest request_;
  rls::RateLimitResponse response_;
};

ServerImpl::ServerImpl(GrpcServerOptions options, service::RateLimitService* service,
                       service::ServerMetrics* metrics)
    : options_(std::move(options)),
      service_(service),
      metrics_(metrics),
      body_budget_bytes_(std::max(kMinBodyBudgetBytes, 2 * options_.max_receive_bytes + 64)),
      max_queue_delay_(absl::ToChronoNanoseconds(options_.max_queue_delay)),
      may_suspend_(service->may_suspend()),
      checks_in_flight_(options_.max_checks_in_flight),
      listener_(
          [&] {
            net::ListenerOptions listener;
            listener.address = options_.address;
            listener.name = "gRPC";
            listener.protocol = "gRPC";
            listener.io_model = net::IoModel::kPerThread;
            listener.io_threads = options_.io_threads;
            listener.max_connections = options_.max_connections;
            listener.max_connections_per_client = options_.max_connections_per_client;
            listener.sweep_interval =
                net::SweepInterval(std::min(options_.idle_timeout, options_.request_timeout));
            listener.drain_notice = true;  // GOAWAY in two steps
            listener.refused = &metrics_->grpc.shed;
            listener.clock = options_.clock;
            return listener;
          }(),
          [this](net::Accepted accepted) { OnAccept(std::move(accepted)); }) {
  h2_config_.max_concurrent_streams = options_.max_concurrent_streams;
  h2_config_.idle_timeout_ns = ToNs(options_.idle_timeout);
  h2_config_.request_timeout_ns = ToNs(options_.request_timeout);
  h2_config_.clock = options_.clock;
  for (int i = 0; i < listener_.io().contexts(); ++i) {
    workers_.push_back(std::make_unique<Worker>(listener_.io().context(i)));
  }
  if (options_.worker_threads > 0) {
    pool_ = std::make_unique<common::WorkerPool>(options_.worker_threads, options_.max_queued);
  }
}

absl::Status ServerImpl::Start() {
  if (started_) {
    return absl::FailedPreconditionError("the gRPC server was already started");
  }
  if (options_.tls.has_value() && tls_ == nullptr) {
    // gRPC clients offer ALPN "h2" (and require it); docs/tls.md.
    absl::StatusOr<std::unique_ptr<net::TlsContext>> tls =
        net::TlsContext::New(*options_.tls, "h2");
    if (!tls.ok()) {
      return tls.status();
    }
    tls_ = *std::move(tls);
  }
  if (h2_config_.callbacks == nullptr) {
    nghttp2_option* option = nullptr;
    nghttp2_option_new(&option);
    nghttp2_option_set_max_send_header_block_length(option, 64 * 1024);
    h2_config_.callbacks = H2Session::NewCallbacks();
    h2_config_.option = option;
  }
  absl::Status started = listener_.Start();
  if (!started.ok()) {
    return started;
  }
  started_ = true;
  return absl::OkStatus();
}

// On the connection's io thread.
void ServerImpl::OnAccept(net::Accepted accepted) {
  Worker* worker = workers_[accepted.slot.io_thread()].get();
  std::make_shared<Session>(std::move(accepted.socket), worker, std::move(accepted.slot),
                            &h2_config_, tls_.get(), this)
      ->Start(draining());
}

void ServerImpl::Shutdown(absl::Duration grace) {
  if (started_ && !stopped_) {
    stopped_ = true;
    // Health checks answer NOT_SERVING from here on; the listener sends every connection a
    // GOAWAY notice, then the GOAWAY proper, and waits for the calls up to it.
    listener_.Shutdown(grace);
  }
  // The io threads are stopped (or never ran): no session uses these any more.
  nghttp2_session_callbacks_del(const_cast<nghttp2_session_callbacks*>(h2_config_.callbacks));
  nghttp2_option_del(const_cast<nghttp2_option*>(h2_config_.option));
  h2_config_.callbacks = nullptr;
  h2_config_.option = nullptr;
}

}  // namespace

std::unique_ptr<net::Server> NewNativeGrpcServer(GrpcServerOptions options,
                                                 service::RateLimitService* service,
                                                 service::ServerMetrics* metrics) {
  return std::make_unique<ServerImpl>(std::move(options), service, metrics);
}

}  // namespace floodgate::frontends
