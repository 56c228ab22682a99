#include "src/admin/node_admin.h"

#include "src/admin/cluster_http.h"

namespace floodgate::admin {

absl::StatusOr<uint64_t> NodeAdmin::PutDomain(const std::string& domain, std::string_view yaml) {
  if (config_ == nullptr) {
    return absl::UnimplementedError("this server has no config manager");
  }
  if (absl::Status changed = config_->PutDomain(domain, yaml); !changed.ok()) {
    return changed;
  }
  return Changed(domain);
}

absl::StatusOr<uint64_t> NodeAdmin::DeleteDomain(const std::string& domain) {
  if (config_ == nullptr) {
    return absl::UnimplementedError("this server has no config manager");
  }
  if (absl::Status changed = config_->DeleteDomain(domain); !changed.ok()) {
    return changed;
  }
  return Changed(domain);
}

uint64_t NodeAdmin::Changed(const std::string& domain) {
  if (cluster_ != nullptr && sync_ != nullptr) {
    cluster_->BroadcastConfig(sync_->LocalChange(domain));
  }
  std::shared_ptr<const core::Config> now = limiter_->config();
  return now != nullptr ? now->version : 0;
}

std::string NodeAdmin::PrometheusText() {
  service::ConfigStats stats;
  if (config_ != nullptr) {
    stats = config_->stats();
  } else {
    stats.version = limiter_->GetStats().config_version;
  }
  std::string text = service::RenderPrometheus(*limiter_, *metrics_, stats);
  if (cluster_ != nullptr) {
    text += ClusterPrometheus(cluster_->GetClusterStats());
  }
  return text;
}

absl::StatusOr<std::string> NodeAdmin::ClusterJson() {
  if (cluster_ == nullptr) {
    return absl::NotFoundError("not in cluster mode (start with --node-id and --peers)");
  }
  return admin::ClusterJson(cluster_->GetClusterStats());
}

}  // namespace floodgate::admin
