// Redis Sentinel: the master found through the sentinels, and followed across failovers.
//
// Invariants:
//  - master_ is the Node of the last address a sentinel named and ROLE confirmed as a master;
//    null until the first discovery succeeds. Commands go to master_ as they come; with no
//    master they are parked until one is adopted or their timeout.
//  - Master Nodes are kept by "host:port" for the client's life (a Sentinel deployment has a
//    handful of addresses, and a demoted master usually comes back as a replica that may be
//    promoted again); adopting another one leaves commands in flight on the old one to finish
//    or fail there: their callers' failure mode decides.
//  - One discovery at a time, started at most once per min_refresh_interval_ms (backing off
//    after failed ones: RefreshGapMs), except when a sentinel announces +switch-master (then
//    at once, or right after the one running). Triggers: start, +switch-master, a new
//    subscription (a switch may have been missed while disconnected), the master's commands
//    failing (connection lost, breaker open, READONLY), no master known, and a periodic timer.
//    A failed discovery (no sentinel named a master that ROLE confirms) asks for another.
//  - The subscription lives on its own connection (a subscribed connection takes no other
//    commands), to one sentinel at a time, moving to the next one when it breaks.

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "src/net/io_threads.h"
#include "src/redis/redis_node.h"
#include "src/redis/redis_topology.h"
#include "src/redis/resp.h"

namespace floodgate::redis {
namespace {

using topology_internal::EndpointKey;
using topology_internal::Parking;
using topology_internal::PendingCommand;
using topology_internal::SteadyTime;

SteadyTime Now() { return std::chrono::steady_clock::now(); }

// The +switch-master subscription: one plain TCP connection to one sentinel at a time.
// Thread-safety: lives on one io_context's thread (its only thread); built and destroyed while
// that thread is not running it.
class SwitchWatcher {
 public:
  struct Callbacks {
    std::function<void(const Endpoint&)> on_switch;  // our master moved there
    std::function<void()> on_subscribed;             // (re)subscribed: switches may be missed
  };

  SwitchWatcher(boost::asio::io_context& io, const ClientOptions& options, Callbacks callbacks)
      : io_(io),
        options_(options),
        callbacks_(std::move(callbacks)),
        resolver_(io),
        socket_(io),
        timer_(io),
        backoff_ms_(std::max<int64_t>(1, options.reconnect_min_ms)) {}

  void Start() {
    boost::asio::post(io_, [this] { Connect(); });
  }

 private:
  void Connect() {
    const Endpoint& sentinel = options_.endpoints[index_ % options_.endpoints.size()];
    parser_.Reset();
    timer_.expires_after(std::chrono::milliseconds(options_.connect_timeout_ms));
    timer_.async_wait([this, generation = generation_](const boost::system::error_code& error) {
      if (!error && generation == generation_) {
        Fail();  // connect took too long
      }
    });
    resolver_.async_resolve(
        sentinel.host, std::to_string(sentinel.port),
        [this, generation = generation_](const boost::system::error_code& error,
                                         boost::asio::ip::tcp::resolver::results_type results) {
          if (generation != generation_) {
            return;
          }
          if (error) {
            Fail();
            return;
          }
          boost::asio::async_connect(socket_, results,
                                     [this, generation](const boost::system::error_code& error,
                                                        const boost::asio::ip::tcp::endpoint&) {
                                       if (generation != generation_) {
                                         return;
                                       }
                                       if (error) {
                                         Fail();
                                         return;
                                       }
                                       Subscribe();
                                     });
        });
  }

  void Subscribe() {
    static constexpr std::string_view kSubscribe[] = {"SUBSCRIBE", "+switch-master"};
    out_ = EncodeCommand(kSubscribe);
    boost::asio::async_write(
        socket_, boost::asio::buffer(out_),
        [this, generation = generation_](const boost::system::error_code& error, size_t) {
          if (generation != generation_) {
            return;
          }
          if (error) {
            Fail();
            return;
          }
          Read();
        });
  }

  void Read() {
    socket_.async_read_some(
        boost::asio::buffer(in_),
        [this, generation = generation_](const boost::system::error_code& error, size_t bytes) {
          if (generation != generation_) {
            return;
          }
          if (error) {
            Fail();
            return;
          }
          parser_.Feed(std::string_view(in_.data(), bytes));
          Reply reply;
          bool got = false;
          while (true) {
            if (!parser_.Next(reply, &got).ok()) {
              Fail();
              return;
            }
            if (!got) {
              break;
            }
            OnPush(reply);
          }
          Read();
        });
  }

