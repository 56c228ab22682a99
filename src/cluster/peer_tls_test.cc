// Peer TLS (--peer-tls-*): two TcpPeerTransports on loopback, with certificates made at test
// time (testing/tls_certs.h). Member "a" (index 0) listens; member "b" (index 1) dials it.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "src/cluster/tcp_peer_transport.h"
#include "src/net/tls.h"
#include "testing/temp_dir.h"
#include "testing/tls_certs.h"

namespace floodgate::cluster {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr int64_t kHourNs = int64_t{3600} * 1'000'000'000;
// Generous, so that a slow machine never turns a refusal into a timeout; the failures below
// must come much sooner (a refused connection fails at once, it does not wait for this).
constexpr absl::Duration kForwardTimeout = absl::Seconds(5);

StoreOp Op(uint64_t key, uint64_t limit) {
  StoreOp op;
  op.key_hash = key;
  op.spec.algorithm = Algorithm::kFixedWindow;
  op.spec.requests_per_period = limit;
  op.spec.period_ns = kHourNs;
  return op;
}

// Admits everything, with the op's limit, and records who called.
class AdmitAll final : public PeerHandler {
 public:
  void RecordContact(int member) override {
    absl::MutexLock lock(&mu_);
    contacts_.push_back(member);
  }
  bool HandleForward(absl::Span<const StoreOp> ops, int64_t,
                     absl::Span<Decision> decisions) override {
    for (size_t i = 0; i < ops.size(); ++i) {
      decisions[i].allowed = true;
      decisions[i].limit = ops[i].spec.requests_per_period;
    }
    forwards_.fetch_add(1);
    return true;
  }
  std::vector<StateRecord> HandleReplicate(absl::Span<const StateRecord>, int64_t) override {
    return {};
  }
  void HandleCorrections(absl::Span<const StateRecord>) override {}
  std::vector<StateRecord> HandleFetch(absl::Span<const uint64_t>, int64_t) override { return {}; }
  PingInfo HandlePing() override { return PingInfo{"a", 1, {}}; }
  void HandlePushConfig(const std::vector<peer::v1::ConfigChange>&) override {}
  std::vector<peer::v1::ConfigChange> HandleGetConfig(const std::vector<std::string>&) override {
    return {};
  }
  std::vector<int> contacts() {
    absl::MutexLock lock(&mu_);
    return contacts_;
  }
  int forwards() const { return forwards_.load(); }

 private:
  absl::Mutex mu_;
  std::vector<int> contacts_ ABSL_GUARDED_BY(mu_);
  std::atomic<int> forwards_{0};
};

class PeerTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<testing::TestPki> pki = testing::MakeTestPki(dir_.path());
    ASSERT_TRUE(pki.ok()) << pki.status();
    pki_ = *pki;
  }

  static net::TlsCredentials Load(const std::string& cert, const std::string& key,
                                  const std::string& ca) {
    absl::StatusOr<net::TlsCredentials> loaded = net::LoadTlsCredentials({cert, key, ca});
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    return loaded.ok() ? *loaded : net::TlsCredentials{};
  }
  // A member with the CA's member certificate.
  net::TlsCredentials MemberTls() const {
    return Load(pki_.peer_cert, pki_.peer_key, pki_.ca_cert);
  }

  static TcpPeerTransportOptions Options(int self, int a_port,
                                         std::optional<net::TlsCredentials> tls) {
    TcpPeerTransportOptions options;
    options.self_id = self == 0 ? "a" : "b";
    options.self = self;
    options.members = {Member{"a", absl::StrCat("127.0.0.1:", a_port), 1},
                       Member{"b", "127.0.0.1:0", 2}};
    options.listen_address = "127.0.0.1:0";
    options.cluster_key = "peer-tls-test-key";
    options.forward_timeout = kForwardTimeout;
    options.tls = std::move(tls);
    return options;
  }

  // Starts "a" (listening) and then "b" (which knows a's port), each with its TLS or plain.
  void StartPair(std::optional<net::TlsCredentials> a_tls,
                 std::optional<net::TlsCredentials> b_tls) {
    a_ = NewTcpPeerTransport(Options(0, 0, std::move(a_tls)));
    ASSERT_TRUE(a_->Start(&a_handler_).ok());
    b_ = NewTcpPeerTransport(Options(1, a_->port(), std::move(b_tls)));
    ASSERT_TRUE(b_->Start(&b_handler_).ok());
  }

  // b forwards one op to a; returns the status, and how long it took in `took`.
  absl::Status ForwardFromB(Decision* decision, absl::Duration* took = nullptr) {
    const StoreOp op = Op(7, 11);
    bool committed = false;
    const absl::Time start = absl::Now();
    absl::Status status =
        b_->Forward(0, absl::MakeConstSpan(&op, 1), absl::MakeSpan(decision, 1), &committed);
    if (took != nullptr) {
      *took = absl::Now() - start;
    }
    if (status.ok()) {
      EXPECT_TRUE(committed);
    }
    return status;
  }

  testing::TempDir dir_{"floodgate-peer-tls-test"};
  testing::TestPki pki_;
  AdmitAll a_handler_;
  AdmitAll b_handler_;
  std::unique_ptr<PeerTransport> a_;
  std::unique_ptr<PeerTransport> b_;
};

