#include "src/admin/cluster_config.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <string>

#include "testing/limiter_helpers.h"
#include "testing/temp_dir.h"

namespace floodgate::admin {
namespace {

namespace fs = std::filesystem;
namespace pb = ::floodgate::peer::v1;

std::string Api(int per_minute) {
  return "domain: api\ndescriptors:\n  - key: user\n    rate_limit: {unit: minute, "
         "requests_per_unit: " +
         std::to_string(per_minute) + "}\n";
}

// One node's config side: its folder, limiter, config manager and sync.
struct Node {
  explicit Node(const std::string& id) : dir(temp.path()) {
    std::ofstream(dir / "api.yaml") << Api(5);
    store = *NewShardedStore({});
    limiter = std::make_unique<limiter::Limiter>(store.get(), KeyHasher(1, 1), nullptr);
    config = *ConfigManager::Create(dir.string(), limiter.get());
    sync = std::make_unique<ClusterConfigSync>(id, config.get(), limiter.get());
  }

  uint64_t Limit() const { return floodgate::testing::FirstLimit(*limiter, "api"); }

  floodgate::testing::TempDir temp{"floodgate-cluster-config-test"};
  fs::path dir;
  std::unique_ptr<Store> store;
  std::unique_ptr<limiter::Limiter> limiter;
  std::unique_ptr<ConfigManager> config;
  std::unique_ptr<ClusterConfigSync> sync;
};

pb::ConfigChange ChangeAt(uint64_t version, const std::string& origin, const std::string& yaml) {
  pb::ConfigChange change;
  change.mutable_version()->set_domain("api");
  change.mutable_version()->set_version(version);
  change.mutable_version()->set_origin(origin);
  change.set_yaml(yaml);
  return change;
}

// Issue 11, point 8: a pushed version of 2^64-1 made the next local version wrap to 0, so an
// admin change answered 200 was never served by the other nodes.
TEST(ClusterConfigSyncTest, VersionFromTheFutureIsRefusedAndAdminChangesStillSpread) {
  Node n1("n1");
  Node n2("n2");
  const pb::ConfigChange forged = ChangeAt(std::numeric_limits<uint64_t>::max(), "evil", Api(99));
  EXPECT_EQ(n1.sync->Apply({forged}), 0);
  EXPECT_EQ(n2.sync->Apply({forged}), 0);
  EXPECT_EQ(n1.Limit(), 5u);
  EXPECT_EQ(n2.Limit(), 5u);

  absl::StatusOr<std::vector<pb::ConfigChange>> change = n1.sync->LocalChange("api", Api(1));
  ASSERT_TRUE(change.ok()) << change.status();
  ASSERT_EQ(change->size(), 1u);
  EXPECT_EQ((*change)[0].version().version(), 1u);
  EXPECT_EQ(n2.sync->Apply(*change), 1);
  EXPECT_EQ(n1.Limit(), 1u);
  EXPECT_EQ(n2.Limit(), 1u);  // every node serves the change answered 200
}

TEST(ClusterConfigSyncTest, VersionsUpToTheLeadAreAcceptedAndTheNextOneIsLarger) {
  Node n1("n1");
  Node n2("n2");
  constexpr uint64_t kLead = ClusterConfigSync::kMaxVersionLead;
  EXPECT_EQ(n1.sync->Apply({ChangeAt(kLead + 1, "n3", Api(8))}), 0);  // too far ahead
  const pb::ConfigChange high = ChangeAt(kLead, "n3", Api(7));
  EXPECT_EQ(n1.sync->Apply({high}), 1);
  EXPECT_EQ(n2.sync->Apply({high}), 1);
  EXPECT_EQ(n2.Limit(), 7u);

  absl::StatusOr<std::vector<pb::ConfigChange>> change = n1.sync->LocalChange("api", Api(2));
  ASSERT_TRUE(change.ok());
  EXPECT_EQ((*change)[0].version().version(), kLead + 1);
  EXPECT_EQ(n2.sync->Apply(*change), 1);
  EXPECT_EQ(n2.Limit(), 2u);

  // A delete spreads the same way.
  change = n2.sync->LocalChange("api", std::nullopt);
  ASSERT_TRUE(change.ok());
  EXPECT_TRUE((*change)[0].version().deleted());
  EXPECT_EQ(n1.sync->Apply(*change), 1);
  EXPECT_EQ(n1.Limit(), 0u);
}

TEST(ClusterConfigSyncTest, RefusedLocalChangeTakesNoVersion) {
  Node n1("n1");
  absl::StatusOr<std::vector<pb::ConfigChange>> bad =
      n1.sync->LocalChange("api", "domain: api\nbogus: 1\n");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<std::vector<pb::ConfigChange>> good = n1.sync->LocalChange("api", Api(3));
  ASSERT_TRUE(good.ok());
  EXPECT_EQ((*good)[0].version().version(), 1u);
}

}  // namespace
}  // namespace floodgate::admin
