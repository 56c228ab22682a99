#include "src/net/listener.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "src/common/host_port.h"

namespace floodgate::net {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

// Pause before accepting again after an accept error such as EMFILE, to avoid a hot loop.
constexpr std::chrono::milliseconds kAcceptBackoff(10);

}  // namespace

absl::Duration SweepInterval(absl::Duration timeout) {
  return std::clamp(timeout / 4, absl::Milliseconds(10), absl::Seconds(1));
}

ConnectionSlot& ConnectionSlot::operator=(ConnectionSlot&& other) noexcept {
  if (this != &other) {
    Release();
    listener_ = std::exchange(other.listener_, nullptr);
    io_thread_ = other.io_thread_;
    client_ = std::move(other.client_);
    connection_ = std::exchange(other.connection_, nullptr);
  }
  return *this;
}

void ConnectionSlot::Register(Connection* connection) {
  if (listener_ != nullptr && connection_ == nullptr) {
    connection_ = connection;
    listener_->Register(io_thread_, connection);
  }
}

void ConnectionSlot::Release() {
  if (listener_ == nullptr) {
    return;
  }
  if (connection_ != nullptr) {
    listener_->Unregister(io_thread_, connection_);
    connection_ = nullptr;
  }
  listener_->ReleaseSlot(client_);
  listener_ = nullptr;
}

Listener::Listener(ListenerOptions options, AcceptFn on_accept)
    : options_(std::move(options)),
      on_accept_(std::move(on_accept)),
      sweep_interval_(std::max(absl::ToChronoNanoseconds(options_.sweep_interval),
                               std::chrono::nanoseconds(std::chrono::milliseconds(1)))),
      client_caps_(options_.max_connections_per_client),
      io_(options_.io_model, options_.io_threads) {
  for (int i = 0; i < io_.contexts(); ++i) {
    shards_.push_back(std::make_unique<Shard>());
  }
  // kShared: the acceptor and the sweeper share a strand of the one context; kPerThread: the
  // acceptor runs on the first context and every context sweeps its own connections.
  if (io_.model() == IoModel::kShared) {
    accept_executor_.emplace(asio::make_strand(io_.context(0)));
    sweep_timers_.push_back(std::make_unique<Timer>(*accept_executor_));
  } else {
    accept_executor_.emplace(io_.context(0).get_executor());
    for (int i = 0; i < io_.contexts(); ++i) {
      sweep_timers_.push_back(std::make_unique<Timer>(io_.context(i).get_executor()));
    }
  }
  acceptor_.emplace(*accept_executor_);
  accept_backoff_.emplace(*accept_executor_);
}

Listener::~Listener() { Shutdown(absl::ZeroDuration()); }

int64_t Listener::Now() const {
  if (options_.clock) {
    return options_.clock();
  }
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

size_t Listener::open_connections() const {
  absl::MutexLock lock(&count_mu_);
  return open_;
}

absl::Status Listener::Start() {
  if (started_) {
    return absl::FailedPreconditionError(absl::StrCat(options_.name, " already started"));
  }
  std::string host;
  uint16_t port = 0;
  if (absl::Status split = common::SplitHostPort(options_.address, host, port); !split.ok()) {
    return split;
  }
  error_code ec;
  tcp::endpoint endpoint;
  if (host.empty()) {
    endpoint = tcp::endpoint(tcp::v4(), port);
  } else {
    asio::ip::address address = asio::ip::make_address(host, ec);
    if (!ec) {
      endpoint = tcp::endpoint(address, port);
    } else {
      tcp::resolver resolver(io_.context(0));
      auto results = resolver.resolve(host, std::to_string(port), ec);
      if (ec || results.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "cannot resolve ", options_.protocol, " listen host \"", host, "\": ", ec.message()));
      }
      endpoint = results.begin()->endpoint();
    }
  }
  const auto unavailable = [&](absl::string_view what) {
    return absl::UnavailableError(
        absl::StrCat(options_.name, " cannot ", what, " ", options_.address, ": ", ec.message()));
  };
  acceptor_->open(endpoint.protocol(), ec);
  if (ec) {
    return unavailable("open a socket for");
  }
  acceptor_->set_option(asio::socket_base::reuse_address(true), ec);
  if (ec) {
    return unavailable("set SO_REUSEADDR for");
  }
  acceptor_->bind(endpoint, ec);
  if (ec) {
    return unavailable("bind");
  }
  acceptor_->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return unavailable("listen on");
  }
  port_ = acceptor_->local_endpoint(ec).port();
  if (ec) {
    return unavailable("read the bound port of");
  }

  started_ = true;
  now_ns_.store(Now(), std::memory_order_relaxed);
  // No thread runs yet, so the acceptor and timers may be used directly.
  Accept();
  for (int i = 0; i < static_cast<int>(sweep_timers_.size()); ++i) {
    Sweep(i);
  }
  io_.Start();
  return absl::OkStatus();
}

void Listener::Accept() {
  const int io_thread = next_thread_;
  next_thread_ = (next_thread_ + 1) % io_.contexts();
  acceptor_->async_accept(io_.context(io_thread).get_executor(),
                          [this, io_thread](error_code ec, Socket socket) {
                            OnAccept(ec, std::move(socket), io_thread);
                          });
}

