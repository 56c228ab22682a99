// TcpPeerTransport over loopback: real transports on 127.0.0.1 port 0 with a recording handler,
// and a scripted member (a raw socket speaking the protocol) for what a real one never does
// (answering out of order). Waits are on notifications and conditions with a bounded timeout;
// the only polling is for the link's reconnect backoff, which runs on the wall clock.

#include "src/cluster/tcp_peer_transport.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "src/cluster/cluster_store.h"
#include "src/cluster/peer_auth.h"
#include "src/cluster/peer_frame.h"
#include "src/cluster/peer_wire.h"
#include "testing/peer_client.h"

namespace floodgate::cluster {
namespace {

namespace asio = boost::asio;
namespace pb = ::floodgate::peer::v1;

constexpr char kKey[] = "transport-test-key";
constexpr int64_t kSecond = 1'000'000'000;
// Members, sorted by id: "a" (index 0) answers, "b" and "c" call it.
constexpr int kA = 0;

StoreOp Op(uint64_t key, uint64_t hits, uint64_t limit = 1000) {
  StoreOp op;
  op.key_hash = key;
  op.spec.algorithm = Algorithm::kFixedWindow;
  op.spec.requests_per_period = limit;
  op.spec.period_ns = 3600 * kSecond;
  op.hits = hits;
  return op;
}

// A PeerHandler that answers every forwarded op with an echo of it (limit = key hash, remaining
// = hits), so a caller can tell whose answer it got. Hold() makes forwards wait in the handler,
// blocking the peer server's io thread as a stalled node would, until Release() (or 10 s).
class EchoHandler final : public PeerHandler {
 public:
  explicit EchoHandler(std::string id) : id_(std::move(id)) {}

  void RecordContact(int member) override {
    absl::MutexLock lock(&mu_);
    contacts_.push_back(member);
  }
  bool HandleForward(absl::Span<const StoreOp> ops, int64_t,
                     absl::Span<Decision> decisions) override {
    bool slow = false;
    {
      absl::MutexLock lock(&mu_);
      ++forwards_;
      mu_.AwaitWithTimeout(
          absl::Condition(
              +[](EchoHandler* h) ABSL_NO_THREAD_SAFETY_ANALYSIS { return !h->held_; }, this),
          absl::Seconds(10));
      slow = slow_every_ > 0 && forwards_ % slow_every_ == 0;
    }
    if (slow) {
      // A slow decision (not synchronisation): lets later calls on other connections overtake.
      absl::SleepFor(absl::Microseconds(300));
    }
    for (size_t i = 0; i < ops.size(); ++i) {
      decisions[i].allowed = true;
      decisions[i].limit = ops[i].key_hash;
      decisions[i].remaining = ops[i].hits;
    }
    return true;
  }
  bool ForwardMayWait(absl::Span<const StoreOp>, int64_t) override {
    absl::MutexLock lock(&mu_);
    return may_wait_;
  }
  std::vector<StateRecord> HandleReplicate(absl::Span<const StateRecord>, int64_t) override {
    return {};
  }
  void HandleCorrections(absl::Span<const StateRecord>) override {}
  std::vector<StateRecord> HandleFetch(absl::Span<const uint64_t> keys, int64_t) override {
    std::vector<StateRecord> held;
    for (uint64_t key : keys) {
      held.push_back(StateRecord{key, {}, 123, 456});
    }
    return held;
  }
  PingInfo HandlePing() override { return PingInfo{id_, 42, {}}; }
  void HandlePushConfig(const std::vector<peer::v1::ConfigChange>&) override {}
  std::vector<peer::v1::ConfigChange> HandleGetConfig(const std::vector<std::string>&) override {
    return {};
  }
  core::TopSnapshot HandleTopRefused() override {
    return core::TopSnapshot{{core::TopKey{"3:api" + id_, 9, 2}}, 11};
  }

