#include "src/admin/config_manager.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "floodgate/status_macros.h"
#include "src/admin/config_source.h"
#include "src/admin/config_state.h"
#include "src/common/rate_limited_log.h"

namespace floodgate::admin {
namespace {

namespace fs = std::filesystem;

// The files a config is made of: the operator's source and our state folder.
struct Files {
  std::vector<ConfigFile> source;
  std::vector<ConfigFile> state;
};

std::string Fingerprint(const Files& files) {
  std::string out;
  for (const auto* list : {&files.source, &files.state}) {
    for (const ConfigFile& f : *list) {
      absl::StrAppend(&out, f.path, "\n", f.text.size(), "\n", f.text, "\n");
    }
    out += "\n--\n";
  }
  return out;
}

bool IsSafeDomainName(std::string_view name) {
  if (name.empty() || name.size() > 128 || name[0] == '.') {
    return false;
  }
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
  });
}

absl::Status WriteFileAtomically(const std::string& path, std::string_view content) {
  const fs::path target(path);
  std::error_code ec;
  fs::create_directories(target.parent_path(), ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat(
        target.parent_path().string(), ": the state folder cannot be created: ", ec.message(),
        " (choose one with --state-dir)"));
  }
  const std::string tmp =
      (target.parent_path() / absl::StrCat(".tmp-", target.filename().string())).string();
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) {
      return absl::UnavailableError(
          absl::StrCat(tmp, ": cannot be written (choose the state folder with --state-dir)"));
    }
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    out.flush();
    if (!out) {
      return absl::UnavailableError(absl::StrCat(tmp, ": write failed"));
    }
  }
  fs::rename(tmp, target, ec);
  if (ec) {
    fs::remove(tmp, ec);
    return absl::UnavailableError(absl::StrCat(path, ": ", ec.message()));
  }
  return absl::OkStatus();
}

// Reads the source and the state folder. An empty source is refused unless allowed: an emptied
// folder would otherwise drop every limit without a word.
absl::StatusOr<Files> ReadFiles(const std::string& path, const std::string& state_dir,
                                bool allow_empty) {
  Files files;
  if (path.empty()) {  // no file source: the config comes over xDS (and the admin API)
    FG_ASSIGN_OR_RETURN(files.state, ReadStateFolder(state_dir));
    return files;
  }
  FG_ASSIGN_OR_RETURN(files.source, ReadConfigSource(path));
  if (files.source.empty() && !allow_empty) {
    return absl::FailedPreconditionError(
        absl::StrCat(path,
                     ": holds no config files (*.yaml, *.yml); refusing to serve no limits "
                     "(start with --allow-empty-config to allow it)"));
  }
  FG_ASSIGN_OR_RETURN(files.state, ReadStateFolder(state_dir));
  return files;
}

// Replaces, adds (keeping the list sorted) or removes `path` in `files`.
void SetFile(std::vector<ConfigFile>& files, const std::string& path,
             std::optional<std::string_view> text) {
  auto it =
      std::find_if(files.begin(), files.end(), [&](const ConfigFile& f) { return f.path == path; });
  if (!text.has_value()) {
    if (it != files.end()) {
      files.erase(it);
    }
    return;
  }
  if (it != files.end()) {
    it->text = std::string(*text);
    return;
  }
  files.push_back({path, std::string(*text)});
  std::sort(files.begin(), files.end(),
            [](const ConfigFile& a, const ConfigFile& b) { return a.path < b.path; });
}

}  // namespace

ConfigManager::ConfigManager(std::string path, ConfigManagerOptions options,
                             limiter::Limiter* limiter)
    : path_(std::move(path)),
      state_dir_(options.state_dir.empty() ? DefaultStateDir(path_) : options.state_dir),
      allow_empty_(options.allow_empty),
      limiter_(limiter) {}

ConfigManager::~ConfigManager() { Stop(); }

std::string ConfigManager::DefaultStateDir(const std::string& path) {
  if (path.empty()) {
    return "";
  }
  std::error_code ec;
  const fs::path source(path);
  if (fs::is_directory(source, ec)) {
    return (source / ".floodgate-state").string();
  }
  return (source.parent_path() / absl::StrCat(".floodgate-state-", source.filename().string()))
      .string();
}

