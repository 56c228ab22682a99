#pragma once

// A whole Floodgate node: store, limiter, config manager and every front end, wired together.
// main.cc only parses flags into ServerOptions and waits for a signal.

#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "floodgate/store.h"
#include "src/admin/cluster_config.h"
#include "src/admin/config_manager.h"
#include "src/admin/node_admin.h"
#include "src/admin/xds_config.h"
#include "src/cluster/cluster_store.h"
#include "src/discovery/discovery.h"
#include "src/discovery/etcd_config.h"
#include "src/frontends/grpc/grpc_service.h"
#include "src/frontends/http/http_server.h"
#include "src/limiter/limiter.h"
#include "src/net/tls.h"
#include "src/redis/redis_client.h"
#include "src/redis_store/redis_store.h"
#include "src/service/metrics.h"
#include "src/service/rate_limit_service.h"
#include "src/service/shed_watch.h"
#include "src/service/statsd.h"

namespace floodgate::server {

struct ServerOptions {
  std::string config_path;
  std::string http_address = "127.0.0.1:8080";
  std::string grpc_address = "127.0.0.1:8081";
  std::string admin_token;
  int http_threads = 2;
  // "native" (our HTTP/2 server) or "grpcpp"; empty means native. In cluster mode, where a
  // check may wait for a peer, the native server suspends it and goes on serving; grpc++
  // decides rate limit calls on a worker pool.
  std::string grpc_impl;
  int grpc_threads = 2;  // the native server's io threads
  // Connections at once, and per client address (0: no cap), on the HTTP and native gRPC front
  // ends, each counted on its own.
  size_t max_connections = 20000;
  size_t max_connections_per_client = 0;
  size_t max_memory_bytes = 0;  // process memory budget (tables get all but a headroom); 0 = none
  absl::Duration config_poll = absl::Milliseconds(200);
  // Where admin config changes are written (--state-dir, FLOODGATE_STATE_DIR); "" for the
  // default beside the config (admin::ConfigManager::DefaultStateDir). docs/config.md.
  std::string state_dir;
  // Serve a config source with no config files (--allow-empty-config,
  // FLOODGATE_ALLOW_EMPTY_CONFIG) instead of refusing it.
  bool allow_empty_config = false;
  service::RequestLimits limits;
  // Where the limits' state lives (--store, docs/backends.md): "memory" (this process; with
  // --peers, the cluster's members) or a Redis URL (redis://, rediss://, redis-sentinel://,
  // redis-cluster://): stateless nodes sharing one Redis. Our keys there start with
  // store_key_prefix; with store_envoy_keys, fixed windows live under envoyproxy/ratelimit's
  // keys (its CACHE_KEY_PREFIX: store_envoy_prefix), so a deployment switches in place.
  std::string store = "memory";
  std::string store_key_prefix = "fg:";
  bool store_envoy_keys = false;
  std::string store_envoy_prefix;
  bool redis_store() const { return store != "memory"; }
  // Cluster mode (docs/cluster.md), on when `peers` is set.
  std::string node_id;       // this node's id in `peers`
  std::string peer_address;  // where to listen for peers; default: this node's entry in `peers`
  std::string peers;         // "ID=HOST:PORT,..." every member, this node included
  // The members' shared secret: every peer connection proves it both ways (docs/cluster.md,
  // "Peer protocol"), and it seeds key hashing. Required in cluster mode unless insecure_peers.
  std::string cluster_key;
  bool insecure_peers = false;  // cluster mode without a key: peers checked by node id only
  // Discovery (docs/cluster.md): members from etcd (`etcd`: client URLs, comma-separated; under
  // `etcd_prefix`) or from the DNS records of `peers_dns` (NAME:PORT) instead of `peers`.
  std::string etcd;
  std::string etcd_prefix;
  std::string cluster_name = "default";
  std::string peers_dns;
  std::string dns_servers;  // --dns-server: who answers --peers-dns ("": the system's resolver)
  std::string advertise;    // the peer address others dial, when not peer_address
  bool require_discovery = false;  // refuse to start when the source cannot be reached
  bool discovery() const { return !etcd.empty() || !peers_dns.empty(); }
  bool cluster() const { return !peers.empty() || discovery(); }
  int replicas = 2;
  // Cluster mode: how long replication and local-share reports gather before they leave.
  absl::Duration peer_batch_delay = absl::Microseconds(500);
  // --tls-cert, --tls-key, --tls-client-ca (and --tls-client-san, the name a client
  // certificate must carry): TLS (and with a client CA, mTLS) on the HTTP and gRPC ports; all
  // empty: plain. The gRPC port may have its own (grpc_tls, below); the peer port has its own
  // (peer_tls). docs/tls.md.
  net::TlsFiles tls;
  // Cluster mode: --peer-tls-cert, --peer-tls-key, --peer-tls-ca (as client_ca_file): TLS on
  // every peer connection, both ways, each end's certificate verified against the CA; all three
  // or none (plain). docs/tls.md, "Peer traffic".
  net::TlsFiles peer_tls;

