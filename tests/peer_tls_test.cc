// Peer TLS with real processes (docs/tls.md, "Peer traffic"): a three-node cluster whose members
// talk over TLS (--peer-tls-cert, --peer-tls-key, --peer-tls-ca) enforces a limit exactly, its
// peer port answers TLS with the CA's certificate, and a partial or bad set of files refuses to
// start, naming the flag. Certificates are made at test time (testing/tls_certs.h).

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <stdio.h>
#include <sys/wait.h>

#include <atomic>
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
#include "testing/tls_certs.h"

namespace floodgate::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr char kConfig[] = R"(domain: web
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 60}
)";

class PeerTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir();
    ASSERT_FALSE(dir_.empty());
    fs::create_directory(dir_ + "/config");
    std::ofstream(dir_ + "/config/web.yaml") << kConfig;
    fs::create_directory(dir_ + "/pki");
    absl::StatusOr<TestPki> pki = MakeTestPki(dir_ + "/pki");
    ASSERT_TRUE(pki.ok()) << pki.status();
    pki_ = *pki;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::vector<std::string> PeerTlsFlags() const {
    return {"--peer-tls-cert", pki_.peer_cert,  "--peer-tls-key",
            pki_.peer_key,     "--peer-tls-ca", pki_.ca_cert};
  }

  // Returns the error of a node that must not start with `extra` flags.
  std::string StartError(const std::vector<std::string>& extra) {
    std::vector<std::string> args = {"--config", dir_ + "/config", "--node-id",     "n0",
                                     "--peers",  "n0=127.0.0.1:1", "--cluster-key", "k"};
    args.insert(args.end(), extra.begin(), extra.end());
    absl::StatusOr<std::unique_ptr<ServerProcess>> started =
        ServerProcess::Start(FloodgateBinary(), args);
    EXPECT_FALSE(started.ok()) << "started with peer TLS flags " << ::testing::PrintToString(extra);
    return started.ok() ? "" : std::string(started.status().message());
  }

  std::string dir_;
  TestPki pki_;
};

// Returns the sum of every `"field":N` in `json` (GET /v1/cluster: one per member).
int64_t SumOf(const std::string& json, const std::string& field) {
  const std::string name = absl::StrCat("\"", field, "\":");
  int64_t sum = 0;
  for (size_t at = json.find(name); at != std::string::npos; at = json.find(name, at + 1)) {
    const size_t start = at + name.size();
    int64_t value = 0;
    if (absl::SimpleAtoi(json.substr(start, json.find_first_of(",}", start) - start), &value)) {
      sum += value;
    }
  }
  return sum;
}

