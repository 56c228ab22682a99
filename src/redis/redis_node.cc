#include "src/redis/redis_node.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <deque>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "src/net/tls.h"
#include "src/redis/redis_client_internal.h"
#include "src/redis/resp.h"

namespace floodgate::redis {
namespace {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;
using boost::asio::ip::tcp;

constexpr std::string_view kAsking = "*1\r\n$6\r\nASKING\r\n";

// A command between Send and a connection.
struct Command {
  std::string encoded;
  Client::Callback callback;
  TimePoint deadline;
  bool asking = false;
  bool probe = false;  // the breaker's half-open probe
  absl::Status early;  // not OK: answered with this at once, nothing sent
};

// What the next reply on a connection is for, in order.
struct Expected {
  enum class Kind : uint8_t { kUser, kAsking, kHandshake };
  Client::Callback callback;  // kUser
  TimePoint deadline;
  Kind kind = Kind::kUser;
  bool probe = false;
  const char* what = "";  // kHandshake: "AUTH", "SELECT"
};

// One connection attempt's stream and buffers. The asynchronous operations hold it, so a closed
// attempt's operations complete (aborted) on memory that is still theirs.
struct Link {
  Link(net::Socket socket, net::TlsContext* tls) : stream(std::move(socket), tls) {}
  net::Stream stream;
  std::string writing;  // the bytes of the write in flight
  std::array<char, 16384> read_buffer;
};

enum BreakerState : int { kClosed = 0, kOpen = 1, kHalfOpen = 2 };

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

}  // namespace

absl::StatusOr<std::unique_ptr<net::TlsContext>> MakeRedisTlsContext(const ClientOptions& options) {
  if (options.tls_ca_file.empty()) {
    return absl::InvalidArgumentError(
        "rediss:// needs tls_ca (the CA file the Redis server's certificate must chain to)");
  }
  net::TlsCredentials credentials;
  if (!options.tls_cert_file.empty() || !options.tls_key_file.empty()) {
    net::TlsFlagNames names{"tls_cert", "tls_key", "tls_ca", ""};
    absl::StatusOr<net::TlsCredentials> loaded = net::LoadTlsCredentials(
        {options.tls_cert_file, options.tls_key_file, options.tls_ca_file, ""}, names);
    if (!loaded.ok()) {
      return loaded.status();
    }
    credentials = *std::move(loaded);
  } else {
    std::ifstream in(options.tls_ca_file, std::ios::binary);
    credentials.client_ca_pem.assign(std::istreambuf_iterator<char>(in),
                                     std::istreambuf_iterator<char>());
    if (!in.good() && !in.eof()) {
      credentials.client_ca_pem.clear();
    }
    if (credentials.client_ca_pem.find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("tls_ca ", options.tls_ca_file,
                                                     " is unreadable or holds no PEM certificate"));
    }
  }
  return net::TlsContext::NewClient(credentials, "redis");
}

class Node::State : public std::enable_shared_from_this<Node::State> {
 public:
  State(boost::asio::io_context& io, Endpoint endpoint, const ClientOptions& options)
      : io_(io),
        endpoint_(std::move(endpoint)),
        options_(options),
        name_(absl::StrCat(endpoint_.host, ":", endpoint_.port)),
        waiting_timer_(io),
        random_(std::random_device{}()) {
    if (options_.tls) {
      absl::StatusOr<std::unique_ptr<net::TlsContext>> tls = MakeRedisTlsContext(options_);
      if (tls.ok()) {
        tls_ = *std::move(tls);
      } else {
        config_error_ =
            absl::InvalidArgumentError(absl::StrCat("redis ", name_, ": ", tls.status().message()));
      }
    }
    const int connections = std::max(1, options_.connections_per_node);
    for (int i = 0; i < connections; ++i) {
      conns_.push_back(std::make_unique<Conn>(io_));
    }
  }