  void Hold() {
    absl::MutexLock lock(&mu_);
    held_ = true;
  }
  void Release() {
    absl::MutexLock lock(&mu_);
    held_ = false;
  }
  // Says every forward may wait on another member (as a warming-up node does).
  void MayWait() {
    absl::MutexLock lock(&mu_);
    may_wait_ = true;
  }
  // Every n-th forward takes a little longer.
  void SlowEvery(uint64_t n) {
    absl::MutexLock lock(&mu_);
    slow_every_ = n;
  }
  // Waits until at least `n` forwards reached the handler; false after `timeout`.
  bool WaitForForwards(uint64_t n, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    struct Want {
      EchoHandler* h;
      uint64_t n;
    } want{this, n};
    return mu_.AwaitWithTimeout(
        absl::Condition(
            +[](Want* w) ABSL_NO_THREAD_SAFETY_ANALYSIS { return w->h->forwards_ >= w->n; }, &want),
        timeout);
  }
  uint64_t forwards() {
    absl::MutexLock lock(&mu_);
    return forwards_;
  }
  std::vector<int> contacts() {
    absl::MutexLock lock(&mu_);
    return contacts_;
  }

 private:
  const std::string id_;
  absl::Mutex mu_;
  std::vector<int> contacts_ ABSL_GUARDED_BY(mu_);
  uint64_t forwards_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t slow_every_ ABSL_GUARDED_BY(mu_) = 0;
  bool held_ ABSL_GUARDED_BY(mu_) = false;
  bool may_wait_ ABSL_GUARDED_BY(mu_) = false;
};

// An io_context run by one thread, as a front end's io thread runs its loop.
class TestLoop {
 public:
  TestLoop() : work_(asio::make_work_guard(ioc_)), thread_([this] { ioc_.run(); }) {}
  ~TestLoop() {
    work_.reset();
    ioc_.stop();
    thread_.join();
  }
  asio::io_context& ioc() { return ioc_; }
  std::thread::id thread_id() const { return thread_.get_id(); }

 private:
  asio::io_context ioc_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::thread thread_;
};

std::vector<Member> Members(int a_port) {
  // "b" and "c" listen too, but nobody dials them here.
  return {Member{"a", absl::StrCat("127.0.0.1:", a_port), NodeSeed("a")},
          Member{"b", "127.0.0.1:1", NodeSeed("b")}, Member{"c", "127.0.0.1:1", NodeSeed("c")}};
}

TcpPeerTransportOptions Options(int self, int a_port, absl::Duration timeout) {
  TcpPeerTransportOptions options;
  options.members = Members(a_port);
  options.self = self;
  options.self_id = options.members[self].id;
  options.listen_address = "127.0.0.1:0";
  options.cluster_key = kKey;
  options.forward_timeout = timeout;
  return options;
}

// Starts "a" on `port` (0: any) answering through `handler`.
std::unique_ptr<PeerTransport> StartA(PeerHandler* handler, int port = 0,
                                      int listener_threads = 2) {
  TcpPeerTransportOptions options = Options(kA, 0, absl::Seconds(10));
  options.listen_address = absl::StrCat("127.0.0.1:", port);
  options.listener_threads = listener_threads;
  std::unique_ptr<PeerTransport> a = NewTcpPeerTransport(options);
  absl::Status started = a->Start(handler);
  EXPECT_TRUE(started.ok()) << started;
  return a;
}

// Starts member `self` ("b" = 1, "c" = 2) dialling "a" on `a_port`.
std::unique_ptr<PeerTransport> StartCaller(int self, PeerHandler* handler, int a_port,
                                           absl::Duration timeout = absl::Seconds(10)) {
  std::unique_ptr<PeerTransport> t = NewTcpPeerTransport(Options(self, a_port, timeout));
  absl::Status started = t->Start(handler);
  EXPECT_TRUE(started.ok()) << started;
  return t;
}

// Forwards one op and checks the echo; returns the call's status.
absl::Status ForwardEcho(PeerTransport& t, uint64_t key, uint64_t hits) {
  const StoreOp op = Op(key, hits);
  Decision d;
  bool committed = false;
  absl::Status status =
      t.Forward(kA, absl::MakeConstSpan(&op, 1), absl::MakeSpan(&d, 1), &committed);
  if (status.ok()) {
    EXPECT_TRUE(committed);
    EXPECT_EQ(d.limit, key);
    EXPECT_EQ(d.remaining, hits);
  }
  return status;
}

// ForwardAsync of one op on `loop`; waits (bounded) for `done` and returns its status.
absl::Status ForwardAsyncEcho(PeerTransport& t, TestLoop& loop, uint64_t key, uint64_t hits) {
  const StoreOp op = Op(key, hits);
  struct Result {
    absl::Notification done;
    absl::Status status;
    Decision decision;
    bool on_loop = false;
  };
  auto result = std::make_shared<Result>();
  t.ForwardAsync(kA, absl::MakeConstSpan(&op, 1), absl::MakeSpan(&result->decision, 1), loop.ioc(),
                 [result, &loop](absl::Status status, bool) {
                   result->on_loop = std::this_thread::get_id() == loop.thread_id();
                   result->status = std::move(status);
                   result->done.Notify();
                 });
  if (!result->done.WaitForNotificationWithTimeout(absl::Seconds(15))) {
    return absl::InternalError("ForwardAsync's done never ran");
  }
  EXPECT_TRUE(result->on_loop);
  if (result->status.ok()) {
    EXPECT_EQ(result->decision.limit, key);
    EXPECT_EQ(result->decision.remaining, hits);
  }
  return result->status;
}

// Retries `call` until it succeeds or `timeout` passes (the link backs off on the wall clock
// after a failure: polling is the only way to see it reconnect). Returns the last status.
template <typename Fn>
absl::Status RetryUntilOk(Fn call, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::Status status = call();
  while (!status.ok() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));  // polling the backoff, not synchronising
    status = call();
  }
  return status;
}

