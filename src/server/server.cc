#include "src/server/server.h"

#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "floodgate/status_macros.h"
#include "src/common/log.h"
#include "src/discovery/dns_discovery.h"
#include "src/discovery/dns_members.h"
#include "src/discovery/etcd_discovery.h"

namespace floodgate::server {

namespace {

// --max-memory is the process's budget: the key tables get what is left after a headroom for
// the process itself (about 15 MiB), connections, buffers and a shard's table while it is
// rehashed: 1/8 of the budget, at least 24 MiB, at most half (docs/overload.md).
size_t TableBudget(size_t max_memory_bytes) {
  constexpr size_t kMinHeadroom = size_t{24} << 20;
  const size_t headroom =
      std::min(std::max(max_memory_bytes / 8, kMinHeadroom), max_memory_bytes / 2);
  return max_memory_bytes - headroom;
}

// The peer address other members dial: --advertise, else --peer.
std::string AdvertisedAddress(const ServerOptions& options) {
  return options.advertise.empty() ? options.peer_address : options.advertise;
}

// This node's id: --node-id; with DNS discovery, the IP of its advertised address (what the
// others find in the DNS records: dns_members.h).
std::string SelfId(const ServerOptions& options) {
  if (options.peers_dns.empty()) {
    return options.node_id;
  }
  std::string host = AdvertisedAddress(options);
  host = host.substr(0, host.rfind(':'));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return host;
}

absl::StatusOr<cluster::ClusterOptions> ClusterOptionsOf(const ServerOptions& options) {
  cluster::ClusterOptions cluster_options;
  cluster_options.self_id = SelfId(options);
  if (options.discovery()) {
    // This node alone at first; discovery adds the others (StartDiscovery).
    cluster_options.members.push_back(cluster::Member{
        cluster_options.self_id, AdvertisedAddress(options), cluster::NodeSeed(SelfId(options))});
    cluster_options.dynamic_members = true;
  } else {
    FG_ASSIGN_OR_RETURN(cluster_options.members, cluster::ParsePeers(options.peers));
  }
  if (cluster_options.self_id.empty()) {
    return absl::InvalidArgumentError("cluster mode (--peers) needs --node-id");
  }
  cluster_options.listen_address =
      options.peer_address.empty() ? options.advertise : options.peer_address;
  cluster_options.replicas = options.replicas;
  cluster_options.background_delay = options.peer_batch_delay;
  if (options.cluster_key.empty() && !options.insecure_peers) {
    return absl::InvalidArgumentError(kNeedsClusterKey);
  }
  cluster_options.cluster_key = options.cluster_key;
  const net::TlsFiles& peer_tls = options.peer_tls;
  if (!peer_tls.cert_file.empty() || !peer_tls.key_file.empty() ||
      !peer_tls.client_ca_file.empty()) {
    // Checked before anything listens: a bad file stops the start, naming its flag.
    FG_RETURN_IF_ERROR(CheckPeerTlsFiles(peer_tls));
    FG_ASSIGN_OR_RETURN(cluster_options.peer_tls,
                        net::LoadTlsCredentials(peer_tls, PeerTlsFlags()));
  }
  return cluster_options;
}

// Every node must hash keys alike to agree on owners: the hasher's secret comes from the
// cluster key (with --insecure-peers and no key, from the member ids, or with discovery from the
// cluster's name: predictable either way).
KeyHasher ClusterHasher(const ServerOptions& options, const std::vector<cluster::Member>& members) {
  std::string key = options.cluster_key;
  if (key.empty() && options.discovery()) {
    key = absl::StrCat("floodgate-cluster-name:", options.cluster_name, ":", options.etcd_prefix);
  } else if (key.empty()) {
    std::vector<std::string> ids;
    for (const cluster::Member& m : members) {
      ids.push_back(m.id);
    }
    key = absl::StrCat("floodgate-cluster:", absl::StrJoin(ids, ","));
  }
  return KeyHasher(cluster::NodeSeed(key + "/k0"), cluster::NodeSeed(key + "/k1"));
}

// The discovery source the flags ask for (etcd or DNS).
absl::StatusOr<std::unique_ptr<discovery::Discovery>> NewDiscovery(const ServerOptions& options,
                                                                   const std::string& self_id,
                                                                   const std::string& address) {
  if (!options.peers_dns.empty()) {
    FG_ASSIGN_OR_RETURN(discovery::DnsTarget target, discovery::ParseDnsTarget(options.peers_dns));
    discovery::DnsDiscoveryOptions dns;
    dns.name = target.name;
    dns.port = target.port;
    dns.servers = options.dns_servers;
    return discovery::NewDnsDiscovery(std::move(dns));
  }
  discovery::EtcdDiscoveryOptions etcd;
  etcd.endpoints = options.etcd;
  etcd.prefix = options.etcd_prefix;
  etcd.self = discovery::Node{self_id, address};
  return discovery::NewEtcdDiscovery(etcd);
}

// admin::ConfigStore over etcd: admin changes written under `<prefix>/config/`.
class EtcdAdminStore final : public admin::ConfigStore {
 public:
  EtcdAdminStore(discovery::EtcdConfigStore* etcd, std::string self_id)
      : etcd_(etcd), self_id_(std::move(self_id)) {}