  void OnPush(const Reply& push) {
    if (push.type == Reply::Type::kArray && push.elements.size() == 3 &&
        push.elements[0].str == "subscribe") {
      timer_.cancel();  // connected and subscribed: the connect deadline is over
      backoff_ms_ = std::max<int64_t>(1, options_.reconnect_min_ms);
      callbacks_.on_subscribed();
      return;
    }
    if (std::optional<Endpoint> moved =
            topology_internal::ParseSwitchMaster(push, options_.master_name)) {
      callbacks_.on_switch(*moved);
    }
  }

  // Drops the connection and tries the next sentinel after a backoff.
  void Fail() {
    ++generation_;  // every handler of the old connection is now stale
    boost::system::error_code ignored;
    socket_.close(ignored);
    resolver_.cancel();
    ++index_;
    timer_.expires_after(std::chrono::milliseconds(backoff_ms_));
    backoff_ms_ = std::min(backoff_ms_ * 2, std::max<int64_t>(1, options_.reconnect_max_ms));
    timer_.async_wait([this, generation = generation_](const boost::system::error_code& error) {
      if (!error && generation == generation_) {
        Connect();
      }
    });
  }

  boost::asio::io_context& io_;
  const ClientOptions& options_;
  const Callbacks callbacks_;
  boost::asio::ip::tcp::resolver resolver_;
  boost::asio::ip::tcp::socket socket_;
  boost::asio::steady_timer timer_;
  ReplyParser parser_;
  std::string out_;
  std::array<char, 4096> in_{};
  uint64_t generation_ = 0;
  size_t index_ = 0;
  int64_t backoff_ms_;
};

class SentinelClient final : public Client {
 public:
  SentinelClient(const ClientOptions& options, const TopologyOptions& topology)
      : options_(options),
        topology_(topology),
        io_(net::IoModel::kPerThread, std::max(1, options.io_threads)),
        parking_(io_.context(0), static_cast<size_t>(std::max(1, options.max_pending_per_node)),
                 [this](std::shared_ptr<PendingCommand> command) { Dispatch(std::move(command)); }),
        discovery_timer_(io_.context(0)),
        periodic_timer_(io_.context(0)) {
    // The sentinels: no AUTH (their password is not the master's), no SELECT, one connection,
    // their own timeout.
    ClientOptions sentinel_options = options_;
    sentinel_options.username.clear();
    sentinel_options.password.clear();
    sentinel_options.db = 0;
    sentinel_options.connections_per_node = 1;
    sentinel_options.timeout_ms = topology_.sentinel_timeout_ms;
    for (const Endpoint& sentinel : options_.endpoints) {
      sentinels_.push_back(std::make_unique<Node>(io_.context(0), sentinel, sentinel_options));
    }
    if (!options_.tls) {  // the subscription speaks plain TCP only; TLS relies on re-queries
      watcher_ = std::make_unique<SwitchWatcher>(
          io_.context(0), options_,
          SwitchWatcher::Callbacks{
              .on_switch = [this](const Endpoint&) { RequestDiscovery(/*urgent=*/true); },
              .on_subscribed = [this] { RequestDiscovery(/*urgent=*/false); }});
    }
  }

  ~SentinelClient() override { Stop(); }

  void Start() {
    io_.Start();
    if (watcher_ != nullptr) {
      watcher_->Start();
    }
    RequestDiscovery(/*urgent=*/true);
    boost::asio::post(io_.context(0), [this] { ArmPeriodic(); });
  }

  void Send(absl::Span<const std::string_view> args, std::string_view /*slot_key*/,
            Callback callback) override {
    Node* master = nullptr;
    {
      absl::ReaderMutexLock lock(&mu_);
      master = master_;
    }
    if (master == nullptr) {
      auto command = std::make_shared<PendingCommand>(
          args, 0, std::move(callback), Now() + std::chrono::milliseconds(options_.timeout_ms));
      ParkOrFail(std::move(command));
      return;
    }
    SendTo(master, args, std::move(callback));
  }

  bool Healthy() const override {
    absl::ReaderMutexLock lock(&mu_);
    return master_ != nullptr && master_->Healthy();
  }

  ClientStats GetStats() const override {
    ClientStats stats;
    {
      absl::ReaderMutexLock lock(&mu_);
      for (const auto& [key, node] : masters_) {
        node->AddStats(stats);
      }
    }
    stats.pending += parking_.size();
    return stats;
  }

  void Stop() override {
    if (stopping_.exchange(true)) {
      return;
    }
    std::vector<Node*> all;
    {
      absl::ReaderMutexLock lock(&mu_);
      for (auto& [key, node] : masters_) {
        all.push_back(node.get());
      }
    }
    for (auto& sentinel : sentinels_) {
      all.push_back(sentinel.get());
    }
    for (Node* node : all) {
      node->Stop();
    }
    io_.Stop();
    parking_.FailAll(absl::CancelledError("redis: client stopped"));
  }

