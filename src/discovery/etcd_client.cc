#include "src/discovery/etcd_client.h"

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>

#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "etcd/etcdserverpb/rpc.grpc.pb.h"
#include "src/common/host_port.h"
#include "src/discovery/etcd_member.h"

namespace floodgate::discovery {

// One channel to one endpoint and its stubs; replaced whole after a failed connection.
struct EtcdStubs {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<etcdserverpb::KV::Stub> kv;
  std::unique_ptr<etcdserverpb::Lease::Stub> lease;
  std::unique_ptr<etcdserverpb::Watch::Stub> watch;
};

struct EtcdClient::Endpoint {
  std::string address;  // host:port, for messages
  std::string target;   // for grpc

  // Returns the stubs calls use now.
  std::shared_ptr<EtcdStubs> Get() {
    absl::MutexLock lock(&mu);
    if (stubs == nullptr) {
      stubs = Connect();
    }
    return stubs;
  }
  // Drops `failed` (if still current) so the next call makes a new channel. Why: a connection
  // etcd accepted while starting (before it serves) is never answered, and gRPC keeps waiting
  // on it for its 20 s connect timeout; a new channel connects at once.
  void Reset(const std::shared_ptr<EtcdStubs>& failed) {
    absl::MutexLock lock(&mu);
    if (stubs == failed) {
      stubs = nullptr;
    }
  }

 private:
  std::shared_ptr<EtcdStubs> Connect() {
    grpc::ChannelArguments args;
    // Retry quickly after etcd restarts: gRPC's default reconnect backoff grows to 120 s.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    // Our own subchannel, so that a new channel really makes a new connection.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    auto made = std::make_shared<EtcdStubs>();
    made->channel = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
    made->kv = etcdserverpb::KV::NewStub(made->channel);
    made->lease = etcdserverpb::Lease::NewStub(made->channel);
    made->watch = etcdserverpb::Watch::NewStub(made->channel);
    return made;
  }

  absl::Mutex mu;
  std::shared_ptr<EtcdStubs> stubs ABSL_GUARDED_BY(mu);
};

namespace {

// Returns the gRPC target for host:port: ipv4:/ipv6: for address literals, so no resolver runs
// for them; dns:/// for names.
std::string GrpcTarget(const std::string& host, uint16_t port) {
  in_addr v4;
  in6_addr v6;
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) {
    return absl::StrCat("ipv4:", host, ":", port);
  }
  if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
    return absl::StrCat("ipv6:[", host, "]:", port);
  }
  return absl::StrCat("dns:///", host, ":", port);
}

absl::Status FromGrpc(const std::string& address, absl::string_view what, const grpc::Status& s) {
  const std::string message = s.error_message().empty() ? "no answer" : s.error_message();
  switch (s.error_code()) {
    case grpc::StatusCode::OK:
      return absl::OkStatus();
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return absl::UnavailableError(
          absl::StrCat("etcd at ", address, " unreachable: ", message, " (", what, ")"));
    default:
      return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                          absl::StrCat("etcd at ", address, ": ", what, " failed: ", message));
  }
}

std::chrono::system_clock::time_point DeadlineAfter(std::chrono::milliseconds timeout) {
  return std::chrono::system_clock::now() + timeout;
}

}  // namespace

// The watch thread: one Watch stream, one create request, responses until the stream ends or
// Cancel cancels its context. The thread checks `cancelled_` before each callback, so none
// starts after Cancel has begun; Cancel then joins, so none is still running when it returns.
class EtcdClient::Watcher final : public EtcdWatch {
 public:
  Watcher(Endpoint& endpoint, std::string prefix, int64_t start_revision, OnEvents on_events,
          OnEnd on_end)
      : endpoint_(endpoint),
        stubs_(endpoint.Get()),
        prefix_(std::move(prefix)),
        start_revision_(start_revision),
        on_events_(std::move(on_events)),
        on_end_(std::move(on_end)) {
    thread_ = std::thread([this] { Run(); });
  }
  ~Watcher() override { Cancel(); }