  absl::StatusOr<uint64_t> Write(const std::string& domain,
                                 std::optional<std::string_view> yaml) override {
    absl::StatusOr<int64_t> revision = etcd_->Write(domain, self_id_, yaml);
    if (!revision.ok()) {
      return revision.status();
    }
    return static_cast<uint64_t>(*revision);
  }

 private:
  discovery::EtcdConfigStore* const etcd_;
  const std::string self_id_;
};

// The changes that config entries from etcd stand for (version: the entry's revision).
std::vector<peer::v1::ConfigChange> ChangesOf(const std::vector<discovery::ConfigEntry>& entries) {
  std::vector<peer::v1::ConfigChange> changes;
  for (const discovery::ConfigEntry& entry : entries) {
    peer::v1::ConfigChange change;
    change.mutable_version()->set_domain(entry.domain);
    change.mutable_version()->set_version(static_cast<uint64_t>(entry.revision));
    change.mutable_version()->set_origin(entry.origin);
    change.mutable_version()->set_deleted(entry.deleted);
    change.set_yaml(entry.yaml);
    changes.push_back(std::move(change));
  }
  return changes;
}

// ---- envoyproxy/ratelimit's switches (ServerOptions, "Envoy's switches"). ----

// NEAR_LIMIT_RATIO and LOCAL_CACHE_SIZE_IN_BYTES (as --near-limit-ratio, --refusal-cache-slots).
limiter::LimiterOptions EnvoyLimiterOptions(const ServerOptions& options) {
  limiter::LimiterOptions limiter_options;
  limiter_options.near_limit_ratio = options.near_limit_ratio;
  limiter_options.refusal_cache_slots = options.refusal_cache_slots;
  limiter_options.global_quota_mode = options.envoy.global_quota_mode;  // QUOTA_MODE
  return limiter_options;
}

// The Redis store's metrics (docs/metrics.md, "Redis store").
std::string RedisPrometheus(bool up, const redis::ClientStats& client,
                            const redis_store::RedisStoreStats& store) {
  std::string out;
  const auto counter = [&out](const char* name, const char* help, uint64_t value) {
    absl::StrAppend(&out, "# HELP floodgate_redis_", name, " ", help, "\n# TYPE floodgate_redis_",
                    name, " counter\nfloodgate_redis_", name, " ", value, "\n");
  };
  absl::StrAppend(&out,
                  "# HELP floodgate_redis_up 1 when every Redis node the store needs is connected "
                  "and its circuit breaker closed.\n# TYPE floodgate_redis_up gauge\n"
                  "floodgate_redis_up ",
                  up ? 1 : 0, "\n");
  counter("commands_total", "Commands sent to Redis.", client.commands);
  counter("timeouts_total", "Commands that got no reply in time.", client.timeouts);
  counter("failures_total", "Commands failed otherwise (connection lost, refused).",
          client.failures);
  counter("breaker_refusals_total", "Commands refused at once by an open circuit breaker.",
          client.breaker_open);
  counter("reconnects_total", "Connections to Redis re-established.", client.reconnects);
  counter("redirects_total", "Redis Cluster MOVED and ASK replies followed.", client.redirects);
  counter("script_calls_total", "EVALSHA calls (one carries one or more checks).",
          store.script_calls);
  counter("transactions_total", "Checks sent to Redis.", store.transactions);
  counter("noscript_reloads_total", "Scripts loaded again after NOSCRIPT.", store.noscript_reloads);
  counter("error_replies_total", "Error or malformed replies.",
          store.error_replies + store.malformed_replies);
  counter("failure_mode_open_total", "Limits decided by failure_mode: open (Redis unreachable).",
          store.failed_ops_open);
  counter("failure_mode_closed_total",
          "Limits decided by failure_mode: closed (Redis unreachable).", store.failed_ops_closed);
  counter("failure_mode_local_total",
          "Limits decided by failure_mode: local on this node (Redis unreachable).",
          store.failed_ops_local);
  counter("unsupported_ops_total", "Limits refused: no exact time unit in Redis' arithmetic.",
          store.unsupported_ops);
  return out;
}

// HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED (--healthy-with-config): the health checks pass only
// while the config being served has a domain. Envoy's health follows each config it loads, so
// a reload to an empty config (possible with --allow-empty-config) fails them again. Null when
// off. The limiter holds the config being served: what a check would see.
std::function<bool()> ReadyCheck(const ServerOptions& options, const limiter::Limiter* limiter) {
  if (!options.healthy_with_config) {
    return nullptr;
  }
  return [limiter] {
    const std::shared_ptr<const core::Config> config = limiter->config();
    return config != nullptr && !config->domains.empty();
  };
}

// CONFIG_TYPE=GRPC_XDS_SOTW (--xds-server and friends): the xDS client's options.
admin::XdsOptions XdsOptionsOf(const ServerOptions& options) {
  admin::XdsOptions xds;
  xds.server = options.xds_server;
  xds.node_id = options.xds_node_id;
  xds.node_metadata = options.xds_node_metadata;
  xds.initial_backoff = options.xds_initial_backoff;
  xds.max_backoff = options.xds_max_backoff;
  xds.jitter = options.xds_backoff_jitter;
  xds.use_tls = options.xds_tls;
  xds.tls_ca_file = options.xds_tls_ca;
  xds.tls_cert_file = options.xds_tls_cert;
  xds.tls_key_file = options.xds_tls_key;
  xds.tls_server_name = options.xds_tls_server_name;
  return xds;
}

// ---- end of envoyproxy/ratelimit's switches ----

}  // namespace

net::TlsFlagNames PeerTlsFlags() {
  return net::TlsFlagNames{
      .cert = "--peer-tls-cert", .key = "--peer-tls-key", .ca = "--peer-tls-ca"};
}

net::TlsFlagNames GrpcTlsFlags() {
  return net::TlsFlagNames{.cert = "--grpc-tls-cert",
                           .key = "--grpc-tls-key",
                           .ca = "--grpc-tls-client-ca",
                           .san = "--grpc-tls-client-san"};
}

absl::Status CheckPeerTlsFiles(const net::TlsFiles& files) {
  const net::TlsFlagNames flags = PeerTlsFlags();
  std::vector<std::string> missing;
  for (const auto& [file, flag] : {std::pair{&files.cert_file, &flags.cert},
                                   {&files.key_file, &flags.key},
                                   {&files.client_ca_file, &flags.ca}}) {
    if (file->empty()) {
      missing.push_back(*flag);
    }
  }
  if (missing.empty() || missing.size() == 3) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat(flags.cert, ", ", flags.key, " and ", flags.ca,
                   " go together: give all three (TLS between members) or none (plain); missing: ",
                   absl::StrJoin(missing, ", ")));
}

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const ServerOptions& options) {
  std::unique_ptr<Server> server(new Server());
  StoreOptions store_options;
  store_options.max_memory_bytes = TableBudget(options.max_memory_bytes);
  // The caps /metrics shows beside memory use (docs/metrics.md, "Memory").
  server->metrics_.max_memory_bytes = options.max_memory_bytes;
  server->metrics_.store_max_bytes = store_options.max_memory_bytes;
  FG_ASSIGN_OR_RETURN(server->store_, NewShardedStore(store_options));
  Store* store = server->store_.get();
  KeyHasher hasher = KeyHasher::Random();
  if (options.redis_store()) {
    FG_RETURN_IF_ERROR(server->StartRedisStore(options));
    store = server->redis_store_.get();
  }
  if (options.cluster()) {
    FG_ASSIGN_OR_RETURN(cluster::ClusterOptions cluster_options, ClusterOptionsOf(options));
    hasher = ClusterHasher(options, cluster_options.members);
    FG_ASSIGN_OR_RETURN(server->cluster_, cluster::ClusterStore::Start(std::move(cluster_options),
                                                                       server->store_.get()));
    store = server->cluster_.get();
    if (options.discovery()) {
      FG_RETURN_IF_ERROR(server->StartDiscovery(options));
    }
  }
  server->limiter_ =
      std::make_unique<limiter::Limiter>(store, hasher, nullptr, EnvoyLimiterOptions(options));
  admin::ConfigManagerOptions config_options;
  config_options.state_dir = options.state_dir;
  config_options.allow_empty = options.allow_empty_config;
  FG_ASSIGN_OR_RETURN(server->config_,
                      admin::ConfigManager::Create(options.config_path, server->limiter_.get(),
                                                   std::move(config_options)));
  if (server->cluster_ != nullptr) {
    server->config_sync_ = std::make_unique<admin::ClusterConfigSync>(
        options.node_id, server->config_.get(), server->limiter_.get());
    server->cluster_->SetConfigSync(server->config_sync_.get());
  }
  server->top_refused_ = std::make_unique<service::TopRefused>(SystemClock::Get());
  server->service_ =
      service::NewRateLimitService(server->limiter_.get(), options.limits, &server->metrics_,
                                   options.envoy, server->top_refused_.get());
  server->admin_ = std::make_unique<admin::NodeAdmin>(server->config_.get(), server->limiter_.get(),
                                                      &server->metrics_, server->cluster_.get(),
                                                      server->config_sync_.get());
  server->admin_->SetNodeInfo(admin::NodeInfo{FLOODGATE_VERSION, SystemClock::Get()->NowNs(),
                                              options.max_memory_bytes, SystemClock::Get(),
                                              server->top_refused_.get()});
  if (server->cluster_ != nullptr) {
    server->cluster_->SetTopRefusedSource(
        [top = server->top_refused_.get()] { return top->Snapshot(); });
  }
  if (server->redis_store_ != nullptr) {
    server->admin_->AddMetricsSource(
        [client = server->redis_.get(), store = server->redis_store_.get()] {
          return RedisPrometheus(client->Healthy(), client->GetStats(), store->GetRedisStats());
        });
  }
  if (!options.etcd.empty()) {
    server->StartEtcdConfig(options);
  }
  if (!options.xds_server.empty()) {
    // Pushed configs apply like admin changes (validated, versioned, ACK/NACK): docs/config.md,
    // "Config over xDS". The node serves meanwhile on what it has (its files, or nothing).
    server->xds_ =
        std::make_unique<admin::XdsConfigClient>(XdsOptionsOf(options), server->config_.get());
    server->xds_->Start();
  }
  FG_RETURN_IF_ERROR(server->StartStatsd(options));
  FG_RETURN_IF_ERROR(server->StartFrontends(options));
  server->config_->StartWatching(options.config_poll);
  return server;
}