absl::StatusOr<std::unique_ptr<ConfigManager>> ConfigManager::Create(std::string path,
                                                                     limiter::Limiter* limiter,
                                                                     ConfigManagerOptions options) {
  std::unique_ptr<ConfigManager> manager(
      new ConfigManager(std::move(path), std::move(options), limiter));
  absl::MutexLock lock(&manager->change_mu_);
  absl::StatusOr<bool> loaded = manager->ReloadLocked();
  if (!loaded.ok()) {
    return loaded.status();
  }
  return manager;
}

uint64_t ConfigManager::next_version() const {
  absl::MutexLock lock(&mu_);
  return version_ + 1;
}

void ConfigManager::Apply(std::shared_ptr<const core::Config> config, std::string fingerprint) {
  fingerprint_ = std::move(fingerprint);
  {
    absl::MutexLock lock(&mu_);
    version_ = config->version;
    ++reload_success_;
    last_error_.clear();
  }
  limiter_->SetConfig(std::move(config));
}

absl::Status ConfigManager::Refused(absl::Status status, std::string_view source) {
  uint64_t version = 0;
  {
    absl::MutexLock lock(&mu_);
    ++reload_failure_;
    last_error_ = std::string(status.message());
    version = version_;
  }
  // Before the first config is served (Create) nothing was "still serving": the caller reports.
  if (version == 0) {
    return status;
  }
  refused_since_ok_ = true;
  // The file source is logged once per distinct content (the callers compare fingerprints);
  // xDS pushes are the management server's, rate-limited like any line another party triggers.
  const std::initializer_list<common::LogField> fields = {
      {"source", source}, {"serving_version", version}, {"error", status.message()}};
  if (source == "file") {
    common::Log(common::LogLevel::kError, "config_refused", fields);
  } else {
    common::RateLimitedLog::Default().Log(common::LogLevel::kError, "config_refused", fields);
  }
  return status;
}

void ConfigManager::LogApplied(std::string_view source, uint64_t version) {
  if (version <= 1) {
    return;  // the first config is part of the `started` line
  }
  const size_t domains = limiter_->config()->domains.size();
  if (refused_since_ok_) {
    refused_since_ok_ = false;
    common::Log(common::LogLevel::kInfo, "config_recovered",
                {{"source", source}, {"version", version}, {"domains", domains}});
  }
  common::Log(common::LogLevel::kInfo, "config_change",
              {{"source", source}, {"version", version}, {"domains", domains}});
}

absl::StatusOr<bool> ConfigManager::ReloadLocked() {
  absl::StatusOr<Files> files = ReadFiles(path_, state_dir_, allow_empty_);
  if (!files.ok()) {
    // A source that vanished or was emptied is counted and logged once, not on every poll.
    std::string fingerprint = absl::StrCat("unreadable\n", files.status().message());
    if (fingerprint == fingerprint_) {
      return files.status();
    }
    fingerprint_ = std::move(fingerprint);
    return Refused(files.status(), "file");
  }
  std::string fingerprint = Fingerprint(*files);
  if (fingerprint == fingerprint_) {
    return false;
  }
  absl::StatusOr<EffectiveConfig> config = Build(files->source, files->state, xds_files_);
  // Remember even bad content, so an unchanged bad file is reported once, not every poll.
  if (!config.ok()) {
    fingerprint_ = std::move(fingerprint);
    return Refused(config.status(), "file");
  }
  const uint64_t version = config->config->version;
  Apply(std::move(config->config), std::move(fingerprint));
  LogApplied("file", version);
  return true;
}

absl::StatusOr<bool> ConfigManager::ReloadIfChanged() {
  absl::MutexLock lock(&change_mu_);
  return ReloadLocked();
}