bool IsPeerDown(const absl::Status& status) {
  return absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status);
}

TEST(TcpPeerTransportTest, ListensOnPortZeroAndAnswersPeers) {
  EchoHandler a_handler("a");
  std::unique_ptr<PeerTransport> a = StartA(&a_handler);
  ASSERT_GT(a->port(), 0);
  EchoHandler b_handler("b");
  std::unique_ptr<PeerTransport> b = StartCaller(1, &b_handler, a->port());
  ASSERT_GT(b->port(), 0);
  EXPECT_NE(b->port(), a->port());

  EXPECT_TRUE(ForwardEcho(*b, 7, 11).ok());
  EXPECT_EQ(a_handler.contacts(), std::vector<int>{1});  // a knows b sent it

  const uint64_t keys[] = {5};
  absl::StatusOr<std::vector<StateRecord>> fetched = b->Fetch(kA, keys);
  ASSERT_TRUE(fetched.ok()) << fetched.status();
  ASSERT_EQ(fetched->size(), 1u);
  EXPECT_EQ((*fetched)[0].key_hash, 5u);
  EXPECT_EQ((*fetched)[0].data, 456u);

  absl::Notification pinged;
  absl::StatusOr<PingInfo> answer;
  b->Ping(kA, PingInfo{}, [&](absl::StatusOr<PingInfo> got) {
    answer = std::move(got);
    pinged.Notify();
  });
  ASSERT_TRUE(pinged.WaitForNotificationWithTimeout(absl::Seconds(10)));
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->node_id, "a");
  EXPECT_EQ(answer->started_at_ns, 42);

  // Self and unknown members are refused at once, not dialled.
  EXPECT_TRUE(absl::IsUnavailable(b->Fetch(1, keys).status()));
  EXPECT_TRUE(absl::IsUnavailable(b->Fetch(7, keys).status()));
}

TEST(TcpPeerTransportTest, TopRefusedTravelsAndUnknownMembersFail) {
  EchoHandler a_handler("a");
  std::unique_ptr<PeerTransport> a = StartA(&a_handler);
  EchoHandler b_handler("b");
  std::unique_ptr<PeerTransport> b = StartCaller(1, &b_handler, a->port());
  absl::Notification done;
  absl::StatusOr<core::TopSnapshot> answer;
  b->TopRefused(kA, absl::Seconds(10), [&](absl::StatusOr<core::TopSnapshot> got) {
    answer = std::move(got);
    done.Notify();
  });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(15)));
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->total, 11u);
  ASSERT_EQ(answer->keys.size(), 1u);
  EXPECT_EQ(answer->keys[0], (core::TopKey{"3:apia", 9, 2}));

  absl::Notification refused;
  b->TopRefused(7, absl::Seconds(1), [&](absl::StatusOr<core::TopSnapshot> got) {
    EXPECT_TRUE(absl::IsUnavailable(got.status())) << got.status();
    refused.Notify();
  });
  EXPECT_TRUE(refused.HasBeenNotified());  // refused at once, not dialled
}

