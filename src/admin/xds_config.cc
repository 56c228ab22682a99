#include "src/admin/xds_config.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "envoy/service/discovery/v3/discovery.pb.h"
#include "ratelimit/service/ratelimit/v3/rls_conf_ds.grpc.pb.h"
#include "src/admin/xds_yaml.h"
#include "src/common/rate_limited_log.h"

namespace floodgate::admin {
namespace {

using ::envoy::service::discovery::v3::DiscoveryRequest;
using ::envoy::service::discovery::v3::DiscoveryResponse;
using ::ratelimit::service::ratelimit::v3::RateLimitConfigDiscoveryService;

constexpr int kInvalidArgumentCode = 3;  // google.rpc.Code.INVALID_ARGUMENT

int Millis(absl::Duration d) {
  return static_cast<int>(std::clamp<int64_t>(absl::ToInt64Milliseconds(d), 1, 1 << 30));
}

void Log(std::string_view line) { common::RateLimitedLog::Default().Log(line); }

}  // namespace

absl::Duration XdsBackoff(const XdsOptions& options, int failures, double random) {
  const absl::Duration max = std::max(options.max_backoff, absl::ZeroDuration());
  absl::Duration wait = std::min(std::max(options.initial_backoff, absl::ZeroDuration()), max);
  const double multiplier = std::max(options.backoff_multiplier, 1.0);
  // Multiply step by step and stop at the cap: no overflow however many failures there were.
  for (int i = 1; i < failures && wait < max; ++i) {
    wait = std::min(wait * multiplier, max);
  }
  const double jitter = std::clamp(options.jitter, 0.0, 1.0);
  const double r = std::clamp(random, 0.0, 1.0);
  return wait * (1.0 - jitter * r);
}

envoy::config::core::v3::Node XdsNode(const XdsOptions& options) {
  envoy::config::core::v3::Node node;
  node.set_id(options.node_id);
  node.set_cluster(options.node_cluster);
  node.set_user_agent_name("floodgate");
  auto& fields = *node.mutable_metadata()->mutable_fields();
  for (const auto& [key, value] : options.node_metadata) {
    fields[key].set_string_value(value);
  }
  return node;
}

XdsConfigClient::XdsConfigClient(XdsOptions options, ConfigManager* manager)
    : options_(std::move(options)), manager_(manager) {}

XdsConfigClient::~XdsConfigClient() { Stop(); }

void XdsConfigClient::Start() {
  thread_ = std::thread([this] { Run(); });
}

void XdsConfigClient::Stop() {
  if (!stop_.HasBeenNotified()) {
    stop_.Notify();
  }
  {
    absl::MutexLock lock(&mu_);
    if (context_ != nullptr) {
      context_->TryCancel();
    }
  }
  if (thread_.joinable()) {
    thread_.join();
  }
}

XdsStatus XdsConfigClient::status() const {
  absl::MutexLock lock(&mu_);
  return status_;
}

bool XdsConfigClient::AwaitStatus(const std::function<bool(const XdsStatus&)>& done,
                                  absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  auto holds = [&] {
    mu_.AssertHeld();
    return done(status_);
  };
  return mu_.AwaitWithTimeout(absl::Condition(&holds), timeout);
}

void XdsConfigClient::Run() {
  std::mt19937_64 rng(std::random_device{}());
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  int failures = 0;
  while (!stop_.HasBeenNotified()) {
    // A stream that got answers was a working connection: count the backoff from the start.
    failures = RunStream() ? 1 : failures + 1;
    if (stop_.HasBeenNotified()) {
      break;
    }
    const double random = options_.random ? options_.random() : uniform(rng);
    stop_.WaitForNotificationWithTimeout(XdsBackoff(options_, failures, random));
  }
}

bool XdsConfigClient::RunStream() {
  grpc::ChannelArguments args;
  // gRPC's own reconnect backoff (up to two minutes) would hide ours: bound it by our settings,
  // and keep the subchannel (and its backoff state) private to this channel.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, Millis(options_.initial_backoff));
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, Millis(options_.initial_backoff));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, Millis(options_.max_backoff));
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, Millis(options_.keepalive));
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
              Millis(std::min(options_.keepalive, absl::Seconds(20))));
  // Every domain may be up to 1 MiB of YAML (core::kMaxConfigFileBytes); the push holds them all.
  args.SetMaxReceiveMessageSize(256 << 20);
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(options_.server, grpc::InsecureChannelCredentials(), args);
  std::unique_ptr<RateLimitConfigDiscoveryService::Stub> stub =
      RateLimitConfigDiscoveryService::NewStub(channel);

  grpc::ClientContext context;
  std::string acked_version;
  {
    absl::MutexLock lock(&mu_);
    if (stop_.HasBeenNotified()) {
      return false;
    }
    context_ = &context;
    ++status_.streams;
    acked_version = status_.acked_version;
  }
  const envoy::config::core::v3::Node node = XdsNode(options_);
  std::unique_ptr<grpc::ClientReaderWriter<DiscoveryRequest, DiscoveryResponse>> stream =
      stub->StreamRlsConfigs(&context);

  // Subscribe (resuming from the version applied last, so the server may skip an unchanged set).
  DiscoveryRequest request;
  *request.mutable_node() = node;
  request.set_type_url(std::string(kRateLimitConfigTypeUrl));
  request.set_version_info(acked_version);
  bool got_response = false;
  bool writable = stream->Write(request);
  DiscoveryResponse response;
  while (writable && stream->Read(&response)) {
    got_response = true;
    absl::Status applied;
    if (!response.type_url().empty() && response.type_url() != kRateLimitConfigTypeUrl) {
      applied = absl::InvalidArgumentError(absl::StrCat("the response has type '",
                                                        response.type_url(), "', expected '",
                                                        std::string(kRateLimitConfigTypeUrl), "'"));
    } else {
      absl::StatusOr<std::vector<ConfigFile>> files = XdsResponseToConfigFiles(response);
      applied = files.ok() ? manager_->SetXdsDomains(*files) : files.status();
    }

    DiscoveryRequest answer;
    *answer.mutable_node() = node;
    answer.set_type_url(std::string(kRateLimitConfigTypeUrl));
    answer.set_response_nonce(response.nonce());
    {
      absl::MutexLock lock(&mu_);
      status_.connected = true;
      if (applied.ok()) {
        status_.acked_version = response.version_info();
        ++status_.acks;
      } else {
        status_.last_nack_error = std::string(applied.message());
        ++status_.nacks;
      }
      answer.set_version_info(status_.acked_version);
    }
    if (applied.ok()) {
      Log(absl::StrCat("floodgate: xDS config version '", response.version_info(), "' applied (",
                       response.resources_size(), " domains)"));
    } else {
      answer.mutable_error_detail()->set_code(kInvalidArgumentCode);
      answer.mutable_error_detail()->set_message(std::string(applied.message()));
      Log(absl::StrCat("floodgate: xDS config version '", response.version_info(),
                       "' refused: ", applied.message()));
    }
    writable = stream->Write(answer);
  }
  if (!writable) {
    context.TryCancel();  // the read side may still be open: end it so Finish returns
  }
  const grpc::Status finished = stream->Finish();
  {
    absl::MutexLock lock(&mu_);
    context_ = nullptr;
    status_.connected = false;
    ++status_.stream_failures;
  }
  if (!stop_.HasBeenNotified()) {
    Log(absl::StrCat("floodgate: xDS stream to ", options_.server,
                     " ended: ", finished.error_message(), " (code ",
                     static_cast<int>(finished.error_code()), "); reconnecting"));
  }
  return got_response;
}

}  // namespace floodgate::admin