 private:
  void SendTo(Node* master, absl::Span<const std::string_view> args, Callback callback) {
    master->Send(
        args, [this, master, callback = std::move(callback)](absl::StatusOr<Reply> result) mutable {
          // A master that hangs up, whose breaker opened, or that turned into a replica
          // (READONLY) may have been failed over: ask the sentinels (rate-limited).
          if ((!result.ok() && result.status().code() == absl::StatusCode::kUnavailable) ||
              (result.ok() && result->type == Reply::Type::kError &&
               result->str.starts_with("READONLY"))) {
            OnMasterFailure(master);
          }
          std::move(callback)(std::move(result));
        });
  }

  void Dispatch(std::shared_ptr<PendingCommand> command) {
    if (command->done()) {
      return;
    }
    if (stopping_.load(std::memory_order_acquire)) {
      command->Complete(absl::CancelledError("redis: client stopped"));
      return;
    }
    Node* master = nullptr;
    {
      absl::ReaderMutexLock lock(&mu_);
      master = master_;
    }
    if (master == nullptr) {
      ParkOrFail(std::move(command));
      return;
    }
    PendingCommand* raw = command.get();
    SendTo(master, raw->args, [command = std::move(command)](absl::StatusOr<Reply> result) {
      command->Complete(std::move(result));
    });
  }

  void ParkOrFail(std::shared_ptr<PendingCommand> command) {
    RequestDiscovery(/*urgent=*/false);
    std::shared_ptr<PendingCommand> kept = command;
    if (!parking_.Park(std::move(kept), std::nullopt)) {
      command->Complete(absl::ResourceExhaustedError("redis sentinel: too many commands waiting"));
    }
  }

  void OnMasterFailure(Node* master) {
    {
      absl::ReaderMutexLock lock(&mu_);
      if (master != master_) {
        return;  // an old master's failures say nothing about the current one
      }
    }
    RequestDiscovery(/*urgent=*/false);
  }

  // --- Discovery ---

  void RequestDiscovery(bool urgent) {
    if (stopping_.load(std::memory_order_acquire)) {
      return;
    }
    absl::MutexLock lock(&discovery_mu_);
    if (discovering_) {
      discovery_wanted_ = true;
      discovery_urgent_ = discovery_urgent_ || urgent;
      return;
    }
    const SteadyTime earliest =
        last_discovery_ +
        std::chrono::milliseconds(topology_internal::RefreshGapMs(topology_, discovery_failures_));
    if (!urgent && Now() < earliest) {
      if (!discovery_timer_armed_) {
        discovery_timer_armed_ = true;
        discovery_timer_.expires_at(earliest);
        discovery_timer_.async_wait([this](const boost::system::error_code& error) {
          if (error) {
            return;
          }
          {
            absl::MutexLock lock(&discovery_mu_);
            discovery_timer_armed_ = false;
          }
          RequestDiscovery(/*urgent=*/false);
        });
      }
      return;
    }
    discovering_ = true;
    discovery_wanted_ = false;
    last_discovery_ = Now();
    boost::asio::post(io_.context(0), [this] { AskSentinel(0); });
  }

  // Asks sentinel `index` where the master is; the next one when it cannot say.
  void AskSentinel(size_t index) {
    if (index >= sentinels_.size() || stopping_.load(std::memory_order_acquire)) {
      FinishDiscovery(false);
      return;
    }
    const std::string_view query[] = {"SENTINEL", "get-master-addr-by-name", options_.master_name};
    sentinels_[index]->Send(query, [this, index](absl::StatusOr<Reply> reply) {
      absl::StatusOr<Endpoint> master =
          reply.ok() ? topology_internal::ParseMasterAddr(*reply) : reply.status();
      if (!master.ok()) {
        AskSentinel(index + 1);
        return;
      }
      VerifyMaster(*master, index, Now() + std::chrono::milliseconds(options_.connect_timeout_ms));
    });
  }