TEST_F(PeerTlsTest, ForwardOverTlsBothWays) {
  StartPair(MemberTls(), MemberTls());
  Decision d;
  ASSERT_TRUE(ForwardFromB(&d).ok());
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.limit, 11u);
  EXPECT_EQ(a_handler_.contacts(), std::vector<int>{1});  // the peer handshake ran inside
  // The connection is kept: a second call reuses it.
  ASSERT_TRUE(ForwardFromB(&d).ok());
  EXPECT_EQ(a_handler_.forwards(), 2);
  const PeerAuthStats refused = a_->GetAuthStats();
  EXPECT_EQ(refused.malformed + refused.bad_key + refused.not_member + refused.version, 0u);
}

// ForwardAsync on a loop run by two threads (as the HTTP front end's is): the TLS link runs its
// handlers on a strand, so its reads and writes never touch the TLS state at once.
TEST_F(PeerTlsTest, ForwardAsyncOnALoopRunByTwoThreads) {
  StartPair(MemberTls(), MemberTls());
  boost::asio::io_context loop;
  auto work = boost::asio::make_work_guard(loop);
  std::vector<std::thread> threads;
  for (int i = 0; i < 2; ++i) {
    threads.emplace_back([&loop] { loop.run(); });
  }
  constexpr int kCalls = 500;
  std::vector<StoreOp> ops;
  for (int i = 0; i < kCalls; ++i) {
    ops.push_back(Op(static_cast<uint64_t>(i), static_cast<uint64_t>(100 + i)));
  }
  std::vector<Decision> decisions(kCalls);
  std::atomic<int> answered{0};
  std::atomic<int> wrong{0};
  absl::BlockingCounter left(kCalls);
  for (int i = 0; i < kCalls; ++i) {
    b_->ForwardAsync(0, absl::MakeConstSpan(&ops[i], 1), absl::MakeSpan(&decisions[i], 1), loop,
                     [&, i](absl::Status status, bool committed) {
                       if (status.ok() && committed) {
                         answered.fetch_add(1);
                         if (decisions[i].limit != static_cast<uint64_t>(100 + i)) {
                           wrong.fetch_add(1);
                         }
                       }
                       left.DecrementCount();
                     });
  }
  left.Wait();
  EXPECT_EQ(answered.load(), kCalls);
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(a_handler_.forwards(), kCalls);
  b_->Shutdown();
  work.reset();
  for (std::thread& t : threads) {
    t.join();
  }
}

TEST_F(PeerTlsTest, MemberWithACertificateFromAnotherCaIsRefused) {
  // b presents a certificate another CA signed: a's listener refuses it.
  StartPair(MemberTls(), Load(pki_.other_peer_cert, pki_.other_peer_key, pki_.ca_cert));
  Decision d;
  absl::Duration took;
  absl::Status status = ForwardFromB(&d, &took);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(status.message(), Not(HasSubstr("within"))) << "refused, not timed out";
  EXPECT_LT(took, kForwardTimeout / 2);
  EXPECT_EQ(a_handler_.forwards(), 0);
  EXPECT_TRUE(a_handler_.contacts().empty());
}

TEST_F(PeerTlsTest, ListenerWithACertificateFromAnotherCaIsRefused) {
  // b trusts only the other CA: it refuses a's certificate.
  StartPair(MemberTls(), Load(pki_.peer_cert, pki_.peer_key, pki_.other_ca_cert));
  Decision d;
  absl::Duration took;
  absl::Status status = ForwardFromB(&d, &took);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(status.message(), HasSubstr("TLS handshake with peer a"));
  EXPECT_THAT(status.message(), HasSubstr("certificate verify failed"));
  EXPECT_LT(took, kForwardTimeout / 2);
  EXPECT_EQ(a_handler_.forwards(), 0);
}

TEST_F(PeerTlsTest, PlainMemberDiallingATlsMemberFailsAtOnce) {
  StartPair(MemberTls(), std::nullopt);
  Decision d;
  absl::Duration took;
  absl::Status status = ForwardFromB(&d, &took);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(status.message(), HasSubstr("peer TLS on one side only"));
  EXPECT_LT(took, kForwardTimeout / 2);
  EXPECT_EQ(a_handler_.forwards(), 0);
}

TEST_F(PeerTlsTest, TlsMemberDiallingAPlainMemberFailsAtOnce) {
  StartPair(std::nullopt, MemberTls());
  Decision d;
  absl::Duration took;
  absl::Status status = ForwardFromB(&d, &took);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(status.message(), HasSubstr("TLS handshake with peer a"));
  EXPECT_THAT(status.message(), HasSubstr("closed by the peer"));
  EXPECT_LT(took, kForwardTimeout / 2);
  EXPECT_EQ(a_handler_.forwards(), 0);
  // The plain listener saw a ClientHello where a Hello frame belongs: refused as malformed.
  EXPECT_EQ(a_->GetAuthStats().malformed, 1u);
}

TEST_F(PeerTlsTest, TlsWithoutTheMembersCaDoesNotStart) {
  net::TlsCredentials no_ca = Load(pki_.peer_cert, pki_.peer_key, "");
  AdmitAll handler;
  std::unique_ptr<PeerTransport> a = NewTcpPeerTransport(Options(0, 0, no_ca));
  absl::Status started = a->Start(&handler);
  EXPECT_EQ(started.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(started.message(), HasSubstr("--peer-tls-ca"));
}

}  // namespace
}  // namespace floodgate::cluster
