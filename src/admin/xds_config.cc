#include "src/admin/xds_config.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iterator>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "envoy/service/discovery/v3/discovery.pb.h"
#include "floodgate/status_macros.h"
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

absl::StatusOr<std::string> ReadPem(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in.good() && !in.eof()) {
    return absl::UnavailableError(absl::StrCat(path, ": the xDS ", what, " cannot be read"));
  }
  if (text.empty()) {
    return absl::UnavailableError(absl::StrCat(path, ": the xDS ", what, " is missing or empty"));
  }
  return text;
}

// Returns the channel credentials `options` ask for (the TLS files read now).
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> Credentials(const XdsOptions& options) {
  if (!options.use_tls) {
    return grpc::InsecureChannelCredentials();
  }
  grpc::SslCredentialsOptions ssl;
  if (!options.tls_ca_file.empty()) {
    FG_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPem(options.tls_ca_file, "CA certificate"));
  }
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "an xDS client certificate needs both the certificate and the key file");
  }
  if (!options.tls_cert_file.empty()) {
    FG_ASSIGN_OR_RETURN(ssl.pem_cert_chain, ReadPem(options.tls_cert_file, "client certificate"));
    FG_ASSIGN_OR_RETURN(ssl.pem_private_key, ReadPem(options.tls_key_file, "client key"));
  }
  return grpc::SslCredentials(ssl);
}

}  // namespace

absl::StatusOr<std::map<std::string, std::string>> ParseXdsNodeMetadata(std::string_view text) {
  std::map<std::string, std::string> out;
  if (text.empty()) {
    return out;
  }
  for (absl::string_view entry : absl::StrSplit(absl::string_view(text.data(), text.size()), ',')) {
    const size_t eq = entry.find('=');
    if (eq == absl::string_view::npos || eq == 0) {
      return absl::InvalidArgumentError(absl::StrCat("xDS node metadata entry '", entry,
                                                     "' is not key=value (as in k1=v1,k2=v2)"));
    }
    out[std::string(entry.substr(0, eq))] = std::string(entry.substr(eq + 1));
  }
  return out;
}

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
  if (!options_.tls_server_name.empty()) {
    args.SetSslTargetNameOverride(options_.tls_server_name);
  }
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials = Credentials(options_);
  if (!credentials.ok()) {
    {
      absl::MutexLock lock(&mu_);
      ++status_.stream_failures;
    }
    common::RateLimitedLog::Default().Log(
        common::LogLevel::kError, "xds_stream_failed",
        {{"server", options_.server}, {"error", credentials.status().message()}});
    return false;
  }
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(options_.server, *credentials, args);
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
      common::RateLimitedLog::Default().Log(
          common::LogLevel::kInfo, "xds_applied",
          {{"xds_version", response.version_info()}, {"domains", response.resources_size()}});
    } else {
      answer.mutable_error_detail()->set_code(kInvalidArgumentCode);
      answer.mutable_error_detail()->set_message(std::string(applied.message()));
      common::RateLimitedLog::Default().Log(
          common::LogLevel::kError, "xds_refused",
          {{"xds_version", response.version_info()}, {"error", applied.message()}});
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
    common::RateLimitedLog::Default().Log(common::LogLevel::kWarn, "xds_stream_ended",
                                          {{"server", options_.server},
                                           {"error", finished.error_message()},
                                           {"code", static_cast<int>(finished.error_code())}});
  }
  return got_response;
}

}  // namespace floodgate::admin
