#include "src/admin/node_admin.h"

#include <algorithm>
#include <memory>

#include "absl/strings/str_cat.h"
#include "src/admin/cluster_http.h"
#include "src/core/config.h"
#include "src/core/top_keys.h"

namespace floodgate::admin {
namespace {

constexpr int64_t kSecondNs = 1'000'000'000;

uint64_t CountDescriptors(const core::DescriptorNode& node) {
  uint64_t n = 0;
  for (const core::DescriptorNode& child : node.children) {
    n += 1 + CountDescriptors(child);
  }
  return n;
}

}  // namespace

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

service::NodeStatus NodeAdmin::Status() {
  service::NodeStatus status;
  const int64_t now_ns = info_.clock->NowNs();
  status.version = info_.version;
  status.started_at_seconds = info_.started_at_ns / kSecondNs;
  status.uptime_seconds = std::max<int64_t>(0, (now_ns - info_.started_at_ns) / kSecondNs);
  status.cap_bytes = info_.cap_bytes;
  if (std::shared_ptr<const core::Config> config = limiter_->config(); config != nullptr) {
    status.config_version = config->version;
    status.domains = config->domains.size();
  }
  // In a cluster the limiter's store is the ClusterStore, whose stats are this node's tables.
  const StoreStats store = limiter_->store()->GetStats();
  status.keys = store.keys;
  status.bytes = store.bytes;
  if (cluster_ != nullptr) {
    status.cluster = true;
    status.node_id = cluster_->GetClusterStats().self_id;
  }
  return status;
}

service::TopRefusedView NodeAdmin::TopRefused(size_t n) {
  service::TopRefusedView view;
  view.window_seconds = core::WindowedTopKeys::kWindowSeconds;
  core::TopSnapshot top;
  if (cluster_ != nullptr) {
    cluster::ClusterTopRefused gathered = cluster_->TopRefused(info_.top_timeout, n);
    view.nodes = std::move(gathered.nodes);
    view.missing = std::move(gathered.missing);
    top = std::move(gathered.top);
  } else {
    if (info_.top != nullptr) {
      top = core::MergeTopSnapshots({info_.top->Snapshot()}, n);
    }
  }
  view.refusals = top.total;
  for (const core::TopKey& key : top.keys) {
    view.keys.push_back(service::RefusedKeyOf(key));
  }
  return view;
}

absl::StatusOr<service::ValidationReport> NodeAdmin::ValidateDomain(const std::string& domain,
                                                                    std::string_view yaml) {
  // Parsed first on its own, so that errors name the body ("body:LINE: reason"), not a file of
  // this server's.
  absl::StatusOr<std::shared_ptr<const core::DomainConfig>> parsed =
      core::ParseDomainConfig(yaml, "body");
  if (!parsed.ok()) {
    return parsed.status();
  }
  if ((*parsed)->domain != domain) {
    return absl::InvalidArgumentError(absl::StrCat("the body's domain '", (*parsed)->domain,
                                                   "' does not match the path's '", domain, "'"));
  }
  // Then as a PUT would be checked: a name the API takes, a domain the admin API may change,
  // and the whole config it would make.
  if (config_ != nullptr) {
    if (absl::Status valid = config_->ValidateChange(domain, yaml); !valid.ok()) {
      return valid;
    }
  }
  return service::ValidationReport{domain, CountDescriptors((*parsed)->root)};
}

}  // namespace floodgate::admin
