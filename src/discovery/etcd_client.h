#pragma once

// A small client of etcd's v3 gRPC API: the key-value, lease and watch calls that discovery
// (and the config store, under `<prefix>/config/`) needs.
//
// Endpoints are etcd's client URLs, `http://host:port` (comma-separated for a cluster). Every
// call goes to the endpoint that answered last and, when it cannot be reached (gRPC
// UNAVAILABLE), fails over to the next one within the same call. Each attempt has a deadline
// (EtcdClientOptions::call_timeout unless the call takes its own). Only plaintext (no TLS, no
// auth) for now.
//
// Errors are absl::Status in the user's terms: kUnavailable "etcd at 127.0.0.1:2379
// unreachable: ..." when no endpoint answered in time; kNotFound for a lease etcd no longer
// has; other gRPC codes as they come, prefixed with the endpoint and the call.
//
// Thread-safety: every method may be called from any thread at once. An EtcdWatch runs its own
// thread; the client must outlive every watch it started.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace floodgate::discovery {

struct EtcdClientOptions {
  // "http://127.0.0.1:2379" or "http://a:2379,http://b:2379"; "host:port" without a scheme
  // is accepted too.
  std::string endpoints;
  // The deadline of one attempt of one call.
  std::chrono::milliseconds call_timeout{1000};
};

struct EtcdKeyValue {
  std::string key;
  std::string value;
  int64_t mod_revision = 0;
  int64_t lease = 0;  // 0: none
};

struct EtcdRangeResult {
  std::vector<EtcdKeyValue> kvs;  // sorted by key
  int64_t revision = 0;           // the store's revision the answer reflects
};

struct EtcdEvent {
  enum class Type { kPut, kDelete };
  Type type = Type::kPut;
  EtcdKeyValue kv;  // for kDelete: the key and the revision of the deletion
};

// A watch started by EtcdClient::Watch. Destroying it cancels it.
class EtcdWatch {
 public:
  virtual ~EtcdWatch() = default;
  // Cancels the watch and joins its thread: no callback runs after it returns. Must not be
  // called from the watch's own callbacks. Idempotent.
  virtual void Cancel() = 0;
};

class EtcdClient {
 public:
  // Called on the watch's thread with the events of one watch response, in revision order, and
  // the revision the response reflects.
  using OnEvents = std::function<void(const std::vector<EtcdEvent>& events, int64_t revision)>;
  // Called once on the watch's thread when the watch ends by itself (etcd went away: kUnavailable;
  // the start revision was compacted: kOutOfRange; etcd cancelled it: kAborted). Not called
  // after Cancel.
  using OnEnd = std::function<void(const absl::Status& status)>;

  // Parses the endpoints and makes one channel per endpoint (no connection is made yet).
  // InvalidArgument for an empty list or an endpoint that is not http://host:port.
  static absl::StatusOr<std::unique_ptr<EtcdClient>> Create(const EtcdClientOptions& options);
  ~EtcdClient();

  // Grants a lease of `ttl_seconds`; returns its id.
  absl::StatusOr<int64_t> Grant(int64_t ttl_seconds);
  // Revokes a lease, deleting every key attached to it. kNotFound when etcd has no such lease.
  // `timeout` bounds the whole call (0: call_timeout per attempt).
  absl::Status Revoke(int64_t lease_id, std::chrono::milliseconds timeout = {});
  // Renews a lease once; returns the seconds it has left. kNotFound when it has expired.
  absl::StatusOr<int64_t> KeepAliveOnce(int64_t lease_id);
  // Writes `key`, attached to `lease_id` (0: no lease); returns the store's new revision.
  absl::StatusOr<int64_t> Put(std::string_view key, std::string_view value, int64_t lease_id = 0);
  // Deletes `key`; returns how many keys were deleted (0 or 1).
  absl::StatusOr<int64_t> Delete(std::string_view key);
  // Returns the value of `key`, or nullopt when there is no such key.
  absl::StatusOr<std::optional<EtcdKeyValue>> Get(std::string_view key);
  // Returns every key that starts with `prefix`, and the revision of that answer.
  absl::StatusOr<EtcdRangeResult> RangePrefix(std::string_view prefix);

  // Watches every key that starts with `prefix`, from `start_revision` (inclusive; 0: from
  // now), on a thread of its own. Never fails here: a watch that cannot start ends through
  // `on_end`.
  std::unique_ptr<EtcdWatch> WatchPrefix(std::string_view prefix, int64_t start_revision,
                                         OnEvents on_events, OnEnd on_end);

  // Returns the host:port of the endpoint calls go to now.
  std::string current_endpoint() const;

 private:
  struct Endpoint;
  class Watcher;

  explicit EtcdClient(const EtcdClientOptions& options);
  // Runs `attempt` on each endpoint in turn from the current one until one answers or fails
  // with something other than UNAVAILABLE; returns the status in the user's terms.
  // `attempt(EtcdStubs&, grpc::ClientContext&)` returns a grpc::Status.
  template <typename Attempt>
  absl::Status Call(std::string_view what, std::chrono::milliseconds timeout, Attempt attempt);

  EtcdClientOptions options_;
  std::vector<std::unique_ptr<Endpoint>> endpoints_;
  std::atomic<size_t> current_{0};
};

}  // namespace floodgate::discovery