// A forward that may wait on another member (a warm-up fetch) is decided off the io thread: with
// one io thread and that forward held, the same server still answers a fetch. (Two warming-up
// nodes fetching from each other on io threads both blocked in a fetch would stall until the
// forward timeout.)
TEST(TcpPeerTransportTest, AForwardThatMayWaitLeavesTheIoThreadFree) {
  TestLoop loop;  // outlives the transports: b's link for ForwardAsync runs on it
  EchoHandler a_handler("a");
  a_handler.MayWait();
  a_handler.Hold();
  std::unique_ptr<PeerTransport> a = StartA(&a_handler, 0, /*listener_threads=*/1);
  EchoHandler b_handler("b");
  // Calls time out in 2 s; the forward is held up to 10 s.
  std::unique_ptr<PeerTransport> b = StartCaller(1, &b_handler, a->port(), absl::Seconds(2));

  absl::Notification forwarded;
  absl::Status forward_status = absl::UnknownError("not answered");
  Decision decision;
  const StoreOp op = Op(9, 3);
  b->ForwardAsync(kA, absl::MakeConstSpan(&op, 1), absl::MakeSpan(&decision, 1), loop.ioc(),
                  [&](absl::Status status, bool) {
                    forward_status = std::move(status);
                    forwarded.Notify();
                  });
  ASSERT_TRUE(a_handler.WaitForForwards(1, absl::Seconds(10)));

  const uint64_t keys[] = {5};
  absl::StatusOr<std::vector<StateRecord>> fetched = b->Fetch(kA, keys);
  ASSERT_TRUE(fetched.ok()) << fetched.status();
  EXPECT_EQ(fetched->size(), 1u);
  EXPECT_FALSE(forwarded.HasBeenNotified());  // still held

  a_handler.Release();
  ASSERT_TRUE(forwarded.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(forward_status.ok()) << forward_status;
  EXPECT_EQ(decision.limit, 9u);
  EXPECT_EQ(decision.remaining, 3u);
}

TEST(TcpPeerTransportTest, ClusterStoreReportsThePortItGot) {
  auto local = *NewShardedStore({});
  ClusterOptions options;
  options.self_id = "a";
  options.members = {Member{"a", "127.0.0.1:0", 1}};
  auto store = ClusterStore::Start(options, local.get());
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_GT((*store)->peer_port(), 0);
  EXPECT_TRUE((*store)->GetClusterStats().quorum);
}

// Many forwards in flight at once, from threads of two members (blocking Forward) and from a
// loop (ForwardAsync), each answered with its own request's echo; the handler is slow on some.
TEST(TcpPeerTransportTest, ManyForwardsInFlightGetTheirOwnAnswers) {
  TestLoop loop;  // outlives the transports whose links run on it
  EchoHandler a_handler("a");
  a_handler.SlowEvery(7);
  std::unique_ptr<PeerTransport> a = StartA(&a_handler, 0, /*listener_threads=*/3);
  EchoHandler b_handler("b");
  EchoHandler c_handler("c");
  std::unique_ptr<PeerTransport> b = StartCaller(1, &b_handler, a->port());
  std::unique_ptr<PeerTransport> c = StartCaller(2, &c_handler, a->port());

  constexpr int kThreads = 3;
  constexpr int kPerThread = 200;
  constexpr int kAsync = 400;
  std::atomic<int> wrong{0};
  std::atomic<int> failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2 * kThreads; ++t) {
    PeerTransport* from = t < kThreads ? b.get() : c.get();
    threads.emplace_back([from, t, &wrong, &failed] {
      for (int i = 0; i < kPerThread; ++i) {
        const uint64_t key = (uint64_t{1} << 40) + t * 100'000 + i;
        const StoreOp ops[2] = {Op(key, i + 1), Op(key + 1, t + 1)};
        Decision d[2];
        bool committed = false;
        if (!from->Forward(kA, ops, absl::MakeSpan(d), &committed).ok()) {
          failed.fetch_add(1);
          continue;
        }
        if (!committed || d[0].limit != key || d[0].remaining != static_cast<uint64_t>(i + 1) ||
            d[1].limit != key + 1 || d[1].remaining != static_cast<uint64_t>(t + 1)) {
          wrong.fetch_add(1);
        }
      }
    });
  }
  // ForwardAsync: every call issued before any answer is awaited.
  struct Async {
    std::vector<Decision> decisions = std::vector<Decision>(kAsync);
    absl::Mutex mu;
    int done ABSL_GUARDED_BY(mu) = 0;
    int ok ABSL_GUARDED_BY(mu) = 0;
    int off_loop ABSL_GUARDED_BY(mu) = 0;
  };
  auto async = std::make_shared<Async>();
  for (int i = 0; i < kAsync; ++i) {
    const StoreOp op = Op((uint64_t{1} << 50) | i, 1000 + i);
    b->ForwardAsync(kA, absl::MakeConstSpan(&op, 1), absl::MakeSpan(&async->decisions[i], 1),
                    loop.ioc(), [async, &loop](absl::Status status, bool committed) {
                      absl::MutexLock lock(&async->mu);
                      ++async->done;
                      async->ok += status.ok() && committed;
                      async->off_loop += std::this_thread::get_id() != loop.thread_id();
                    });
  }
  for (auto& thread : threads) {
    thread.join();
  }
  {
    absl::MutexLock lock(&async->mu);
    EXPECT_TRUE(async->mu.AwaitWithTimeout(
        absl::Condition(
            +[](Async* a) ABSL_NO_THREAD_SAFETY_ANALYSIS { return a->done == kAsync; },
            async.get()),
        absl::Seconds(20)));
    EXPECT_EQ(async->ok, kAsync);
    EXPECT_EQ(async->off_loop, 0);
  }
  for (int i = 0; i < kAsync; ++i) {
    EXPECT_EQ(async->decisions[i].limit, (uint64_t{1} << 50) | i) << i;
    EXPECT_EQ(async->decisions[i].remaining, static_cast<uint64_t>(1000 + i)) << i;
  }
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(a_handler.forwards(), static_cast<uint64_t>(2 * kThreads * kPerThread + kAsync));
  // Calls in flight together leave in shared writes: fewer batches than calls.
  const PeerLinkStats stats = b->GetLinkStats(kA);
  EXPECT_EQ(stats.forwarded_txns, static_cast<uint64_t>(kThreads * kPerThread + kAsync));
  EXPECT_EQ(stats.forward_errors, 0u);
  EXPECT_LT(stats.forward_batches, stats.forwarded_txns);
}

