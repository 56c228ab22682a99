#include "src/net/listener.h"

#include <sys/socket.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace floodgate::net {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

constexpr int64_t kIdleNs = 1'000'000'000;

// A toy protocol: 's' starts a "call" (answered 'k'), 'f' finishes it (answered 'd'). A
// connection between calls is idle. Its deadline is kIdleNs after its last byte, on the test's
// fake clock.
class TestConnection : public Connection, public std::enable_shared_from_this<TestConnection> {
 public:
  TestConnection(Accepted accepted, std::atomic<int64_t>* clock, absl::Notification* drained)
      : socket_(std::move(accepted.socket)),
        fd_(socket_.native_handle()),
        slot_(std::move(accepted.slot)),
        clock_(clock),
        drained_(drained) {
    deadline_ns_.store(clock_->load() + kIdleNs);
  }
  ~TestConnection() override { slot_.Release(); }

  void Start() {
    slot_.Register(this);
    Read();
  }

  void Drain() override {
    absl::MutexLock lock(&mu_);
    draining_ = true;
    if (!busy_) {
      ::shutdown(fd_, SHUT_RDWR);
    }
    if (busy_ && !drained_->HasBeenNotified()) {
      drained_->Notify();
    }
  }
  void ShutdownSocket() override {
    absl::MutexLock lock(&mu_);
    ::shutdown(fd_, SHUT_RDWR);
  }
  int64_t deadline_ns() const override { return deadline_ns_.load(); }

 private:
  void Read() {
    socket_.async_read_some(asio::buffer(in_),
                            [self = shared_from_this()](error_code ec, size_t n) {
                              if (ec) {
                                self->Close();
                                return;
                              }
                              self->deadline_ns_.store(self->clock_->load() + kIdleNs);
                              std::string out;
                              bool close = false;
                              {
                                absl::MutexLock lock(&self->mu_);
                                for (size_t i = 0; i < n; ++i) {
                                  if (self->in_[i] == 's') {
                                    self->busy_ = true;
                                    out += 'k';
                                  } else if (self->in_[i] == 'f') {
                                    self->busy_ = false;
                                    out += 'd';
                                    close = self->draining_;
                                  }
                                }
                              }
                              error_code write_ec;
                              asio::write(self->socket_, asio::buffer(out), write_ec);
                              if (close || write_ec) {
                                self->Close();
                                return;
                              }
                              self->Read();
                            });
  }

  void Close() {
    absl::MutexLock lock(&mu_);
    error_code ignored;
    socket_.close(ignored);
  }

  Socket socket_;
  const int fd_;
  ConnectionSlot slot_;
  std::atomic<int64_t>* const clock_;
  absl::Notification* const drained_;
  std::atomic<int64_t> deadline_ns_{kNoDeadline};
  std::array<char, 64> in_{};
  absl::Mutex mu_;
  bool busy_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
};

class ListenerTest : public ::testing::Test {
 protected:
  ~ListenerTest() override {
    if (listener_ != nullptr) {
      listener_->Shutdown(absl::Seconds(1));
    }
  }

  ListenerOptions Options() {
    ListenerOptions options;
    options.address = "127.0.0.1:0";
    options.name = "test server";
    options.protocol = "TEST";
    options.io_threads = 2;
    options.sweep_interval = absl::Milliseconds(10);
    options.refused = &refused_;
    options.clock = [this] { return clock_.load(); };
    return options;
  }

  void StartListener(ListenerOptions options) {
    drained_ = std::make_unique<absl::Notification>();
    listener_ = std::make_unique<Listener>(std::move(options), [this](Accepted accepted) {
      {
        absl::MutexLock lock(&mu_);
        io_threads_.push_back(accepted.slot.io_thread());
      }
      std::make_shared<TestConnection>(std::move(accepted), &clock_, drained_.get())->Start();
      absl::MutexLock lock(&mu_);
      ++accepted_;
    });
    ASSERT_TRUE(listener_->Start().ok());
    ASSERT_GT(listener_->port(), 0);
  }

  // Connects a client and waits until the listener handed its connection over.
  std::unique_ptr<tcp::socket> ConnectAdmitted() {
    int before;
    {
      absl::MutexLock lock(&mu_);
      before = accepted_;
    }
    auto socket = Connect();
    struct Admitted {
      const int* accepted;
      int before;
      bool Done() const { return *accepted > before; }
    };
    const Admitted admitted{&accepted_, before};
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&admitted, &Admitted::Done));
    return socket;
  }

  std::unique_ptr<tcp::socket> Connect() {
    auto socket = std::make_unique<tcp::socket>(client_ioc_);
    error_code ec;
    socket->connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"),
                                  static_cast<uint16_t>(listener_->port())),
                    ec);
    EXPECT_FALSE(ec) << ec.message();
    return socket;
  }

  // Blocks until the server closes the connection; returns whatever it sent first.
  static std::string ReadUntilClosed(tcp::socket& socket) {
    std::string got;
    std::array<char, 64> buffer;
    for (;;) {
      error_code ec;
      const size_t n = socket.read_some(asio::buffer(buffer), ec);
      got.append(buffer.data(), n);
      if (ec) {
        return got;
      }
    }
  }

  static std::string Exchange(tcp::socket& socket, char c) {
    error_code ec;
    asio::write(socket, asio::buffer(&c, 1), ec);
    EXPECT_FALSE(ec) << ec.message();
    char reply = 0;
    socket.read_some(asio::buffer(&reply, 1), ec);
    return ec ? "" : std::string(1, reply);
  }

  asio::io_context client_ioc_;
  std::atomic<int64_t> clock_{1'000'000'000'000};
  std::atomic<uint64_t> refused_{0};
  // Notified when a busy connection is asked to drain.
  std::unique_ptr<absl::Notification> drained_;
  absl::Mutex mu_;
  int accepted_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<int> io_threads_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<Listener> listener_;
};

