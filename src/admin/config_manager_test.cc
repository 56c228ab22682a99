#include "src/admin/config_manager.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>

#include "src/common/log.h"
#include "testing/limiter_helpers.h"
#include "testing/temp_dir.h"

namespace floodgate::admin {
namespace {

namespace fs = std::filesystem;

constexpr char kApi[] =
    "domain: api\ndescriptors:\n  - key: user\n"
    "    rate_limit: {unit: minute, requests_per_unit: 5}\n";
constexpr char kApiTighter[] =
    "domain: api\ndescriptors:\n  - key: user\n"
    "    rate_limit: {unit: minute, requests_per_unit: 1}\n";
constexpr char kBad[] =
    "domain: api\ndescriptors:\n  - key: user\n"
    "    rate_limit: {unit: fortnight, requests_per_unit: 5}\n";

void Write(const fs::path& path, std::string_view text) {
  std::ofstream(path, std::ios::trunc) << text;
}

class ConfigManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = temp_.path();
    Write(dir_ / "api.yaml", kApi);
    store_ = *NewShardedStore({});
    limiter_ = std::make_unique<limiter::Limiter>(store_.get(), KeyHasher(1, 1), nullptr);
  }

  uint64_t UserLimit() { return floodgate::testing::FirstLimit(*limiter_, "api"); }

  floodgate::testing::TempDir temp_{"floodgate-config-test"};
  fs::path dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<limiter::Limiter> limiter_;
};

TEST_F(ConfigManagerTest, LoadsDirectoryAndReloadsOnlyOnChange) {
  auto manager = ConfigManager::Create(dir_.string(), limiter_.get());
  ASSERT_TRUE(manager.ok()) << manager.status();
  EXPECT_EQ(UserLimit(), 5u);
  EXPECT_EQ((*manager)->stats().version, 1u);
  EXPECT_FALSE(*(*manager)->ReloadIfChanged());

  Write(dir_ / "api.yaml", kApiTighter);
  EXPECT_TRUE(*(*manager)->ReloadIfChanged());
  EXPECT_EQ(UserLimit(), 1u);
  EXPECT_EQ((*manager)->stats().version, 2u);
  EXPECT_EQ(limiter_->config()->version, 2u);
}

TEST_F(ConfigManagerTest, BadEditIsRefusedCountedAndOldConfigServes) {
  auto manager = ConfigManager::Create(dir_.string(), limiter_.get());
  ASSERT_TRUE(manager.ok());
  Write(dir_ / "api.yaml", kBad);
  common::LogCapture log;
  absl::StatusOr<bool> reloaded = (*manager)->ReloadIfChanged();
  ASSERT_EQ(log.Events("config_refused").size(), 1u);
  EXPECT_NE(log.Events("config_refused")[0].find("source=file serving_version=1 error="),
            std::string::npos)
      << log.Events("config_refused")[0];
  ASSERT_FALSE(reloaded.ok());
  EXPECT_NE(reloaded.status().message().find("api.yaml:4"), std::string::npos) << reloaded.status();
  EXPECT_EQ(UserLimit(), 5u);
  service::ConfigStats stats = (*manager)->stats();
  EXPECT_EQ(stats.reload_failure, 1u);
  EXPECT_EQ(stats.version, 1u);
  EXPECT_FALSE(stats.last_error.empty());
}

TEST_F(ConfigManagerTest, InitialBadConfigFailsCreate) {
  Write(dir_ / "api.yaml", kBad);
  // Nothing was served yet: Create returns the error for its caller to report, and prints
  // nothing itself (no "still serving version 0", no second copy of the error).
  common::LogCapture log;
  auto manager = ConfigManager::Create(dir_.string(), limiter_.get());
  ASSERT_FALSE(manager.ok());
  EXPECT_NE(manager.status().message().find("api.yaml:4"), std::string::npos) << manager.status();
  EXPECT_TRUE(log.lines().empty());
}