absl::Status Server::StartRedisStore(const ServerOptions& options) {
  FG_ASSIGN_OR_RETURN(const redis::ClientOptions client_options,
                      redis::ParseStoreUrl(options.store));
  FG_ASSIGN_OR_RETURN(redis_, redis::NewClient(client_options));
  redis_store::RedisStoreOptions store_options;
  store_options.key_prefix = options.store_key_prefix;
  store_options.envoy_key_layout = options.store_envoy_keys;
  store_options.envoy_prefix = options.store_envoy_prefix;
  store_options.local_fallback = store_.get();
  store_options.mode = client_options.mode;
  FG_ASSIGN_OR_RETURN(redis_store_, redis_store::NewRedisStore(redis_.get(), store_options));
  return absl::OkStatus();
}

absl::Status Server::StartDiscovery(const ServerOptions& options) {
  FG_ASSIGN_OR_RETURN(discovery_,
                      NewDiscovery(options, SelfId(options), AdvertisedAddress(options)));
  discovery::Discovery* source = discovery_.get();
  cluster_->SetDiscovery(
      [source] {
        const discovery::DiscoveryStatus status = source->status();
        cluster::DiscoveryInfo info;
        info.source = status.source;
        info.connected = status.connected;
        info.last_error = status.last_error;
        info.errors = status.errors;
        info.reconnects = status.reconnects;
        info.updates = status.updates;
        info.revision = status.revision;
        return info;
      },
      [source] { source->Refresh(); });
  cluster::ClusterStore* cluster = cluster_.get();
  const absl::Status started =
      discovery_->Start([cluster](const std::vector<discovery::Node>& nodes) {
        std::vector<cluster::Member> members;
        for (const discovery::Node& node : nodes) {
          members.push_back(cluster::Member{node.id, node.address, cluster::NodeSeed(node.id)});
        }
        cluster->SetMembers(members);
      });
  if (!started.ok()) {
    if (options.require_discovery) {
      discovery_->Stop();
      return absl::UnavailableError(absl::StrCat("--require-discovery: ", started.message(),
                                                 " (start without it to serve alone until "
                                                 "the source answers)"));
    }
    common::Log(common::LogLevel::kWarn, "discovery_unreachable",
                {{"error", started.message()},
                 {"meanwhile",
                  "serving alone on this node's file config until it answers (retried in the "
                  "background; --require-discovery refuses to start instead)"}});
  }
  return absl::OkStatus();
}

