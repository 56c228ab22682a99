#include "src/cluster/peer_link.h"

#include <algorithm>
#include <array>
#include <utility>
#include <vector>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

#include "absl/strings/str_cat.h"
#include "src/common/host_port.h"
#include "src/common/rate_limited_log.h"

namespace floodgate::cluster {

namespace asio = boost::asio;
using boost::system::error_code;
using tcp = asio::ip::tcp;

namespace {
// How often the link looks for overdue calls while any are in flight.
constexpr auto kTick = std::chrono::milliseconds(20);
constexpr size_t kReadChunk = 64 * 1024;
// What usually makes a peer TLS handshake fail, for the log line.
constexpr char kTlsHint[] =
    "every member needs --peer-tls-cert, --peer-tls-key and --peer-tls-ca, its certificate "
    "signed by the same CA";
// Returns whether `ec` means the other side closed the connection (cleanly or not).
bool ClosedByPeer(const error_code& ec) {
  return ec == asio::error::eof || ec == asio::error::connection_reset ||
         ec == asio::ssl::error::stream_truncated;
}

// Returns why a read failed, for the log. Closed before the challenge came: the other side
// refused us (not a member there, or a TLS member to a plain one), or is no member's peer port;
// a TLS alert then: it refused our certificate.
std::string WhyLost(const error_code& ec, bool in_handshake) {
  if (!in_handshake) {
    return ClosedByPeer(ec) ? "closed by the peer" : ec.message();
  }
  if (ClosedByPeer(ec)) {
    return absl::StrCat(
        "closed by the peer during the handshake (are we a member there? peer TLS on one side "
        "only? ",
        kTlsHint, ")");
  }
  if (ec.category() == asio::error::get_ssl_category()) {
    return absl::StrCat(ec.message(), " (", kTlsHint, ")");
  }
  return ec.message();
}
}  // namespace

// One TCP connection attempt. Handlers hold it, so a new connection never shares a socket or a
// buffer with the handlers of a failed one; `conn == conn_` tells them they are still current.
struct PeerLink::Conn {
  Conn(asio::io_context& loop, net::TlsContext* tls) : stream(net::Socket(loop), tls) {}
  net::Stream stream;  // the socket, or TLS over it
  FrameDecoder decoder;
  std::array<char, kReadChunk> read_buffer;
  std::unique_ptr<ClientHandshake> handshake;
};

std::shared_ptr<PeerLink> PeerLink::Create(PeerLinkOptions options, asio::io_context& loop) {
  return std::shared_ptr<PeerLink>(new PeerLink(std::move(options), loop));
}

PeerLink::PeerLink(PeerLinkOptions options, asio::io_context& loop)
    : options_(std::move(options)), loop_(loop), timer_(loop), backoff_(options_.min_backoff) {
  if (options_.tls != nullptr) {
    strand_.emplace(asio::make_strand(loop_));
  }
}

PeerLink::~PeerLink() = default;

template <typename Initiate, typename Handler>
void PeerLink::Async(Initiate&& initiate, Handler&& handler) {
  if (strand_.has_value()) {
    initiate(asio::bind_executor(*strand_, std::forward<Handler>(handler)));
  } else {
    initiate(std::forward<Handler>(handler));
  }
}

template <typename Fn>
void PeerLink::Post(Fn&& fn) {
  if (strand_.has_value()) {
    asio::post(*strand_, std::forward<Fn>(fn));
  } else {
    asio::post(loop_, std::forward<Fn>(fn));
  }
}

size_t PeerLink::queued_bytes() const {
  absl::MutexLock lock(&mu_);
  return out_.size() + writing_bytes_;
}

void PeerLink::EndBackoff() {
  absl::MutexLock lock(&mu_);
  if (state_ == State::kBackoff) {
    state_ = State::kIdle;
    backoff_ = options_.min_backoff;
  }
}

absl::Status PeerLink::Call(FrameType type, const google::protobuf::MessageLite& request,
                            absl::Duration timeout, AnswerFn on_answer) {
  absl::MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  if (state_ == State::kClosed) {
    return absl::UnavailableError("cluster is shutting down");
  }
  if (state_ == State::kBackoff) {
    if (now < backoff_until_) {
      return absl::UnavailableError(
          absl::StrCat("peer ", options_.member_id, " unreachable (reconnecting)"));
    }
    state_ = State::kIdle;
  }
  if (out_.size() + writing_bytes_ >= options_.max_queued_bytes ||
      pending_.size() >= options_.max_pending) {
    return absl::UnavailableError(absl::StrCat("link to peer ", options_.member_id, " is full (",
                                               pending_.size(), " calls in flight)"));
  }
  const uint64_t id = next_call_id_++;
  const bool was_empty = out_.empty();
  if (absl::Status appended = AppendFrame(type, id, request, &out_); !appended.ok()) {
    return appended;
  }
  if (type == FrameType::kForward) {
    ++out_forwards_;
  }
  pending_.emplace(id, Pending{std::move(on_answer), now + timeout});
  ArmTimerLocked();
  if (state_ == State::kIdle) {
    state_ = State::kConnecting;
    connect_deadline_ = now + options_.connect_timeout;
    Post([self = shared_from_this()] { self->StartConnect(); });
  } else if (state_ == State::kReady && was_empty && !writing_ && !flush_posted_) {
    flush_posted_ = true;
    Post([self = shared_from_this()] { self->Flush(); });
  }
  return absl::OkStatus();
}

void PeerLink::Close() {
  Post([self = shared_from_this()] { self->CloseNow(); });
}

void PeerLink::CloseNow() {
  std::shared_ptr<Conn> conn;
  {
    absl::MutexLock lock(&mu_);
    conn = conn_;
  }
  Fail(conn, absl::UnavailableError("cluster is shutting down"), /*count_log=*/false);
  absl::MutexLock lock(&mu_);
  state_ = State::kClosed;
  error_code ignored;
  timer_.cancel(ignored);
}

void PeerLink::ArmTimerLocked() {
  if (ticking_) {
    return;
  }
  ticking_ = true;
  Post([self = shared_from_this()] {
    self->timer_.expires_after(kTick);
    self->Async([self](auto handler) { self->timer_.async_wait(std::move(handler)); },
                [self](error_code ec) {
                  if (!ec) {
                    self->OnTick();
                  } else {
                    absl::MutexLock lock(&self->mu_);
                    self->ticking_ = false;
                  }
                });
  });
}

void PeerLink::OnTick() {
  std::shared_ptr<Conn> conn;
  absl::Status failure;
  {
    absl::MutexLock lock(&mu_);
    ticking_ = false;
    if (state_ == State::kClosed) {
      return;
    }
    const absl::Time now = absl::Now();
    if ((state_ == State::kConnecting || state_ == State::kHandshake) && now >= connect_deadline_) {
      failure =
          absl::UnavailableError(absl::StrCat("peer ", options_.member_id, " (", options_.address,
                                              ") did not connect and prove the "
                                              "cluster key within ",
                                              absl::FormatDuration(options_.connect_timeout)));
    } else {
      for (const auto& [id, pending] : pending_) {
        if (now >= pending.deadline) {
          failure = absl::DeadlineExceededError(
              absl::StrCat("no answer from peer ", options_.member_id, " in time"));
          break;
        }
      }
    }
    conn = conn_;
    if (failure.ok()) {
      if (!pending_.empty() || state_ == State::kConnecting || state_ == State::kHandshake) {
        ArmTimerLocked();
      }
      return;
    }
  }
  Fail(conn, std::move(failure));
}

void PeerLink::StartConnect() {
  auto conn = std::make_shared<Conn>(loop_, options_.tls.get());
  {
    absl::MutexLock lock(&mu_);
    if (state_ != State::kConnecting) {
      return;
    }
    conn_ = conn;
  }
  std::string host;
  uint16_t port = 0;
  error_code ec;
  absl::Status split = common::SplitHostPort(options_.address, host, port);
  tcp::resolver::results_type endpoints;
  if (split.ok()) {
    // Member addresses are usually numeric; a name is resolved here, once per connection.
    tcp::resolver resolver(loop_);
    endpoints = resolver.resolve(host.empty() ? "127.0.0.1" : host, std::to_string(port), ec);
  }
  if (!split.ok() || ec) {
    Fail(conn, absl::UnavailableError(absl::StrCat("cannot resolve peer ", options_.member_id,
                                                   " address ", options_.address, ": ",
                                                   split.ok() ? ec.message() : split.message())));
    return;
  }
  Async(
      [&](auto handler) {
        asio::async_connect(conn->stream.socket(), endpoints, std::move(handler));
      },
      [self = shared_from_this(), conn](error_code ec, const tcp::endpoint&) {
        if (ec) {
          self->Fail(conn, absl::UnavailableError(
                               absl::StrCat("cannot connect to peer ", self->options_.member_id,
                                            " (", self->options_.address, "): ", ec.message())));
          return;
        }
        self->OnTcpConnected(conn);
      });
}

void PeerLink::OnTcpConnected(std::shared_ptr<Conn> conn) {
  error_code ignored;
  conn->stream.socket().set_option(tcp::no_delay(true), ignored);
  if (!conn->stream.is_tls()) {
    OnConnected(std::move(conn));
    return;
  }
  // TLS first; its handshake counts against the connect deadline like the peer handshake.
  Async([&](auto handler) { conn->stream.AsyncHandshake(std::move(handler)); },
        [self = shared_from_this(), conn](error_code ec) {
          if (ec) {
            const bool closed = ClosedByPeer(ec);
            self->Fail(conn,
                       absl::UnavailableError(absl::StrCat(
                           "TLS handshake with peer ", self->options_.member_id, " (",
                           self->options_.address, ") failed: ",
                           closed ? "closed by the peer (does it use peer TLS?)" : ec.message(),
                           "; ", kTlsHint)));
            return;
          }
          self->OnConnected(conn);
        });
}

void PeerLink::OnConnected(std::shared_ptr<Conn> conn) {
  conn->handshake = std::make_unique<ClientHandshake>(
      options_.key, options_.self_id, options_.member_id, options_.protocol_version);
  auto hello = std::make_shared<std::string>();
  (void)AppendFrame(FrameType::kHello, 0, conn->handshake->Hello(), hello.get());
  {
    absl::MutexLock lock(&mu_);
    if (conn != conn_ || state_ != State::kConnecting) {
      return;
    }
    state_ = State::kHandshake;
    writing_ = true;
    writing_bytes_ = hello->size();
  }
  Async(
      [&](auto handler) {
        asio::async_write(conn->stream, asio::buffer(*hello), std::move(handler));
      },
      [self = shared_from_this(), conn, hello](error_code ec, size_t) { self->Written(conn, ec); });
  Read(conn);
}

void PeerLink::Read(std::shared_ptr<Conn> conn) {
  Async(
      [&](auto handler) {
        conn->stream.async_read_some(asio::buffer(conn->read_buffer), std::move(handler));
      },
      [self = shared_from_this(), conn](error_code ec, size_t bytes) {
        if (ec) {
          bool in_handshake = false;
          {
            absl::MutexLock lock(&self->mu_);
            in_handshake = conn == self->conn_ && self->state_ == State::kHandshake;
          }
          self->Fail(conn, absl::UnavailableError(absl::StrCat(
                               "connection to peer ", self->options_.member_id, " (",
                               self->options_.address, ") lost: ", WhyLost(ec, in_handshake))));
          return;
        }
        self->OnRead(conn, bytes);
      });
}

void PeerLink::OnRead(std::shared_ptr<Conn> conn, size_t bytes) {
  conn->decoder.Feed(std::string_view(conn->read_buffer.data(), bytes));
  std::vector<std::pair<Pending, Frame>> answered;
  while (true) {
    Frame frame;
    bool got = false;
    if (absl::Status status = conn->decoder.Next(&frame, &got); !status.ok()) {
      Fail(conn, absl::UnavailableError(
                     absl::StrCat("peer ", options_.member_id, ": ", status.message())));
      return;
    }
    if (!got) {
      break;
    }
    absl::Status handshake_failed;
    {
      absl::MutexLock lock(&mu_);
      if (conn != conn_) {
        return;
      }
      if (state_ == State::kHandshake) {
        peer::v1::Challenge challenge;
        AuthError error{AuthFailure::kMalformed, "expected a challenge"};
        absl::StatusOr<peer::v1::Auth> auth = absl::PermissionDeniedError(error.message);
        if (frame.type == FrameType::kChallenge &&
            challenge.ParseFromArray(frame.payload.data(),
                                     static_cast<int>(frame.payload.size()))) {
          auth = conn->handshake->OnChallenge(challenge, &error);
        }
        if (auth.ok()) {
          // Authenticated: the Auth frame goes first, then every call queued meanwhile.
          std::string first;
          (void)AppendFrame(FrameType::kAuth, 0, *auth, &first);
          out_.insert(0, first);
          state_ = State::kReady;
          backoff_ = options_.min_backoff;
          if (!writing_) {
            WriteLocked(conn);
          }
          continue;
        }
        if (options_.auth != nullptr) {
          options_.auth->Count(error.reason);
        }
        handshake_failed = absl::UnavailableError(
            absl::StrCat("peer handshake with ", options_.member_id, " failed: ", error.message));
      } else if (state_ == State::kReady) {
        auto it = pending_.find(frame.call_id);
        if (it != pending_.end()) {  // else answered after it was given up on
          answered.emplace_back(std::move(it->second), frame);
          pending_.erase(it);
        }
        continue;
      } else {
        continue;
      }
    }
    Fail(conn, std::move(handshake_failed));
    return;
  }
  // Answers run without the lock: they may queue new calls on this link.
  for (auto& [pending, frame] : answered) {
    std::move(pending.on_answer)(absl::OkStatus(), frame);
  }
  Read(std::move(conn));
}

void PeerLink::Flush() {
  absl::MutexLock lock(&mu_);
  flush_posted_ = false;
  if (state_ != State::kReady || writing_ || out_.empty()) {
    return;
  }
  WriteLocked(conn_);
}

void PeerLink::WriteLocked(const std::shared_ptr<Conn>& conn) {
  auto buffer = std::make_shared<std::string>();
  buffer->swap(out_);
  if (out_forwards_ > 0) {
    forward_writes_.fetch_add(1, std::memory_order_relaxed);
    out_forwards_ = 0;
  }
  writing_ = true;
  writing_bytes_ = buffer->size();
  Async(
      [&](auto handler) {
        asio::async_write(conn->stream, asio::buffer(*buffer), std::move(handler));
      },
      [self = shared_from_this(), conn, buffer](error_code ec, size_t) {
        self->Written(conn, ec);
      });
}

void PeerLink::Written(const std::shared_ptr<Conn>& conn, error_code ec) {
  if (ec) {
    Fail(conn, absl::UnavailableError(absl::StrCat("connection to peer ", options_.member_id,
                                                   " lost: ", ec.message())));
    return;
  }
  absl::MutexLock lock(&mu_);
  if (conn != conn_) {
    return;
  }
  writing_ = false;
  writing_bytes_ = 0;
  // Everything queued while this write was out leaves in the next one (once the handshake is
  // done: the Hello's write ends before it).
  if (state_ == State::kReady && !out_.empty()) {
    WriteLocked(conn);
  }
}

void PeerLink::Fail(const std::shared_ptr<Conn>& conn, absl::Status status, bool count_log) {
  std::vector<Pending> failed;
  {
    absl::MutexLock lock(&mu_);
    if (conn != conn_ || state_ == State::kClosed) {
      return;  // a connection already replaced, or a closed link
    }
    const absl::Time now = absl::Now();
    for (auto& [id, pending] : pending_) {
      failed.push_back(std::move(pending));
    }
    pending_.clear();
    out_.clear();
    out_forwards_ = 0;
    writing_ = false;
    writing_bytes_ = 0;
    if (conn_ != nullptr) {
      error_code ignored;
      conn_->stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
      conn_->stream.socket().close(ignored);
      conn_.reset();
    }
    state_ = State::kBackoff;
    backoff_until_ = now + backoff_;
    backoff_ = std::min(backoff_ * 2, options_.max_backoff);
  }
  if (count_log) {
    common::RateLimitedLog::Default().Log(common::LogLevel::kWarn, "peer_link_failed",
                                          {{"error", status.message()}});
  }
  const absl::Time now = absl::Now();
  for (Pending& pending : failed) {
    absl::Status own = status;
    if (status.code() == absl::StatusCode::kDeadlineExceeded && now < pending.deadline) {
      own = absl::UnavailableError(status.message());  // not this call's own timeout
    }
    std::move(pending.on_answer)(std::move(own), Frame{});
  }
}

}  // namespace floodgate::cluster
