#pragma once

// The admin state folder: where admin PUT/DELETE changes live, apart from the operator's config
// files (ConfigManager's comment and docs/config.md, "The server: reloads, admin changes and the
// state folder").
//
// The folder holds one file per changed domain, `<domain>.yaml`: either the YAML the admin API
// accepted for it, or a tombstone (a comment line starting with kTombstonePrefix) for a deleted
// domain. One file per domain, replaced by rename, so a crash leaves the old or the new change,
// never both. Pure functions over file contents, except ReadStateFolder; safe from any thread.

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "src/admin/config_source.h"
#include "src/core/config.h"

namespace floodgate::admin {

inline constexpr std::string_view kTombstonePrefix = "# floodgate: domain deleted";

// Returns whether a state file's text is a tombstone.
bool IsTombstone(std::string_view text);
// Returns the text of `domain`'s tombstone.
std::string TombstoneText(std::string_view domain);
// Returns the path of `domain`'s state file in `state_dir`.
std::string StateFilePath(const std::string& state_dir, std::string_view domain);

// Reads the state folder's *.yaml files as ReadConfigSource reads a directory; a folder that
// does not exist yet (no admin change so far) holds none.
absl::StatusOr<std::vector<ConfigFile>> ReadStateFolder(const std::string& state_dir);

struct EffectiveConfig {
  std::shared_ptr<const core::Config> config;
  std::set<std::string> source_domains;  // the domains the source files define
};

// Parses the source files and the state files and returns the source overlaid with the state:
// a state file `<name>.yaml` replaces (or adds) domain <name>, a tombstone removes it. Every file
// must be valid (InvalidArgument "file:line: reason"); a state file must hold the domain it is
// named after.
absl::StatusOr<EffectiveConfig> ParseEffectiveConfig(const std::vector<ConfigFile>& source,
                                                     const std::vector<ConfigFile>& state,
                                                     uint64_t version);

}  // namespace floodgate::admin