  void Cancel() override {
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
    }
    context_.TryCancel();
    // A callback in progress finishes first; the thread checks cancelled_ before any other.
    absl::MutexLock lock(&join_mu_);
    if (thread_.joinable()) {
      thread_.join();
    }
  }

 private:
  bool Cancelled() {
    absl::MutexLock lock(&mu_);
    return cancelled_;
  }

  void Run() {
    auto stream = stubs_->watch->Watch(&context_);
    etcdserverpb::WatchRequest request;
    etcdserverpb::WatchCreateRequest* create = request.mutable_create_request();
    create->set_key(prefix_);
    create->set_range_end(PrefixRangeEnd(prefix_));
    create->set_start_revision(start_revision_);
    absl::Status end;
    if (stream->Write(request)) {
      etcdserverpb::WatchResponse response;
      while (end.ok() && stream->Read(&response)) {
        if (response.compact_revision() != 0) {
          end = absl::OutOfRangeError(
              absl::StrCat("etcd at ", endpoint_.address, ": watch from revision ", start_revision_,
                           " compacted (oldest kept ", response.compact_revision(), ")"));
        } else if (response.canceled()) {
          end = absl::AbortedError(absl::StrCat("etcd at ", endpoint_.address,
                                                ": watch cancelled: ", response.cancel_reason()));
        } else if (response.events_size() > 0) {
          std::vector<EtcdEvent> events;
          events.reserve(response.events_size());
          for (const mvccpb::Event& e : response.events()) {
            EtcdEvent event;
            event.type = e.type() == mvccpb::Event::DELETE ? EtcdEvent::Type::kDelete
                                                           : EtcdEvent::Type::kPut;
            event.kv.key = e.kv().key();
            event.kv.value = e.kv().value();
            event.kv.mod_revision = e.kv().mod_revision();
            event.kv.lease = e.kv().lease();
            events.push_back(std::move(event));
          }
          if (!Cancelled()) {
            on_events_(events, response.header().revision());
          }
        }
      }
    }
    if (end.ok()) {
      // The stream ended (or never started): Finish says why.
      const grpc::Status status = stream->Finish();
      end = status.ok() ? absl::UnavailableError(
                              absl::StrCat("etcd at ", endpoint_.address, " ended the watch"))
                        : FromGrpc(endpoint_.address, "Watch", status);
      if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
        endpoint_.Reset(stubs_);
      }
    } else {
      context_.TryCancel();  // we stop reading: end the call so Finish returns
      stream->Finish();
    }
    if (!Cancelled()) {
      on_end_(end);
    }
  }

  Endpoint& endpoint_;
  const std::shared_ptr<EtcdStubs> stubs_;
  const std::string prefix_;
  const int64_t start_revision_;
  const OnEvents on_events_;
  const OnEnd on_end_;
  grpc::ClientContext context_;
  absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  absl::Mutex join_mu_;  // two Cancel calls at once join once
  std::thread thread_ ABSL_GUARDED_BY(join_mu_);
};

EtcdClient::EtcdClient(const EtcdClientOptions& options) : options_(options) {}
EtcdClient::~EtcdClient() = default;

absl::StatusOr<std::unique_ptr<EtcdClient>> EtcdClient::Create(const EtcdClientOptions& options) {
  std::unique_ptr<EtcdClient> client(new EtcdClient(options));
  for (absl::string_view url : absl::StrSplit(options.endpoints, ',', absl::SkipWhitespace())) {
    url = absl::StripAsciiWhitespace(url);
    if (absl::StartsWith(url, "https://")) {
      return absl::InvalidArgumentError(
          absl::StrCat("etcd endpoint ", url, ": TLS (https) is not supported yet"));
    }
    absl::ConsumePrefix(&url, "http://");
    absl::ConsumeSuffix(&url, "/");
    std::string host;
    uint16_t port = 0;
    absl::Status split =
        common::SplitHostPort(std::string_view(url.data(), url.size()), host, port);
    if (!split.ok() || host.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("etcd endpoint ", url,
                                                     " is not http://host:port",
                                                     split.ok() ? "" : ": ", split.message()));
    }
    auto endpoint = std::make_unique<Endpoint>();
    endpoint->address = std::string(url);
    endpoint->target = GrpcTarget(host, port);
    client->endpoints_.push_back(std::move(endpoint));
  }
  if (client->endpoints_.empty()) {
    return absl::InvalidArgumentError("no etcd endpoint given");
  }
  return client;
}

std::string EtcdClient::current_endpoint() const {
  return endpoints_[current_.load() % endpoints_.size()]->address;
}

template <typename Attempt>
absl::Status EtcdClient::Call(std::string_view what, std::chrono::milliseconds timeout,
                              Attempt attempt) {
  const size_t start = current_.load();
  const auto deadline =
      timeout.count() > 0 ? DeadlineAfter(timeout) : std::chrono::system_clock::time_point::max();
  absl::Status last;
  for (size_t i = 0; i < endpoints_.size(); ++i) {
    const size_t index = (start + i) % endpoints_.size();
    Endpoint& endpoint = *endpoints_[index];
    const std::shared_ptr<EtcdStubs> stubs = endpoint.Get();
    grpc::ClientContext context;
    context.set_deadline(std::min(deadline, DeadlineAfter(options_.call_timeout)));
    const grpc::Status status = attempt(*stubs, context);
    if (status.ok()) {
      current_.store(index);
      return absl::OkStatus();
    }
    last = FromGrpc(endpoint.address, absl::string_view(what.data(), what.size()), status);
    if (status.error_code() == grpc::StatusCode::UNAVAILABLE ||
        status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      endpoint.Reset(stubs);
    }
    if (status.error_code() != grpc::StatusCode::UNAVAILABLE ||
        std::chrono::system_clock::now() >= deadline) {
      break;
    }
  }
  return last;
}