  // Asks the named address for its ROLE (through the Node commands will use, so a confirmed
  // master is already connected); retries a failed try on a new address until `deadline` (it
  // may still be connecting), then moves on.
  void VerifyMaster(const Endpoint& endpoint, size_t index, SteadyTime deadline) {
    if (stopping_.load(std::memory_order_acquire)) {
      FinishDiscovery(false);
      return;
    }
    Node* node = nullptr;
    {
      absl::MutexLock lock(&mu_);
      auto [it, inserted] = masters_.try_emplace(EndpointKey(endpoint));
      if (inserted) {
        const int context = static_cast<int>(masters_.size() % io_.contexts());
        it->second = std::make_unique<Node>(io_.context(context), endpoint, options_);
      }
      node = it->second.get();
    }
    static constexpr std::string_view kRole[] = {"ROLE"};
    node->Send(kRole, [this, node, endpoint, index, deadline](absl::StatusOr<Reply> reply) {
      if (reply.ok() && topology_internal::IsMasterRole(*reply)) {
        Adopt(node);
        FinishDiscovery(true);
        return;
      }
      bool current = false;
      {
        absl::ReaderMutexLock lock(&mu_);
        current = node == master_;
      }
      if (!reply.ok() && !current &&
          Now() + std::chrono::milliseconds(topology_.retry_delay_ms) < deadline) {
        // Not connected yet (a new address): try again shortly. The current master failing
        // is why we are here: no point waiting for it.
        auto timer = std::make_shared<boost::asio::steady_timer>(
            io_.context(0), std::chrono::milliseconds(topology_.retry_delay_ms));
        timer->async_wait(
            [this, timer, endpoint, index, deadline](const boost::system::error_code& error) {
              if (!error) {
                VerifyMaster(endpoint, index, deadline);
              }
            });
        return;
      }
      AskSentinel(index + 1);  // a replica (that sentinel is behind), or unreachable
    });
  }

  void Adopt(Node* node) {
    {
      absl::MutexLock lock(&mu_);
      master_ = node;
    }
    parking_.WakeAll();
  }

  void FinishDiscovery(bool ok) {
    bool again = false;
    bool urgent = false;
    {
      absl::MutexLock lock(&discovery_mu_);
      discovering_ = false;
      discovery_failures_ = ok ? 0 : discovery_failures_ + 1;
      again = discovery_wanted_;
      urgent = discovery_urgent_;
      discovery_urgent_ = false;
    }
    if (again || !ok) {
      RequestDiscovery(urgent);  // rate-limited unless a +switch-master came meanwhile
    }
  }

  void ArmPeriodic() {
    periodic_timer_.expires_after(std::chrono::milliseconds(topology_.refresh_interval_ms));
    periodic_timer_.async_wait([this](const boost::system::error_code& error) {
      if (error || stopping_.load(std::memory_order_acquire)) {
        return;
      }
      RequestDiscovery(/*urgent=*/false);
      ArmPeriodic();
    });
  }

  const ClientOptions options_;
  const TopologyOptions topology_;
  net::IoThreads io_;  // before everything that holds its contexts
  Parking parking_;
  std::atomic<bool> stopping_{false};
  std::vector<std::unique_ptr<Node>> sentinels_;  // fixed after construction
  std::unique_ptr<SwitchWatcher> watcher_;        // null with TLS

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<Node>> masters_ ABSL_GUARDED_BY(mu_);
  Node* master_ ABSL_GUARDED_BY(mu_) = nullptr;

  absl::Mutex discovery_mu_;
  bool discovering_ ABSL_GUARDED_BY(discovery_mu_) = false;
  bool discovery_wanted_ ABSL_GUARDED_BY(discovery_mu_) = false;
  bool discovery_urgent_ ABSL_GUARDED_BY(discovery_mu_) = false;  // wanted, skipping the gap
  bool discovery_timer_armed_ ABSL_GUARDED_BY(discovery_mu_) = false;
  SteadyTime last_discovery_ ABSL_GUARDED_BY(discovery_mu_);
  int discovery_failures_ ABSL_GUARDED_BY(discovery_mu_) = 0;  // failed in a row
  boost::asio::steady_timer discovery_timer_ ABSL_GUARDED_BY(discovery_mu_);
  boost::asio::steady_timer periodic_timer_;  // io context 0 only
};

}  // namespace

absl::StatusOr<std::unique_ptr<Client>> NewSentinelClient(const ClientOptions& options,
                                                          const TopologyOptions& topology) {
  if (options.endpoints.empty()) {
    return absl::InvalidArgumentError("redis sentinel: no sentinel address");
  }
  if (options.master_name.empty()) {
    return absl::InvalidArgumentError("redis sentinel: no master name");
  }
  if (options.timeout_ms <= 0 || topology.sentinel_timeout_ms <= 0 ||
      topology.retry_delay_ms <= 0 || topology.min_refresh_interval_ms < 0 ||
      topology.refresh_interval_ms <= 0) {
    return absl::InvalidArgumentError("redis sentinel: timeouts and intervals must be positive");
  }
  auto client = std::make_unique<SentinelClient>(options, topology);
  client->Start();
  return client;
}

absl::StatusOr<std::unique_ptr<Client>> NewSentinelClient(const ClientOptions& options) {
  return NewSentinelClient(options, TopologyOptions{});
}

}  // namespace floodgate::redis
