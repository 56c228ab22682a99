#include "testing/peer_client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace floodgate::testing {

namespace pb = ::floodgate::peer::v1;
using cluster::FrameType;

namespace {

// Waits until `fd` is ready for `events` or `deadline` passes; false on timeout.
bool WaitReady(int fd, short events, absl::Time deadline) {
  while (true) {
    const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (ms < 0) {
      return false;
    }
    pollfd p{fd, events, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(ms));
    if (ready > 0) {
      return true;
    }
    if (ready < 0 && errno != EINTR) {
      return false;
    }
    if (ready == 0 && ms == 0) {
      return false;
    }
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<PeerClient>> PeerClient::Connect(const std::string& host, int port,
                                                                absl::Duration timeout) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("not an IPv4 address: ", host));
  }
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("socket: ", strerror(errno)));
  }
  std::unique_ptr<PeerClient> client(new PeerClient(fd));
  const absl::Time deadline = absl::Now() + timeout;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (errno != EINPROGRESS) {
      return absl::UnavailableError(
          absl::StrCat("connect ", host, ":", port, ": ", strerror(errno)));
    }
    if (!WaitReady(fd, POLLOUT, deadline)) {
      return absl::UnavailableError(absl::StrCat("connect ", host, ":", port, ": timed out"));
    }
    int error = 0;
    socklen_t size = sizeof(error);
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size);
    if (error != 0) {
      return absl::UnavailableError(
          absl::StrCat("connect ", host, ":", port, ": ", strerror(error)));
    }
  }
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return client;
}

std::unique_ptr<PeerClient> PeerClient::Adopt(int fd) {
  return std::unique_ptr<PeerClient>(new PeerClient(fd));
}

PeerClient::~PeerClient() { ::close(fd_); }

absl::Status PeerClient::SendBytes(const std::string& bytes) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      if (!WaitReady(fd_, POLLOUT, deadline)) {
        return absl::DeadlineExceededError("send timed out");
      }
      continue;
    }
    return absl::UnavailableError(absl::StrCat("send: ", strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status PeerClient::Send(FrameType type, uint64_t call_id,
                              const google::protobuf::MessageLite& message) {
  std::string frame;
  if (absl::Status status = cluster::AppendFrame(type, call_id, message, &frame); !status.ok()) {
    return status;
  }
  return SendBytes(frame);
}

absl::StatusOr<PeerAnswer> PeerClient::Read(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  char buffer[16 * 1024];
  while (true) {
    cluster::Frame frame;
    bool got = false;
    if (absl::Status status = decoder_.Next(&frame, &got); !status.ok()) {
      return status;
    }
    if (got) {
      return PeerAnswer{frame.type, frame.call_id, std::string(frame.payload)};
    }
    if (!WaitReady(fd_, POLLIN, deadline)) {
      return absl::DeadlineExceededError("no frame from the node in time");
    }
    const ssize_t n = ::recv(fd_, buffer, sizeof(buffer), 0);
    if (n == 0) {
      return absl::UnavailableError("connection closed by the node");
    }
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        continue;
      }
      return absl::UnavailableError(absl::StrCat("recv: ", strerror(errno)));
    }
    decoder_.Feed(std::string_view(buffer, static_cast<size_t>(n)));
  }
}

absl::StatusOr<PeerAnswer> PeerClient::Call(FrameType type,
                                            const google::protobuf::MessageLite& request,
                                            absl::Duration timeout) {
  const uint64_t id = next_call_id_++;
  if (absl::Status status = Send(type, id, request); !status.ok()) {
    return status;
  }
  absl::StatusOr<PeerAnswer> answer = Read(timeout);
  if (answer.ok() && answer->call_id != id) {
    return absl::InternalError(
        absl::StrCat("answer carries call id ", answer->call_id, ", expected ", id));
  }
  return answer;
}

bool PeerClient::ClosedByPeer(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    absl::StatusOr<PeerAnswer> answer = Read(deadline - absl::Now());
    if (!answer.ok()) {
      return absl::IsUnavailable(answer.status());
    }
  }
}

absl::Status PeerClient::SendHello(const PeerIdentity& who) {
  pb::Hello hello;
  hello.set_protocol_version(who.version);
  hello.set_node_id(who.self_id);
  hello.set_nonce(cluster::RandomNonce());
  return Send(FrameType::kHello, 0, hello);
}

absl::Status PeerClient::Handshake(const PeerIdentity& who) {
  cluster::ClientHandshake handshake(who.key, who.self_id, who.server_id, who.version);
  if (absl::Status sent = Send(FrameType::kHello, 0, handshake.Hello()); !sent.ok()) {
    return sent;
  }
  absl::StatusOr<PeerAnswer> answer = Read();
  if (!answer.ok()) {
    return answer.status();
  }
  pb::Challenge challenge;
  if (answer->type != FrameType::kChallenge || !answer->ParseTo(&challenge)) {
    return absl::InternalError(
        absl::StrCat("expected a challenge, got a ",
                     cluster::FrameTypeName(static_cast<uint8_t>(answer->type)), " frame"));
  }
  cluster::AuthError error{cluster::AuthFailure::kMalformed, ""};
  absl::StatusOr<pb::Auth> auth = handshake.OnChallenge(challenge, &error);
  if (!auth.ok()) {
    return auth.status();
  }
  return Send(FrameType::kAuth, 0, *auth);
}

absl::StatusOr<pb::Challenge> PeerClient::HandshakeUnchecked(const PeerIdentity& who) {
  const std::string nonce = cluster::RandomNonce();
  pb::Hello hello;
  hello.set_protocol_version(who.version);
  hello.set_node_id(who.self_id);
  hello.set_nonce(nonce);
  if (absl::Status sent = Send(FrameType::kHello, 0, hello); !sent.ok()) {
    return sent;
  }
  absl::StatusOr<PeerAnswer> answer = Read();
  if (!answer.ok()) {
    return answer.status();
  }
  pb::Challenge challenge;
  if (answer->type != FrameType::kChallenge || !answer->ParseTo(&challenge)) {
    return absl::InternalError("expected a challenge");
  }
  pb::Auth auth;
  auth.set_proof(cluster::HandshakeProof(who.key, "client", nonce, challenge.nonce(), who.self_id,
                                         challenge.node_id(), who.version));
  if (absl::Status sent = Send(FrameType::kAuth, 0, auth); !sent.ok()) {
    return sent;
  }
  return challenge;
}

}  // namespace floodgate::testing
