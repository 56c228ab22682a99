#include "src/admin/cluster_config.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "src/common/rate_limited_log.h"

namespace floodgate::admin {
namespace pb = ::floodgate::peer::v1;

pb::DomainVersion ClusterConfigSync::VersionOf(const std::string& domain) const {
  auto it = versions_.find(domain);
  if (it != versions_.end()) {
    return it->second;
  }
  pb::DomainVersion v;
  v.set_domain(domain);
  return v;
}

absl::StatusOr<std::vector<pb::ConfigChange>> ClusterConfigSync::LocalChange(
    const std::string& domain, std::optional<std::string_view> yaml) {
  absl::MutexLock lock(&mu_);
  // Apply never takes a version above the cap, and neither do we: clock_ + 1 cannot wrap.
  static_assert(kMaxConfigVersion < std::numeric_limits<uint64_t>::max());
  if (clock_ >= kMaxConfigVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat("config versions are exhausted (", clock_, "); restart the whole cluster"));
  }
  if (absl::Status changed =
          yaml.has_value() ? config_->PutDomain(domain, *yaml) : config_->DeleteDomain(domain);
      !changed.ok()) {
    return changed;
  }
  pb::DomainVersion v;
  v.set_domain(domain);
  v.set_version(++clock_);
  v.set_origin(self_id_);
  const std::shared_ptr<const core::Config> config = limiter_->config();
  const core::DomainConfig* found = config->FindDomain(domain);
  v.set_deleted(found == nullptr);
  versions_[domain] = v;
  pb::ConfigChange change;
  *change.mutable_version() = v;
  if (found != nullptr) {
    change.set_yaml(found->source);
  }
  return std::vector<pb::ConfigChange>{change};
}

std::vector<pb::DomainVersion> ClusterConfigSync::Versions() {
  absl::MutexLock lock(&mu_);
  const std::shared_ptr<const core::Config> config = limiter_->config();
  std::vector<pb::DomainVersion> out;
  for (const auto& [name, domain] : config->domains) {
    out.push_back(VersionOf(name));
  }
  for (const auto& [name, v] : versions_) {
    if (v.deleted()) {
      out.push_back(v);
    }
  }
  return out;
}

std::vector<pb::ConfigChange> ClusterConfigSync::Get(const std::vector<std::string>& domains) {
  absl::MutexLock lock(&mu_);
  const std::shared_ptr<const core::Config> config = limiter_->config();
  std::vector<pb::ConfigChange> out;
  for (const std::string& name : domains) {
    pb::ConfigChange change;
    *change.mutable_version() = VersionOf(name);
    if (const core::DomainConfig* found = config->FindDomain(name); found != nullptr) {
      change.mutable_version()->set_deleted(false);
      change.set_yaml(found->source);
    } else if (!change.version().deleted()) {
      continue;  // unknown here
    }
    out.push_back(std::move(change));
  }
  return out;
}

int ClusterConfigSync::Apply(const std::vector<pb::ConfigChange>& changes) {
  return ApplyFrom(changes, "cluster");
}

int ClusterConfigSync::ApplyFrom(const std::vector<pb::ConfigChange>& changes,
                                 std::string_view source) {
  absl::MutexLock lock(&mu_);
  int applied = 0;
  for (const pb::ConfigChange& change : changes) {
    const pb::DomainVersion& theirs = change.version();
    const std::string& domain = theirs.domain();
    const uint64_t most = std::min(kMaxConfigVersion, clock_ + kMaxVersionLead);
    if (theirs.version() > most) {
      common::RateLimitedLog::Default().Log(
          common::LogLevel::kError, "config_refused",
          {{"source", source},
           {"domain", domain},
           {"origin", theirs.origin()},
           {"domain_version", theirs.version()},
           {"error", absl::StrCat("the version is from the future (at most ", most, " here)")}});
      continue;
    }
    clock_ = std::max(clock_, theirs.version());
    if (!cluster::IsNewerConfig(theirs, VersionOf(domain))) {
      continue;
    }
    absl::Status status;
    if (theirs.deleted()) {
      status = config_->DeleteDomain(domain);
      if (absl::IsNotFound(status)) {
        status = absl::OkStatus();
      }
    } else {
      status = config_->PutDomain(domain, change.yaml());
    }
    if (!status.ok()) {
      // A change another node accepted can only fail here for local reasons (a read-only
      // directory, a single-file config): say so and keep serving the old config.
      common::RateLimitedLog::Default().Log(common::LogLevel::kError, "config_refused",
                                            {{"source", source},
                                             {"domain", domain},
                                             {"origin", theirs.origin()},
                                             {"domain_version", theirs.version()},
                                             {"error", status.message()}});
      continue;
    }
    versions_[domain] = theirs;
    ++applied;
    // The admin change this node took itself is logged by the front end, with who asked.
    if (source != "admin") {
      const std::shared_ptr<const core::Config> now = limiter_->config();
      common::Log(common::LogLevel::kInfo, "config_change",
                  {{"source", source},
                   {"action", theirs.deleted() ? "delete" : "put"},
                   {"domain", domain},
                   {"origin", theirs.origin()},
                   {"domain_version", theirs.version()},
                   {"version", now != nullptr ? now->version : 0}});
    }
  }
  return applied;
}

uint64_t ClusterConfigSync::Fingerprint() {
  const std::shared_ptr<const core::Config> config = limiter_->config();
  if (config == nullptr) {
    return 0;
  }
  uint64_t h = 0xCBF29CE484222325ULL;
  auto mix = [&h](std::string_view bytes) {
    for (unsigned char c : bytes) {
      h = (h ^ c) * 0x100000001B3ULL;
    }
    h = (h ^ 0xFF) * 0x100000001B3ULL;  // a separator no YAML byte sequence can fake
  };
  for (const auto& [name, domain] : config->domains) {  // a std::map: in name order
    mix(name);
    mix(domain->source);
  }
  return h == 0 ? 1 : h;
}

}  // namespace floodgate::admin
