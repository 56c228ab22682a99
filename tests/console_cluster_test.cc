// GET /v1/top across real nodes: refusals made through different members of a three-node
// cluster (separate processes, real peer transport) are summed per descriptor by whichever node
// is asked; a member that is gone is listed as missing and its refusals are not counted.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "testing/cluster_harness.h"
#include "testing/http_client.h"
#include "testing/server_process.h"
#include "testing/wait_for.h"

namespace floodgate::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// `blocked` is always refused (a limit of 0): every check of it is a refusal, wherever made.
constexpr char kConfig[] = R"(domain: web
descriptors:
  - key: user
    value: blocked
    rate_limit: {unit: hour, requests_per_unit: 0}
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 1000}
)";

TEST(ConsoleClusterTest, TopRefusedSumsEveryMembersRefusals) {
  const std::string dir = MakeTempDir();
  ASSERT_FALSE(dir.empty());
  std::ofstream(fs::path(dir) / "web.yaml") << kConfig;
  auto started = ClusterHarness::Start(3, dir, {});
  ASSERT_TRUE(started.ok()) << started.status();
  ClusterHarness& cluster = **started;
  // Peers start dead until heard from: wait until every node sees the others alive, so that the
  // first /v1/top asks them all.
  ASSERT_NE(WaitFor(
                [&] {
                  for (int i = 0; i < 3; ++i) {
                    HttpResponse c = Request(cluster.node(i).http_port, "GET", "/v1/cluster");
                    if (c.status != 200 || c.body.find("\"alive\":false") != std::string::npos) {
                      return false;
                    }
                  }
                  return true;
                },
                absl::Seconds(10)),
            absl::InfiniteDuration());

  const int refusals[] = {5, 7, 2};
  for (int i = 0; i < 3; ++i) {
    for (int n = 0; n < refusals[i]; ++n) {
      HttpResponse r =
          Request(cluster.node(i).http_port, "GET", "/v1/check?domain=web&user=blocked");
      ASSERT_EQ(r.status, 429) << r.body << cluster.Stderr(i);
    }
    ASSERT_EQ(Request(cluster.node(i).http_port, "GET", "/v1/check?domain=web&user=alice").status,
              200);
  }
  HttpResponse top = Request(cluster.node(2).http_port, "GET", "/v1/top?n=5");
  ASSERT_EQ(top.status, 200) << top.body;
  EXPECT_THAT(top.body, HasSubstr("\"nodes\":[\"n2\","));
  EXPECT_THAT(top.body, HasSubstr("\"n0\""));
  EXPECT_THAT(top.body, HasSubstr("\"n1\""));
  EXPECT_THAT(top.body, HasSubstr("\"missing\":[]"));
  EXPECT_THAT(top.body, HasSubstr("\"keys\":[{\"domain\":\"web\",\"descriptor\":\"user=blocked\","
                                  "\"refused\":14,\"error\":0}],\"refusals\":14}"));

  // n1 gone: n0 and n2's refusals only, and n1 named.
  ASSERT_TRUE(cluster.Kill(1).ok());
  top = Request(cluster.node(0).http_port, "GET", "/v1/top");
  ASSERT_EQ(top.status, 200) << top.body;
  EXPECT_THAT(top.body, HasSubstr("\"missing\":[\"n1\"]"));
  EXPECT_THAT(top.body, HasSubstr("\"refused\":7,"));

  HttpResponse status = Request(cluster.node(0).http_port, "GET", "/v1/status");
  EXPECT_THAT(status.body, HasSubstr("{\"node_id\":\"n0\","));
  EXPECT_THAT(status.body, HasSubstr("\"cluster\":true"));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace floodgate::testing