  void Start() {
    if (!config_error_.ok()) {
      return;
    }
    boost::asio::post(io_, [self = shared_from_this()] {
      for (auto& conn : self->conns_) {
        if (self->stopped_) {
          return;
        }
        self->Connect(*conn);
      }
    });
  }

  void Send(absl::Span<const std::string_view> args, Client::Callback callback, bool asking) {
    Command command;
    command.callback = std::move(callback);
    command.asking = asking;
    if (stop_requested_.load(std::memory_order_acquire)) {
      command.early = absl::CancelledError(absl::StrCat("redis ", name_, ": client stopped"));
    } else if (!config_error_.ok()) {
      command.early = config_error_;
    } else if (pending_.fetch_add(1, std::memory_order_relaxed) >=
               static_cast<uint64_t>(std::max(1, options_.max_pending_per_node))) {
      pending_.fetch_sub(1, std::memory_order_relaxed);
      command.early = absl::ResourceExhaustedError(
          absl::StrCat("redis ", name_, ": ", options_.max_pending_per_node,
                       " commands pending already (max_pending)"));
    } else if (!AdmitThroughBreaker(command.probe)) {
      pending_.fetch_sub(1, std::memory_order_relaxed);
      breaker_open_.fetch_add(1, std::memory_order_relaxed);
      command.early =
          absl::UnavailableError(absl::StrCat("redis ", name_, ": circuit breaker open after ",
                                              options_.breaker_failures, " failures in a row"));
    } else {
      AppendCommand(args, command.encoded);
    }
    bool post = false;
    {
      absl::MutexLock lock(&inbox_mu_);
      // Taken under the lock, so the inbox is in deadline order.
      command.deadline = Clock::now() + std::chrono::milliseconds(options_.timeout_ms);
      inbox_.push_back(std::move(command));
      post = !drain_posted_;
      drain_posted_ = true;
    }
    if (post) {
      boost::asio::post(io_, [self = shared_from_this()] { self->Drain(); });
    }
  }

  bool Healthy() const {
    return ready_.load(std::memory_order_relaxed) > 0 &&
           breaker_state_.load(std::memory_order_relaxed) == kClosed;
  }

  const Endpoint& endpoint() const { return endpoint_; }

  void AddStats(ClientStats& stats) const {
    stats.commands += commands_.load(std::memory_order_relaxed);
    stats.replies += replies_.load(std::memory_order_relaxed);
    stats.timeouts += timeouts_.load(std::memory_order_relaxed);
    stats.failures += failures_.load(std::memory_order_relaxed);
    stats.breaker_open += breaker_open_.load(std::memory_order_relaxed);
    stats.reconnects += reconnects_.load(std::memory_order_relaxed);
    stats.connected_nodes += ready_.load(std::memory_order_relaxed) > 0 ? 1 : 0;
    stats.pending += pending_.load(std::memory_order_relaxed);
  }

  void Stop() {
    const bool first = !stop_requested_.exchange(true, std::memory_order_acq_rel);
    if (io_.get_executor().running_in_this_thread()) {
      StopNow();
      return;
    }
    if (first) {
      boost::asio::post(io_, [self = shared_from_this()] { self->StopNow(); });
    }
    // Waits for the io thread; an io_context that no longer runs will not, so then no thread
    // touches the state and it is safe to finish here.
    while (!stop_done_.WaitForNotificationWithTimeout(absl::Milliseconds(100))) {
      if (io_.stopped()) {
        StopNow();
        return;
      }
    }
  }