  // ---- envoyproxy/ratelimit's switches (flags.cc, envoy_env.h; docs/config.md, "Envoy's
  // switches"). ----
  // SHADOW_MODE, QUOTA_MODE, RESPONSE_DYNAMIC_METADATA, LIMIT_*: given to the service.
  service::EnvoyCompat envoy;
  // NEAR_LIMIT_RATIO and the over-limit fast path's size (LOCAL_CACHE_SIZE_IN_BYTES in slots of
  // 24 bytes; 0: off): given to the limiter (limiter::LimiterOptions).
  double near_limit_ratio = 0.8;
  size_t refusal_cache_slots = size_t{1} << 16;
  // HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED: the health checks fail while the config has no
  // domain (before the first one is loaded, and after a reload to none).
  bool healthy_with_config = false;
  // CONFIG_TYPE=GRPC_XDS_SOTW: the xDS server the config comes from ("": the files), our node's
  // id and metadata, and the reconnection backoff.
  std::string xds_server;
  std::string xds_node_id = "default";
  std::map<std::string, std::string> xds_node_metadata;
  absl::Duration xds_initial_backoff = absl::Seconds(10);
  absl::Duration xds_max_backoff = absl::Seconds(60);
  double xds_backoff_jitter = 0.5;  // XDS_CLIENT_BACKOFF_RANDOM_FACTOR (0 with ..._JITTER=false)
  // CONFIG_GRPC_XDS_SERVER_USE_TLS and its files (used only with xds_tls): the CAs to trust
  // ("": gRPC's default roots), a client certificate and key (mTLS), the server's name.
  bool xds_tls = false;
  std::string xds_tls_ca;
  std::string xds_tls_cert;
  std::string xds_tls_key;
  std::string xds_tls_server_name;
  // USE_STATSD, STATSD_HOST, STATSD_PORT: where the metrics go over statsd ("": nowhere), every
  // statsd_flush_interval (STATS_FLUSH_INTERVAL).
  std::string statsd;
  absl::Duration statsd_flush_interval = absl::Seconds(10);
  // --grpc-tls-cert, --grpc-tls-key, --grpc-tls-client-ca, --grpc-tls-client-san
  // (GRPC_SERVER_USE_TLS with GRPC_SERVER_TLS_*, GRPC_CLIENT_TLS_*): when any is set, the gRPC
  // port's TLS, replacing `tls` there as a whole (never mixed with it); the HTTP port keeps
  // `tls`. docs/tls.md, "TLS on the gRPC port alone".
  net::TlsFiles grpc_tls;
  // ---- end of envoyproxy/ratelimit's switches ----
};

// The flags of ServerOptions::peer_tls, for errors.
net::TlsFlagNames PeerTlsFlags();
// The flags of ServerOptions::grpc_tls, for errors.
net::TlsFlagNames GrpcTlsFlags();
// Returns OK when `files` names all three peer TLS files or none; InvalidArgument naming the
// missing flags otherwise.
absl::Status CheckPeerTlsFiles(const net::TlsFiles& files);

// Why a node in cluster mode without --cluster-key (and without --insecure-peers) refuses to
// start.
inline constexpr char kNeedsClusterKey[] =
    "cluster mode needs --cluster-key SECRET (or FLOODGATE_CLUSTER_KEY), the secret every member "
    "proves on each peer connection, or --insecure-peers to run without";

class Server {
 public:
  // Loads the config and starts every front end. Fails on a bad config or busy port.
  static absl::StatusOr<std::unique_ptr<Server>> Start(const ServerOptions& options);
  ~Server();