TEST_F(ListenerTest, PortZeroPicksAFreePortAndServes) {
  StartListener(Options());
  auto client = ConnectAdmitted();
  EXPECT_EQ(Exchange(*client, 's'), "k");
  EXPECT_EQ(Exchange(*client, 'f'), "d");
  EXPECT_EQ(listener_->open_connections(), 1u);
}

TEST_F(ListenerTest, PerThreadModelSpreadsConnectionsRoundRobin) {
  ListenerOptions options = Options();
  options.io_model = IoModel::kPerThread;
  StartListener(std::move(options));
  auto a = ConnectAdmitted();
  auto b = ConnectAdmitted();
  auto c = ConnectAdmitted();
  EXPECT_EQ(Exchange(*c, 's'), "k");
  absl::MutexLock lock(&mu_);
  EXPECT_EQ(io_threads_, (std::vector<int>{0, 1, 0}));
}

TEST_F(ListenerTest, TotalCapClosesExtraConnectionsAtOnce) {
  ListenerOptions options = Options();
  options.max_connections = 2;
  StartListener(std::move(options));
  auto a = ConnectAdmitted();
  auto b = ConnectAdmitted();
  auto extra = Connect();
  EXPECT_EQ(ReadUntilClosed(*extra), "");
  EXPECT_EQ(refused_.load(), 1u);
  EXPECT_EQ(Exchange(*a, 's'), "k");
  // A place freed is taken again (once the server has seen the client go: spin, not sleep).
  a->close();
  while (listener_->open_connections() > 1) {
    std::this_thread::yield();
  }
  auto c = ConnectAdmitted();
  EXPECT_EQ(Exchange(*c, 's'), "k");
}

TEST_F(ListenerTest, PerClientCapClosesExtraConnectionsAtOnce) {
  ListenerOptions options = Options();
  options.io_model = IoModel::kPerThread;
  options.max_connections_per_client = 1;
  StartListener(std::move(options));
  auto a = ConnectAdmitted();
  auto extra = Connect();
  EXPECT_EQ(ReadUntilClosed(*extra), "");
  EXPECT_EQ(refused_.load(), 1u);
  EXPECT_EQ(Exchange(*a, 's'), "k");
}

TEST_F(ListenerTest, SweepClosesASilentConnectionOnceItsDeadlinePasses) {
  StartListener(Options());
  auto quiet = ConnectAdmitted();
  EXPECT_EQ(Exchange(*quiet, 's'), "k");
  clock_.fetch_add(2 * kIdleNs);
  EXPECT_EQ(ReadUntilClosed(*quiet), "");
}

TEST_F(ListenerTest, ShutdownClosesIdleConnectionsAndLetsABusyOneFinish) {
  for (IoModel model : {IoModel::kShared, IoModel::kPerThread}) {
    ListenerOptions options = Options();
    options.io_model = model;
    StartListener(std::move(options));
    auto idle = ConnectAdmitted();
    auto busy = ConnectAdmitted();
    EXPECT_EQ(Exchange(*busy, 's'), "k");
    std::thread stopper([this] { listener_->Shutdown(absl::Seconds(30)); });
    drained_->WaitForNotification();
    EXPECT_EQ(ReadUntilClosed(*idle), "");
    EXPECT_EQ(Exchange(*busy, 'f'), "d");   // the call in flight finishes...
    EXPECT_EQ(ReadUntilClosed(*busy), "");  // ...then its connection closes
    stopper.join();
    EXPECT_TRUE(listener_->draining());
    EXPECT_EQ(listener_->open_connections(), 0u);
    // A drained listener accepts nothing more.
    auto late = std::make_unique<tcp::socket>(client_ioc_);
    error_code ec;
    late->connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"),
                                static_cast<uint16_t>(listener_->port())),
                  ec);
    EXPECT_TRUE(ec);
    listener_.reset();
  }
}

TEST_F(ListenerTest, ShutdownClosesWhatIsStillBusyAfterTheGrace) {
  StartListener(Options());
  auto busy = ConnectAdmitted();
  EXPECT_EQ(Exchange(*busy, 's'), "k");
  listener_->Shutdown(absl::ZeroDuration());
  EXPECT_EQ(ReadUntilClosed(*busy), "");
  EXPECT_EQ(listener_->open_connections(), 0u);
}

TEST(ListenerErrorsTest, BadAddressesAreInvalidArguments) {
  for (const char* address : {"no-port", "127.0.0.1:99999", "[::1:80", "no-such-host.invalid:80"}) {
    ListenerOptions options;
    options.address = address;
    options.protocol = "TEST";
    Listener listener(options, [](Accepted) {});
    const absl::Status status = listener.Start();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << address << ": " << status;
  }
}

TEST(ListenerErrorsTest, ABoundPortIsUnavailableAndTheErrorNamesTheServer) {
  ListenerOptions options;
  options.name = "test server";
  Listener first(options, [](Accepted) {});
  ASSERT_TRUE(first.Start().ok());
  options.address = "127.0.0.1:" + std::to_string(first.port());
  Listener second(options, [](Accepted) {});
  const absl::Status status = second.Start();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(status.message().rfind("test server cannot bind 127.0.0.1:", 0), 0u) << status;
  EXPECT_EQ(first.Start().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace floodgate::net