absl::Status Server::StartStatsd(const ServerOptions& options) {
  if (options.statsd.empty()) {
    return absl::OkStatus();
  }
  service::StatsdOptions statsd;
  statsd.address = options.statsd;
  statsd.flush_interval = options.statsd_flush_interval;
  service::StatsdSources sources;
  sources.limiter = limiter_.get();
  sources.metrics = &metrics_;
  admin::ConfigManager* config = config_.get();
  sources.config_stats = [config] { return config->stats(); };
  FG_ASSIGN_OR_RETURN(statsd_, service::NewStatsdSink(std::move(statsd), std::move(sources)));
  statsd_->Start();
  return absl::OkStatus();
}

void Server::StartEtcdConfig(const ServerOptions& options) {
  discovery::EtcdConfigOptions etcd;
  etcd.endpoints = options.etcd;
  etcd.prefix = options.etcd_prefix;
  absl::StatusOr<std::unique_ptr<discovery::EtcdConfigStore>> store =
      discovery::EtcdConfigStore::Create(etcd);
  if (!store.ok()) {  // the endpoints were checked by discovery already
    common::Log(common::LogLevel::kError, "etcd_config_failed",
                {{"error", store.status().message()}});
    return;
  }
  etcd_config_ = *std::move(store);
  // What etcd holds now, before serving: a restart of every node keeps the admin changes. When
  // etcd is away the follower below applies it once it answers.
  if (absl::StatusOr<std::vector<discovery::ConfigEntry>> entries = etcd_config_->ReadAll();
      entries.ok()) {
    config_sync_->ApplyFrom(ChangesOf(*entries), "etcd");
  }
  admin::ClusterConfigSync* sync = config_sync_.get();
  etcd_config_->Follow([sync](const std::vector<discovery::ConfigEntry>& entries) {
    sync->ApplyFrom(ChangesOf(entries), "etcd");
  });
  config_store_ = std::make_unique<EtcdAdminStore>(etcd_config_.get(), SelfId(options));
  admin_->SetConfigStore(config_store_.get());
}