  // Drains: health checks fail, listeners stop, in-flight requests finish within `grace`. With
  // discovery, the node first leaves the cluster gracefully (its states handed over, its
  // registration removed; docs/cluster.md), within the same `grace`.
  void Shutdown(absl::Duration grace);

  int http_port() const { return http_->port(); }
  int grpc_port() const { return grpc_->port(); }
  limiter::Limiter* limiter() { return limiter_.get(); }
  // Null on a single node.
  cluster::ClusterStore* cluster() { return cluster_.get(); }

 private:
  Server() = default;
  // Discovery mode: starts following the members (etcd, DNS) into cluster_.
  absl::Status StartDiscovery(const ServerOptions& options);
  // With --etcd: applies the config kept in etcd and follows it; admin changes go there.
  void StartEtcdConfig(const ServerOptions& options);
  // With --statsd: sends the metrics under envoyproxy/ratelimit's statsd names.
  absl::Status StartStatsd(const ServerOptions& options);
  // With --store redis...: starts the client and the Redis store; docs/backends.md.
  absl::Status StartRedisStore(const ServerOptions& options);
  // Starts the HTTP and gRPC front ends over service_ and admin_.
  absl::Status StartFrontends(const ServerOptions& options);

  std::unique_ptr<LocalStore> store_;
  // With --store redis...: the client and the store over it (store_ is then the fallback of
  // failure_mode: local). Declared after store_, so destroyed before it.
  std::unique_ptr<redis::Client> redis_;
  std::unique_ptr<redis_store::RedisStore> redis_store_;
  // The refusals GET /v1/top shows: fed by service_, read by cluster_ for the other members;
  // declared before both, so it outlives them.
  std::unique_ptr<service::TopRefused> top_refused_;
  std::unique_ptr<admin::ClusterConfigSync> config_sync_;  // cluster mode; outlives cluster_
  std::unique_ptr<cluster::ClusterStore> cluster_;
  std::unique_ptr<discovery::Discovery> discovery_;  // with --etcd or --peers-dns
  // With --etcd: admin config changes kept in etcd, followed by every node.
  std::unique_ptr<discovery::EtcdConfigStore> etcd_config_;
  std::unique_ptr<admin::ConfigStore> config_store_;
  std::unique_ptr<limiter::Limiter> limiter_;
  std::unique_ptr<admin::ConfigManager> config_;
  std::unique_ptr<admin::XdsConfigClient> xds_;  // with --xds-server; stopped before config_
  service::ServerMetrics metrics_;
  std::unique_ptr<service::StatsdSink> statsd_;     // with --statsd; reads limiter_ and metrics_
  std::unique_ptr<service::ShedWatch> shed_watch_;  // logs shedding; reads metrics_
  std::unique_ptr<service::RateLimitService> service_;
  std::unique_ptr<admin::NodeAdmin> admin_;
  std::unique_ptr<net::Server> http_;
  std::unique_ptr<net::Server> grpc_;
  bool shut_down_ = false;
};

}  // namespace floodgate::server