 private:
  struct Conn {
    explicit Conn(boost::asio::io_context& io) : resolver(io), timer(io), connect_timer(io) {}
    enum class Phase : uint8_t { kIdle, kConnecting, kHandshaking, kReady };
    Phase phase = Phase::kIdle;
    uint64_t generation = 0;  // changes on every close and attempt: stale handlers do nothing
    std::shared_ptr<Link> link;
    ReplyParser parser;
    std::deque<Expected> expected;
    std::string out;  // queued while a write is in flight
    bool writing = false;
    tcp::resolver resolver;
    boost::asio::steady_timer timer;  // the earliest unanswered deadline, armed lazily
    bool timer_armed = false;
    TimePoint timer_at;
    boost::asio::steady_timer connect_timer;  // the attempt's deadline, then the backoff
    int64_t backoff_ms = 0;
    bool ever_ready = false;
    int handshake_left = 0;
  };

  // Returns whether the breaker lets a command through; sets `probe` for the half-open one.
  bool AdmitThroughBreaker(bool& probe) {
    if (options_.breaker_failures <= 0) {
      return true;
    }
    int state = breaker_state_.load(std::memory_order_acquire);
    if (state == kClosed) {
      return true;
    }
    if (state == kHalfOpen || NowNs() < open_until_ns_.load(std::memory_order_acquire)) {
      return false;
    }
    if (breaker_state_.compare_exchange_strong(state, kHalfOpen, std::memory_order_acq_rel)) {
      probe = true;
      return true;
    }
    return false;
  }

  // io thread: a command's outcome as the breaker counts it.
  void OnOutcome(bool ok, bool probe) {
    if (options_.breaker_failures <= 0) {
      return;
    }
    if (ok) {
      consecutive_failures_ = 0;
      breaker_state_.store(kClosed, std::memory_order_release);
      return;
    }
    ++consecutive_failures_;
    const int state = breaker_state_.load(std::memory_order_acquire);
    if (probe || (state == kClosed && consecutive_failures_ >= options_.breaker_failures)) {
      open_until_ns_.store(NowNs() + options_.breaker_open_ms * 1'000'000,
                           std::memory_order_release);
      breaker_state_.store(kOpen, std::memory_order_release);
    }
  }

  // io thread: answers one admitted command.
  void Complete(Client::Callback callback, absl::StatusOr<Reply> result, bool probe) {
    pending_.fetch_sub(1, std::memory_order_relaxed);
    if (!result.ok()) {
      (result.status().code() == absl::StatusCode::kDeadlineExceeded ? timeouts_ : failures_)
          .fetch_add(1, std::memory_order_relaxed);
    }
    if (result.status().code() != absl::StatusCode::kCancelled) {
      OnOutcome(result.ok(), probe);
    }
    std::move(callback)(std::move(result));
  }

  absl::Status LateError() const {
    return absl::DeadlineExceededError(
        absl::StrCat("redis ", name_, " did not answer within ", options_.timeout_ms, " ms"));
  }

  void Drain() {
    std::vector<Command> batch;
    {
      absl::MutexLock lock(&inbox_mu_);
      batch.swap(inbox_);
      drain_posted_ = false;
    }
    for (Command& command : batch) {
      if (!command.early.ok()) {
        failures_.fetch_add(1, std::memory_order_relaxed);
        std::move(command.callback)(command.early);
      } else if (stopped_) {
        Complete(std::move(command.callback), Cancelled(), command.probe);
      } else {
        waiting_.push_back(std::move(command));
      }
    }
    Dispatch();
  }

  absl::Status Cancelled() const {
    return absl::CancelledError(absl::StrCat("redis ", name_, ": client stopped"));
  }

  // Moves waiting commands to ready connections and starts their writes.
  void Dispatch() {
    while (!waiting_.empty() && !stopped_) {
      Conn* conn = PickReady();
      if (conn == nullptr) {
        break;
      }
      Command command = std::move(waiting_.front());
      waiting_.pop_front();
      Enqueue(*conn, std::move(command));
    }
    for (auto& conn : conns_) {
      if (conn->phase == Conn::Phase::kReady && !conn->writing && !conn->out.empty()) {
        StartWrite(*conn);
      }
    }
    ArmWaitingTimer();
  }