void Listener::OnAccept(error_code ec, Socket socket, int io_thread) {
  if (!acceptor_->is_open() || draining()) {
    return;  // shutting down; `socket` closes as it goes out of scope
  }
  if (ec) {
    // EMFILE and the like: try again shortly rather than spin.
    accept_backoff_->expires_after(kAcceptBackoff);
    accept_backoff_->async_wait([this](error_code wait_ec) {
      if (!wait_ec && acceptor_->is_open()) {
        Accept();
      }
    });
    return;
  }
  ConnectionSlot slot;
  if (client_caps_.enabled()) {
    const tcp::endpoint remote = socket.remote_endpoint(ec);
    slot.client_ = ec ? "?" : remote.address().to_string();
  }
  bool admitted = false;
  {
    absl::MutexLock lock(&count_mu_);
    if (open_ < options_.max_connections &&
        (slot.client_.empty() || client_caps_.Admit(slot.client_))) {
      ++open_;
      admitted = true;
    }
  }
  if (!admitted) {
    if (options_.refused != nullptr) {
      options_.refused->fetch_add(1, std::memory_order_relaxed);
    }
    socket.close(ec);
  } else {
    slot.listener_ = this;
    slot.io_thread_ = io_thread;
    if (io_.model() == IoModel::kShared) {
      on_accept_(Accepted{std::move(socket), std::move(slot)});
    } else {
      // The connection lives on its io thread from its first instruction on.
      asio::post(io_.context(io_thread),
                 [this, accepted = Accepted{std::move(socket), std::move(slot)}]() mutable {
                   on_accept_(std::move(accepted));
                 });
    }
  }
  Accept();
}

void Listener::Sweep(int shard) {
  const int64_t now = Now();
  now_ns_.store(now, std::memory_order_relaxed);
  {
    Shard& s = *shards_[shard];
    absl::MutexLock lock(&s.mu);
    for (Connection* connection : s.live) {
      if (connection->deadline_ns() <= now) {
        connection->OnDeadline(now);
      }
    }
  }
  if (stop_sweeping_.load(std::memory_order_acquire)) {
    return;
  }
  Timer& timer = *sweep_timers_[shard];
  timer.expires_after(sweep_interval_);
  timer.async_wait([this, shard](error_code ec) {
    if (!ec) {
      Sweep(shard);
    }
  });
}

void Listener::Register(int shard, Connection* connection) {
  Shard& s = *shards_[shard];
  absl::MutexLock lock(&s.mu);
  s.live.insert(connection);
}

void Listener::Unregister(int shard, Connection* connection) {
  Shard& s = *shards_[shard];
  absl::MutexLock lock(&s.mu);
  s.live.erase(connection);
}

void Listener::ReleaseSlot(const std::string& client) {
  if (!client.empty()) {
    client_caps_.Release(client);
  }
  absl::MutexLock lock(&count_mu_);
  --open_;
}

void Listener::ForEachConnection(const std::function<void(Connection&)>& fn) {
  if (io_.model() == IoModel::kShared) {
    Shard& s = *shards_[0];
    absl::MutexLock lock(&s.mu);
    for (Connection* connection : s.live) {
      fn(*connection);
    }
    return;
  }
  for (int i = 0; i < io_.contexts(); ++i) {
    absl::Notification done;
    asio::post(io_.context(i), [s = shards_[i].get(), &fn, &done] {
      {
        absl::MutexLock lock(&s->mu);
        for (Connection* connection : s->live) {
          fn(*connection);
        }
      }
      done.Notify();
    });
    done.WaitForNotification();
  }
}

bool Listener::AwaitNoConnections(absl::Duration timeout) {
  absl::MutexLock lock(&count_mu_);
  return count_mu_.AwaitWithTimeout(absl::Condition(
                                        +[](size_t* open) { return *open == 0; }, &open_),
                                    timeout);
}

void Listener::Shutdown(absl::Duration grace) {
  if (!started_ || stopped_) {
    return;
  }
  stopped_ = true;
  draining_.store(true, std::memory_order_release);
  const absl::Time deadline = absl::Now() + grace;

  // Stop accepting, on the acceptor's executor (the acceptor and its timer are not thread-safe).
  absl::Notification closed;
  asio::post(*accept_executor_, [this, &closed] {
    error_code ignored;
    acceptor_->close(ignored);
    accept_backoff_->cancel();
    closed.Notify();
  });
  closed.WaitForNotification();

  if (options_.drain_notice) {
    ForEachConnection([](Connection& c) { c.DrainNotice(); });
    absl::SleepFor(std::clamp(grace / 4, absl::ZeroDuration(), absl::Milliseconds(100)));
  }
  ForEachConnection([](Connection& c) { c.Drain(); });
  if (!AwaitNoConnections(deadline - absl::Now())) {
    ForEachConnection([](Connection& c) { c.ShutdownSocket(); });
    AwaitNoConnections(absl::Seconds(1));
  }
  // The sweeper ran on during the grace (timeouts still hold); stop it, then the threads.
  stop_sweeping_.store(true, std::memory_order_release);
  for (auto& timer : sweep_timers_) {
    asio::post(timer->get_executor(), [t = timer.get()] { t->cancel(); });
  }
  io_.Stop();
}

}  // namespace floodgate::net
