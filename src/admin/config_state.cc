#include "src/admin/config_state.h"

#include <filesystem>
#include <map>
#include <system_error>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "floodgate/status_macros.h"

namespace floodgate::admin {
namespace {

namespace fs = std::filesystem;

absl::string_view View(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace

bool IsTombstone(std::string_view text) {
  return absl::StartsWith(View(text), View(kTombstonePrefix));
}

std::string TombstoneText(std::string_view domain) {
  return absl::StrCat(View(kTombstonePrefix), " with DELETE /v1/config/", View(domain),
                      ".\n# Remove this file to serve the domain from the config files again.\n");
}

std::string StateFilePath(const std::string& state_dir, std::string_view domain) {
  return (fs::path(state_dir) / absl::StrCat(View(domain), ".yaml")).string();
}

absl::StatusOr<std::vector<ConfigFile>> ReadStateFolder(const std::string& state_dir) {
  std::error_code ec;
  if (!fs::exists(state_dir, ec)) {
    return std::vector<ConfigFile>();
  }
  if (!fs::is_directory(state_dir, ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat(state_dir, ": the state folder (--state-dir) is not a directory"));
  }
  return ReadConfigSource(state_dir);
}

absl::StatusOr<EffectiveConfig> ParseEffectiveConfig(const std::vector<ConfigFile>& source,
                                                     const std::vector<ConfigFile>& state,
                                                     uint64_t version) {
  EffectiveConfig out;
  FG_ASSIGN_OR_RETURN(std::shared_ptr<const core::Config> base, ParseConfigFiles(source, version));
  std::map<std::string, std::shared_ptr<const core::DomainConfig>> domains = base->domains;
  for (const auto& [name, domain] : domains) {
    out.source_domains.insert(name);
  }
  for (const ConfigFile& file : state) {
    const std::string name = fs::path(file.path).stem().string();
    if (IsTombstone(file.text)) {
      domains.erase(name);
      continue;
    }
    FG_ASSIGN_OR_RETURN(auto domain, core::ParseDomainConfig(file.text, file.path));
    if (domain->domain != name) {
      return absl::InvalidArgumentError(absl::StrCat(
          file.path, ": holds domain '", domain->domain,
          "', but a state file must hold the domain it is named after ('", name, "')"));
    }
    domains[name] = std::move(domain);
  }
  std::vector<std::shared_ptr<const core::DomainConfig>> list;
  list.reserve(domains.size());
  for (auto& [name, domain] : domains) {
    list.push_back(std::move(domain));
  }
  FG_ASSIGN_OR_RETURN(out.config, core::BuildConfig(std::move(list), version));
  return out;
}

}  // namespace floodgate::admin
