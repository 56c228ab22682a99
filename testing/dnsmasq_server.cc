#include "testing/dnsmasq_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "testing/server_process.h"

extern char** environ;

namespace floodgate::testing {
namespace {

constexpr char kDnsmasq[] = "/usr/sbin/dnsmasq";

int MillisecondsUntil(std::chrono::steady_clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

// Returns a UDP port free on 127.0.0.1 now (dnsmasq may still lose it to a race: Start retries).
absl::StatusOr<int> FreeUdpPort() {
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  const bool ok = fd >= 0 &&
                  bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
                  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0;
  if (fd >= 0) {
    close(fd);
  }
  if (!ok) {
    return absl::InternalError(absl::StrCat("cannot find a free UDP port: ", strerror(errno)));
  }
  return ntohs(address.sin_port);
}

// Returns a DNS query (id 0x4647, recursion desired) for the A records of "ready.invalid".
std::string ReadinessQuery() {
  std::string query = {'\x46', '\x47', '\x01', '\x00', '\x00', '\x01',
                       '\x00', '\x00', '\x00', '\x00', '\x00', '\x00'};
  for (const std::string_view label : {"ready", "invalid"}) {
    query += static_cast<char>(label.size());
    query += label;
  }
  query += std::string{'\x00', '\x00', '\x01', '\x00', '\x01'};  // root, type A, class IN
  return query;
}

// Counts the lines in which dnsmasq says it read `path` ("read PATH - N names").
int CountReads(const std::string& log, const std::string& path) {
  const std::string needle = absl::StrCat("read ", path, " - ");
  int count = 0;
  for (size_t at = log.find(needle); at != std::string::npos; at = log.find(needle, at + 1)) {
    ++count;
  }
  return count;
}

}  // namespace

absl::StatusOr<std::unique_ptr<DnsmasqServer>> DnsmasqServer::Start(const Records& records) {
  std::unique_ptr<DnsmasqServer> server(new DnsmasqServer());
  server->dir_ = MakeTempDir();
  if (server->dir_.empty()) {
    return absl::InternalError("cannot make a temporary folder for dnsmasq");
  }
  server->hosts_path_ = server->dir_ + "/hosts";
  if (absl::Status written = server->WriteRecords(records); !written.ok()) {
    return written;
  }
  // A free port can be taken between our check and dnsmasq's bind (its TCP side too): try again.
  absl::Status launched;
  for (int attempt = 0; attempt < 5; ++attempt) {
    absl::StatusOr<int> port = FreeUdpPort();
    if (!port.ok()) {
      return port.status();
    }
    server->port_ = *port;
    launched = server->Launch();
    if (launched.ok()) {
      return server;
    }
  }
  return launched;
}

DnsmasqServer::~DnsmasqServer() {
  Kill();
  if (!dir_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
}

std::string DnsmasqServer::address() const { return absl::StrCat("127.0.0.1:", port_); }

absl::Status DnsmasqServer::Launch() {
  std::vector<std::string> argv = {kDnsmasq,
                                   "--no-daemon",
                                   absl::StrCat("--port=", port_),
                                   "--listen-address=127.0.0.1",
                                   "--bind-interfaces",
                                   "--no-resolv",
                                   "--no-hosts",
                                   absl::StrCat("--addn-hosts=", hosts_path_),
                                   "--local=/#/",  // every name answered here: NXDOMAIN, NODATA
                                   "--user=root",  // no privilege drop (the test may be root)
                                   "--pid-file=",
                                   "--log-facility=-"};  // stderr, read by AwaitReads
  std::vector<char*> cargv;
  for (std::string& arg : argv) {
    cargv.push_back(arg.data());
  }
  cargv.push_back(nullptr);

  int log_pipe[2];
  if (pipe2(log_pipe, O_CLOEXEC) != 0) {
    return absl::InternalError("pipe failed");
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, log_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&actions, log_pipe[1], 2);
  const int rc = posix_spawn(&pid_, kDnsmasq, &actions, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(log_pipe[1]);
  if (rc != 0) {
    close(log_pipe[0]);
    pid_ = -1;
    return absl::InternalError(absl::StrCat("cannot start ", kDnsmasq, ": ", strerror(rc)));
  }
  log_fd_ = log_pipe[0];
  log_.clear();
  absl::Status ready = AwaitAnswer(10000);
  if (ready.ok()) {
    ready = AwaitReads(1, 10000);
  }
  if (!ready.ok()) {
    Kill();
    return absl::InternalError(absl::StrCat(
        "dnsmasq on port ", port_, " did not start: ", ready.message(), "; its log:\n", log_));
  }
  return absl::OkStatus();
}

absl::Status DnsmasqServer::WriteRecords(const Records& records) {
  // Written aside and renamed, so that dnsmasq never reads half a file.
  const std::string temporary = hosts_path_ + ".new";
  {
    std::ofstream out(temporary, std::ios::trunc);
    for (const auto& [name, addresses] : records) {
      for (const std::string& address : addresses) {
        out << address << ' ' << name << '\n';
      }
    }
    if (!out) {
      return absl::InternalError(absl::StrCat("cannot write ", temporary));
    }
  }
  if (rename(temporary.c_str(), hosts_path_.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot rename ", temporary, ": ", strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status DnsmasqServer::SetRecords(const Records& records) {
  if (absl::Status written = WriteRecords(records); !written.ok()) {
    return written;
  }
  if (pid_ <= 0) {
    return absl::OkStatus();  // read by the next Restart
  }
  const int reads = CountReads(log_, hosts_path_);
  Signal(SIGHUP);
  return AwaitReads(reads + 1, 10000);
}

absl::Status DnsmasqServer::AwaitReads(int reads, int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (CountReads(log_, hosts_path_) < reads) {
    pollfd pfd{log_fd_, POLLIN, 0};
    const int left = MillisecondsUntil(deadline);
    if (left == 0 || poll(&pfd, 1, left) <= 0) {
      return absl::DeadlineExceededError(
          absl::StrCat("dnsmasq did not log reading ", hosts_path_, " within ", timeout_ms, " ms"));
    }
    char buffer[4096];
    const ssize_t n = read(log_fd_, buffer, sizeof(buffer));
    if (n <= 0) {
      return absl::UnavailableError("dnsmasq exited");
    }
    log_.append(buffer, static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::Status DnsmasqServer::AwaitAnswer(int timeout_ms) {
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return absl::InternalError("socket failed");
  }
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port_));
  const std::string query = ReadinessQuery();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  absl::Status status = absl::DeadlineExceededError(
      absl::StrCat("no answer to a DNS query within ", timeout_ms, " ms"));
  // Ask, wait up to 50 ms for the answer, ask again: dnsmasq binds its port a moment after it
  // starts, and a query sent before that is lost (or refused).
  while (MillisecondsUntil(deadline) > 0) {
    int exit_status = 0;
    if (waitpid(pid_, &exit_status, WNOHANG) == pid_) {
      pid_ = -1;
      status = absl::UnavailableError(absl::StrCat("dnsmasq exited (status ", exit_status, ")"));
      break;
    }
    sendto(fd, query.data(), query.size(), 0, reinterpret_cast<sockaddr*>(&address),
           sizeof(address));
    pollfd pfd{fd, POLLIN, 0};
    if (poll(&pfd, 1, std::min(50, MillisecondsUntil(deadline))) > 0) {
      char answer[512];
      const ssize_t n = recv(fd, answer, sizeof(answer), 0);
      if (n >= 2 && answer[0] == query[0] && answer[1] == query[1]) {
        status = absl::OkStatus();
        break;
      }
    }
  }
  close(fd);
  return status;
}

void DnsmasqServer::Signal(int signal) {
  if (pid_ > 0) {
    kill(pid_, signal);
  }
}

void DnsmasqServer::Stop() {
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  if (log_fd_ >= 0) {
    close(log_fd_);
    log_fd_ = -1;
  }
}

void DnsmasqServer::Kill() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  if (log_fd_ >= 0) {
    close(log_fd_);
    log_fd_ = -1;
  }
}

absl::Status DnsmasqServer::Restart() {
  Stop();
  return Launch();
}

}  // namespace floodgate::testing
