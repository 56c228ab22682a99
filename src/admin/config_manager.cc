#include "src/admin/config_manager.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "floodgate/status_macros.h"
#include "src/admin/config_source.h"

namespace floodgate::admin {
namespace {

namespace fs = std::filesystem;

std::string Fingerprint(const std::vector<ConfigFile>& files) {
  std::string out;
  for (const ConfigFile& f : files) {
    absl::StrAppend(&out, f.path, "\n", f.text.size(), "\n", f.text, "\n");
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
  const std::string tmp =
      (target.parent_path() / absl::StrCat(".tmp-", target.filename().string())).string();
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) {
      return absl::UnavailableError(absl::StrCat(tmp, ": cannot be written"));
    }
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    out.flush();
    if (!out) {
      return absl::UnavailableError(absl::StrCat(tmp, ": write failed"));
    }
  }
  std::error_code ec;
  fs::rename(tmp, target, ec);
  if (ec) {
    fs::remove(tmp, ec);
    return absl::UnavailableError(absl::StrCat(path, ": ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace

ConfigManager::ConfigManager(std::string path, limiter::Limiter* limiter)
    : path_(std::move(path)), limiter_(limiter) {}

ConfigManager::~ConfigManager() { Stop(); }

absl::StatusOr<std::unique_ptr<ConfigManager>> ConfigManager::Create(std::string path,
                                                                     limiter::Limiter* limiter) {
  std::unique_ptr<ConfigManager> manager(new ConfigManager(std::move(path), limiter));
  absl::MutexLock lock(&manager->mu_);
  absl::StatusOr<bool> loaded = manager->ReloadLocked();
  if (!loaded.ok()) {
    return loaded.status();
  }
  return manager;
}

void ConfigManager::Apply(std::shared_ptr<const core::Config> config, std::string fingerprint) {
  version_ = config->version;
  fingerprint_ = std::move(fingerprint);
  ++reload_success_;
  last_error_.clear();
  limiter_->SetConfig(std::move(config));
}

absl::StatusOr<bool> ConfigManager::ReloadLocked() {
  absl::StatusOr<std::vector<ConfigFile>> files = ReadConfigSource(path_);
  absl::Status status = files.status();
  if (status.ok()) {
    std::string fingerprint = Fingerprint(*files);
    if (fingerprint == fingerprint_ && version_ != 0) {
      return false;
    }
    absl::StatusOr<std::shared_ptr<const core::Config>> config =
        ParseConfigFiles(*files, version_ + 1);
    if (config.ok()) {
      Apply(*std::move(config), std::move(fingerprint));
      return true;
    }
    status = config.status();
    // Remember the bad content so an unchanged bad file is reported once, not every poll.
    fingerprint_ = std::move(fingerprint);
  }
  ++reload_failure_;
  last_error_ = std::string(status.message());
  // Before the first config is served (Create) nothing was "still serving": the caller reports.
  if (version_ != 0) {
    std::fprintf(stderr, "floodgate: config change refused, still serving version %llu: %s\n",
                 static_cast<unsigned long long>(version_), last_error_.c_str());
  }
  return status;
}

absl::StatusOr<bool> ConfigManager::ReloadIfChanged() {
  absl::MutexLock lock(&mu_);
  return ReloadLocked();
}

absl::Status ConfigManager::PutDomain(const std::string& domain, std::string_view yaml) {
  absl::MutexLock lock(&mu_);
  std::error_code ec;
  if (!fs::is_directory(path_, ec)) {
    return absl::FailedPreconditionError(
        "the config is a single file; serve a directory to change domains over the API");
  }
  if (!IsSafeDomainName(domain)) {
    return absl::InvalidArgumentError(
        "domain names used over the API may contain only letters, digits, '_', '-' and '.'");
  }
  FG_ASSIGN_OR_RETURN(std::vector<ConfigFile> files, ReadConfigSource(path_));
  // The domain keeps its file if it has one; a new domain gets <domain>.yaml.
  std::string target = (fs::path(path_) / absl::StrCat(domain, ".yaml")).string();
  const std::shared_ptr<const core::Config> current = limiter_->config();
  if (const core::DomainConfig* existing = current->FindDomain(domain);
      existing != nullptr && !existing->file.empty()) {
    target = existing->file;
  }
  FG_ASSIGN_OR_RETURN(auto parsed, core::ParseDomainConfig(yaml, target));
  if (parsed->domain != domain) {
    return absl::InvalidArgumentError(absl::StrCat("the body's domain '", parsed->domain,
                                                   "' does not match the path's '", domain, "'"));
  }
  auto it = std::find_if(files.begin(), files.end(),
                         [&](const ConfigFile& f) { return f.path == target; });
  if (it == files.end()) {
    files.push_back({target, std::string(yaml)});
    std::sort(files.begin(), files.end(),
              [](const ConfigFile& a, const ConfigFile& b) { return a.path < b.path; });
  } else {
    it->text = std::string(yaml);
  }
  // Validate the whole result (e.g. a duplicate domain in another file) before touching disk.
  FG_ASSIGN_OR_RETURN(auto config, ParseConfigFiles(files, version_ + 1));
  FG_RETURN_IF_ERROR(WriteFileAtomically(target, yaml));
  Apply(std::move(config), Fingerprint(files));
  return absl::OkStatus();
}

absl::Status ConfigManager::DeleteDomain(const std::string& domain) {
  absl::MutexLock lock(&mu_);
  std::error_code ec;
  if (!fs::is_directory(path_, ec)) {
    return absl::FailedPreconditionError(
        "the config is a single file; serve a directory to change domains over the API");
  }
  const std::shared_ptr<const core::Config> current = limiter_->config();
  const core::DomainConfig* existing = current->FindDomain(domain);
  if (existing == nullptr || existing->file.empty()) {
    return absl::NotFoundError(absl::StrCat("no domain '", domain, "'"));
  }
  const std::string file = existing->file;
  FG_ASSIGN_OR_RETURN(std::vector<ConfigFile> files, ReadConfigSource(path_));
  files.erase(std::remove_if(files.begin(), files.end(),
                             [&](const ConfigFile& f) { return f.path == file; }),
              files.end());
  FG_ASSIGN_OR_RETURN(auto config, ParseConfigFiles(files, version_ + 1));
  if (!fs::remove(file, ec) || ec) {
    return absl::UnavailableError(absl::StrCat(file, ": cannot be removed: ", ec.message()));
  }
  Apply(std::move(config), Fingerprint(files));
  return absl::OkStatus();
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