// A bad file is logged once per distinct content, however often it is polled; a fix logs
// config_recovered, then the change.
TEST_F(ConfigManagerTest, ReloadErrorsAreLoggedOncePerChangeAndTheRecoveryToo) {
  auto manager = ConfigManager::Create(dir_.string(), limiter_.get());
  ASSERT_TRUE(manager.ok());
  common::LogCapture log;
  Write(dir_ / "api.yaml", kBad);
  EXPECT_FALSE((*manager)->ReloadIfChanged().ok());
  for (int poll = 0; poll < 20; ++poll) {  // the same content: nothing new to apply or say
    EXPECT_FALSE((*manager)->ReloadIfChanged().value_or(true));
  }
  ASSERT_EQ(log.Events("config_refused").size(), 1u);
  EXPECT_NE(log.Events("config_refused")[0].find("api.yaml:4"), std::string::npos);

  Write(dir_ / "api.yaml", std::string(kBad) + "# another mistake\n");  // new content: news
  EXPECT_FALSE((*manager)->ReloadIfChanged().ok());
  for (int poll = 0; poll < 20; ++poll) {  // the same content: nothing new to apply or say
    EXPECT_FALSE((*manager)->ReloadIfChanged().value_or(true));
  }
  EXPECT_EQ(log.Events("config_refused").size(), 2u);
  EXPECT_TRUE(log.Events("config_recovered").empty());

  Write(dir_ / "api.yaml", kApiTighter);
  EXPECT_TRUE(*(*manager)->ReloadIfChanged());
  EXPECT_FALSE(*(*manager)->ReloadIfChanged());
  ASSERT_EQ(log.Events("config_recovered").size(), 1u);
  EXPECT_NE(log.Events("config_recovered")[0].find("source=file version=2 domains=1"),
            std::string::npos)
      << log.Events("config_recovered")[0];
  ASSERT_EQ(log.Events("config_change").size(), 1u);
  EXPECT_NE(log.Events("config_change")[0].find("source=file version=2"), std::string::npos);

  Write(dir_ / "api.yaml", kApi);  // a good change after a good one: no recovery to report
  EXPECT_TRUE(*(*manager)->ReloadIfChanged());
  EXPECT_EQ(log.Events("config_recovered").size(), 1u);
  EXPECT_EQ(log.Events("config_change").size(), 2u);
  EXPECT_EQ(log.lines().size(), 5u);
}

std::string ReadAll(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Admin changes go to the state folder and never touch the operator's files (issue 11, point 6:
// PUT used to rewrite api.yaml in place, DELETE removed it).
TEST_F(ConfigManagerTest, AdminChangesGoToTheStateFolderAndKeepTheSourceFiles) {
  const std::string kApiWithComment = std::string("# the operator's comment\n") + kApi;
  Write(dir_ / "api.yaml", kApiWithComment);
  auto manager = ConfigManager::Create(dir_.string(), limiter_.get());
  ASSERT_TRUE(manager.ok()) << manager.status();
  const fs::path state = dir_ / ".floodgate-state";
  EXPECT_EQ((*manager)->state_dir(), state.string());
  EXPECT_FALSE(fs::exists(state));  // created on the first change only

  constexpr char kNew[] =
      "domain: web\ndescriptors:\n  - key: ip\n"
      "    rate_limit: {unit: second, requests_per_unit: 10}\n";
  ASSERT_TRUE((*manager)->PutDomain("web", kNew).ok());
  EXPECT_NE(limiter_->config()->FindDomain("web"), nullptr);
  EXPECT_EQ(ReadAll(state / "web.yaml"), kNew);
  EXPECT_FALSE(fs::exists(dir_ / "web.yaml"));
  EXPECT_FALSE(*(*manager)->ReloadIfChanged());  // the watcher sees its own write as no change

  // The body's domain must match the path; bad YAML changes nothing.
  EXPECT_EQ((*manager)->PutDomain("other", kNew).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*manager)->PutDomain("api", kBad).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(UserLimit(), 5u);
  EXPECT_EQ((*manager)->PutDomain("../etc", kNew).code(), absl::StatusCode::kInvalidArgument);

  // Overriding a domain of the source: the source file keeps its bytes, comment included.
  ASSERT_TRUE((*manager)->PutDomain("api", kApiTighter).ok());
  EXPECT_EQ(UserLimit(), 1u);
  EXPECT_EQ(ReadAll(dir_ / "api.yaml"), kApiWithComment);
  EXPECT_EQ(ReadAll(state / "api.yaml"), kApiTighter);

  // Deleting a domain of the source leaves a tombstone; one only in the state folder goes.
  ASSERT_TRUE((*manager)->DeleteDomain("api").ok());
  EXPECT_EQ(limiter_->config()->FindDomain("api"), nullptr);
  EXPECT_EQ(ReadAll(dir_ / "api.yaml"), kApiWithComment);
  EXPECT_TRUE(ReadAll(state / "api.yaml").rfind("# floodgate: domain deleted", 0) == 0);
  ASSERT_TRUE((*manager)->DeleteDomain("web").ok());
  EXPECT_EQ(limiter_->config()->FindDomain("web"), nullptr);
  EXPECT_FALSE(fs::exists(state / "web.yaml"));
  EXPECT_EQ((*manager)->DeleteDomain("web").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*manager)->DeleteDomain("api").code(), absl::StatusCode::kNotFound);
}