absl::StatusOr<int64_t> EtcdClient::Grant(int64_t ttl_seconds) {
  etcdserverpb::LeaseGrantRequest request;
  request.set_ttl(ttl_seconds);
  etcdserverpb::LeaseGrantResponse response;
  absl::Status status = Call("LeaseGrant", {}, [&](EtcdStubs& e, grpc::ClientContext& context) {
    return e.lease->LeaseGrant(&context, request, &response);
  });
  if (!status.ok()) {
    return status;
  }
  if (!response.error().empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("etcd at ", current_endpoint(), ": LeaseGrant failed: ", response.error()));
  }
  return response.id();
}

absl::Status EtcdClient::Revoke(int64_t lease_id, std::chrono::milliseconds timeout) {
  etcdserverpb::LeaseRevokeRequest request;
  request.set_id(lease_id);
  etcdserverpb::LeaseRevokeResponse response;
  return Call("LeaseRevoke", timeout, [&](EtcdStubs& e, grpc::ClientContext& context) {
    return e.lease->LeaseRevoke(&context, request, &response);
  });
}

absl::StatusOr<int64_t> EtcdClient::KeepAliveOnce(int64_t lease_id) {
  etcdserverpb::LeaseKeepAliveRequest request;
  request.set_id(lease_id);
  etcdserverpb::LeaseKeepAliveResponse response;
  absl::Status status = Call("LeaseKeepAlive", {}, [&](EtcdStubs& e, grpc::ClientContext& context) {
    // One request on the keep-alive stream, its one answer, then the stream is closed.
    auto stream = e.lease->LeaseKeepAlive(&context);
    if (stream->Write(request) && stream->Read(&response)) {
      stream->WritesDone();
      context.TryCancel();
      stream->Finish();
      return grpc::Status::OK;
    }
    grpc::Status finished = stream->Finish();
    return finished.ok() ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "keep-alive stream closed")
                         : finished;
  });
  if (!status.ok()) {
    return status;
  }
  if (response.ttl() <= 0) {
    return absl::NotFoundError(
        absl::StrCat("etcd at ", current_endpoint(), ": lease ", lease_id, " expired"));
  }
  return response.ttl();
}

absl::StatusOr<int64_t> EtcdClient::Put(std::string_view key, std::string_view value,
                                        int64_t lease_id) {
  etcdserverpb::PutRequest request;
  request.set_key(std::string(key));
  request.set_value(std::string(value));
  request.set_lease(lease_id);
  etcdserverpb::PutResponse response;
  absl::Status status = Call("Put", {}, [&](EtcdStubs& e, grpc::ClientContext& context) {
    return e.kv->Put(&context, request, &response);
  });
  if (!status.ok()) {
    return status;
  }
  return response.header().revision();
}

absl::StatusOr<int64_t> EtcdClient::Delete(std::string_view key) {
  etcdserverpb::DeleteRangeRequest request;
  request.set_key(std::string(key));
  etcdserverpb::DeleteRangeResponse response;
  absl::Status status = Call("DeleteRange", {}, [&](EtcdStubs& e, grpc::ClientContext& context) {
    return e.kv->DeleteRange(&context, request, &response);
  });
  if (!status.ok()) {
    return status;
  }
  return response.deleted();
}

absl::StatusOr<std::optional<EtcdKeyValue>> EtcdClient::Get(std::string_view key) {
  etcdserverpb::RangeRequest request;
  request.set_key(std::string(key));
  etcdserverpb::RangeResponse response;
  absl::Status status = Call("Range", {}, [&](EtcdStubs& e, grpc::ClientContext& context) {
    return e.kv->Range(&context, request, &response);
  });
  if (!status.ok()) {
    return status;
  }
  if (response.kvs_size() == 0) {
    return std::nullopt;
  }
  const mvccpb::KeyValue& kv = response.kvs(0);
  return EtcdKeyValue{kv.key(), kv.value(), kv.mod_revision(), kv.lease()};
}

absl::StatusOr<EtcdRangeResult> EtcdClient::RangePrefix(std::string_view prefix) {
  etcdserverpb::RangeRequest request;
  request.set_key(std::string(prefix));
  request.set_range_end(PrefixRangeEnd(prefix));
  etcdserverpb::RangeResponse response;
  absl::Status status = Call("Range", {}, [&](EtcdStubs& e, grpc::ClientContext& context) {
    return e.kv->Range(&context, request, &response);
  });
  if (!status.ok()) {
    return status;
  }
  EtcdRangeResult result;
  result.revision = response.header().revision();
  result.kvs.reserve(response.kvs_size());
  for (const mvccpb::KeyValue& kv : response.kvs()) {
    result.kvs.push_back({kv.key(), kv.value(), kv.mod_revision(), kv.lease()});
  }
  return result;
}

std::unique_ptr<EtcdWatch> EtcdClient::WatchPrefix(std::string_view prefix, int64_t start_revision,
                                                   OnEvents on_events, OnEnd on_end) {
  Endpoint& endpoint = *endpoints_[current_.load() % endpoints_.size()];
  return std::make_unique<Watcher>(endpoint, std::string(prefix), start_revision,
                                   std::move(on_events), std::move(on_end));
}

}  // namespace floodgate::discovery
