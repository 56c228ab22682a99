#pragma once

// What the admin endpoints of a front end may ask of the node: the config view and changes,
// metrics and the cluster view. Implemented by the admin layer (src/admin/node_admin.h), which
// sits above the service; front ends see only this interface.
//
// Thread-safety: every method may be called from any number of threads at once.

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace floodgate::service {

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
};

}  // namespace floodgate::service
