#include "src/discovery/etcd_config.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "src/common/rate_limited_log.h"

namespace floodgate::discovery {
namespace {

constexpr std::string_view kMagic = "floodgate-config 1\n";

// Removes `prefix` from the front of `text`; returns whether it was there.
bool Consume(std::string_view& text, std::string_view prefix) {
  if (!text.starts_with(prefix)) {
    return false;
  }
  text.remove_prefix(prefix.size());
  return true;
}

// Reads one "name: value\n" header line from `rest`.
bool HeaderLine(std::string_view& rest, std::string_view name, std::string_view* value) {
  const size_t end = rest.find('\n');
  if (end == std::string_view::npos) {
    return false;
  }
  std::string_view line = rest.substr(0, end);
  if (!Consume(line, name) || !Consume(line, ": ")) {
    return false;
  }
  *value = line;
  rest.remove_prefix(end + 1);
  return true;
}

}  // namespace

std::string EncodeConfigValue(std::string_view origin, std::optional<std::string_view> yaml) {
  std::string out(kMagic);
  out.append("origin: ").append(origin);
  out.append("\ndeleted: ").append(yaml.has_value() ? "0" : "1").append("\n\n");
  out.append(yaml.value_or(""));
  return out;
}

absl::StatusOr<ConfigEntry> DecodeConfigValue(std::string_view domain, std::string_view value,
                                              int64_t revision) {
  std::string_view rest = value;
  std::string_view origin;
  std::string_view deleted;
  if (!Consume(rest, kMagic) || !HeaderLine(rest, "origin", &origin) ||
      !HeaderLine(rest, "deleted", &deleted) || (deleted != "0" && deleted != "1") ||
      !Consume(rest, "\n")) {
    return absl::InvalidArgumentError(
        absl::StrCat("the etcd value of config domain '", std::string(domain),
                     "' is not a Floodgate config entry (written by hand?)"));
  }
  ConfigEntry entry;
  entry.domain = std::string(domain);
  entry.origin = std::string(origin);
  entry.deleted = deleted == "1";
  entry.yaml = entry.deleted ? "" : std::string(rest);
  entry.revision = revision;
  return entry;
}

absl::StatusOr<std::unique_ptr<EtcdConfigStore>> EtcdConfigStore::Create(
    EtcdConfigOptions options) {
  EtcdClientOptions client_options;
  client_options.endpoints = options.endpoints;
  client_options.call_timeout = options.call_timeout;
  absl::StatusOr<std::unique_ptr<EtcdClient>> client = EtcdClient::Create(client_options);
  if (!client.ok()) {
    return client.status();
  }
  return std::unique_ptr<EtcdConfigStore>(
      new EtcdConfigStore(std::move(options), *std::move(client)));
}

EtcdConfigStore::EtcdConfigStore(EtcdConfigOptions options, std::unique_ptr<EtcdClient> client)
    : options_(std::move(options)), client_(std::move(client)) {}

EtcdConfigStore::~EtcdConfigStore() { Stop(); }

std::string EtcdConfigStore::Folder() const { return absl::StrCat(options_.prefix, "/config/"); }

std::string EtcdConfigStore::KeyOf(std::string_view domain) const {
  return Folder().append(domain);
}

absl::StatusOr<int64_t> EtcdConfigStore::Write(std::string_view domain, std::string_view origin,
                                               std::optional<std::string_view> yaml) {
  return client_->Put(KeyOf(domain), EncodeConfigValue(origin, yaml));
}

absl::StatusOr<std::vector<ConfigEntry>> EtcdConfigStore::ReadAll() {
  absl::StatusOr<EtcdRangeResult> range = client_->RangePrefix(Folder());
  if (!range.ok()) {
    return range.status();
  }
  std::vector<ConfigEntry> entries;
  for (const EtcdKeyValue& kv : range->kvs) {
    const std::string_view domain = std::string_view(kv.key).substr(Folder().size());
    absl::StatusOr<ConfigEntry> entry = DecodeConfigValue(domain, kv.value, kv.mod_revision);
    if (entry.ok()) {
      entries.push_back(*std::move(entry));
    } else {
      common::RateLimitedLog::Default().Log(common::LogLevel::kError, "etcd_config_refused",
                                            {{"error", entry.status().message()}});
    }
  }
  return entries;
}

void EtcdConfigStore::Follow(OnEntries on_entries) {
  on_entries_ = std::move(on_entries);
  follower_ = std::thread([this] { FollowLoop(); });
}

void EtcdConfigStore::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (follower_.joinable()) {
    follower_.join();
  }
}

void EtcdConfigStore::FollowLoop() {
  std::chrono::milliseconds backoff = options_.backoff_initial;
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    mu_.Unlock();
    // Everything first (a change made while etcd was away is not missed), then the changes.
    absl::StatusOr<EtcdRangeResult> range = client_->RangePrefix(Folder());
    bool ended = false;
    std::unique_ptr<EtcdWatch> watch;
    if (range.ok()) {
      backoff = options_.backoff_initial;
      std::vector<ConfigEntry> entries;
      for (const EtcdKeyValue& kv : range->kvs) {
        const std::string_view domain = std::string_view(kv.key).substr(Folder().size());
        if (absl::StatusOr<ConfigEntry> e = DecodeConfigValue(domain, kv.value, kv.mod_revision);
            e.ok()) {
          entries.push_back(*std::move(e));
        }
      }
      if (!entries.empty()) {
        on_entries_(entries);
      }
      watch = client_->WatchPrefix(
          Folder(), range->revision + 1,
          [this](const std::vector<EtcdEvent>& events, int64_t) {
            std::vector<ConfigEntry> changed;
            for (const EtcdEvent& event : events) {
              if (event.type != EtcdEvent::Type::kPut) {
                continue;  // a key removed by hand: the nodes keep what they have
              }
              const std::string_view domain =
                  std::string_view(event.kv.key).substr(Folder().size());
              absl::StatusOr<ConfigEntry> e =
                  DecodeConfigValue(domain, event.kv.value, event.kv.mod_revision);
              if (e.ok()) {
                changed.push_back(*std::move(e));
              } else {
                common::RateLimitedLog::Default().Log(common::LogLevel::kError,
                                                      "etcd_config_refused",
                                                      {{"error", e.status().message()}});
              }
            }
            if (!changed.empty()) {
              on_entries_(changed);
            }
          },
          [this, &ended](const absl::Status&) {
            absl::MutexLock lock(&mu_);
            ended = true;
          });
    }
    mu_.Lock();
    if (watch != nullptr) {
      // Until the watch ends by itself (etcd went away) or Stop.
      struct Wait {
        bool* stopping;
        bool* ended;
      } wait{&stopping_, &ended};
      mu_.Await(absl::Condition(
          +[](Wait* w) { return *w->stopping || *w->ended; }, &wait));
    }
    if (stopping_) {
      mu_.Unlock();
      watch.reset();
      mu_.Lock();
      break;
    }
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::FromChrono(backoff));
    backoff = std::min(backoff * 2, options_.backoff_max);
    mu_.Unlock();
    watch.reset();
    mu_.Lock();
  }
}

}  // namespace floodgate::discovery
