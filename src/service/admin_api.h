#pragma once

// What the admin endpoints of a front end may ask of the node: the config view and changes,
// metrics and the cluster view. Implemented by the admin layer (src/admin/node_admin.h), which
// sits above the service; front ends see only this interface.
//
// Thread-safety: every method may be called from any number of threads at once.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "src/service/top_refused.h"

namespace floodgate::service {

// This node as GET /v1/status shows it.
struct NodeStatus {
  std::string node_id;             // "" on a single node
  std::string version;             // the build's version (project(... VERSION) in CMakeLists.txt)
  int64_t started_at_seconds = 0;  // Unix time
  int64_t uptime_seconds = 0;
  uint64_t config_version = 0;
  uint64_t domains = 0;
  uint64_t keys = 0;       // key states in this node's store
  uint64_t bytes = 0;      // their memory
  uint64_t cap_bytes = 0;  // --max-memory; 0: none
  bool cluster = false;
};

// The descriptors refused most over the last minute (GET /v1/top).
struct TopRefusedView {
  int64_t window_seconds = 0;
  std::vector<std::string> nodes;    // members whose refusals are counted
  std::vector<std::string> missing;  // members whose refusals are not (dead, or no answer)
  std::vector<RefusedKey> keys;      // largest first
  uint64_t refusals = 0;             // every refusal counted over the window, on `nodes`
};

// A domain's YAML that passed validation (POST /v1/validate/{domain}).
struct ValidationReport {
  std::string domain;
  uint64_t descriptors = 0;  // descriptor entries, at every level
};

class AdminApi {
 public:
  virtual ~AdminApi() = default;

  // Validates `yaml` (its `domain:` must equal `domain`), applies it, persists it and, in a
  // cluster, spreads it. Returns the config version now in force. InvalidArgument for a bad
  // config (with file:line), FailedPrecondition when the node cannot take admin changes.
  virtual absl::StatusOr<uint64_t> PutDomain(const std::string& domain, std::string_view yaml) = 0;
  // Removes a domain everywhere. Returns the config version now in force; NotFound when the
  // domain does not exist.
  virtual absl::StatusOr<uint64_t> DeleteDomain(const std::string& domain) = 0;

  // Returns every metric in Prometheus text format 0.0.4.
  virtual std::string PrometheusText() = 0;

  // Returns the cluster view (GET /v1/cluster) as JSON; NotFound on a single node.
  virtual absl::StatusOr<std::string> ClusterJson() = 0;

  // Returns this node's status (GET /v1/status).
  virtual NodeStatus Status() = 0;
  // Returns the `n` descriptors refused most over the last minute, cluster-wide: every live
  // member is asked (a short timeout); those that do not answer are listed missing.
  virtual TopRefusedView TopRefused(size_t n) = 0;
  // Checks `yaml` as PutDomain would, changing nothing. InvalidArgument for a bad config (its
  // message "file:line: reason" when the error has a line).
  virtual absl::StatusOr<ValidationReport> ValidateDomain(const std::string& domain,
                                                          std::string_view yaml) = 0;
};

}  // namespace floodgate::service