  Conn* PickReady() {
    for (size_t i = 0; i < conns_.size(); ++i) {
      Conn* conn = conns_[(next_conn_ + i) % conns_.size()].get();
      if (conn->phase == Conn::Phase::kReady) {
        next_conn_ = (next_conn_ + i + 1) % conns_.size();
        return conn;
      }
    }
    return nullptr;
  }

  void Enqueue(Conn& conn, Command command) {
    if (command.asking) {
      conn.out.append(kAsking);
      conn.expected.push_back(
          Expected{nullptr, command.deadline, Expected::Kind::kAsking, false, "ASKING"});
    }
    conn.out.append(command.encoded);
    conn.expected.push_back(Expected{std::move(command.callback), command.deadline,
                                     Expected::Kind::kUser, command.probe, ""});
    commands_.fetch_add(1, std::memory_order_relaxed);
    if (!conn.timer_armed || command.deadline < conn.timer_at) {
      ArmTimer(conn, command.deadline);
    }
  }

  void ArmTimer(Conn& conn, TimePoint at) {
    conn.timer_armed = true;
    conn.timer_at = at;
    conn.timer.expires_at(at);
    conn.timer.async_wait([self = shared_from_this(), c = &conn, generation = conn.generation](
                              boost::system::error_code) { self->OnReplyTimer(*c, generation); });
  }

  // The earliest unanswered command's deadline came: if it is still unanswered, the connection
  // is too slow to trust (see the header).
  void OnReplyTimer(Conn& conn, uint64_t generation) {
    if (stopped_ || generation != conn.generation || !conn.timer_armed) {
      return;
    }
    if (Clock::now() < conn.timer_at) {
      return;  // re-armed for a later time since; that wait is the one that counts
    }
    conn.timer_armed = false;
    for (const Expected& expected : conn.expected) {
      if (expected.kind == Expected::Kind::kHandshake) {
        continue;  // the connect timer's
      }
      if (expected.deadline <= Clock::now()) {
        Close(conn, absl::UnavailableError(absl::StrCat("connection to redis ", name_,
                                                        " closed: a reply was later than ",
                                                        options_.timeout_ms, " ms")));
      } else {
        ArmTimer(conn, expected.deadline);
      }
      return;
    }
  }

  void ArmWaitingTimer() {
    if (waiting_.empty() || waiting_timer_armed_) {
      return;
    }
    waiting_timer_armed_ = true;
    waiting_timer_.expires_at(waiting_.front().deadline);
    waiting_timer_.async_wait([self = shared_from_this()](boost::system::error_code) {
      self->waiting_timer_armed_ = false;
      if (self->stopped_) {
        return;
      }
      self->ExpireWaiting();
      self->ArmWaitingTimer();
    });
  }

  void ExpireWaiting() {
    const TimePoint now = Clock::now();
    while (!waiting_.empty() && waiting_.front().deadline <= now && !stopped_) {
      Command command = std::move(waiting_.front());
      waiting_.pop_front();
      Complete(std::move(command.callback), LateError(), command.probe);
    }
  }

  void FailWaiting(const absl::Status& status) {
    std::deque<Command> failed;
    failed.swap(waiting_);
    const TimePoint now = Clock::now();
    for (Command& command : failed) {
      Complete(std::move(command.callback), command.deadline <= now ? LateError() : status,
               command.probe);
    }
  }