absl::Status Server::StartFrontends(const ServerOptions& options) {
  frontends::HttpServerOptions http_options;
  http_options.address = options.http_address;
  http_options.threads = options.http_threads;
  http_options.admin_token = options.admin_token;
  http_options.max_connections = options.max_connections;
  http_options.max_connections_per_client = options.max_connections_per_client;
  frontends::GrpcServerOptions grpc_options;
  grpc_options.address = options.grpc_address;
  grpc_options.io_threads = options.grpc_threads;
  grpc_options.max_connections = options.max_connections;  // native gRPC only
  grpc_options.max_connections_per_client = options.max_connections_per_client;
  if (!options.grpc_impl.empty()) {
    FG_ASSIGN_OR_RETURN(grpc_options.impl, frontends::ParseGrpcImpl(options.grpc_impl));
  }
  // Checked once, before anything listens: a bad file stops the start, naming its flag. The
  // gRPC port takes --grpc-tls-* as a whole when given (ServerOptions::grpc_tls), else the
  // HTTP port's --tls-*.
  const auto given = [](const net::TlsFiles& files) {
    return !files.cert_file.empty() || !files.key_file.empty() || !files.client_ca_file.empty() ||
           !files.client_san.empty();
  };
  if (given(options.tls)) {
    FG_ASSIGN_OR_RETURN(http_options.tls, net::LoadTlsCredentials(options.tls));
  }
  if (given(options.grpc_tls)) {
    FG_ASSIGN_OR_RETURN(grpc_options.tls,
                        net::LoadTlsCredentials(options.grpc_tls, GrpcTlsFlags()));
  } else {
    grpc_options.tls = http_options.tls;
  }
  if (cluster_ != nullptr && grpc_options.impl == frontends::GrpcImpl::kGrpcpp) {
    // A forwarded check waits for its owner. Our front ends suspend it and go on serving;
    // grpc++'s blocks a thread, so its calls run on workers of their own.
    grpc_options.worker_threads = 32;
  }
  if (std::function<bool()> ready = ReadyCheck(options, limiter_.get())) {
    http_options.ready = ready;
    grpc_options.ready = std::move(ready);
  }
  http_ = frontends::NewHttpServer(http_options, service_.get(), admin_.get(), &metrics_);
  FG_RETURN_IF_ERROR(http_->Start());
  grpc_ = frontends::NewGrpcServer(grpc_options, service_.get(), &metrics_);
  FG_RETURN_IF_ERROR(grpc_->Start());
  shed_watch_ = std::make_unique<service::ShedWatch>(std::vector<service::ShedWatch::Counter>{
      {"http", &metrics_.http.shed}, {"grpc", &metrics_.grpc.shed}});
  shed_watch_->Start();
  return absl::OkStatus();
}

