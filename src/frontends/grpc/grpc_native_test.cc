// The native gRPC server in process, driven by a raw HTTP/2 client (testing/h2_client.h) so
// that every framing case can be sent: good calls, bad framing, bad headers, oversized and slow
// requests, garbage, many streams and connections, timeouts and the drain.

#include "src/frontends/grpc/grpc_native.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <sys/socket.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "envoy/service/ratelimit/v3/rls.pb.h"
#include "floodgate/store.h"
#include "grpc/health/v1/health.pb.h"
#include "src/admin/config_manager.h"
#include "src/common/protobuf_log.h"
#include "src/common/rate_limited_log.h"
#include "src/core/config.h"
#include "testing/h2_client.h"
#include "testing/held_store.h"
#include "testing/temp_dir.h"

namespace floodgate::frontends {
namespace {

namespace rls = ::envoy::service::ratelimit::v3;
using floodgate::testing::ClosedByPeer;
using floodgate::testing::GrpcFrame;
using floodgate::testing::H2Client;
using floodgate::testing::H2Request;
using floodgate::testing::H2Response;

constexpr char kHealthPath[] = "/grpc.health.v1.Health/Check";
constexpr char kYaml[] = R"(domain: rl
descriptors:
  - key: user
    rate_limit: {unit: day, requests_per_unit: 2}
)";

std::string CheckBody(const std::string& user, const std::string& domain = "rl") {
  rls::RateLimitRequest request;
  request.set_domain(domain);
  auto* e = request.add_descriptors()->add_entries();
  e->set_key("user");
  e->set_value(user);
  return GrpcFrame(request.SerializeAsString());
}

H2Request Check(const std::string& user) {
  H2Request r;
  r.body = CheckBody(user);
  return r;
}

rls::RateLimitResponse Decode(const H2Response& r) {
  rls::RateLimitResponse out;
  EXPECT_GE(r.body.size(), 5u);
  if (r.body.size() >= 5) {
    EXPECT_TRUE(out.ParseFromString(r.body.substr(5)));
  }
  return out;
}

class NativeGrpcServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = temp_.path();
    std::ofstream(dir_ + "/rl.yaml") << kYaml;
    auto store = NewShardedStore({});
    ASSERT_TRUE(store.ok());
    store_ = *std::move(store);
    limiter_ = std::make_unique<limiter::Limiter>(store_.get(), KeyHasher(1, 2), nullptr);
    auto config = admin::ConfigManager::Create(dir_, limiter_.get());
    ASSERT_TRUE(config.ok()) << config.status();
    config_ = *std::move(config);
  }
  void TearDown() override {
    if (server_ != nullptr) {
      server_->Shutdown(absl::Seconds(2));
    }
  }

  GrpcServerOptions Options() {
    GrpcServerOptions options;
    options.address = "127.0.0.1:0";
    options.max_receive_bytes = 64 * 1024;
    return options;
  }
  void StartServer(GrpcServerOptions options) {
    service_ = service::NewRateLimitService(limiter_.get(), service::RequestLimits(), &metrics_);
    server_ = NewNativeGrpcServer(options, service_.get(), &metrics_);
    ASSERT_TRUE(server_->Start().ok());
    port_ = server_->port();
  }

  floodgate::testing::TempDir temp_{"fg-grpc-native-test"};
  std::string dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<limiter::Limiter> limiter_;
  std::unique_ptr<admin::ConfigManager> config_;
  service::ServerMetrics metrics_;
  std::unique_ptr<service::RateLimitService> service_;
  std::unique_ptr<net::Server> server_;
  int port_ = 0;
};

TEST_F(NativeGrpcServerTest, DecidesAndAnswersHealth) {
  StartServer(Options());
  H2Client client(port_);
  ASSERT_TRUE(client.connected());
  for (int i = 0; i < 3; ++i) {
    H2Response r = client.Call(Check("alice"));
    ASSERT_TRUE(r.done);
    EXPECT_EQ(r.headers[":status"], "200");
    EXPECT_EQ(r.headers["content-type"], "application/grpc");
    EXPECT_EQ(r.trailers["grpc-status"], "0");
    EXPECT_EQ(Decode(r).overall_code(),
              i < 2 ? rls::RateLimitResponse::OK : rls::RateLimitResponse::OVER_LIMIT);
  }
  EXPECT_EQ(metrics_.grpc.requests.load(), 3u);
  EXPECT_EQ(metrics_.grpc.over_limit.load(), 1u);

  H2Request health;
  health.path = kHealthPath;
  health.body = GrpcFrame("");
  H2Response h = client.Call(health);
  EXPECT_EQ(h.grpc_status(), 0);
  EXPECT_EQ(h.body, GrpcFrame(std::string("\x08\x01", 2)));  // SERVING
  grpc::health::v1::HealthCheckRequest other;
  other.set_service("no.such.Service");
  health.body = GrpcFrame(other.SerializeAsString());
  EXPECT_EQ(client.Call(health).grpc_status(), 5);  // NOT_FOUND
}