// A member that is not a TcpPeerTransport: accepts one connection, runs the accepting side of
// the handshake, waits for `calls` forwards and answers them in reverse order, each with its own
// request's echo. A real peer server answers in order; a link must not rely on it.
class ReversingPeer {
 public:
  explicit ReversingPeer(int calls) : calls_(calls) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(::listen(listen_fd_, 4), 0);
    socklen_t size = sizeof(addr);
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &size);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { (void)Run(); });
  }
  ~ReversingPeer() {
    stop_.Notify();
    thread_.join();
    ::close(listen_fd_);
  }
  int port() const { return port_; }
  // Waits for the scripted exchange to end; returns what went wrong in it, if anything.
  absl::Status Wait() {
    if (!answered_.WaitForNotificationWithTimeout(absl::Seconds(20))) {
      return absl::DeadlineExceededError("the scripted peer never answered");
    }
    return answer_status_;
  }

 private:
  absl::Status Run() {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 15'000) != 1) {
      return Done(absl::DeadlineExceededError("nobody connected"));
    }
    std::unique_ptr<testing::PeerClient> conn =
        testing::PeerClient::Adopt(::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC));
    ServerHandshake handshake(kKey, "a", {"a", "b", "c"});
    AuthError error{AuthFailure::kMalformed, ""};
    absl::StatusOr<testing::PeerAnswer> frame = conn->Read();
    pb::Hello hello;
    if (!frame.ok() || frame->type != FrameType::kHello || !frame->ParseTo(&hello)) {
      return Done(absl::InternalError("no hello"));
    }
    absl::StatusOr<pb::Challenge> challenge = handshake.OnHello(hello, &error);
    if (!challenge.ok()) {
      return Done(challenge.status());
    }
    if (absl::Status sent = conn->Send(FrameType::kChallenge, 0, *challenge); !sent.ok()) {
      return Done(sent);
    }
    frame = conn->Read();
    pb::Auth auth;
    if (!frame.ok() || frame->type != FrameType::kAuth || !frame->ParseTo(&auth) ||
        !handshake.OnAuth(auth, &error).ok()) {
      return Done(absl::InternalError("no valid auth"));
    }
    std::vector<std::pair<uint64_t, pb::ForwardRequest>> requests;
    while (static_cast<int>(requests.size()) < calls_) {
      frame = conn->Read();
      pb::ForwardRequest request;
      if (!frame.ok() || frame->type != FrameType::kForward || !frame->ParseTo(&request)) {
        return Done(absl::InternalError(absl::StrCat("bad call after ", requests.size())));
      }
      requests.emplace_back(frame->call_id, std::move(request));
    }
    // Every answer in reverse order, in one write.
    std::string out;
    for (auto it = requests.rbegin(); it != requests.rend(); ++it) {
      pb::ForwardResponse response;
      for (const pb::Txn& txn : it->second.txns()) {
        pb::TxnResult* result = response.add_results();
        result->set_committed(true);
        for (const pb::Op& op : txn.ops()) {
          pb::Decision* d = result->add_decisions();
          d->set_allowed(true);
          d->set_limit(op.key_hash());
          d->set_remaining(op.hits());
        }
      }
      (void)AppendFrame(FrameType::kForwardAnswer, it->first, response, &out);
    }
    absl::Status sent = conn->SendBytes(out);
    (void)Done(sent);
    // Keep the connection until the test ends, so the link reads every answer.
    stop_.WaitForNotificationWithTimeout(absl::Seconds(30));
    return sent;
  }

  absl::Status Done(absl::Status status) {
    answer_status_ = status;
    answered_.Notify();
    return status;
  }

  const int calls_;
  int listen_fd_ = -1;
  int port_ = 0;
  absl::Status answer_status_;
  absl::Notification answered_;
  absl::Notification stop_;
  std::thread thread_;
};

