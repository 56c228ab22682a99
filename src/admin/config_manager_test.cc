#include "src/admin/config_manager.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

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
    char tmpl[] = "/tmp/floodgate-config-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    Write(dir_ / "api.yaml", kApi);
    store_ = *NewShardedStore({});
    limiter_ = std::make_unique<limiter::Limiter>(store_.get(), KeyHasher(1, 1), nullptr);
  }
  void TearDown() override { fs::remove_all(dir_); }

  uint64_t UserLimit() {
    const core::DomainConfig* d = limiter_->config()->FindDomain("api");
    return d == nullptr ? 0 : d->root.children[0].limits[0].spec.requests_per_period;
  }

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
  ::testing::internal::CaptureStderr();
  absl::StatusOr<bool> reloaded = (*manager)->ReloadIfChanged();
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("still serving version 1"),
            std::string::npos);
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
  ::testing::internal::CaptureStderr();
  auto manager = ConfigManager::Create(dir_.string(), limiter_.get());
  const std::string printed = ::testing::internal::GetCapturedStderr();
  ASSERT_FALSE(manager.ok());
  EXPECT_NE(manager.status().message().find("api.yaml:4"), std::string::npos) << manager.status();
  EXPECT_EQ(printed, "");
}

TEST_F(ConfigManagerTest, PutAndDeleteDomainPersist) {
  auto manager = ConfigManager::Create(dir_.string(), limiter_.get());
  ASSERT_TRUE(manager.ok());
  constexpr char kNew[] =
      "domain: web\ndescriptors:\n  - key: ip\n"
      "    rate_limit: {unit: second, requests_per_unit: 10}\n";
  ASSERT_TRUE((*manager)->PutDomain("web", kNew).ok());
  EXPECT_NE(limiter_->config()->FindDomain("web"), nullptr);
  EXPECT_TRUE(fs::exists(dir_ / "web.yaml"));
  EXPECT_FALSE(*(*manager)->ReloadIfChanged());  // the watcher sees its own write as no change

  // The body's domain must match the path; bad YAML changes nothing.
  EXPECT_EQ((*manager)->PutDomain("other", kNew).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*manager)->PutDomain("api", kBad).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(UserLimit(), 5u);
  EXPECT_EQ((*manager)->PutDomain("../etc", kNew).code(), absl::StatusCode::kInvalidArgument);

  // Updating an existing domain rewrites its own file.
  ASSERT_TRUE((*manager)->PutDomain("api", kApiTighter).ok());
  EXPECT_EQ(UserLimit(), 1u);

  ASSERT_TRUE((*manager)->DeleteDomain("web").ok());
  EXPECT_EQ(limiter_->config()->FindDomain("web"), nullptr);
  EXPECT_FALSE(fs::exists(dir_ / "web.yaml"));
  EXPECT_EQ((*manager)->DeleteDomain("web").code(), absl::StatusCode::kNotFound);
}

TEST_F(ConfigManagerTest, SingleFileSourceRefusesAdminEdits) {
  auto manager = ConfigManager::Create((dir_ / "api.yaml").string(), limiter_.get());
  ASSERT_TRUE(manager.ok());
  EXPECT_EQ((*manager)->PutDomain("api", kApi).code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace floodgate::admin
