#pragma once

// A client of the Rate Limit Config discovery service (xDS, state of the world), the way
// envoyproxy/ratelimit reads its config with CONFIG_TYPE=GRPC_XDS_SOTW (Envoy Gateway runs it so).
//
// The client keeps one bidirectional StreamRlsConfigs stream open to the management server on a
// thread of its own. It subscribes with the node (id and metadata) and the RateLimitConfig type
// URL; each response is the whole set of xDS-managed domains, converted to YAML (xds_yaml.h) and
// applied through ConfigManager::SetXdsDomains, all or nothing. The client answers every response:
// an ACK (the response's version_info and nonce) when the set was applied, a NACK (the last
// applied version_info, the response's nonce and error_detail with the loader's "file:line:
// reason") when it was refused, the old config serving on. When the stream breaks or cannot be
// opened the client tries again after an exponential backoff with jitter (XdsBackoff), and
// resubscribes with the last applied version; the config served meanwhile stays as it was.
// docs/config.md ("Config over xDS") says the same for operators.
//
// Thread-safe: status() may be called from any thread. Start() once; Stop() (or the destructor)
// cancels the stream and joins the thread. The ConfigManager must outlive the client.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "envoy/config/core/v3/base.pb.h"
#include "src/admin/config_manager.h"

namespace grpc {
class ClientContext;
}  // namespace grpc

namespace floodgate::admin {

struct XdsOptions {
  std::string server;  // host:port of the management server
  std::string node_id = "default";
  std::string node_cluster;                          // Node.cluster; usually empty
  std::map<std::string, std::string> node_metadata;  // Node.metadata, string values
  // Backoff between connection attempts: initial_backoff, times backoff_multiplier per failed
  // attempt, at most max_backoff; with jitter j each wait is drawn from [d * (1 - j), d].
  absl::Duration initial_backoff = absl::Seconds(1);
  absl::Duration max_backoff = absl::Seconds(60);
  double backoff_multiplier = 2.0;
  double jitter = 0.5;  // 0 .. 1
  // gRPC keepalive pings on the stream, so a silently dead server is noticed.
  absl::Duration keepalive = absl::Seconds(30);
  // Returns a number in [0, 1) for the jitter; empty for a seeded std::mt19937_64.
  std::function<double()> random;
  // TLS to the management server (envoyproxy/ratelimit's CONFIG_GRPC_XDS_SERVER_USE_TLS and
  // friends). tls_ca_file: PEM of the CAs to trust ("" for gRPC's default roots); tls_cert_file
  // and tls_key_file: a client certificate (mTLS, both or neither); tls_server_name: the name
  // the server's certificate must carry, when not the host of `server`. The files are read at
  // every connection attempt, so renewed certificates are picked up.
  bool use_tls = false;
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_server_name;
};

// Parses envoyproxy/ratelimit's CONFIG_GRPC_XDS_NODE_METADATA, "k1=v1,k2=v2" (a value may hold
// '='; spaces are kept). InvalidArgument for an entry without '=' or with an empty key; "" is
// no metadata.
absl::StatusOr<std::map<std::string, std::string>> ParseXdsNodeMetadata(std::string_view text);

// Returns the wait before connection attempt `failures` + 1 after `failures` consecutive
// failures (failures >= 1; attempt 1 waits backoff(1) = initial_backoff scaled by jitter), given
// `random` in [0, 1). Pure.
absl::Duration XdsBackoff(const XdsOptions& options, int failures, double random);

// Returns the node the client sends: id, cluster, metadata (string values), user agent.
envoy::config::core::v3::Node XdsNode(const XdsOptions& options);

// What the client has done so far, for health checks and metrics.
struct XdsStatus {
  bool connected = false;       // a stream is open and has had a response from the server
  std::string acked_version;    // version_info of the last set applied ("" before one)
  std::string last_nack_error;  // error_detail of the last NACK ("" before one)
  uint64_t acks = 0;
  uint64_t nacks = 0;
  uint64_t streams = 0;          // streams opened
  uint64_t stream_failures = 0;  // streams that failed or ended, attempts that could not start
};

class XdsConfigClient {
 public:
  XdsConfigClient(XdsOptions options, ConfigManager* manager);
  ~XdsConfigClient();
  XdsConfigClient(const XdsConfigClient&) = delete;
  XdsConfigClient& operator=(const XdsConfigClient&) = delete;

  // Starts the stream thread; the first config arrives asynchronously (status().acks).
  void Start();
  // Cancels the stream and joins the thread. Idempotent.
  void Stop();

  XdsStatus status() const;
  // Waits until `done(status())` holds or `timeout` passes; returns whether it held. For a
  // server that wants its first xDS config before serving, and for tests.
  bool AwaitStatus(const std::function<bool(const XdsStatus&)>& done, absl::Duration timeout) const;

 private:
  void Run();
  // Runs one stream until it ends; returns whether the server sent at least one response.
  bool RunStream();

  const XdsOptions options_;
  ConfigManager* const manager_;

  absl::Notification stop_;
  std::thread thread_;

  mutable absl::Mutex mu_;
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;  // the open stream's, to cancel
  XdsStatus status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace floodgate::admin