TEST_F(ConfigManagerTest, AdminChangesSurviveARestartAndRemovingTheStateFileUndoesThem) {
  const fs::path state = dir_ / "state";
  {
    auto manager = ConfigManager::Create(dir_.string(), limiter_.get(), {state.string()});
    ASSERT_TRUE(manager.ok());
    ASSERT_TRUE((*manager)->PutDomain("api", kApiTighter).ok());
  }
  limiter_->SetConfig(nullptr);
  {
    auto manager = ConfigManager::Create(dir_.string(), limiter_.get(), {state.string()});
    ASSERT_TRUE(manager.ok());
    EXPECT_EQ(UserLimit(), 1u);  // the admin change, not the file's 5
    ASSERT_TRUE((*manager)->DeleteDomain("api").ok());
  }
  {
    auto manager = ConfigManager::Create(dir_.string(), limiter_.get(), {state.string()});
    ASSERT_TRUE(manager.ok());
    EXPECT_EQ(limiter_->config()->FindDomain("api"), nullptr);  // the tombstone holds
    fs::remove(state / "api.yaml");
    EXPECT_TRUE(*(*manager)->ReloadIfChanged());
    EXPECT_EQ(UserLimit(), 5u);  // back to the operator's file
  }
}

TEST_F(ConfigManagerTest, SingleFileSourceTakesAdminChangesInItsOwnStateFolder) {
  Write(dir_ / "api.yaml", kApi);
  auto manager = ConfigManager::Create((dir_ / "api.yaml").string(), limiter_.get());
  ASSERT_TRUE(manager.ok());
  EXPECT_EQ((*manager)->state_dir(), (dir_ / ".floodgate-state-api.yaml").string());
  ASSERT_TRUE((*manager)->PutDomain("api", kApiTighter).ok());
  EXPECT_EQ(UserLimit(), 1u);
  EXPECT_EQ(ReadAll(dir_ / "api.yaml"), kApi);
}

TEST_F(ConfigManagerTest, StateFileMustHoldItsDomain) {
  fs::create_directories(dir_ / "state");
  Write(dir_ / "state" / "web.yaml", kApi);  // named web, holds api
  auto manager = ConfigManager::Create(dir_.string(), limiter_.get(), {(dir_ / "state").string()});
  ASSERT_FALSE(manager.ok());
  EXPECT_NE(manager.status().message().find("web.yaml: holds domain 'api'"), std::string::npos)
      << manager.status();
}

// Issue 11, point 4: an emptied or vanished source used to drop every limit without a word.
TEST_F(ConfigManagerTest, EmptiedOrVanishedSourceIsRefusedCountedAndOldConfigServes) {
  auto manager = ConfigManager::Create(dir_.string(), limiter_.get());
  ASSERT_TRUE(manager.ok());
  fs::remove(dir_ / "api.yaml");
  absl::StatusOr<bool> reloaded = (*manager)->ReloadIfChanged();
  ASSERT_FALSE(reloaded.ok());
  EXPECT_NE(reloaded.status().message().find("holds no config files"), std::string::npos)
      << reloaded.status();
  EXPECT_EQ(UserLimit(), 5u);
  EXPECT_EQ((*manager)->stats().reload_failure, 1u);
  EXPECT_FALSE((*manager)->ReloadIfChanged().ok());
  EXPECT_EQ((*manager)->stats().reload_failure, 1u);  // counted once, not every poll

  fs::remove_all(dir_);
  EXPECT_FALSE((*manager)->ReloadIfChanged().ok());
  EXPECT_EQ((*manager)->stats().reload_failure, 2u);
  EXPECT_EQ(UserLimit(), 5u);
  fs::create_directories(dir_);
  Write(dir_ / "api.yaml", kApiTighter);
  EXPECT_TRUE(*(*manager)->ReloadIfChanged());
  EXPECT_EQ(UserLimit(), 1u);
}

