#include "src/frontends/grpc/grpc_service.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>

#include "absl/strings/str_cat.h"
#include "envoy/service/ratelimit/v3/rls.grpc.pb.h"
#include "src/common/text.h"
#include "src/common/worker_pool.h"
#include "src/frontends/grpc/grpc_native.h"
#include "src/service/rate_limit_service.h"

namespace floodgate::frontends {
namespace {

namespace rls = ::envoy::service::ratelimit::v3;

grpc::Status ToGrpc(const absl::Status& status) {
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

// Returns `d` in milliseconds for a channel argument: at least 1, at most INT_MAX.
int ClampedMs(absl::Duration d) {
  return static_cast<int>(
      std::clamp<int64_t>(absl::ToInt64Milliseconds(d), 1, std::numeric_limits<int>::max()));
}

// Callback API: on a single node the decision is made inline on gRPC's thread, with no queue
// of our own; in cluster mode on a worker pool (see GrpcServerOptions::worker_threads).
class RlsService final : public rls::RateLimitService::CallbackService {
 public:
  RlsService(service::RateLimitService* service, int worker_threads, size_t max_queued,
             absl::Duration max_queue_delay)
      : service_(service), max_queue_delay_(absl::ToChronoNanoseconds(max_queue_delay)) {
    if (worker_threads > 0) {
      pool_ = std::make_unique<common::WorkerPool>(worker_threads, max_queued);
    }
  }

  grpc::ServerUnaryReactor* ShouldRateLimit(grpc::CallbackServerContext* context,
                                            const rls::RateLimitRequest* request,
                                            rls::RateLimitResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    if (pool_ == nullptr) {
      reactor->Finish(Decide(*request, response, /*shed=*/false));
      return reactor;
    }
    pool_->SubmitOrShed(max_queue_delay_, [this, reactor, request, response](bool shed) {
      reactor->Finish(Decide(*request, response, shed));
    });
    return reactor;
  }

 private:
  grpc::Status Decide(const rls::RateLimitRequest& request, rls::RateLimitResponse* response,
                      bool shed) {
    return ToGrpc(service_->ShouldRateLimit(service::CallContext{service::Frontend::kGrpc, shed},
                                            request, response));
  }

  service::RateLimitService* const service_;
  const std::chrono::nanoseconds max_queue_delay_;
  std::unique_ptr<common::WorkerPool> pool_;
};

// grpc++'s callback API behind the same face as our native server.
class GrpcppImpl final : public net::Server {
 public:
  GrpcppImpl(GrpcServerOptions options, service::RateLimitService* service)
      : options_(std::move(options)),
        service_(service, options_.worker_threads, options_.max_queued, options_.max_queue_delay) {}

  ~GrpcppImpl() override { Shutdown(absl::ZeroDuration()); }

  absl::Status Start() override {
    if (options_.tls.has_value() && !options_.tls->client_san.empty()) {
      // grpc++'s SslServerCredentials verify the chain only; rather than let in a certificate
      // the operator meant to refuse, refuse to start.
      return absl::InvalidArgumentError(
          "the grpc++ server (--grpc-impl grpcpp) cannot check a client certificate's SAN; "
          "use the native gRPC server (--grpc-impl native)");
    }
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.AddListeningPort(options_.address, Credentials(), &port_);
    if (options_.tls.has_value()) {
      // A client that connects and never finishes its handshake is dropped (grpc's default is
      // 120 s).
      builder.AddChannelArgument(
          GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
          static_cast<int>(std::clamp<int64_t>(absl::ToInt64Milliseconds(options_.request_timeout),
                                               1, std::numeric_limits<int>::max())));
    }
    builder.RegisterService(&service_);
    builder.SetMaxReceiveMessageSize(static_cast<int>(options_.max_receive_bytes));
    // Channelz bookkeeping and BDP probes cost CPU on every call and buy nothing for short
    // unary checks. (GRPC_ARG_MINIMAL_STACK would also drop the message-size limit: not used.)
    builder.AddChannelArgument(GRPC_ARG_ENABLE_CHANNELZ, 0);
    builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
    // The native server's timeouts (docs/grpc.md), as far as grpc++ has them: the preface and
    // the client's SETTINGS within request_timeout (default 120 s); GOAWAY after idle_timeout
    // without calls; a client that does not answer a keepalive PING within request_timeout is
    // closed (one sent after idle_timeout without reads; default 2 h, 20 s).
    builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
                               ClampedMs(options_.request_timeout));
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, ClampedMs(options_.idle_timeout));
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, ClampedMs(options_.idle_timeout));
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, ClampedMs(options_.request_timeout));
    server_ = builder.BuildAndStart();
    if (server_ == nullptr || port_ == 0) {
      return absl::UnavailableError(absl::StrCat("gRPC cannot listen on ", options_.address));
    }
    server_->GetHealthCheckService()->SetServingStatus(true);
    return absl::OkStatus();
  }

  void Shutdown(absl::Duration grace) override {
    if (server_ == nullptr) {
      return;
    }
    server_->GetHealthCheckService()->SetServingStatus(false);
    server_->Shutdown(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(grace));
    server_->Wait();
    server_.reset();
  }

  int port() const override { return port_; }

 private:
  // Plain, or TLS 1.2+ (grpc's minimum) with the client certificate required and verified when
  // there is a client CA.
  std::shared_ptr<grpc::ServerCredentials> Credentials() const {
    if (!options_.tls.has_value()) {
      return grpc::InsecureServerCredentials();
    }
    const net::TlsCredentials& tls = *options_.tls;
    grpc::SslServerCredentialsOptions ssl(
        tls.mutual() ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                     : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
    ssl.pem_root_certs = tls.client_ca_pem;
    ssl.pem_key_cert_pairs.push_back({tls.key_pem, tls.cert_chain_pem});
    return grpc::SslServerCredentials(ssl);
  }

  GrpcServerOptions options_;
  RlsService service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace

absl::StatusOr<GrpcImpl> ParseGrpcImpl(std::string_view name) {
  if (name == "native") {
    return GrpcImpl::kNative;
  }
  if (name == "grpcpp") {
    return GrpcImpl::kGrpcpp;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown gRPC implementation \"",
                                                 common::AbslView(name), "\" (native or grpcpp)"));
}

std::string_view GrpcImplName(GrpcImpl impl) {
  return impl == GrpcImpl::kNative ? "native" : "grpcpp";
}

std::unique_ptr<net::Server> NewGrpcServer(GrpcServerOptions options,
                                           service::RateLimitService* service,
                                           service::ServerMetrics* metrics) {
  if (options.impl == GrpcImpl::kNative) {
    return NewNativeGrpcServer(std::move(options), service, metrics);
  }
  return std::make_unique<GrpcppImpl>(std::move(options), service);
}

}  // namespace floodgate::frontends
