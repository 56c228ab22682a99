// A member that stalls: its process is stopped (SIGSTOP), so its peer connections stay open and
// nothing on them is read or answered. The other nodes must keep answering every check (the
// stalled owner's keys after the forward timeout, then on its replica once it is declared dead),
// must not grow their memory with what they cannot send, and must take the member back when it
// continues. Real processes on 127.0.0.1 (testing/cluster_harness.h).

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "testing/cluster_harness.h"
#include "testing/http_client.h"
#include "testing/server_process.h"
#include "testing/temp_dir.h"

namespace floodgate::testing {
namespace {

namespace fs = std::filesystem;

constexpr char kConfig[] = R"(domain: web
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 1000000}
)";

// Polls `done` every 20 ms until it holds or `timeout` passes; returns whether it held.
template <typename Fn>
bool WaitFor(Fn done, absl::Duration timeout) {
  const absl::Time start = absl::Now();
  while (absl::Now() - start < timeout) {
    if (done()) {
      return true;
    }
    absl::SleepFor(absl::Milliseconds(20));  // polling an external process, not synchronising
  }
  return false;
}

// Whether node `from` sees member `id` with "alive": `alive`.
bool SeesAlive(const ClusterNode& from, const std::string& id, bool alive) {
  HttpClient client(from.http_port, 5'000);
  const std::string body = client.Request("GET", "/v1/cluster").body;
  const size_t at = body.find(absl::StrCat("\"id\":\"", id, "\""));
  if (at == std::string::npos) {
    return false;
  }
  const size_t f = body.find("\"alive\":", at);
  return f != std::string::npos &&
         body.compare(f + 8, alive ? 4 : 5, alive ? "true" : "false") == 0;
}

// Resident memory of a process in KiB (VmRSS), 0 if unreadable.
uint64_t RssKiB(pid_t pid) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      uint64_t kib = 0;
      std::string digits;
      for (char c : line) {
        if (c >= '0' && c <= '9') {
          digits += c;
        }
      }
      return absl::SimpleAtoi(digits, &kib) ? kib : 0;
    }
  }
  return 0;
}

TEST(ClusterStallTest, StalledMemberCostsBoundedTimeAndMemoryAndComesBack) {
  const std::string dir = MakeTempDir();
  ASSERT_FALSE(dir.empty());
  std::ofstream(fs::path(dir) / "web.yaml") << kConfig;
  auto started = ClusterHarness::Start(3, dir);
  ASSERT_TRUE(started.ok()) << started.status();
  ClusterHarness& cluster = **started;
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) {
      ASSERT_TRUE(WaitFor([&] { return SeesAlive(cluster.node(i), cluster.node(j).id, true); },
                          absl::Seconds(10)))
          << "node " << i << " never saw " << cluster.node(j).id << " alive";
    }
  }
  const uint64_t rss_before = RssKiB(cluster.pid(0));
  ASSERT_GT(rss_before, 0u);

  ASSERT_TRUE(cluster.Pause(2).ok());
  // Four callers on node 0, 1000 users (a third of them owned by the stalled node), a bounded
  // count of checks. Each must be answered (a decision: 200 or 429) within the client's 5 s;
  // none may fail or hang.
  constexpr int kCallers = 4;
  constexpr int kChecksPerCaller = 500;
  std::atomic<int> decided{0};
  std::atomic<int> failed{0};
  std::atomic<int64_t> slowest_ms{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < kCallers; ++t) {
    callers.emplace_back([&, t] {
      HttpClient client(cluster.node(0).http_port, 5'000);
      for (int i = 0; i < kChecksPerCaller; ++i) {
        const absl::Time start = absl::Now();
        const int status =
            client
                .Request("GET", absl::StrCat("/v1/check?domain=web&user=u", (t * 7919 + i) % 1000))
                .status;
        const int64_t ms = absl::ToInt64Milliseconds(absl::Now() - start);
        for (int64_t seen = slowest_ms.load(); ms > seen;) {
          if (slowest_ms.compare_exchange_weak(seen, ms)) {
            break;
          }
        }
        (status == 200 || status == 429 ? decided : failed).fetch_add(1);
      }
    });
  }
  for (std::thread& caller : callers) {
    caller.join();
  }
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(decided.load(), kCallers * kChecksPerCaller);
  std::printf("slowest check while a member was stalled: %lld ms\n",
              static_cast<long long>(slowest_ms.load()));
  // The stalled member is declared dead by the nodes that still run.
  EXPECT_TRUE(WaitFor([&] { return SeesAlive(cluster.node(0), cluster.node(2).id, false); },
                      absl::Seconds(5)));
  EXPECT_TRUE(WaitFor([&] { return SeesAlive(cluster.node(1), cluster.node(2).id, false); },
                      absl::Seconds(5)));
  // What could not be sent to it was bounded: node 0 grew by far less than its queues' caps
  // would allow (8 MiB per link), let alone without bounds.
  const uint64_t rss_after = RssKiB(cluster.pid(0));
  EXPECT_LT(rss_after, rss_before + 64 * 1024) << rss_before << " KiB -> " << rss_after << " KiB";

  // It continues: every node sees it again, and checks through it are decided.
  ASSERT_TRUE(cluster.Resume(2).ok());
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(WaitFor([&] { return SeesAlive(cluster.node(i), cluster.node(2).id, true); },
                        absl::Seconds(10)))
        << "node " << i;
  }
  HttpClient through(cluster.node(2).http_port, 5'000);
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(through.Request("GET", absl::StrCat("/v1/check?domain=web&user=u", i)).status, 200);
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace floodgate::testing
