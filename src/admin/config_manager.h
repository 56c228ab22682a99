#pragma once

// Owns the config source: loads it, watches it for edits, and applies admin changes.
//
// The source is the operator's: a YAML file or a directory of them (one domain each), never
// written by us. Admin PUT/DELETE go to a state folder of our own (ConfigManagerOptions::
// state_dir, by default DefaultStateDir(source)): a PUT writes `<state>/<domain>.yaml` (atomically,
// by rename), a DELETE writes a tombstone file there under the same name. The config served is
// always the source overlaid with the state folder: a state file replaces the source's domain of
// the same name, a tombstone removes it. Both are read again on start and on every reload, so
// admin changes survive restarts and edits of the source files; removing a state file undoes the
// admin change. docs/config.md ("The server: reloads, admin changes and the state folder") says
// the same for operators.
//
// A change is read, parsed and validated completely before it is swapped into the limiter; a bad
// change is refused with file:line, logged (once per distinct content of the files, not on every
// poll; `config_recovered` when a later reload succeeds), counted, and the old config keeps
// serving. A source with no config files (an emptied folder) is refused the same way unless
// `allow_empty` is set, so that a mistake cannot silently drop every limit.
//
// Thread-safe. Changes (reloads, PUT, DELETE) are serialized on their own mutex, held while the
// files are read and parsed; checks never take it (the limiter swaps its config pointer under its
// own short lock) and neither does stats(), so a slow parse delays only other changes.
//
// A third layer, in memory only, holds the domains a management server pushes over xDS
// (SetXdsDomains, src/admin/xds_config.h): it is laid over the source and the state folder, is
// replaced as a whole on every push, and is not written anywhere (the server pushes it again
// after a restart). The admin API refuses to change a domain that xDS manages.

#include <atomic>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "src/admin/config_source.h"
#include "src/admin/config_state.h"
#include "src/core/config.h"
#include "src/limiter/limiter.h"
#include "src/service/metrics.h"

namespace floodgate::admin {

struct ConfigManagerOptions {
  // Where admin changes are written; "" for DefaultStateDir(path). Created on the first change.
  std::string state_dir;
  // Accept a source with no config files (serving no limits) instead of refusing it.
  bool allow_empty = false;
};

class ConfigManager {
 public:
  // Loads `path` overlaid with the state folder and installs it in `limiter` (which must outlive
  // the manager). Fails if the initial config is invalid, or empty and not allowed. `path` ""
  // means no file source (the config comes over xDS, SetXdsDomains): it starts with no limits, and
  // admin changes need an explicit state_dir.
  static absl::StatusOr<std::unique_ptr<ConfigManager>> Create(std::string path,
                                                               limiter::Limiter* limiter,
                                                               ConfigManagerOptions options = {});
  ~ConfigManager();

  // Returns the state folder used when none is given: `<path>/.floodgate-state` for a
  // directory, `<folder>/.floodgate-state-<file name>` beside a single file, "" (none) for "".
  static std::string DefaultStateDir(const std::string& path);

  // Re-reads the source and the state folder; applies them when their content changed. Returns
  // whether a new config was applied, or the error (old config kept, failure counted).
  absl::StatusOr<bool> ReloadIfChanged();

  // Validates `yaml` (its `domain:` must equal `domain`), applies it and writes it to the state
  // folder. InvalidArgument for a bad body, Unavailable when the state folder cannot be written.
  absl::Status PutDomain(const std::string& domain, std::string_view yaml);
  // Removes a domain: a tombstone in the state folder when a source file defines it, else the
  // domain's state file is removed. NotFound when it is not served.
  absl::Status DeleteDomain(const std::string& domain);

  // Checks a PUT (`yaml` set) or DELETE as PutDomain / DeleteDomain would, without applying or
  // writing anything: the errors they would return.
  absl::Status ValidateChange(const std::string& domain, std::optional<std::string_view> yaml);

  // Replaces the set of domains managed by xDS with `files` (one domain each; `path` names the
  // resource in errors, text is its YAML): a domain of the previous set that is missing now is
  // removed (the source's or state folder's domain of that name, if any, serves again), and an
  // xDS domain replaces a source or state domain of the same name. All or nothing: every file must
  // parse and the whole config must build (InvalidArgument "file:line: reason", two files of one
  // domain included), else nothing changes and the refusal is counted like a bad reload. The same
  // set as the last one applied changes nothing (the config version stays).
  absl::Status SetXdsDomains(const std::vector<ConfigFile>& files);
  // Returns the domains xDS manages now.
  std::set<std::string> xds_domains() const;

  // Polls the source every `interval` on a background thread until Stop() or destruction.
  void StartWatching(absl::Duration interval);
  void Stop();

  service::ConfigStats stats() const;
  const std::string& path() const { return path_; }
  const std::string& state_dir() const { return state_dir_; }

 private:
  ConfigManager(std::string path, ConfigManagerOptions options, limiter::Limiter* limiter);
  absl::StatusOr<bool> ReloadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(change_mu_);
  // Counts and logs (`config_refused`) a refused change from `source` ("file", "xds");
  // returns `status`.
  absl::Status Refused(absl::Status status, std::string_view source)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(change_mu_);
  // Logs `config_change` for a reload or push that applied `version` (and `config_recovered`
  // first when the last change from a source was refused). Admin changes are logged by the
  // front end that took them (it knows who asked); the cluster's by ClusterConfigSync.
  void LogApplied(std::string_view source, uint64_t version)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(change_mu_);
  void Apply(std::shared_ptr<const core::Config> config, std::string fingerprint)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(change_mu_);
  uint64_t next_version() const;
  // Builds the served config: the source overlaid with the state folder, then with `xds` (whose
  // domains go to `xds_domains` when given).
  absl::StatusOr<EffectiveConfig> Build(const std::vector<ConfigFile>& source,
                                        const std::vector<ConfigFile>& state,
                                        const std::vector<ConfigFile>& xds,
                                        std::set<std::string>* xds_domains = nullptr) const;
  // FailedPrecondition when the admin API may not change `domain`: xDS manages it, or there is
  // no state folder to write to.
  absl::Status CheckAdminMayChange(const std::string& domain) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(change_mu_);

  const std::string path_;
  const std::string state_dir_;
  const bool allow_empty_;
  limiter::Limiter* const limiter_;

  // Serializes changes; held while reading and parsing (never needed by checks or stats()).
  mutable absl::Mutex change_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  std::string fingerprint_ ABSL_GUARDED_BY(change_mu_);            // content of every file read
  std::vector<ConfigFile> xds_files_ ABSL_GUARDED_BY(change_mu_);  // the last set xDS pushed
  std::set<std::string> xds_domains_ ABSL_GUARDED_BY(change_mu_);  // their domains
  bool refused_since_ok_ ABSL_GUARDED_BY(change_mu_) = false;      // for config_recovered

  mutable absl::Mutex mu_;  // the counters below, taken briefly
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t reload_success_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t reload_failure_ ABSL_GUARDED_BY(mu_) = 0;
  std::string last_error_ ABSL_GUARDED_BY(mu_);

  absl::Notification stop_;
  std::thread watcher_;
};

}  // namespace floodgate::admin