TEST_F(ConfigManagerTest, EmptySourceIsServedOnlyWhenAllowed) {
  fs::remove(dir_ / "api.yaml");
  EXPECT_EQ(ConfigManager::Create(dir_.string(), limiter_.get()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  auto manager = ConfigManager::Create(dir_.string(), limiter_.get(), {"", /*allow_empty=*/true});
  ASSERT_TRUE(manager.ok()) << manager.status();
  EXPECT_TRUE(limiter_->config()->domains.empty());
  EXPECT_TRUE((*manager)->PutDomain("api", kApi).ok());
  EXPECT_EQ(UserLimit(), 5u);
}

// Issue 11, point 8: the same bounds hold for a body that arrives over the admin API (and so
// from a peer, which applies changes through PutDomain), and stats() is not held up meanwhile.
TEST_F(ConfigManagerTest, AdminBodyIsBoundedOnceAliasesAreExpanded) {
  auto manager = ConfigManager::Create(dir_.string(), limiter_.get());
  ASSERT_TRUE(manager.ok());
  std::string below =
      "[{key: " + std::string(5000, 'k') + ", rate_limit: {unit: second, requests_per_unit: 1}}]";
  for (int level = 1; level <= 30; ++level) {
    below = "[{key: l" + std::to_string(level) + ", value: a, descriptors: &l" +
            std::to_string(level) + " " + below + "}, {key: l" + std::to_string(level) +
            ", value: b, descriptors: *l" + std::to_string(level) + "}]";
  }
  const absl::Status status =
      (*manager)->PutDomain("bomb", "domain: bomb\ndescriptors: " + below + "\n");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("bomb.yaml:2: the YAML here expands to"), std::string::npos)
      << status;
  EXPECT_EQ(limiter_->config()->FindDomain("bomb"), nullptr);
  EXPECT_FALSE(fs::exists(dir_ / ".floodgate-state" / "bomb.yaml"));
}

// xDS pushes replace the xDS layer as a whole: it overrides a source domain of the same name,
// domains missing from a later push go (the source's version serves again), and a source reload
// keeps the pushed domains.
TEST_F(ConfigManagerTest, XdsDomainsAreReplacedAsAWhole) {
  auto manager = ConfigManager::Create(dir_.string(), limiter_.get());
  ASSERT_TRUE(manager.ok()) << manager.status();
  const std::string other =
      "domain: other\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: "
      "7}\n";
  ASSERT_TRUE((*manager)->SetXdsDomains({{"xds:a", kApiTighter}, {"xds:b", other}}).ok());
  EXPECT_EQ(UserLimit(), 1u);
  EXPECT_EQ(floodgate::testing::FirstLimit(*limiter_, "other"), 7u);
  EXPECT_EQ((*manager)->xds_domains(), (std::set<std::string>{"api", "other"}));

  // The source changes underneath: the xDS layer stays on top.
  Write(dir_ / "z.yaml", "domain: z\ndescriptors: []\n");
  EXPECT_TRUE(*(*manager)->ReloadIfChanged());
  EXPECT_EQ(UserLimit(), 1u);
  EXPECT_NE(limiter_->config()->FindDomain("z"), nullptr);

  const uint64_t version = (*manager)->stats().version;
  ASSERT_TRUE((*manager)->SetXdsDomains({{"xds:a", kApiTighter}, {"xds:b", other}}).ok());
  EXPECT_EQ((*manager)->stats().version, version);  // the same set again: nothing applied

  ASSERT_TRUE((*manager)->SetXdsDomains({{"xds:b", other}}).ok());
  EXPECT_EQ(UserLimit(), 5u);  // the source's api again
  EXPECT_EQ((*manager)->xds_domains(), (std::set<std::string>{"other"}));

  ASSERT_TRUE((*manager)->SetXdsDomains({}).ok());
  EXPECT_EQ(limiter_->config()->FindDomain("other"), nullptr);
  EXPECT_TRUE((*manager)->xds_domains().empty());
}

TEST_F(ConfigManagerTest, BadXdsPushChangesNothing) {
  auto manager = ConfigManager::Create(dir_.string(), limiter_.get());
  ASSERT_TRUE(manager.ok()) << manager.status();
  const std::string other = "domain: other\ndescriptors: []\n";
  ASSERT_TRUE((*manager)->SetXdsDomains({{"xds:other", other}}).ok());
  const uint64_t version = (*manager)->stats().version;

  absl::Status status = (*manager)->SetXdsDomains({{"xds:good", kApiTighter}, {"xds:bad", kBad}});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("xds:bad:4:"), std::string::npos) << status;
  EXPECT_EQ(UserLimit(), 5u);
  EXPECT_NE(limiter_->config()->FindDomain("other"), nullptr);
  EXPECT_EQ((*manager)->xds_domains(), (std::set<std::string>{"other"}));
  EXPECT_EQ((*manager)->stats().version, version);
  EXPECT_EQ((*manager)->stats().reload_failure, 1u);

  status = (*manager)->SetXdsDomains({{"xds:one", kApiTighter}, {"xds:two", kApiTighter}});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("xds:two: domain 'api' is defined by another xDS resource"),
            std::string::npos)
      << status;
  EXPECT_EQ(UserLimit(), 5u);
}