// GrpcServerOptions::ready (the server's --healthy-with-config): NOT_SERVING while it is false.
TEST_F(NativeGrpcServerTest, HealthFollowsReady) {
  std::atomic<bool> ready{false};
  GrpcServerOptions options = Options();
  options.ready = [&ready] { return ready.load(); };
  StartServer(options);
  H2Client client(port_);
  ASSERT_TRUE(client.connected());
  H2Request health;
  health.path = kHealthPath;
  health.body = GrpcFrame("");
  H2Response h = client.Call(health);
  EXPECT_EQ(h.grpc_status(), 0);
  EXPECT_EQ(h.body, GrpcFrame(std::string("\x08\x02", 2)));  // NOT_SERVING
  ready = true;
  h = client.Call(health);
  EXPECT_EQ(h.body, GrpcFrame(std::string("\x08\x01", 2)));  // SERVING
}

TEST_F(NativeGrpcServerTest, BadCallsGetGrpcStatusesAndTheConnectionLives) {
  StartServer(Options());
  H2Client client(port_);
  H2Request unknown = Check("a");
  unknown.path = "/no.Such/Method";
  H2Response r = client.Call(unknown);
  EXPECT_EQ(r.grpc_status(), 12);
  EXPECT_NE(r.grpc_message().find("/no.Such/Method"), std::string::npos);

  H2Request json = Check("a");
  json.content_type = "application/json";
  r = client.Call(json);
  EXPECT_EQ(r.headers[":status"], "415");
  EXPECT_EQ(r.grpc_status(), 13);

  H2Request compressed = Check("a");
  compressed.body[0] = 1;
  EXPECT_EQ(client.Call(compressed).grpc_status(), 12);

  H2Request garbage;
  garbage.body = GrpcFrame("\xff\xff\xff not a protobuf");
  r = client.Call(garbage);
  EXPECT_EQ(r.grpc_status(), 3);
  EXPECT_NE(r.grpc_message().find("RateLimitRequest"), std::string::npos);

  H2Request truncated = Check("a");
  truncated.body.resize(truncated.body.size() - 3);
  EXPECT_EQ(client.Call(truncated).grpc_status(), 13);
  H2Request no_message;
  no_message.body = "";
  EXPECT_EQ(client.Call(no_message).grpc_status(), 13);
  H2Request two = Check("a");
  two.body += two.body;
  EXPECT_EQ(client.Call(two).grpc_status(), 13);

  // Oversized: refused from the prefix alone, while the client is still sending.
  H2Request big;
  big.body = GrpcFrame(std::string(1 << 20, 'x'));
  r = client.Call(big);
  EXPECT_EQ(r.grpc_status(), 8);
  EXPECT_NE(r.grpc_message().find("larger than max"), std::string::npos);

  // Validation errors keep today's messages, percent-encoded on the wire.
  H2Request empty_domain;
  empty_domain.body = CheckBody("a", "");
  r = client.Call(empty_domain);
  EXPECT_EQ(r.grpc_status(), 3);
  EXPECT_NE(r.grpc_message().find("domain"), std::string::npos);

  EXPECT_EQ(Decode(client.Call(Check("still-ok"))).overall_code(), rls::RateLimitResponse::OK);
  EXPECT_FALSE(client.connection_closed());
  EXPECT_GE(metrics_.grpc.bad_requests.load(), 6u);
}

TEST_F(NativeGrpcServerTest, ThousandStreamsOnOneConnectionAndManyConnections) {
  StartServer(Options());
  H2Client client(port_);
  std::vector<H2Request> requests;
  for (int i = 0; i < 1500; ++i) {  // beyond the 1000-stream limit: the client queues
    requests.push_back(Check("u" + std::to_string(i)));
  }
  std::vector<int32_t> ids = client.Start(requests);
  ASSERT_TRUE(client.Wait(ids, 30000));
  for (int32_t id : ids) {
    ASSERT_EQ(client.response(id).grpc_status(), 0) << id;
  }

  std::vector<std::unique_ptr<H2Client>> clients;
  for (int i = 0; i < 200; ++i) {
    clients.push_back(std::make_unique<H2Client>(port_));
    ASSERT_TRUE(clients.back()->connected());
  }
  for (int round = 0; round < 2; ++round) {
    for (auto& c : clients) {
      EXPECT_EQ(c->Call(Check("many")).grpc_status(), 0);
    }
  }
}

