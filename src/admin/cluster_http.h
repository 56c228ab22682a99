#pragma once

// Renders cluster state for people and Prometheus: GET /v1/cluster and the cluster section of
// /metrics (docs/cluster.md, "Visibility").

#include <string>

#include "src/cluster/cluster_store.h"

namespace floodgate::admin {

// {"node":..., "quorum":..., "members":[{"id","address","self","alive","last_contact_ms_ago",
//  "ownership_share","replication_lag_ms","forwarded","forward_batches","forward_errors",
//  "replicated"}...], "failovers":..., ...}
std::string ClusterJson(const cluster::ClusterStats& stats);

// Prometheus text for the floodgate_cluster_* families.
std::string ClusterPrometheus(const cluster::ClusterStats& stats);

}  // namespace floodgate::admin
