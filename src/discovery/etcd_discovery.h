#pragma once

// Cluster members from etcd (v3 API): each node registers itself under
// `<prefix>/members/<id>` with a lease it keeps alive, and follows every key under
// `<prefix>/members/` with a watch. A node that stops keeping its lease alive (crash, network
// cut) drops out of everyone's list after the lease TTL; one that calls Deregister drops out at
// once.
//
//   EtcdDiscoveryOptions options;
//   options.endpoints = "http://10.0.0.5:2379";
//   options.prefix = "/floodgate/prod";
//   options.self = {"node-a", "10.0.1.7:7946"};
//   absl::StatusOr<std::unique_ptr<Discovery>> discovery = NewEtcdDiscovery(options);
//   absl::Status started = (*discovery)->Start([&](const std::vector<Node>& m) { ... });
//
// How it behaves when etcd fails (the Discovery contract): every failed call sets
// status().connected to false, records last_error and counts errors; the last member list
// stays; it retries with backoff (backoff_initial doubling to backoff_max) and counts a
// reconnect when a session is back. A lost lease (etcd says it expired, or etcd lost it) is
// replaced by a new one and the node registers again.
//
// Threads: one of its own (lease keep-alive, registration, the first Range after each
// (re)connection) and the watch's; on_change runs on either, never two at once, never after
// Stop returns. Do not call Stop or Deregister from on_change. Deregister waits for a lease or
// registration call in progress (each bounded by call_timeout), then for the revoke.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "src/discovery/discovery.h"

namespace floodgate::discovery {

struct EtcdDiscoveryOptions {
  // etcd's client URLs, comma-separated: "http://127.0.0.1:2379,http://127.0.0.2:2379".
  std::string endpoints;
  // The cluster's folder in etcd, without a trailing slash: "/floodgate/<cluster>".
  std::string prefix;
  // This node as the others should see it.
  Node self;
  // Whether Start registers this node (false: only follow the list).
  bool register_self = true;
  // The lease's time to live: how long a crashed node stays listed. etcd refuses less than
  // about 2 s (it raises short TTLs to its minimum).
  int64_t lease_ttl_seconds = 3;
  // How often the lease is renewed; 0: a third of the TTL.
  std::chrono::milliseconds keepalive_interval{0};
  // How long Start waits for etcd's first answer.
  std::chrono::milliseconds start_timeout{2000};
  // The deadline of one call to etcd.
  std::chrono::milliseconds call_timeout{1000};
  // How long Deregister waits for etcd to revoke the lease.
  std::chrono::milliseconds deregister_timeout{1000};
  // Retry after a failure: backoff_initial, doubling up to backoff_max.
  std::chrono::milliseconds backoff_initial{100};
  std::chrono::milliseconds backoff_max{2000};
};

// Returns a Discovery that follows (and joins) the members under options.prefix in etcd.
// InvalidArgument for bad endpoints, an empty or slash-ended prefix, a missing self id or
// address (when register_self), or a TTL under 1 s. Nothing is called before Start.
absl::StatusOr<std::unique_ptr<Discovery>> NewEtcdDiscovery(const EtcdDiscoveryOptions& options);

}  // namespace floodgate::discovery