absl::Status ConfigManager::PutDomain(const std::string& domain, std::string_view yaml) {
  if (!IsSafeDomainName(domain)) {
    return absl::InvalidArgumentError(
        "domain names used over the API may contain only letters, digits, '_', '-' and '.' "
        "(at most 128, not starting with '.')");
  }
  if (IsTombstone(yaml)) {
    return absl::InvalidArgumentError(
        absl::StrCat("a config may not start with the line '",
                     absl::string_view(kTombstonePrefix.data(), kTombstonePrefix.size()), "...'"));
  }
  absl::MutexLock lock(&change_mu_);
  FG_RETURN_IF_ERROR(CheckAdminMayChange(domain));
  const std::string target = StateFilePath(state_dir_, domain);
  FG_ASSIGN_OR_RETURN(auto parsed, core::ParseDomainConfig(yaml, target));
  if (parsed->domain != domain) {
    return absl::InvalidArgumentError(absl::StrCat("the body's domain '", parsed->domain,
                                                   "' does not match the path's '", domain, "'"));
  }
  FG_ASSIGN_OR_RETURN(Files files, ReadFiles(path_, state_dir_, allow_empty_));
  SetFile(files.state, target, yaml);
  // Validate the whole result before touching disk.
  FG_ASSIGN_OR_RETURN(EffectiveConfig config, Build(files.source, files.state, xds_files_));
  FG_RETURN_IF_ERROR(WriteFileAtomically(target, yaml));
  Apply(std::move(config.config), Fingerprint(files));
  return absl::OkStatus();
}

absl::Status ConfigManager::ValidateChange(const std::string& domain,
                                           std::optional<std::string_view> yaml) {
  if (!IsSafeDomainName(domain)) {
    return absl::InvalidArgumentError(
        "domain names used over the API may contain only letters, digits, '_', '-' and '.' "
        "(at most 128, not starting with '.')");
  }
  if (!yaml.has_value()) {
    absl::MutexLock lock(&change_mu_);
    FG_RETURN_IF_ERROR(CheckAdminMayChange(domain));
    if (limiter_->config()->FindDomain(domain) == nullptr) {
      return absl::NotFoundError(absl::StrCat("no domain '", domain, "'"));
    }
    return absl::OkStatus();
  }
  if (IsTombstone(*yaml)) {
    return absl::InvalidArgumentError(
        absl::StrCat("a config may not start with the line '",
                     absl::string_view(kTombstonePrefix.data(), kTombstonePrefix.size()), "...'"));
  }
  absl::MutexLock lock(&change_mu_);
  FG_RETURN_IF_ERROR(CheckAdminMayChange(domain));
  const std::string target = StateFilePath(state_dir_, domain);
  FG_ASSIGN_OR_RETURN(auto parsed, core::ParseDomainConfig(*yaml, target));
  if (parsed->domain != domain) {
    return absl::InvalidArgumentError(absl::StrCat("the body's domain '", parsed->domain,
                                                   "' does not match the path's '", domain, "'"));
  }
  FG_ASSIGN_OR_RETURN(Files files, ReadFiles(path_, state_dir_, allow_empty_));
  SetFile(files.state, target, *yaml);
  return Build(files.source, files.state, xds_files_).status();
}

absl::Status ConfigManager::DeleteDomain(const std::string& domain) {
  absl::MutexLock lock(&change_mu_);
  if (!IsSafeDomainName(domain)) {
    return absl::InvalidArgumentError(
        "domain names used over the API may contain only letters, digits, '_', '-' and '.' "
        "(at most 128, not starting with '.')");
  }
  FG_RETURN_IF_ERROR(CheckAdminMayChange(domain));
  if (limiter_->config()->FindDomain(domain) == nullptr) {
    return absl::NotFoundError(absl::StrCat("no domain '", domain, "'"));
  }
  const std::string target = StateFilePath(state_dir_, domain);
  FG_ASSIGN_OR_RETURN(Files files, ReadFiles(path_, state_dir_, allow_empty_));
  // Parse the source to learn whether it defines the domain: then a tombstone hides it,
  // otherwise the domain came from the state folder alone and its file goes.
  SetFile(files.state, target, std::nullopt);
  FG_ASSIGN_OR_RETURN(EffectiveConfig without, Build(files.source, files.state, xds_files_));
  if (without.source_domains.count(domain) > 0) {
    const std::string tombstone = TombstoneText(domain);
    SetFile(files.state, target, tombstone);
    FG_ASSIGN_OR_RETURN(without, Build(files.source, files.state, xds_files_));
    FG_RETURN_IF_ERROR(WriteFileAtomically(target, tombstone));
  } else {
    std::error_code ec;
    if (!fs::remove(target, ec) && ec) {
      return absl::UnavailableError(absl::StrCat(target, ": cannot be removed: ", ec.message()));
    }
  }
  Apply(std::move(without.config), Fingerprint(files));
  return absl::OkStatus();
}