TEST(TcpPeerTransportTest, AnswersOutOfOrderAreMatchedByCallId) {
  constexpr int kCalls = 16;
  // Blocking Forward from as many threads: all in flight on b's own link.
  {
    ReversingPeer a(kCalls);
    EchoHandler b_handler("b");
    std::unique_ptr<PeerTransport> b = StartCaller(1, &b_handler, a.port());
    std::vector<absl::Status> statuses(kCalls);
    std::vector<std::thread> threads;
    for (int i = 0; i < kCalls; ++i) {
      threads.emplace_back(
          [&, i] { statuses[i] = ForwardEcho(*b, 1000 + i, static_cast<uint64_t>(i + 1)); });
    }
    for (auto& thread : threads) {
      thread.join();
    }
    EXPECT_TRUE(a.Wait().ok()) << a.Wait();
    for (int i = 0; i < kCalls; ++i) {
      EXPECT_TRUE(statuses[i].ok()) << i << ": " << statuses[i];
    }
  }
  // ForwardAsync: all issued on one loop before the peer answers any.
  {
    ReversingPeer a(kCalls);
    TestLoop loop;
    EchoHandler b_handler("b");
    std::unique_ptr<PeerTransport> b = StartCaller(1, &b_handler, a.port());
    std::vector<Decision> decisions(kCalls);
    absl::Mutex mu;
    std::vector<int> order;  // keys, in the order their done ran
    int ok = 0;
    for (int i = 0; i < kCalls; ++i) {
      const StoreOp op = Op(2000 + i, static_cast<uint64_t>(i + 1));
      b->ForwardAsync(kA, absl::MakeConstSpan(&op, 1), absl::MakeSpan(&decisions[i], 1), loop.ioc(),
                      [&, i](absl::Status status, bool committed) {
                        absl::MutexLock lock(&mu);
                        order.push_back(i);
                        ok += status.ok() && committed;
                      });
    }
    EXPECT_TRUE(a.Wait().ok()) << a.Wait();
    absl::MutexLock lock(&mu);
    EXPECT_TRUE(mu.AwaitWithTimeout(
        absl::Condition(
            +[](std::vector<int>* o) { return o->size() == static_cast<size_t>(kCalls); }, &order),
        absl::Seconds(10)));
    EXPECT_EQ(ok, kCalls);
    ASSERT_EQ(order.size(), static_cast<size_t>(kCalls));
    EXPECT_EQ(order.front(), kCalls - 1);  // really answered out of order
    for (int i = 0; i < kCalls; ++i) {
      EXPECT_EQ(decisions[i].limit, static_cast<uint64_t>(2000 + i));
      EXPECT_EQ(decisions[i].remaining, static_cast<uint64_t>(i + 1));
    }
  }
}

