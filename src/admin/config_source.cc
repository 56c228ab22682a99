#include "src/admin/config_source.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "floodgate/status_macros.h"

namespace floodgate::admin {
namespace {

namespace fs = std::filesystem;

// Editors' temporary files (".x.yaml.swp", ".tmp-...") are not config.
bool IsConfigFileName(const fs::path& path) {
  const std::string name = path.filename().string();
  const std::string ext = path.extension().string();
  return !name.empty() && name.front() != '.' && (ext == ".yaml" || ext == ".yml");
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot be read"));
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Returns the config files of directory `path`, sorted.
absl::StatusOr<std::vector<std::string>> ListConfigFiles(const std::string& path) {
  std::vector<std::string> names;
  std::error_code ec;
  fs::directory_iterator it(path, ec);
  for (; !ec && it != fs::directory_iterator(); it.increment(ec)) {
    // An entry whose type cannot be read (a dangling symlink) is not a regular file: skipped.
    std::error_code type_ec;
    if (IsConfigFileName(it->path()) && it->is_regular_file(type_ec)) {
      names.push_back(it->path().string());
    }
  }
  if (ec) {
    return absl::UnavailableError(absl::StrCat(path, ": ", ec.message()));
  }
  std::sort(names.begin(), names.end());
  return names;
}

// FNV-1a: stable across processes and machines, unlike absl::Hash.
uint64_t Fingerprint(uint64_t hash, absl::string_view bytes) {
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 1099511628211ULL;
  }
  return hash;
}

}  // namespace

absl::StatusOr<std::vector<ConfigFile>> ReadConfigSource(const std::string& path) {
  std::vector<ConfigFile> files;
  std::error_code ec;
  if (!fs::is_directory(path, ec)) {
    // Not a directory, or not there at all: reading it says which.
    FG_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
    files.push_back({path, std::move(text)});
    return files;
  }
  FG_ASSIGN_OR_RETURN(std::vector<std::string> names, ListConfigFiles(path));
  for (std::string& name : names) {
    FG_ASSIGN_OR_RETURN(std::string text, ReadFile(name));
    files.push_back({std::move(name), std::move(text)});
  }
  return files;
}

absl::StatusOr<std::shared_ptr<const core::Config>> ParseConfigFiles(
    const std::vector<ConfigFile>& files, uint64_t version) {
  std::vector<std::shared_ptr<const core::DomainConfig>> domains;
  domains.reserve(files.size());
  for (const ConfigFile& file : files) {
    FG_ASSIGN_OR_RETURN(auto domain, core::ParseDomainConfig(file.text, file.path));
    domains.push_back(std::move(domain));
  }
  return core::BuildConfig(std::move(domains), version);
}

uint64_t ContentVersion(const core::Config& config) {
  // config.domains is ordered by name, so the order of the files does not matter.
  uint64_t version = 14695981039346656037ULL;
  for (const auto& [name, domain] : config.domains) {
    version = Fingerprint(version, name);
    version = Fingerprint(version, absl::string_view("\0", 1));
    version = Fingerprint(version, domain->source);
    version = Fingerprint(version, absl::string_view("\0", 1));
  }
  return version == 0 ? 1 : version;
}

absl::StatusOr<std::shared_ptr<const core::Config>> LoadConfigSource(const std::string& path) {
  FG_ASSIGN_OR_RETURN(std::vector<ConfigFile> files, ReadConfigSource(path));
  if (files.empty()) {
    // Checking or validating nothing would answer "ok" for a folder that limits nothing.
    return absl::NotFoundError(
        absl::StrCat(path, ": no config files (*.yaml or *.yml) in this folder"));
  }
  FG_ASSIGN_OR_RETURN(std::shared_ptr<const core::Config> parsed, ParseConfigFiles(files, 0));
  auto config = std::make_shared<core::Config>(*parsed);
  config->version = ContentVersion(*config);
  return std::shared_ptr<const core::Config>(std::move(config));
}

}  // namespace floodgate::admin