  void Connect(Conn& conn) {
    ++conn.generation;
    conn.phase = Conn::Phase::kConnecting;
    conn.parser.Reset();
    const uint64_t generation = conn.generation;
    conn.connect_timer.expires_after(std::chrono::milliseconds(options_.connect_timeout_ms));
    conn.connect_timer.async_wait([self = shared_from_this(), c = &conn,
                                   generation](boost::system::error_code ec) {
      if (ec || self->stopped_ || generation != c->generation || c->phase == Conn::Phase::kReady) {
        return;
      }
      self->Close(*c, absl::UnavailableError(absl::StrCat(
                          "cannot connect to redis ", self->name_, ": no answer within ",
                          self->options_.connect_timeout_ms, " ms")));
    });
    conn.resolver.async_resolve(
        endpoint_.host, std::to_string(endpoint_.port),
        [self = shared_from_this(), c = &conn, generation](boost::system::error_code ec,
                                                           tcp::resolver::results_type results) {
          if (self->stopped_ || generation != c->generation) {
            return;
          }
          if (ec) {
            self->Close(
                *c, absl::UnavailableError(absl::StrCat("cannot resolve redis host ",
                                                        self->endpoint_.host, ": ", ec.message())));
            return;
          }
          self->ConnectTo(*c, generation, results);
        });
  }

  void ConnectTo(Conn& conn, uint64_t generation, const tcp::resolver::results_type& results) {
    auto link = std::make_shared<Link>(net::Socket(io_), tls_.get());
    conn.link = link;
    boost::asio::async_connect(
        link->stream.socket(), results,
        [self = shared_from_this(), c = &conn, generation, link](boost::system::error_code ec,
                                                                 const tcp::endpoint&) {
          if (self->stopped_ || generation != c->generation) {
            return;
          }
          if (ec) {
            self->Close(*c, absl::UnavailableError(absl::StrCat("cannot connect to redis ",
                                                                self->name_, ": ", ec.message())));
            return;
          }
          boost::system::error_code ignored;
          link->stream.socket().set_option(tcp::no_delay(true), ignored);
          link->stream.AsyncHandshake([self, c, generation, link](boost::system::error_code ec) {
            if (self->stopped_ || generation != c->generation) {
              return;
            }
            if (ec) {
              self->Close(
                  *c, absl::UnavailableError(absl::StrCat("TLS handshake with redis ", self->name_,
                                                          " failed: ", ec.message())));
              return;
            }
            self->StartHandshake(*c);
          });
        });
  }

  // AUTH and SELECT, pipelined; the connection is ready once both are answered OK.
  void StartHandshake(Conn& conn) {
    conn.phase = Conn::Phase::kHandshaking;
    conn.handshake_left = 0;
    StartRead(conn);
    if (!options_.password.empty()) {
      std::vector<std::string_view> auth = {"AUTH"};
      if (!options_.username.empty()) {
        auth.push_back(options_.username);
      }
      auth.push_back(options_.password);
      AppendCommand(auth, conn.out);
      conn.expected.push_back(
          Expected{nullptr, TimePoint::max(), Expected::Kind::kHandshake, false, "AUTH"});
      ++conn.handshake_left;
    }
    if (options_.db != 0) {
      const std::string db = std::to_string(options_.db);
      const std::string_view select[] = {"SELECT", db};
      AppendCommand(select, conn.out);
      conn.expected.push_back(
          Expected{nullptr, TimePoint::max(), Expected::Kind::kHandshake, false, "SELECT"});
      ++conn.handshake_left;
    }
    if (conn.handshake_left == 0) {
      OnReady(conn);
    } else {
      StartWrite(conn);
    }
  }

  void OnReady(Conn& conn) {
    conn.phase = Conn::Phase::kReady;
    conn.connect_timer.cancel();
    conn.backoff_ms = 0;
    if (conn.ever_ready) {
      reconnects_.fetch_add(1, std::memory_order_relaxed);
    }
    conn.ever_ready = true;
    ready_.fetch_add(1, std::memory_order_relaxed);
    Dispatch();
  }

  void StartWrite(Conn& conn) {
    std::shared_ptr<Link> link = conn.link;
    link->writing.swap(conn.out);
    conn.out.clear();
    conn.writing = true;
    boost::asio::async_write(
        link->stream, boost::asio::buffer(link->writing),
        [self = shared_from_this(), c = &conn, generation = conn.generation, link](
            boost::system::error_code ec, size_t) {
          if (self->stopped_ || generation != c->generation) {
            return;
          }
          c->writing = false;
          if (ec) {
            self->Close(*c, absl::UnavailableError(absl::StrCat("write to redis ", self->name_,
                                                                " failed: ", ec.message())));
          } else if (!c->out.empty() && c->phase != Conn::Phase::kIdle) {
            self->StartWrite(*c);
          }
        });
  }