absl::StatusOr<EffectiveConfig> ConfigManager::Build(const std::vector<ConfigFile>& source,
                                                     const std::vector<ConfigFile>& state,
                                                     const std::vector<ConfigFile>& xds,
                                                     std::set<std::string>* xds_domains) const {
  const uint64_t version = next_version();
  FG_ASSIGN_OR_RETURN(EffectiveConfig out, ParseEffectiveConfig(source, state, version));
  std::map<std::string, std::shared_ptr<const core::DomainConfig>> domains = out.config->domains;
  std::set<std::string> seen;
  for (const ConfigFile& file : xds) {
    FG_ASSIGN_OR_RETURN(auto domain, core::ParseDomainConfig(file.text, file.path));
    if (!seen.insert(domain->domain).second) {
      return absl::InvalidArgumentError(absl::StrCat(file.path, ": domain '", domain->domain,
                                                     "' is defined by another xDS resource too"));
    }
    domains[domain->domain] = std::move(domain);
  }
  std::vector<std::shared_ptr<const core::DomainConfig>> list;
  list.reserve(domains.size());
  for (auto& [name, domain] : domains) {
    list.push_back(std::move(domain));
  }
  FG_ASSIGN_OR_RETURN(out.config, core::BuildConfig(std::move(list), version));
  if (xds_domains != nullptr) {
    *xds_domains = std::move(seen);
  }
  return out;
}

absl::Status ConfigManager::CheckAdminMayChange(const std::string& domain) const {
  if (state_dir_.empty()) {
    return absl::FailedPreconditionError(
        "admin changes need a state folder: there is no config source to put it beside "
        "(choose one with --state-dir)");
  }
  if (xds_domains_.count(domain) > 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "domain '", domain, "' is managed by the xDS management server; change it there"));
  }
  return absl::OkStatus();
}

absl::Status ConfigManager::SetXdsDomains(const std::vector<ConfigFile>& files) {
  absl::MutexLock lock(&change_mu_);
  // A server sends the same set again after a reconnect: nothing to apply.
  if (std::equal(files.begin(), files.end(), xds_files_.begin(), xds_files_.end(),
                 [](const ConfigFile& a, const ConfigFile& b) {
                   return a.path == b.path && a.text == b.text;
                 })) {
    return absl::OkStatus();
  }
  absl::StatusOr<Files> read = ReadFiles(path_, state_dir_, allow_empty_);
  if (!read.ok()) {
    return Refused(read.status(), "xds");
  }
  std::set<std::string> domains;
  absl::StatusOr<EffectiveConfig> config = Build(read->source, read->state, files, &domains);
  if (!config.ok()) {
    return Refused(config.status(), "xds");
  }
  xds_files_ = files;
  xds_domains_ = std::move(domains);
  const uint64_t version = config->config->version;
  Apply(std::move(config->config), Fingerprint(*read));
  LogApplied("xds", version);
  return absl::OkStatus();
}

std::set<std::string> ConfigManager::xds_domains() const {
  absl::MutexLock lock(&change_mu_);
  return xds_domains_;
}

void ConfigManager::StartWatching(absl::Duration interval) {
  watcher_ = std::thread([this, interval] {
    while (!stop_.WaitForNotificationWithTimeout(interval)) {
      (void)ReloadIfChanged();
    }
  });
}

void ConfigManager::Stop() {
  if (!stop_.HasBeenNotified()) {
    stop_.Notify();
  }
  if (watcher_.joinable()) {
    watcher_.join();
  }
}

service::ConfigStats ConfigManager::stats() const {
  absl::MutexLock lock(&mu_);
  return service::ConfigStats{version_, reload_success_, reload_failure_, last_error_};
}

}  // namespace floodgate::admin
