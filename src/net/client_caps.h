#pragma once

// Counts open connections per client address for a front end's max_connections_per_client, so
// that one client (or one misbehaving proxy) cannot take every connection slot.
//
// Thread-safety: all methods may be called from any thread.

#include <cstddef>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

namespace floodgate::net {

class ClientCaps {
 public:
  // `max_per_client` 0: no cap (Admit always succeeds and keeps no count).
  explicit ClientCaps(size_t max_per_client) : max_per_client_(max_per_client) {}

  bool enabled() const { return max_per_client_ != 0; }

  // Counts a new connection of `client`; false (counting nothing) when it already holds the cap.
  bool Admit(const std::string& client) {
    if (!enabled()) {
      return true;
    }
    absl::MutexLock lock(&mu_);
    size_t& open = open_[client];
    if (open >= max_per_client_) {
      return false;
    }
    ++open;
    return true;
  }

  // Uncounts a connection that Admit counted.
  void Release(const std::string& client) {
    if (!enabled()) {
      return;
    }
    absl::MutexLock lock(&mu_);
    auto it = open_.find(client);
    if (it != open_.end() && --it->second == 0) {
      open_.erase(it);
    }
  }

 private:
  const size_t max_per_client_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, size_t> open_ ABSL_GUARDED_BY(mu_);
};

}  // namespace floodgate::net