TEST_F(ConfigManagerTest, AdminApiMayNotChangeAnXdsDomain) {
  auto manager = ConfigManager::Create(dir_.string(), limiter_.get());
  ASSERT_TRUE(manager.ok()) << manager.status();
  ASSERT_TRUE((*manager)->SetXdsDomains({{"xds:api", kApiTighter}}).ok());
  EXPECT_EQ((*manager)->PutDomain("api", kApi).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*manager)->DeleteDomain("api").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*manager)->ValidateChange("api", std::nullopt).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*manager)->ValidateChange("api", std::string_view(kApi)).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(UserLimit(), 1u);
  EXPECT_FALSE(fs::exists(dir_ / ".floodgate-state" / "api.yaml"));
}

// No file source (path ""): the config is whatever xDS pushes; admin changes need a state folder.
TEST_F(ConfigManagerTest, XdsOnlyWithoutAFileSource) {
  auto manager = ConfigManager::Create("", limiter_.get());
  ASSERT_TRUE(manager.ok()) << manager.status();
  EXPECT_EQ((*manager)->state_dir(), "");
  EXPECT_TRUE(limiter_->config()->domains.empty());
  EXPECT_FALSE(*(*manager)->ReloadIfChanged());
  ASSERT_TRUE((*manager)->SetXdsDomains({{"xds:api", kApi}}).ok());
  EXPECT_EQ(UserLimit(), 5u);
  EXPECT_EQ((*manager)->PutDomain("other", "domain: other\ndescriptors: []\n").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(limiter_->config()->FindDomain("other"), nullptr);

  // With a state folder the admin API works beside xDS.
  limiter::Limiter second(store_.get(), KeyHasher(1, 1), nullptr);
  const std::string state = (dir_ / "state").string();
  auto with_state = ConfigManager::Create("", &second, {state, false});
  ASSERT_TRUE(with_state.ok()) << with_state.status();
  ASSERT_TRUE((*with_state)->SetXdsDomains({{"xds:api", kApi}}).ok());
  EXPECT_TRUE((*with_state)->PutDomain("other", "domain: other\ndescriptors: []\n").ok());
  EXPECT_NE(second.config()->FindDomain("other"), nullptr);
  EXPECT_TRUE(fs::exists(fs::path(state) / "other.yaml"));
  EXPECT_EQ(floodgate::testing::FirstLimit(second, "api"), 5u);
}

}  // namespace
}  // namespace floodgate::admin
