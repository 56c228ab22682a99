#pragma once

// The one loader of the config source, used by `floodgate serve` (through ConfigManager),
// `floodgate validate` and `floodgate check` alike.
//
// The source is a YAML file or a directory of them (one domain each). Reading the files lives
// here; parsing and validating their text is core's (core::ParseDomainConfig, core::BuildConfig),
// which does no I/O. Nothing here throws: every filesystem call takes a std::error_code.
// Stateless; safe to call from any thread.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "src/core/config.h"

namespace floodgate::admin {

// One file of the source: its path (as it names the domain's file in errors and in
// DomainConfig::file) and its text.
struct ConfigFile {
  std::string path;
  std::string text;
};

// Reads `path`: a file (whatever its name), or a directory's *.yaml and *.yml files, read
// non-recursively, in sorted order, skipping hidden files (names starting with '.', such as
// editors' leftovers) and anything that is not a regular file. An empty directory gives no files.
// Errors: NotFound "<path>: cannot be read" when a file cannot be opened (a missing `path`
// included), Unavailable "<path>: reason" when a directory cannot be listed.
absl::StatusOr<std::vector<ConfigFile>> ReadConfigSource(const std::string& path);

// Parses every file (one domain each) and builds the Config with `version`. Nothing is returned
// unless every file is valid: InvalidArgument "file:line: reason" for a bad file, or a domain
// that two files define.
absl::StatusOr<std::shared_ptr<const core::Config>> ParseConfigFiles(
    const std::vector<ConfigFile>& files, uint64_t version);

// Returns a fingerprint of the domains and their text, never 0: the same files give the same
// version on every node, any change to the text gives another.
uint64_t ContentVersion(const core::Config& config);

// Reads and parses `path` (ReadConfigSource, then ParseConfigFiles) with the content
// fingerprint as its version. For one-shot users (validate, check); the server's ConfigManager
// numbers its reloads instead. A folder without config files is NotFound "<path>: no config
// files (*.yaml or *.yml) in this folder".
absl::StatusOr<std::shared_ptr<const core::Config>> LoadConfigSource(const std::string& path);

}  // namespace floodgate::admin