  void StartRead(Conn& conn) {
    std::shared_ptr<Link> link = conn.link;
    link->stream.async_read_some(
        boost::asio::buffer(link->read_buffer),
        [self = shared_from_this(), c = &conn, generation = conn.generation, link](
            boost::system::error_code ec, size_t bytes) {
          if (self->stopped_ || generation != c->generation) {
            return;
          }
          if (ec) {
            self->Close(
                *c, absl::UnavailableError(absl::StrCat(
                        "connection to redis ", self->name_, " lost: ",
                        ec == boost::asio::error::eof ? "closed by the server" : ec.message())));
            return;
          }
          c->parser.Feed(std::string_view(link->read_buffer.data(), bytes));
          while (true) {
            Reply reply;
            bool got = false;
            absl::Status parsed = c->parser.Next(reply, &got);
            if (!parsed.ok()) {
              self->Close(*c,
                          absl::UnavailableError(absl::StrCat("redis ", self->name_,
                                                              " sent a malformed reply, connection "
                                                              "closed: ",
                                                              parsed.message())));
              return;
            }
            if (!got) {
              break;
            }
            self->OnReply(*c, std::move(reply));
            // A callback may have stopped the node; a bad reply may have closed the connection.
            if (self->stopped_ || generation != c->generation) {
              return;
            }
          }
          self->StartRead(*c);
        });
  }

  void OnReply(Conn& conn, Reply reply) {
    if (conn.expected.empty()) {
      Close(conn, absl::UnavailableError(absl::StrCat(
                      "redis ", name_, " sent a reply no command asked for, connection closed")));
      return;
    }
    Expected expected = std::move(conn.expected.front());
    conn.expected.pop_front();
    switch (expected.kind) {
      case Expected::Kind::kAsking:
        return;  // ASKING's +OK (or its error: the command after it answers for itself)
      case Expected::Kind::kHandshake:
        if (reply.type == Reply::Type::kError) {
          Close(conn, absl::UnavailableError(absl::StrCat("redis ", name_, " refused ",
                                                          expected.what, ": ", reply.str)));
          return;
        }
        if (--conn.handshake_left == 0) {
          OnReady(conn);
        }
        return;
      case Expected::Kind::kUser:
        replies_.fetch_add(1, std::memory_order_relaxed);
        Complete(std::move(expected.callback), std::move(reply), expected.probe);
        return;
    }
  }

  // Closes the connection, fails what it had in flight with `status` (DeadlineExceeded for what
  // is past its deadline), and schedules the next attempt.
  void Close(Conn& conn, const absl::Status& status) {
    const bool was_ready = conn.phase == Conn::Phase::kReady;
    ++conn.generation;
    if (conn.link != nullptr) {
      boost::system::error_code ignored;
      conn.link->stream.socket().close(ignored);
      conn.link.reset();
    }
    conn.resolver.cancel();
    conn.timer.cancel();
    conn.timer_armed = false;
    conn.connect_timer.cancel();
    conn.phase = Conn::Phase::kIdle;
    conn.writing = false;
    conn.out.clear();
    conn.parser.Reset();
    conn.handshake_left = 0;
    if (was_ready) {
      ready_.fetch_sub(1, std::memory_order_relaxed);
    }
    std::deque<Expected> failed;
    failed.swap(conn.expected);
    if (!stopped_) {
      ScheduleReconnect(conn);
    }
    const TimePoint now = Clock::now();
    for (Expected& expected : failed) {
      if (expected.kind == Expected::Kind::kUser) {
        Complete(std::move(expected.callback), expected.deadline <= now ? LateError() : status,
                 expected.probe);
      }
    }
    if (!stopped_ && ready_.load(std::memory_order_relaxed) == 0) {
      FailWaiting(status);
    }
  }

