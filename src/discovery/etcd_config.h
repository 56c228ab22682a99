#pragma once

// Cluster-wide config in etcd (--etcd): admin changes are written under `<prefix>/config/<domain>`
// and every node follows that folder, so a change made on one node reaches all of them, and the
// whole set survives a restart of every node. A domain's version is the etcd revision of its
// last change (one counter for the whole cluster: etcd's).
//
// A value is a short header and the YAML:
//
//   floodgate-config 1
//   origin: <node id>
//   deleted: 0|1
//
//   <the domain's YAML; empty when deleted>
//
// A delete is kept as a tombstone (deleted: 1) rather than removed, so that a domain from the
// nodes' files stays deleted when they restart.
//
// Thread-safety: every method may be called from any thread; `on_entries` runs on the follower's
// own thread, never two at once, never after Stop returns.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "src/discovery/etcd_client.h"

namespace floodgate::discovery {

// One domain's config as etcd holds it.
struct ConfigEntry {
  std::string domain;
  std::string origin;    // the node that made the change
  bool deleted = false;  // a tombstone
  std::string yaml;      // empty when deleted
  int64_t revision = 0;  // etcd's mod revision: the change's version

  bool operator==(const ConfigEntry&) const = default;
};

// The value written for a change (header, blank line, YAML).
std::string EncodeConfigValue(std::string_view origin, std::optional<std::string_view> yaml);
// Reads a value written by EncodeConfigValue; InvalidArgument when it is not one.
absl::StatusOr<ConfigEntry> DecodeConfigValue(std::string_view domain, std::string_view value,
                                              int64_t revision);

struct EtcdConfigOptions {
  std::string endpoints;  // etcd's client URLs, comma-separated
  std::string prefix;     // the cluster's folder: "/floodgate/<cluster>"
  std::chrono::milliseconds call_timeout{1000};
  std::chrono::milliseconds backoff_initial{100};
  std::chrono::milliseconds backoff_max{2000};
};

class EtcdConfigStore {
 public:
  using OnEntries = std::function<void(const std::vector<ConfigEntry>& entries)>;

  static absl::StatusOr<std::unique_ptr<EtcdConfigStore>> Create(EtcdConfigOptions options);
  ~EtcdConfigStore();

  // Writes a domain's YAML (nullopt: a tombstone) for every node; returns its revision.
  absl::StatusOr<int64_t> Write(std::string_view domain, std::string_view origin,
                                std::optional<std::string_view> yaml);
  // Reads every domain under the prefix (the config to start with).
  absl::StatusOr<std::vector<ConfigEntry>> ReadAll();
  // Follows the prefix on a thread of its own: every entry (once at first, then each change) goes
  // to `on_entries`; when etcd goes away it reads everything again when back (with backoff), so a
  // change made meanwhile is not missed. Values that are not ours are logged and skipped.
  void Follow(OnEntries on_entries);
  // Stops following (joins the thread). Idempotent.
  void Stop();

 private:
  explicit EtcdConfigStore(EtcdConfigOptions options, std::unique_ptr<EtcdClient> client);
  void FollowLoop();
  std::string KeyOf(std::string_view domain) const;
  std::string Folder() const;

  const EtcdConfigOptions options_;
  std::unique_ptr<EtcdClient> client_;
  OnEntries on_entries_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread follower_;
};

}  // namespace floodgate::discovery
