#include "src/admin/node_admin.h"

#include "absl/strings/str_cat.h"
#include "src/admin/cluster_http.h"

namespace floodgate::admin {

absl::StatusOr<uint64_t> NodeAdmin::PutDomain(const std::string& domain, std::string_view yaml) {
  return Change(domain, yaml);
}

absl::StatusOr<uint64_t> NodeAdmin::DeleteDomain(const std::string& domain) {
  return Change(domain, std::nullopt);
}

absl::StatusOr<uint64_t> NodeAdmin::Change(const std::string& domain,
                                           std::optional<std::string_view> yaml) {
  if (config_ == nullptr) {
    return absl::UnimplementedError("this server has no config manager");
  }
  if (store_ != nullptr && sync_ != nullptr) {
    // Checked here, written to the store, then applied here at the store's version (the other
    // nodes get it from the store, and at once from the push below).
    if (absl::Status valid = config_->ValidateChange(domain, yaml); !valid.ok()) {
      return valid;
    }
    absl::StatusOr<uint64_t> version = store_->Write(domain, yaml);
    if (!version.ok()) {
      return absl::UnavailableError(
          absl::StrCat("config change not made: ", version.status().message()));
    }
    peer::v1::ConfigChange change;
    change.mutable_version()->set_domain(domain);
    change.mutable_version()->set_version(*version);
    change.mutable_version()->set_origin(sync_->self_id());
    change.mutable_version()->set_deleted(!yaml.has_value());
    if (yaml.has_value()) {
      change.set_yaml(std::string(*yaml));
    }
    sync_->ApplyFrom({change}, "admin");
    if (cluster_ != nullptr) {
      cluster_->BroadcastConfig({change});
    }
  } else if (cluster_ != nullptr && sync_ != nullptr) {
    // Applied and versioned under the sync's lock: a peer's change cannot slip in between and
    // be pushed under this change's version.
    absl::StatusOr<std::vector<peer::v1::ConfigChange>> change = sync_->LocalChange(domain, yaml);
    if (!change.ok()) {
      return change.status();
    }
    cluster_->BroadcastConfig(*change);
  } else if (absl::Status changed = yaml.has_value() ? config_->PutDomain(domain, *yaml)
                                                     : config_->DeleteDomain(domain);
             !changed.ok()) {
    return changed;
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
  for (const std::function<std::string()>& source : metrics_sources_) {
    text += source();
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
