#pragma once

// The node's admin API (service/admin_api.h) over the config manager, the metrics and, in a
// cluster, the cluster store and its config sync.
//
// Thread-safety: as AdminApi.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/time/time.h"
#include "floodgate/clock.h"

#include "src/admin/cluster_config.h"
#include "src/admin/config_manager.h"
#include "src/cluster/cluster_store.h"
#include "src/limiter/limiter.h"
#include "src/service/admin_api.h"
#include "src/service/metrics.h"
#include "src/service/top_refused.h"

namespace floodgate::admin {

// Where admin config changes go cluster-wide when an external store holds the config (etcd,
// --etcd): a change is checked here, written there, and takes the store's version.
class ConfigStore {
 public:
  virtual ~ConfigStore() = default;
  // Writes `domain`'s YAML (nullopt: deleted) for every node; returns its version (etcd's
  // revision), or why it could not (the change is then not made anywhere).
  virtual absl::StatusOr<uint64_t> Write(const std::string& domain,
                                         std::optional<std::string_view> yaml) = 0;
};

// What GET /v1/status and GET /v1/top need besides the config and the store
// (NodeAdmin::SetNodeInfo).
struct NodeInfo {
  std::string version;
  int64_t started_at_ns = 0;  // on `clock`
  uint64_t cap_bytes = 0;     // --max-memory; 0: none
  const Clock* clock = SystemClock::Get();
  // The refusals the check pipeline counts (may be null: /v1/top then shows none here).
  service::TopRefused* top = nullptr;
  // How long GET /v1/top waits for the other members.
  absl::Duration top_timeout = absl::Milliseconds(300);
};

class NodeAdmin final : public service::AdminApi {
 public:
  // Every pointer must outlive the admin. `config` may be null: admin changes then fail with
  // Unimplemented. `cluster` and `sync` are null on a single node.
  NodeAdmin(ConfigManager* config, limiter::Limiter* limiter, const service::ServerMetrics* metrics,
            cluster::ClusterStore* cluster = nullptr, ClusterConfigSync* sync = nullptr)
      : config_(config), limiter_(limiter), metrics_(metrics), cluster_(cluster), sync_(sync) {}

  absl::StatusOr<uint64_t> PutDomain(const std::string& domain, std::string_view yaml) override;
  absl::StatusOr<uint64_t> DeleteDomain(const std::string& domain) override;
  std::string PrometheusText() override;
  // Sends admin changes through `store` (see ConfigStore); call before serving. May be null.
  void SetConfigStore(ConfigStore* store) { store_ = store; }
  absl::StatusOr<std::string> ClusterJson() override;
  service::NodeStatus Status() override;
  service::TopRefusedView TopRefused(size_t n) override;
  absl::StatusOr<service::ValidationReport> ValidateDomain(const std::string& domain,
                                                           std::string_view yaml) override;
  // Sets what Status and TopRefused report beyond the config and store; call before serving.
  void SetNodeInfo(NodeInfo info) { info_ = std::move(info); }
  // Appends `source`'s Prometheus text to /metrics (the store's own metrics: a Redis store's);
  // call before serving.
  void AddMetricsSource(std::function<std::string()> source) {
    metrics_sources_.push_back(std::move(source));
  }

 private:
  // Applies a PUT (`yaml` set) or DELETE and, in a cluster, spreads it; returns the version in
  // force.
  absl::StatusOr<uint64_t> Change(const std::string& domain, std::optional<std::string_view> yaml);

  ConfigManager* const config_;
  limiter::Limiter* const limiter_;
  const service::ServerMetrics* const metrics_;
  cluster::ClusterStore* const cluster_;
  ClusterConfigSync* const sync_;
  ConfigStore* store_ = nullptr;
  std::vector<std::function<std::string()>> metrics_sources_;
  NodeInfo info_;
};

}  // namespace floodgate::admin