void Server::Shutdown(absl::Duration grace) {
  if (shut_down_) {
    return;
  }
  shut_down_ = true;
  if (discovery_ != nullptr) {
    // Graceful leave: stop owning keys (checks here go to the members that stay), hand over what
    // their replicas may lack, then deregister so that the others stop routing here. Front ends
    // keep serving meanwhile.
    const cluster::LeaveResult left = cluster_->Leave(std::min(grace, absl::Seconds(2)));
    const absl::Status deregistered = discovery_->Deregister();
    if (deregistered.ok()) {
      common::Log(common::LogLevel::kInfo, "left_cluster",
                  {{"states", left.states}, {"bytes", left.bytes}, {"took", left.took}});
    } else {
      common::Log(common::LogLevel::kWarn, "left_cluster",
                  {{"states", left.states},
                   {"bytes", left.bytes},
                   {"took", left.took},
                   {"deregister_error", deregistered.message()}});
    }
  }
  if (xds_ != nullptr) {
    xds_->Stop();
  }
  config_->Stop();
  // Both front ends drain at once: each stops taking new work and finishes what it has.
  if (shed_watch_ != nullptr) {
    shed_watch_->Stop();
  }
  grpc_->Shutdown(grace);
  http_->Shutdown(grace);
  if (etcd_config_ != nullptr) {
    etcd_config_->Stop();
  }
  if (discovery_ != nullptr) {
    discovery_->Stop();
  }
  if (cluster_ != nullptr) {
    cluster_->Shutdown();
  }
  if (statsd_ != nullptr) {
    statsd_->Stop();  // with a last flush of what the drain counted
  }
}

Server::~Server() {
  if (http_ != nullptr && grpc_ != nullptr && config_ != nullptr) {
    Shutdown(absl::Seconds(1));
  }
}

}  // namespace floodgate::server
