#include "testing/etcd_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "etcd/etcdserverpb/rpc.grpc.pb.h"

extern char** environ;

namespace floodgate::testing {
namespace {

constexpr char kEtcdBinary[] = "/usr/bin/etcd";

// Returns two distinct free ports on 127.0.0.1 (both held until both are picked).
absl::Status PickTwoPorts(int& first, int& second) {
  int fds[2] = {-1, -1};
  int ports[2] = {0, 0};
  absl::Status status;
  for (int i = 0; i < 2 && status.ok(); ++i) {
    fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    if (fds[i] < 0 || bind(fds[i], reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
        getsockname(fds[i], reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      status = absl::InternalError(absl::StrCat("cannot reserve a port: ", strerror(errno)));
    } else {
      ports[i] = ntohs(address.sin_port);
    }
  }
  for (int fd : fds) {
    if (fd >= 0) {
      close(fd);
    }
  }
  first = ports[0];
  second = ports[1];
  return status;
}

}  // namespace

absl::StatusOr<std::unique_ptr<EtcdServer>> EtcdServer::Start(std::chrono::milliseconds timeout) {
  if (access(kEtcdBinary, X_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(kEtcdBinary, " not found: install Debian's etcd-server (make deps)"));
  }
  std::unique_ptr<EtcdServer> server(new EtcdServer());
  char pattern[] = "/tmp/floodgate-etcd-XXXXXX";
  if (mkdtemp(pattern) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp: ", strerror(errno)));
  }
  server->dir_ = pattern;
  // A port picked free may be taken again before etcd binds it; then etcd exits: try anew.
  absl::Status status;
  for (int attempt = 0; attempt < 3; ++attempt) {
    status = PickTwoPorts(server->client_port_, server->peer_port_);
    if (status.ok()) {
      status = server->Spawn();
    }
    if (status.ok()) {
      status = server->WaitReady(timeout);
    }
    if (status.ok()) {
      return server;
    }
    server->Kill();
    std::error_code ignored;
    std::filesystem::remove_all(server->dir_ + "/data", ignored);
  }
  return status;
}

EtcdServer::~EtcdServer() {
  Kill();
  if (!dir_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
}

std::string EtcdServer::endpoint() const { return absl::StrCat("http://127.0.0.1:", client_port_); }

absl::Status EtcdServer::Spawn() {
  const std::string client_url = endpoint();
  const std::string peer_url = absl::StrCat("http://127.0.0.1:", peer_port_);
  std::vector<std::string> argv = {
      kEtcdBinary,
      "--name=fg-test",
      absl::StrCat("--data-dir=", dir_, "/data"),
      absl::StrCat("--listen-client-urls=", client_url),
      absl::StrCat("--advertise-client-urls=", client_url),
      absl::StrCat("--listen-peer-urls=", peer_url),
      absl::StrCat("--initial-advertise-peer-urls=", peer_url),
      absl::StrCat("--initial-cluster=fg-test=", peer_url),
      "--initial-cluster-state=new",
      // One member: it elects itself after one election timeout; keep that short.
      "--heartbeat-interval=10",
      "--election-timeout=100",
      "--logger=zap",
      "--log-level=error",
      "--log-outputs=stderr",
  };
  std::vector<char*> cargv;
  for (std::string& a : argv) {
    cargv.push_back(a.data());
  }
  cargv.push_back(nullptr);
  const std::string log_path = dir_ + "/etcd.log";
  const int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    return absl::InternalError(absl::StrCat("cannot open ", log_path, ": ", strerror(errno)));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, log_fd, 2);
  const int rc = posix_spawn(&pid_, kEtcdBinary, &actions, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(log_fd);
  if (rc != 0) {
    pid_ = -1;
    return absl::InternalError(absl::StrCat("cannot start ", kEtcdBinary, ": ", strerror(rc)));
  }
  return absl::OkStatus();
}

absl::Status EtcdServer::WaitReady(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::system_clock::now() + timeout;
  grpc::Status last;
  while (std::chrono::system_clock::now() < deadline) {
    int wait_status = 0;
    if (waitpid(pid_, &wait_status, WNOHANG) == pid_) {
      pid_ = -1;
      return absl::InternalError(absl::StrCat("etcd exited before answering: ", Log()));
    }
    // Each try makes a new connection and waits for it (wait_for_ready) for at most 200 ms, so
    // a dead child is noticed promptly. A new one each time: a connection etcd accepted before
    // it serves is never answered. etcd answers a Range only once it has a leader.
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    auto channel = grpc::CreateCustomChannel(absl::StrCat("ipv4:127.0.0.1:", client_port_),
                                             grpc::InsecureChannelCredentials(), args);
    auto kv = etcdserverpb::KV::NewStub(channel);
    grpc::ClientContext context;
    context.set_wait_for_ready(true);
    context.set_deadline(
        std::min(deadline, std::chrono::system_clock::now() + std::chrono::milliseconds(200)));
    etcdserverpb::RangeRequest request;
    request.set_key("/floodgate-test-ready");
    etcdserverpb::RangeResponse response;
    last = kv->Range(&context, request, &response);
    if (last.ok()) {
      return absl::OkStatus();
    }
  }
  return absl::DeadlineExceededError(absl::StrCat("etcd on port ", client_port_,
                                                  " did not answer within ", timeout.count(),
                                                  " ms (", last.error_message(), "): ", Log()));
}

void EtcdServer::Signal(int signal) {
  if (pid_ <= 0) {
    return;
  }
  kill(pid_, signal);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

void EtcdServer::Stop() { Signal(SIGTERM); }

void EtcdServer::Kill() { Signal(SIGKILL); }

absl::Status EtcdServer::Restart(std::chrono::milliseconds timeout) {
  Stop();
  absl::Status spawned = Spawn();
  if (!spawned.ok()) {
    return spawned;
  }
  return WaitReady(timeout);
}

std::string EtcdServer::Log() const {
  std::ifstream in(dir_ + "/etcd.log");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace floodgate::testing
