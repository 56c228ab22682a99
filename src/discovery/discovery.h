#pragma once

// Where a cluster's members come from when they are not a fixed --peers list: an existing
// engine that platform teams already run (etcd: etcd_discovery.h; DNS records of a Kubernetes
// headless Service: dns_discovery.h). A Discovery tells its owner the full member list each time
// it changes; the owner (the server) hands it to the cluster (ClusterStore::SetMembers).
//
// A discovery source never stops the node from serving: when its engine cannot be reached it
// keeps the last list it reported, retries with backoff and says so in status().
//
// Thread-safety: every method may be called from any thread; `on_change` runs on the source's
// own thread, never two at once.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace floodgate::discovery {

// One member as discovery sees it.
struct Node {
  std::string id;       // the node id (--node-id; for DNS, the address itself)
  std::string address;  // host:port of its peer listener

  bool operator==(const Node&) const = default;
};

// How a discovery source is doing, for the log, /v1/cluster and metrics.
struct DiscoveryStatus {
  std::string source;        // "etcd" or "dns"
  bool connected = false;    // its engine answered the last call
  std::string last_error;    // the last failure, in the user's terms ("" when none yet)
  uint64_t errors = 0;       // failed calls so far
  uint64_t reconnects = 0;   // times it came back after a failure
  uint64_t updates = 0;      // member lists reported to on_change
  int64_t revision = 0;      // etcd: the revision of the last list seen; DNS: 0
};

class Discovery {
 public:
  // Called with every member (this node included when it is registered), sorted by id, each
  // time the list changes; the first call comes from Start when the engine answered.
  using OnChange = std::function<void(const std::vector<Node>& members)>;

  virtual ~Discovery() = default;

  // Registers this node (where the source registers: etcd) and starts following the member
  // list. Waits, bounded, for the engine's first answer: returns an error when it could not be
  // reached (the source keeps retrying in the background; the caller decides whether to serve
  // alone or to refuse to start, --require-discovery).
  virtual absl::Status Start(OnChange on_change) = 0;
  // Removes this node's registration now (graceful leave), bounded; keeps following.
  virtual absl::Status Deregister() = 0;
  // Asks the engine again now (a peer failed: DNS re-resolves at once); a no-op where the source
  // is told of changes as they happen (etcd's watch).
  virtual void Refresh() {}
  // Stops following; no on_change call runs after it returns. Idempotent.
  virtual void Stop() = 0;
  virtual DiscoveryStatus status() const = 0;
};

}  // namespace floodgate::discovery
