#pragma once

// Owns the config source: loads it, watches it for edits, and applies admin changes.
//
// The source is a YAML file or a directory of them (one domain each). A change is parsed and
// validated completely before it is swapped into the limiter; a bad change is refused with
// file:line, counted, and the old config keeps serving. Admin PUT/DELETE write the domain's file
// (atomically, by rename) so changes survive restarts; the watcher then sees the same content
// and does nothing. Thread-safe.

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "src/core/config.h"
#include "src/limiter/limiter.h"
#include "src/service/metrics.h"

namespace floodgate::admin {

class ConfigManager {
 public:
  // Loads `path` and installs it in `limiter` (which must outlive the manager). Fails if the
  // initial config is invalid.
  static absl::StatusOr<std::unique_ptr<ConfigManager>> Create(std::string path,
                                                               limiter::Limiter* limiter);
  ~ConfigManager();

  // Re-reads the source; applies it when its content changed. Returns whether a new config was
  // applied, or the validation error (old config kept, failure counted).
  absl::StatusOr<bool> ReloadIfChanged();

  // Validates `yaml` (its `domain:` must equal `domain`), applies it and persists it.
  // FailedPrecondition when the source is a single file.
  absl::Status PutDomain(const std::string& domain, std::string_view yaml);
  // Removes a domain and its file. NotFound when it does not exist.
  absl::Status DeleteDomain(const std::string& domain);

  // Polls the source every `interval` on a background thread until Stop() or destruction.
  void StartWatching(absl::Duration interval);
  void Stop();

  service::ConfigStats stats() const;
  const std::string& path() const { return path_; }

 private:
  ConfigManager(std::string path, limiter::Limiter* limiter);
  absl::StatusOr<bool> ReloadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Apply(std::shared_ptr<const core::Config> config, std::string fingerprint)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string path_;
  limiter::Limiter* const limiter_;

  mutable absl::Mutex mu_;
  std::string fingerprint_ ABSL_GUARDED_BY(mu_);  // content of every file, to detect changes
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t reload_success_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t reload_failure_ ABSL_GUARDED_BY(mu_) = 0;
  std::string last_error_ ABSL_GUARDED_BY(mu_);

  absl::Notification stop_;
  std::thread watcher_;
};

}  // namespace floodgate::admin