// Whether node `i` sees every member alive.
bool SeesAllAlive(const ClusterHarness& cluster, int i) {
  HttpClient client(cluster.node(i).http_port, 3'000);
  const std::string body = client.Request("GET", "/v1/cluster").body;
  size_t alive = 0;
  for (size_t at = body.find("\"alive\":true"); at != std::string::npos;
       at = body.find("\"alive\":true", at + 1)) {
    ++alive;
  }
  return alive == static_cast<size_t>(cluster.size());
}

TEST_F(PeerTlsTest, ThreeTlsMembersEnforceALimitExactly) {
  auto started = ClusterHarness::Start(3, dir_ + "/config", PeerTlsFlags());
  ASSERT_TRUE(started.ok()) << started.status();
  ClusterHarness& cluster = **started;
  // Heartbeats go over the same TLS links: every member alive means every link is up.
  const absl::Time deadline = absl::Now() + absl::Seconds(15);
  bool alive = false;
  while (!alive && absl::Now() < deadline) {
    alive = SeesAllAlive(cluster, 0) && SeesAllAlive(cluster, 1) && SeesAllAlive(cluster, 2);
    if (!alive) {
      absl::SleepFor(absl::Milliseconds(50));  // polling other processes, not synchronising
    }
  }
  ASSERT_TRUE(alive) << cluster.Stderr(0) << cluster.Stderr(1) << cluster.Stderr(2);

  // One key, 180 checks round-robin over the three nodes from 6 threads: exactly 60 admitted.
  std::atomic<int> next{0}, allowed{0}, refused{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&] {
      std::vector<std::unique_ptr<HttpClient>> clients;
      for (int i = 0; i < cluster.size(); ++i) {
        clients.push_back(std::make_unique<HttpClient>(cluster.node(i).http_port, 5'000));
      }
      for (int n = next.fetch_add(1); n < 180; n = next.fetch_add(1)) {
        const int status = clients[n % 3]->Request("GET", "/v1/check?domain=web&user=alice").status;
        (status == 200 ? allowed : status == 429 ? refused : failed).fetch_add(1);
      }
    });
  }
  for (std::thread& t : threads) {
    t.join();
  }
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(allowed.load(), 60);
  EXPECT_EQ(refused.load(), 120);

  // The nodes that do not own the key forwarded its checks to the owner, over TLS.
  int64_t forwarded = 0;
  for (int i = 0; i < cluster.size(); ++i) {
    HttpClient client(cluster.node(i).http_port, 3'000);
    const std::string body = client.Request("GET", "/v1/cluster").body;
    forwarded += SumOf(body, "forwarded");
    EXPECT_EQ(SumOf(body, "forward_errors"), 0) << body;
  }
  // About 2/3 of the 60 admitted checks reached a node that does not own the key (once the key
  // is spent, nodes refuse it from their refusal cache without asking the owner).
  EXPECT_GE(forwarded, 20) << "checks forwarded to the key's owner";

  // The peer port speaks TLS and presents a certificate the CA signed.
  const std::string command =
      absl::StrCat("openssl s_client -connect ", cluster.node(1).PeerAddress(), " -CAfile ",
                   pki_.ca_cert, " -cert ", pki_.peer_cert, " -key ", pki_.peer_key,
                   " -alpn floodgate-peer -verify_return_error </dev/null 2>&1");
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof(buf), pipe)) > 0;) {
    out.append(buf, n);
  }
  pclose(pipe);
  EXPECT_THAT(out, HasSubstr("Verify return code: 0 (ok)"));
  EXPECT_THAT(out, HasSubstr("ALPN protocol: floodgate-peer"));
}

TEST_F(PeerTlsTest, PartialOrBadPeerTlsFilesRefuseToStart) {
  EXPECT_THAT(StartError({"--peer-tls-cert", pki_.peer_cert, "--peer-tls-key", pki_.peer_key}),
              HasSubstr("missing: --peer-tls-ca"));
  EXPECT_THAT(StartError({"--peer-tls-ca", pki_.ca_cert}),
              HasSubstr("missing: --peer-tls-cert, --peer-tls-key"));

  const std::string junk = dir_ + "/junk.pem";
  std::ofstream(junk) << "not a certificate\n";
  EXPECT_THAT(StartError({"--peer-tls-cert", pki_.peer_cert, "--peer-tls-key", pki_.peer_key,
                          "--peer-tls-ca", junk}),
              HasSubstr("--peer-tls-ca " + junk + " holds no PEM certificate"));
  EXPECT_THAT(StartError({"--peer-tls-cert", pki_.peer_cert, "--peer-tls-key", pki_.client_key,
                          "--peer-tls-ca", pki_.ca_cert}),
              HasSubstr("--peer-tls-key " + pki_.client_key +
                        " does not match the certificate in --peer-tls-cert " + pki_.peer_cert));
  const std::string missing = dir_ + "/missing.pem";
  EXPECT_THAT(StartError({"--peer-tls-cert", missing, "--peer-tls-key", pki_.peer_key,
                          "--peer-tls-ca", pki_.ca_cert}),
              HasSubstr("--peer-tls-cert " + missing + ": cannot read it"));
}

}  // namespace
}  // namespace floodgate::testing