TEST_F(NativeGrpcServerTest, ConnectionsAboveThePerClientCapAreClosed) {
  GrpcServerOptions options = Options();
  options.max_connections_per_client = 2;
  StartServer(options);
  H2Client first(port_);
  H2Client second(port_);
  ASSERT_TRUE(first.Call(Check("cap1")).done);
  ASSERT_TRUE(second.Call(Check("cap2")).done);
  H2Client third(port_);
  H2Response refused = third.Call(Check("cap3"));
  EXPECT_FALSE(refused.done);  // closed at once, unanswered
  EXPECT_TRUE(third.connection_closed());
  EXPECT_GE(metrics_.grpc.shed.load(), 1u);
  // The first two keep being served.
  EXPECT_TRUE(second.Call(Check("cap2")).done);
  EXPECT_TRUE(first.Call(Check("cap1")).done);
}

TEST_F(NativeGrpcServerTest, GarbageAndHttp1CloseOnlyTheirConnection) {
  StartServer(Options());
  H2Client good(port_);
  for (const std::string bytes :
       {std::string("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), std::string(200, '\xff'),
        std::string("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\xff\xff\xff garbage", 37)}) {
    const int fd = floodgate::testing::ConnectLoopback(port_);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
    EXPECT_TRUE(ClosedByPeer(fd, 5000));
    close(fd);
  }
  EXPECT_EQ(good.Call(Check("b")).grpc_status(), 0);
}

TEST_F(NativeGrpcServerTest, SlowRequestIsResetAndOthersAreServed) {
  GrpcServerOptions options = Options();
  options.request_timeout = absl::Milliseconds(300);
  StartServer(options);
  H2Client client(port_);
  H2Request slow = Check("slow");
  const std::string rest = slow.body.substr(10);
  slow.body.resize(10);
  slow.end_stream = false;
  const int32_t slow_id = client.Start({slow})[0];
  // The same connection and another one keep working meanwhile.
  EXPECT_EQ(client.Call(Check("fast")).grpc_status(), 0);
  H2Client other(port_);
  EXPECT_EQ(other.Call(Check("fast")).grpc_status(), 0);
  ASSERT_TRUE(client.Wait({slow_id}, 5000));
  EXPECT_EQ(client.response(slow_id).reset_code, static_cast<uint32_t>(NGHTTP2_CANCEL));
  EXPECT_EQ(client.Call(Check("after")).grpc_status(), 0);
}

TEST_F(NativeGrpcServerTest, IdleConnectionsGetGoawayAndClose) {
  GrpcServerOptions options = Options();
  options.idle_timeout = absl::Milliseconds(200);
  StartServer(options);
  H2Client client(port_);
  EXPECT_EQ(client.Call(Check("x")).grpc_status(), 0);
  // A connection that never even sends the preface closes too.
  const int silent = floodgate::testing::ConnectLoopback(port_);
  for (int i = 0; i < 250 && !client.connection_closed(); ++i) {
    client.Pump(20);
  }
  EXPECT_TRUE(client.goaway_received());
  EXPECT_TRUE(client.connection_closed());
  EXPECT_TRUE(ClosedByPeer(silent, 5000));
  close(silent);
}

// The timeout tests below run the server on a fake clock (GrpcServerOptions::clock) that moves
// only when the test says so; the listener's sweeper still runs in real time (every 10 ms at
// these timeouts), so a test moves the clock, then waits, bounded, for what the sweep does.
class FakeTime {
 public:
  std::function<int64_t()> Clock() {
    return [this] { return now_ns_.load(std::memory_order_relaxed); };
  }
  void Advance(absl::Duration d) { now_ns_.fetch_add(absl::ToInt64Nanoseconds(d)); }

 private:
  std::atomic<int64_t> now_ns_{1'000'000'000'000};
};

GrpcServerOptions FakeTimeOptions(GrpcServerOptions options, FakeTime& time) {
  options.io_threads = 1;  // one sweeper sweeps every connection at one time
  options.idle_timeout = absl::Hours(1);
  options.request_timeout = absl::Milliseconds(40);  // sweeps every 10 ms (real time)
  options.clock = time.Clock();
  return options;
}

// Moves the clock on by `step` at a time until `fd` is closed by the server; false when that
// takes longer than 5 s of real time (the fake clock then stands at least 500 steps on).
bool ClosedWhileTimePasses(int fd, FakeTime& time, absl::Duration step) {
  for (int i = 0; i < 500; ++i) {
    time.Advance(step);
    if (ClosedByPeer(fd, 10)) {
      return true;
    }
  }
  return false;
}

void SendByte(int fd, char byte) { send(fd, &byte, 1, MSG_NOSIGNAL); }

constexpr char kPreface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
// An empty SETTINGS frame, and a PING (9-byte frame header, 8 bytes of payload).
const std::string kEmptySettings("\x00\x00\x00\x04\x00\x00\x00\x00\x00", 9);
const std::string kPing("\x00\x00\x08\x06\x00\x00\x00\x00\x00pingpong", 17);

TEST_F(NativeGrpcServerTest, ConnectionPrefaceMustArriveWithinTheRequestTimeout) {
  FakeTime time;
  StartServer(FakeTimeOptions(Options(), time));
  // Half a preface, then a byte at a time, each well within the timeout.
  const int dribbling = floodgate::testing::ConnectLoopback(port_);
  ASSERT_EQ(send(dribbling, kPreface, 10, MSG_NOSIGNAL), 10);
  const int silent = floodgate::testing::ConnectLoopback(port_);
  for (int i = 10; i < 24; ++i) {
    SendByte(dribbling, kPreface[i]);
    time.Advance(absl::Milliseconds(20));
  }
  // The preface is whole by now, but the client's SETTINGS never come.
  EXPECT_TRUE(ClosedWhileTimePasses(dribbling, time, absl::Milliseconds(20)));
  EXPECT_TRUE(ClosedWhileTimePasses(silent, time, absl::Milliseconds(20)));
  close(dribbling);
  close(silent);
  EXPECT_EQ(H2Client(port_).Call(Check("after")).grpc_status(), 0);
}

TEST_F(NativeGrpcServerTest, FrameDribbledAByteAtATimeClosesTheConnection) {
  FakeTime time;
  StartServer(FakeTimeOptions(Options(), time));
  const int fd = floodgate::testing::ConnectLoopback(port_);
  const std::string handshake = std::string(kPreface) + kEmptySettings + kPing;
  ASSERT_EQ(send(fd, handshake.data(), handshake.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(handshake.size()));
  // Whole frames, however slow, start no deadline.
  for (int i = 0; i < 3; ++i) {
    time.Advance(absl::Milliseconds(30));
    ASSERT_EQ(send(fd, kPing.data(), kPing.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(kPing.size()));
  }
  // A frame header trickling in a byte every half timeout: every read comes well within the
  // timeout, but the frame has not come whole within it.
  bool closed = false;
  for (int i = 0; i < 8 && !closed; ++i) {
    SendByte(fd, kPing[i]);
    time.Advance(absl::Milliseconds(20));
    closed = ClosedByPeer(fd, 10);
  }
  EXPECT_TRUE(closed || ClosedWhileTimePasses(fd, time, absl::Milliseconds(20)));
  close(fd);
  EXPECT_EQ(H2Client(port_).Call(Check("after")).grpc_status(), 0);
}

TEST_F(NativeGrpcServerTest, ResponseTheClientDoesNotTakeIsReset) {
  FakeTime time;
  StartServer(FakeTimeOptions(Options(), time));
  H2Client stalled(port_, /*stream_window=*/0);  // no room for the response's DATA
  const int32_t id = stalled.Start({Check("stalled")})[0];
  for (int i = 0; i < 500 && !stalled.response(id).done; ++i) {
    time.Advance(absl::Milliseconds(20));
    stalled.Pump(10);
  }
  ASSERT_TRUE(stalled.response(id).done);
  EXPECT_EQ(stalled.response(id).reset_code, static_cast<uint32_t>(NGHTTP2_CANCEL));
}

// A connection whose calls keep it busy lives on, however long, while connections without
// calls get GOAWAY (here after 100 ms). Each round moves the clock past the idle timeout in one
// step and waits for a fresh idle connection's GOAWAY: the sweep that sent it saw the busy
// connection at the same time.
TEST_F(NativeGrpcServerTest, ConnectionWithCallsOpenOutlivesTheIdleTimeout) {
  FakeTime time;
  GrpcServerOptions options = FakeTimeOptions(Options(), time);
  options.idle_timeout = absl::Milliseconds(100);
  options.request_timeout = absl::Milliseconds(500);
  StartServer(options);
  H2Client busy(port_);
  ASSERT_EQ(busy.Call(Check("first")).grpc_status(), 0);
  for (int round = 0; round < 4; ++round) {  // 1.2 s in all: past both timeouts
    H2Request slow = Check("slow");
    const std::string rest = slow.body.substr(10);
    slow.body.resize(10);
    slow.end_stream = false;
    const int32_t id = busy.Start({slow})[0];
    busy.Pump(10);
    H2Client idle(port_);
    ASSERT_EQ(idle.Call(Check("idle")).grpc_status(), 0);
    time.Advance(absl::Milliseconds(300));
    for (int i = 0; i < 250 && !idle.goaway_received(); ++i) {
      idle.Pump(20);
    }
    ASSERT_TRUE(idle.goaway_received()) << round;
    busy.Pump(0);
    EXPECT_FALSE(busy.goaway_received()) << round;
    busy.Finish(id, rest);
    ASSERT_TRUE(busy.Wait({id}, 5000)) << round;
    EXPECT_EQ(busy.response(id).grpc_status(), 0) << round;
  }
  EXPECT_FALSE(busy.goaway_received());
  EXPECT_FALSE(busy.connection_closed());
}

// Only calls count as activity: PINGs (keepalives) alone do not hold an idle connection.
TEST_F(NativeGrpcServerTest, PingsAloneDoNotKeepAConnectionOpen) {
  FakeTime time;
  GrpcServerOptions options = FakeTimeOptions(Options(), time);
  options.idle_timeout = absl::Milliseconds(100);
  StartServer(options);
  const int fd = floodgate::testing::ConnectLoopback(port_);
  const std::string handshake = std::string(kPreface) + kEmptySettings;
  ASSERT_EQ(send(fd, handshake.data(), handshake.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(handshake.size()));
  bool closed = false;
  for (int i = 0; i < 500 && !closed; ++i) {
    send(fd, kPing.data(), kPing.size(), MSG_NOSIGNAL);  // one every 20 ms of the clock
    time.Advance(absl::Milliseconds(20));
    closed = ClosedByPeer(fd, 10);
  }
  EXPECT_TRUE(closed);  // GOAWAY after 100 ms, closed 2 s later
  close(fd);
}

// protobuf logs every request with invalid UTF-8 in a string field as it refuses it: routed
// through a RateLimitedLog (as main does), a flood of them writes at most the burst.
TEST_F(NativeGrpcServerTest, InvalidUtf8IsRefusedAndItsLogLinesAreRateLimited) {
  H2Request bad;
  bad.body = CheckBody("\xff\xfe not UTF-8");  // (protobuf logs this serialization too)
  std::vector<std::string> lines;
  absl::Mutex mu;
  common::RateLimitedLog log(/*burst=*/5, /*interval_ns=*/int64_t{3600} * 1'000'000'000, nullptr,
                             [&](std::string_view line) {
                               absl::MutexLock lock(&mu);
                               lines.emplace_back(line);
                             });
  common::RouteProtobufLog(&log);
  StartServer(Options());
  H2Client client(port_);
  for (int i = 0; i < 100; ++i) {
    const H2Response r = client.Call(bad);
    ASSERT_EQ(r.grpc_status(), 3) << i;
    EXPECT_NE(r.grpc_message().find("not valid UTF-8"), std::string::npos) << r.grpc_message();
  }
  common::RouteProtobufLog(nullptr);
  absl::MutexLock lock(&mu);
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_NE(lines[0].find("ERROR protobuf msg="), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find("invalid UTF-8 data when parsing"), std::string::npos) << lines[0];
  EXPECT_EQ(log.suppressed_total(), 95u);
}

TEST_F(NativeGrpcServerTest, ShutdownFinishesCallsInFlightWithGoawayAndNotServing) {
  StartServer(Options());
  H2Client client(port_);
  EXPECT_EQ(client.Call(Check("warm")).grpc_status(), 0);
  H2Request check = Check("in-flight");
  const std::string check_rest = check.body.substr(8);
  check.body.resize(8);
  check.end_stream = false;
  H2Request health;
  health.path = kHealthPath;
  health.end_stream = false;
  std::vector<int32_t> ids = client.Start({check, health});
  client.Pump(50);
  std::thread stopper([&] { server_->Shutdown(absl::Seconds(5)); });
  for (int i = 0; i < 100 && !client.goaway_received(); ++i) {
    client.Pump(20);
  }
  EXPECT_TRUE(client.goaway_received());
  client.Finish(ids[0], check_rest);
  client.Finish(ids[1], GrpcFrame(""));
  ASSERT_TRUE(client.Wait(ids, 5000));
  EXPECT_EQ(Decode(client.response(ids[0])).overall_code(), rls::RateLimitResponse::OK);
  EXPECT_EQ(client.response(ids[1]).body, GrpcFrame(std::string("\x08\x02", 2)));  // NOT_SERVING
  stopper.join();
  server_.reset();
  EXPECT_TRUE(ClosedByPeer(client.fd(), 2000) || client.connection_closed());
}

// ---------------------------------------------------------------------------------------------
// Cluster mode without workers: a check that waits for its key's owner is suspended on its
// connection's io thread (Session::Decide). HeldStore stands in for the cluster: it holds the
// transactions of the hourly "slow" limit (a key another node owns) until the test releases
// them, and answers the others at once.

constexpr char kSuspendYaml[] = R"(domain: rl
descriptors:
  - key: user
    rate_limit: {unit: day, requests_per_unit: 2}
  - key: slow
    rate_limit: {unit: hour, requests_per_unit: 5}
)";

H2Request SlowCheck(const std::string& value) {
  rls::RateLimitRequest request;
  request.set_domain("rl");
  auto* e = request.add_descriptors()->add_entries();
  e->set_key("slow");
  e->set_value(value);
  H2Request r;
  r.body = GrpcFrame(request.SerializeAsString());
  return r;
}

// Writes an RST_STREAM(CANCEL) frame for `id` on the client's socket, between the frames its
// session sends (each Pump writes whole frames): the client's own session does not know.
void SendResetStream(H2Client& client, int32_t id) {
  // The frame header (payload length 4, type RST_STREAM, no flags, the stream), then the code.
  std::string frame("\x00\x00\x04\x03\x00", 5);
  for (const uint32_t word : {static_cast<uint32_t>(id), uint32_t{NGHTTP2_CANCEL}}) {
    for (int shift = 24; shift >= 0; shift -= 8) {
      frame.push_back(static_cast<char>(word >> shift));
    }
  }
  ASSERT_EQ(send(client.fd(), frame.data(), frame.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(frame.size()));
}

class NativeGrpcSuspendTest : public ::testing::Test {
 protected:
  void Start(GrpcServerOptions options) {
    auto domain = core::ParseDomainConfig(kSuspendYaml, "rl.yaml");
    ASSERT_TRUE(domain.ok()) << domain.status();
    limiter_ = std::make_unique<limiter::Limiter>(&store_, KeyHasher(1, 2),
                                                  *core::BuildConfig({*domain}, 1));
    store_.HoldIf([](absl::Span<const StoreOp> ops) {
      for (const StoreOp& op : ops) {
        if (op.spec.period_ns == int64_t{3600} * 1'000'000'000) {
          return true;
        }
      }
      return false;
    });
    service_ = service::NewRateLimitService(limiter_.get(), service::RequestLimits(), &metrics_);
    ASSERT_TRUE(service_->may_suspend());
    options.address = "127.0.0.1:0";
    options.max_receive_bytes = 64 * 1024;
    server_ = NewNativeGrpcServer(options, service_.get(), &metrics_);
    ASSERT_TRUE(server_->Start().ok());
    port_ = server_->port();
  }
  GrpcServerOptions OneThread() {
    GrpcServerOptions options;
    options.io_threads = 1;  // a blocked io thread would stop every connection
    return options;
  }
  void TearDown() override {
    store_.ReleaseAll();  // held calls are answered while the server still runs
    if (server_ != nullptr) {
      server_->Shutdown(absl::Seconds(2));
    }
  }
  static bool WaitFor(const std::function<bool()>& done) {
    return floodgate::testing::HeldStore::WaitFor(done);
  }

  floodgate::testing::HeldStore store_;  // outlives the server, whose calls it holds
  std::unique_ptr<limiter::Limiter> limiter_;
  service::ServerMetrics metrics_;
  std::unique_ptr<service::RateLimitService> service_;
  std::unique_ptr<net::Server> server_;
  int port_ = 0;
};

// A suspended call on one stream does not hold up the others: a later stream on the same
// connection, and another connection, are answered first; the suspended one is answered when
// its owner answers.
TEST_F(NativeGrpcSuspendTest, OtherStreamsAreAnsweredWhileOneIsSuspended) {
  Start(OneThread());
  H2Client client(port_);
  const int32_t slow = client.Start({SlowCheck("a")})[0];
  ASSERT_GT(slow, 0);
  ASSERT_TRUE(WaitFor([&] { return store_.held() == 1; }));
  H2Response fast = client.Call(Check("fast"));
  EXPECT_EQ(fast.grpc_status(), 0);
  EXPECT_EQ(Decode(fast).statuses(0).limit_remaining(), 1u);
  H2Client other(port_);
  EXPECT_EQ(other.Call(Check("other")).grpc_status(), 0);
  client.Pump(10);
  EXPECT_FALSE(client.response(slow).done) << "answered before its owner did";

  // A second suspended stream, answered before the first: each stream gets its own answer.
  const int32_t slow_b = client.Start({SlowCheck("b")})[0];
  ASSERT_TRUE(WaitFor([&] { return store_.held() == 2; }));
  ASSERT_TRUE(store_.Release(1));
  ASSERT_TRUE(client.Wait({slow_b}, 5000));
  EXPECT_FALSE(client.response(slow).done);
  ASSERT_TRUE(store_.Release(0));
  ASSERT_TRUE(client.Wait({slow}, 5000));
  for (int32_t id : {slow, slow_b}) {
    const H2Response& r = client.response(id);
    EXPECT_EQ(r.grpc_status(), 0) << id;
    const rls::RateLimitResponse decoded = Decode(r);
    EXPECT_EQ(decoded.overall_code(), rls::RateLimitResponse::OK) << id;
    EXPECT_EQ(decoded.statuses(0).limit_remaining(), 4u) << id;  // a and b: one hit each
  }
  EXPECT_EQ(metrics_.grpc.requests.load(), 4u);
  EXPECT_EQ(metrics_.grpc.errors.load(), 0u);
  EXPECT_FALSE(client.connection_closed());
}

// Many streams on one connection, every other one held and released from another thread as
// soon as it is seen: each stream gets its own answer, and every answer arrives.
TEST_F(NativeGrpcSuspendTest, ManyStreamsHalfSuspendedAllGetTheirOwnAnswer) {
  GrpcServerOptions options;
  options.io_threads = 2;
  Start(options);
  constexpr int kStreams = 200;
  std::vector<H2Request> requests;
  for (int i = 0; i < kStreams; ++i) {
    requests.push_back(i % 2 == 0 ? SlowCheck("s" + std::to_string(i))
                                  : Check("u" + std::to_string(i)));
  }
  std::atomic<bool> stop{false};
  std::thread releaser([&] {
    while (!stop.load()) {
      if (!store_.Release(0)) {
        std::this_thread::yield();
      }
    }
  });
  H2Client client(port_);
  const std::vector<int32_t> ids = client.Start(requests);
  const bool all = client.Wait(ids, 20000);
  stop.store(true);
  releaser.join();
  ASSERT_TRUE(all);
  for (int i = 0; i < kStreams; ++i) {
    const H2Response& r = client.response(ids[i]);
    ASSERT_EQ(r.grpc_status(), 0) << i;
    const rls::RateLimitResponse decoded = Decode(r);
    ASSERT_EQ(decoded.statuses_size(), 1) << i;
    EXPECT_EQ(decoded.statuses(0).current_limit().requests_per_unit(), i % 2 == 0 ? 5u : 2u) << i;
    EXPECT_EQ(decoded.statuses(0).limit_remaining(), i % 2 == 0 ? 4u : 1u) << i;
  }
  EXPECT_EQ(store_.suspended(), kStreams / 2);
}

// The client resets a stream whose call is suspended: its answer, when it comes, is dropped;
// the connection and its other streams are unaffected.
TEST_F(NativeGrpcSuspendTest, StreamResetWhileSuspendedDropsTheAnswerOnly) {
  Start(OneThread());
  H2Client client(port_);
  const int32_t slow = client.Start({SlowCheck("reset")})[0];
  ASSERT_TRUE(WaitFor([&] { return store_.held() == 1; }));
  SendResetStream(client, slow);
  // Frames are read in order: once this call is answered, the reset has been read.
  EXPECT_EQ(client.Call(Check("during")).grpc_status(), 0);
  const int answered = store_.answered();
  ASSERT_TRUE(store_.Release(0));
  ASSERT_TRUE(WaitFor([&] { return store_.answered() > answered; }));
  H2Response after = client.Call(Check("after"));
  EXPECT_EQ(after.grpc_status(), 0);
  client.Pump(10);
  EXPECT_FALSE(client.response(slow).done) << "the reset stream was answered";
  EXPECT_FALSE(client.connection_closed());
  EXPECT_FALSE(client.goaway_received());
  // The check itself was decided (the owner counted it).
  const int32_t again = client.Start({SlowCheck("reset")})[0];
  ASSERT_TRUE(WaitFor([&] { return store_.held() == 1; }));
  ASSERT_TRUE(store_.Release(0));
  ASSERT_TRUE(client.Wait({again}, 5000));
  EXPECT_EQ(Decode(client.response(again)).statuses(0).limit_remaining(), 3u);
}

// The connection closes while calls on it are suspended: their answers are dropped when they
// come, and other connections are served throughout.
TEST_F(NativeGrpcSuspendTest, ConnectionClosedWhileSuspended) {
  Start(OneThread());
  H2Client other(port_);
  for (const bool reset : {false, true}) {
    auto client = std::make_unique<H2Client>(port_);
    client->Start({SlowCheck("gone"), SlowCheck("gone2")});
    ASSERT_TRUE(WaitFor([&] { return store_.held() == 2; })) << reset;
    if (reset) {
      const linger abort{.l_onoff = 1, .l_linger = 0};
      ASSERT_EQ(setsockopt(client->fd(), SOL_SOCKET, SO_LINGER, &abort, sizeof(abort)), 0);
    }
    client.reset();  // closes the socket
    EXPECT_EQ(other.Call(Check("meanwhile")).grpc_status(), 0) << reset;
    const int answered = store_.answered();
    EXPECT_EQ(store_.ReleaseAll(), 2u);
    ASSERT_TRUE(WaitFor([&] { return store_.answered() == answered + 2; })) << reset;
    EXPECT_EQ(other.Call(Check("after")).grpc_status(), 0) << reset;
    EXPECT_FALSE(other.connection_closed());
  }
}

// A suspended call is bounded by the store (in a cluster, the forward timeout), not by the
// request timeout: the sweeper does not reset a stream whose request is in and being decided.
TEST_F(NativeGrpcSuspendTest, SuspendedCallOutlivesTheRequestTimeout) {
  FakeTime time;
  Start(FakeTimeOptions(OneThread(), time));  // request timeout 40 ms, swept every 10 ms
  H2Client client(port_);
  const int32_t id = client.Start({SlowCheck("long")})[0];
  ASSERT_TRUE(WaitFor([&] { return store_.held() == 1; }));
  // A stream whose request never ends, opened at the same time, is reset meanwhile.
  H2Request unfinished = Check("unfinished");
  unfinished.body.resize(8);
  unfinished.end_stream = false;
  const int32_t slow = client.Start({unfinished})[0];
  for (int i = 0; i < 500 && !client.response(slow).done; ++i) {
    time.Advance(absl::Milliseconds(20));
    client.Pump(10);
  }
  ASSERT_TRUE(client.response(slow).done);
  EXPECT_EQ(client.response(slow).reset_code, static_cast<uint32_t>(NGHTTP2_CANCEL));
  EXPECT_FALSE(client.response(id).done) << "the suspended call was reset";
  ASSERT_TRUE(store_.Release(0));
  ASSERT_TRUE(client.Wait({id}, 5000));
  EXPECT_EQ(client.response(id).grpc_status(), 0);
  EXPECT_EQ(Decode(client.response(id)).statuses(0).limit_remaining(), 4u);
}

// A drain waits for a suspended call: the client gets GOAWAY, then the call's answer.
TEST_F(NativeGrpcSuspendTest, ShutdownWaitsForASuspendedCall) {
  Start(OneThread());
  H2Client client(port_);
  const int32_t id = client.Start({SlowCheck("drain")})[0];
  ASSERT_TRUE(WaitFor([&] { return store_.held() == 1; }));
  std::thread stopper([&] { server_->Shutdown(absl::Seconds(10)); });
  for (int i = 0; i < 250 && !client.goaway_received(); ++i) {
    client.Pump(20);
  }
  EXPECT_TRUE(client.goaway_received());
  ASSERT_TRUE(store_.Release(0));
  ASSERT_TRUE(client.Wait({id}, 5000));
  EXPECT_EQ(client.response(id).grpc_status(), 0);
  EXPECT_EQ(Decode(client.response(id)).statuses(0).limit_remaining(), 4u);
  stopper.join();
  server_.reset();
}

// Past max_checks_in_flight calls at once the server sheds: while one call is suspended, the
// next is decided at once without waiting for the owner; once the first is answered the bound
// is free again.
TEST_F(NativeGrpcSuspendTest, CallsPastTheInFlightBoundAreShed) {
  GrpcServerOptions options = OneThread();
  options.max_checks_in_flight = 1;
  Start(options);
  H2Client client(port_);
  const int32_t first = client.Start({SlowCheck("s")})[0];
  ASSERT_TRUE(WaitFor([&] { return store_.held() == 1; }));
  EXPECT_EQ(client.Call(SlowCheck("s")).grpc_status(), 0);
  EXPECT_EQ(metrics_.grpc.shed.load(), 1u);
  EXPECT_EQ(store_.held(), 1u) << "the shed call waited for the owner";
  ASSERT_TRUE(store_.Release(0));
  ASSERT_TRUE(client.Wait({first}, 5000));
  EXPECT_EQ(client.response(first).grpc_status(), 0);
  const int32_t next = client.Start({SlowCheck("s")})[0];
  ASSERT_TRUE(WaitFor([&] { return store_.held() == 1; })) << "shed, not suspended";
  ASSERT_TRUE(store_.Release(0));
  ASSERT_TRUE(client.Wait({next}, 5000));
  EXPECT_EQ(metrics_.grpc.shed.load(), 1u);
}

}  // namespace
}  // namespace floodgate::frontends