// A peer destroyed and started again on the same port: calls fail while it is gone, and both
// kinds of link reconnect to it once it is back.
TEST(TcpPeerTransportTest, RestartedPeerIsReachedAgain) {
  TestLoop loop;
  auto a_handler = std::make_unique<EchoHandler>("a");
  std::unique_ptr<PeerTransport> a = StartA(a_handler.get());
  const int port = a->port();
  EchoHandler b_handler("b");
  std::unique_ptr<PeerTransport> b = StartCaller(1, &b_handler, port, absl::Seconds(2));
  ASSERT_TRUE(ForwardEcho(*b, 1, 1).ok());
  ASSERT_TRUE(ForwardAsyncEcho(*b, loop, 2, 2).ok());
  EXPECT_EQ(a_handler->forwards(), 2u);

  a.reset();
  a_handler = std::make_unique<EchoHandler>("a");
  absl::Status gone = ForwardEcho(*b, 3, 3);
  EXPECT_TRUE(IsPeerDown(gone)) << gone;
  gone = ForwardAsyncEcho(*b, loop, 4, 4);
  EXPECT_TRUE(IsPeerDown(gone)) << gone;

  a = StartA(a_handler.get(), port);
  ASSERT_EQ(a->port(), port);
  absl::Status back = RetryUntilOk([&] { return ForwardEcho(*b, 5, 5); }, absl::Seconds(5));
  EXPECT_TRUE(back.ok()) << back;
  back = RetryUntilOk([&] { return ForwardAsyncEcho(*b, loop, 6, 6); }, absl::Seconds(5));
  EXPECT_TRUE(back.ok()) << back;
  EXPECT_GE(a_handler->forwards(), 2u);  // the new instance answered them
  EXPECT_EQ(b->GetAuthStats().bad_key, 0u);
}

// A peer that comes back while the link to it waits out a reconnect backoff: calls keep failing
// at once ("reconnecting") until PeerIsUp (the peer dialled in, or rejoined), then reach it
// without waiting for the backoff to end. The backoff here is a minute, so nothing depends on
// timing.
TEST(TcpPeerTransportTest, PeerIsUpEndsTheReconnectBackoff) {
  auto a_handler = std::make_unique<EchoHandler>("a");
  std::unique_ptr<PeerTransport> a = StartA(a_handler.get());
  const int port = a->port();
  a.reset();

  EchoHandler b_handler("b");
  TcpPeerTransportOptions options = Options(1, port, absl::Seconds(2));
  options.min_reconnect_backoff = absl::Minutes(1);
  options.max_reconnect_backoff = absl::Minutes(1);
  std::unique_ptr<PeerTransport> b = NewTcpPeerTransport(options);
  ASSERT_TRUE(b->Start(&b_handler).ok());
  absl::Status gone = ForwardEcho(*b, 1, 1);  // connection refused: the backoff starts
  EXPECT_TRUE(IsPeerDown(gone)) << gone;

  a = StartA(a_handler.get(), port);
  ASSERT_EQ(a->port(), port);
  absl::Status waiting = ForwardEcho(*b, 2, 2);
  EXPECT_TRUE(absl::IsUnavailable(waiting)) << waiting;
  EXPECT_NE(waiting.message().find("reconnecting"), std::string_view::npos) << waiting;
  EXPECT_EQ(a_handler->forwards(), 0u);

  b->PeerIsUp(kA);
  absl::Status back = ForwardEcho(*b, 3, 3);
  EXPECT_TRUE(back.ok()) << back;
  EXPECT_EQ(a_handler->forwards(), 1u);
}

// A peer whose handler blocks: calls fail within the call timeout (not a hang), and succeed again
// once it answers.
TEST(TcpPeerTransportTest, StalledPeerFailsWithinTheTimeout) {
  TestLoop loop;
  EchoHandler a_handler("a");
  std::unique_ptr<PeerTransport> a = StartA(&a_handler);
  EchoHandler b_handler("b");
  constexpr absl::Duration kTimeout = absl::Milliseconds(300);
  std::unique_ptr<PeerTransport> b = StartCaller(1, &b_handler, a->port(), kTimeout);
  ASSERT_TRUE(ForwardEcho(*b, 1, 1).ok());

  a_handler.Hold();
  absl::Time start = absl::Now();
  absl::Status stalled = ForwardEcho(*b, 2, 2);
  absl::Duration took = absl::Now() - start;
  EXPECT_TRUE(IsPeerDown(stalled)) << stalled;
  EXPECT_GE(took, kTimeout - absl::Milliseconds(50));
  EXPECT_LT(took, kTimeout + absl::Seconds(1));

  // The async link: its own connection, its own deadline.
  // (Its connection is new: it lands on a peer io thread that is blocked too, or reaches the
  // blocked handler; either way the call ends within its timeout.)
  start = absl::Now();
  stalled = ForwardAsyncEcho(*b, loop, 3, 3);
  took = absl::Now() - start;
  EXPECT_TRUE(IsPeerDown(stalled)) << stalled;
  EXPECT_LT(took, kTimeout + absl::Seconds(1));

  a_handler.Release();
  absl::Status back = RetryUntilOk([&] { return ForwardEcho(*b, 4, 4); }, absl::Seconds(5));
  EXPECT_TRUE(back.ok()) << back;
  const PeerLinkStats stats = b->GetLinkStats(kA);
  EXPECT_GE(stats.forward_errors, 2u);
}