  void ScheduleReconnect(Conn& conn) {
    conn.backoff_ms = conn.backoff_ms == 0
                          ? std::max<int64_t>(1, options_.reconnect_min_ms)
                          : std::min(conn.backoff_ms * 2, options_.reconnect_max_ms);
    // Jitter: half to all of the backoff, so connections lost together do not return together.
    const int64_t half = conn.backoff_ms / 2;
    const int64_t delay =
        half + std::uniform_int_distribution<int64_t>(0, conn.backoff_ms - half)(random_);
    conn.connect_timer.expires_after(std::chrono::milliseconds(delay));
    conn.connect_timer.async_wait([self = shared_from_this(), c = &conn,
                                   generation = conn.generation](boost::system::error_code ec) {
      if (ec || self->stopped_ || generation != c->generation) {
        return;
      }
      self->Connect(*c);
    });
  }

  void StopNow() {
    if (stopped_) {
      return;
    }
    stopped_ = true;
    waiting_timer_.cancel();
    for (auto& conn : conns_) {
      Close(*conn, Cancelled());
    }
    std::vector<Command> inbox;
    {
      absl::MutexLock lock(&inbox_mu_);
      inbox.swap(inbox_);
    }
    std::deque<Command> waiting;
    waiting.swap(waiting_);
    for (Command& command : inbox) {
      if (!command.early.ok()) {
        failures_.fetch_add(1, std::memory_order_relaxed);
        std::move(command.callback)(command.early);
      } else {
        Complete(std::move(command.callback), Cancelled(), command.probe);
      }
    }
    for (Command& command : waiting) {
      Complete(std::move(command.callback), Cancelled(), command.probe);
    }
    stop_done_.Notify();
  }

  boost::asio::io_context& io_;
  const Endpoint endpoint_;
  const ClientOptions options_;
  const std::string name_;  // host:port, for messages
  std::unique_ptr<net::TlsContext> tls_;
  absl::Status config_error_;

  // Any thread.
  absl::Mutex inbox_mu_;
  std::vector<Command> inbox_ ABSL_GUARDED_BY(inbox_mu_);
  bool drain_posted_ ABSL_GUARDED_BY(inbox_mu_) = false;
  std::atomic<bool> stop_requested_{false};
  absl::Notification stop_done_;
  std::atomic<int> breaker_state_{kClosed};
  std::atomic<int64_t> open_until_ns_{0};
  std::atomic<uint64_t> pending_{0};
  std::atomic<int> ready_{0};
  std::atomic<uint64_t> commands_{0}, replies_{0}, timeouts_{0}, failures_{0}, breaker_open_{0},
      reconnects_{0};

  // io thread only.
  bool stopped_ = false;
  std::vector<std::unique_ptr<Conn>> conns_;
  size_t next_conn_ = 0;
  std::deque<Command> waiting_;
  boost::asio::steady_timer waiting_timer_;
  bool waiting_timer_armed_ = false;
  int consecutive_failures_ = 0;
  std::minstd_rand random_;
};

Node::Node(boost::asio::io_context& io, Endpoint endpoint, const ClientOptions& options)
    : state_(std::make_shared<State>(io, std::move(endpoint), options)) {
  state_->Start();
}

Node::~Node() { state_->Stop(); }

void Node::Send(absl::Span<const std::string_view> args, Client::Callback callback, bool asking) {
  state_->Send(args, std::move(callback), asking);
}

bool Node::Healthy() const { return state_->Healthy(); }

const Endpoint& Node::endpoint() const { return state_->endpoint(); }

void Node::AddStats(ClientStats& stats) const { state_->AddStats(stats); }

void Node::Stop() { state_->Stop(); }

}  // namespace floodgate::redis