// Shutdown while ForwardAsync calls wait at a stalled peer: each `done` runs once, with an
// error, on the caller's loop; nothing runs after the transport is gone.
TEST(TcpPeerTransportTest, ShutdownCompletesPendingForwardAsyncCalls) {
  TestLoop loop;
  EchoHandler a_handler("a");
  std::unique_ptr<PeerTransport> a = StartA(&a_handler);
  EchoHandler b_handler("b");
  std::unique_ptr<PeerTransport> b = StartCaller(1, &b_handler, a->port(), absl::Seconds(10));
  a_handler.Hold();

  constexpr int kCalls = 20;
  struct Calls {
    std::vector<Decision> decisions = std::vector<Decision>(kCalls);
    absl::Mutex mu;
    std::vector<int> runs ABSL_GUARDED_BY(mu) = std::vector<int>(kCalls, 0);
    int done ABSL_GUARDED_BY(mu) = 0;
    int failed ABSL_GUARDED_BY(mu) = 0;
  };
  auto calls = std::make_shared<Calls>();
  for (int i = 0; i < kCalls; ++i) {
    const StoreOp op = Op(100 + i, 1);
    b->ForwardAsync(kA, absl::MakeConstSpan(&op, 1), absl::MakeSpan(&calls->decisions[i], 1),
                    loop.ioc(), [calls, i](absl::Status status, bool) {
                      absl::MutexLock lock(&calls->mu);
                      ++calls->runs[i];
                      ++calls->done;
                      calls->failed += !status.ok();
                    });
  }
  ASSERT_TRUE(a_handler.WaitForForwards(1, absl::Seconds(10)));  // they are at the peer
  b->Shutdown();
  {
    absl::MutexLock lock(&calls->mu);
    EXPECT_TRUE(calls->mu.AwaitWithTimeout(
        absl::Condition(
            +[](Calls* c) ABSL_NO_THREAD_SAFETY_ANALYSIS { return c->done == kCalls; },
            calls.get()),
        absl::Seconds(10)));
    EXPECT_EQ(calls->failed, kCalls);
    for (int i = 0; i < kCalls; ++i) {
      EXPECT_EQ(calls->runs[i], 1) << i;
    }
  }
  // Calls after Shutdown fail at once, on the loop.
  absl::Status after = ForwardAsyncEcho(*b, loop, 999, 1);
  EXPECT_TRUE(absl::IsUnavailable(after)) << after;
  b.reset();
  a_handler.Release();
}

// The transport destroyed while ForwardAsync calls are queued on a loop that is not running:
// when the loop runs later (or is destroyed without running), nothing crashes and no `done`
// runs twice.
TEST(TcpPeerTransportTest, TransportDestroyedBeforeTheCallersLoopRuns) {
  EchoHandler a_handler("a");
  std::unique_ptr<PeerTransport> a = StartA(&a_handler);
  for (const bool run_loop : {true, false}) {
    SCOPED_TRACE(run_loop ? "loop runs after" : "loop destroyed unrun");
    EchoHandler b_handler("b");
    std::unique_ptr<PeerTransport> b = StartCaller(1, &b_handler, a->port(), absl::Seconds(10));
    auto runs = std::make_shared<std::atomic<int>>(0);
    std::vector<Decision> decisions(5);
    {
      asio::io_context ioc;
      for (int i = 0; i < 5; ++i) {
        const StoreOp op = Op(300 + i, 1);
        b->ForwardAsync(kA, absl::MakeConstSpan(&op, 1), absl::MakeSpan(&decisions[i], 1), ioc,
                        [runs](absl::Status, bool) { runs->fetch_add(1); });
      }
      b.reset();
      if (run_loop) {
        ioc.run_for(std::chrono::seconds(5));  // returns once the closed links have no work
        EXPECT_EQ(runs->load(), 5);            // each failed, once
      }
    }
    EXPECT_EQ(runs->load(), run_loop ? 5 : 0);  // an unrun loop drops them
  }
}

}  // namespace
}  // namespace floodgate::cluster
