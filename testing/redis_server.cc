#include "testing/redis_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

extern char** environ;

namespace floodgate::testing {
namespace {

constexpr char kRedisBinary[] = "/usr/bin/redis-server";
constexpr char kRedisCli[] = "/usr/bin/redis-cli";

// Returns `count` distinct free ports on 127.0.0.1 (all held until all are picked).
absl::Status PickPorts(int count, std::vector<int>& ports) {
  std::vector<int> fds;
  absl::Status status;
  ports.clear();
  for (int i = 0; i < count && status.ok(); ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    if (fd >= 0) {
      fds.push_back(fd);
    }
    if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      status = absl::InternalError(absl::StrCat("cannot reserve a port: ", strerror(errno)));
    } else {
      ports.push_back(ntohs(address.sin_port));
    }
  }
  for (int fd : fds) {
    close(fd);
  }
  return status;
}

// Connects to 127.0.0.1:port, sends PING and waits (at most `timeout_ms`) for a line back.
bool AnswersPing(int port, int timeout_ms) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return false;
  }
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  bool answered = false;
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
      send(fd, "PING\r\n", 6, MSG_NOSIGNAL) == 6) {
    pollfd poll_fd{fd, POLLIN, 0};
    char buffer[64];
    if (poll(&poll_fd, 1, timeout_ms) == 1) {
      const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
      // +PONG, or an error such as -NOAUTH or -LOADING... from a server that serves.
      answered = n > 0 && (buffer[0] == '+' ||
                           (buffer[0] == '-' && n > 8 && std::string(buffer, 8) != "-LOADING"));
    }
  }
  close(fd);
  return answered;
}

}  // namespace

absl::StatusOr<std::unique_ptr<RedisServer>> RedisServer::Start(RedisServerOptions options) {
  if (access(kRedisBinary, X_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(kRedisBinary, " not found: install Debian's redis-server"));
  }
  std::unique_ptr<RedisServer> server(new RedisServer(std::move(options)));
  char pattern[] = "/tmp/floodgate-redis-XXXXXX";
  if (mkdtemp(pattern) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp: ", strerror(errno)));
  }
  server->dir_ = pattern;
  const bool tls = !server->options_.tls_cert_file.empty();
  // A port picked free may be taken before the server binds it; then it exits: try anew.
  absl::Status status;
  for (int attempt = 0; attempt < 3; ++attempt) {
    std::vector<int> ports;
    status = PickPorts(tls ? 2 : 1, ports);
    if (status.ok()) {
      server->port_ = ports[0];
      server->tls_port_ = tls ? ports[1] : 0;
      status = server->Spawn();
    }
    if (status.ok()) {
      status = server->WaitReady();
    }
    if (status.ok()) {
      return server;
    }
    server->Kill();
  }
  return status;
}

RedisServer::~RedisServer() {
  Kill();
  if (!dir_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
}

std::string RedisServer::address() const { return absl::StrCat("127.0.0.1:", port_); }

absl::Status RedisServer::Spawn() {
  std::vector<std::string> argv = {kRedisBinary};
  if (!options_.config_text.empty() || options_.sentinel) {
    const std::string config = dir_ + "/redis.conf";
    // Sentinel rewrites its file: write it only once, so a restart keeps what it learnt.
    if (!std::filesystem::exists(config)) {
      std::ofstream(config) << options_.config_text << "\n";
    }
    argv.push_back(config);
  }
  for (const char* arg : {"--port", "--bind", "--dir", "--logfile", "--daemonize"}) {
    argv.push_back(arg);
    if (std::string(arg) == "--port") {
      argv.push_back(std::to_string(port_));
    } else if (std::string(arg) == "--bind") {
      argv.push_back("127.0.0.1");
    } else if (std::string(arg) == "--dir") {
      argv.push_back(dir_);
    } else if (std::string(arg) == "--logfile") {
      argv.push_back(dir_ + "/redis.log");
    } else {
      argv.push_back("no");
    }
  }
  if (!options_.sentinel) {
    argv.insert(argv.end(), {"--save", "", "--appendonly", "no"});
  }
  if (tls_port_ != 0) {
    argv.insert(argv.end(),
                {"--tls-port", std::to_string(tls_port_), "--tls-cert-file", options_.tls_cert_file,
                 "--tls-key-file", options_.tls_key_file, "--tls-ca-cert-file",
                 options_.tls_ca_file, "--tls-auth-clients", "no"});
  }
  argv.insert(argv.end(), options_.args.begin(), options_.args.end());
  if (options_.sentinel) {
    argv.push_back("--sentinel");
  }
  std::vector<char*> cargv;
  for (std::string& a : argv) {
    cargv.push_back(a.data());
  }
  cargv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  const std::string errors = dir_ + "/stderr.log";
  posix_spawn_file_actions_addopen(&actions, 2, errors.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                   0644);
  const int rc = posix_spawn(&pid_, kRedisBinary, &actions, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    pid_ = -1;
    return absl::InternalError(absl::StrCat("cannot start ", kRedisBinary, ": ", strerror(rc)));
  }
  paused_ = false;
  return absl::OkStatus();
}

absl::Status RedisServer::WaitReady() {
  const auto deadline = std::chrono::steady_clock::now() + options_.timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int wait_status = 0;
    if (waitpid(pid_, &wait_status, WNOHANG) == pid_) {
      pid_ = -1;
      return absl::InternalError(absl::StrCat("redis-server exited before answering: ", Log()));
    }
    // Each try waits up to 50 ms for an answer; a refused connection returns at once, so the
    // loop also waits on poll() below rather than spinning.
    if (AnswersPing(port_, 50)) {
      return absl::OkStatus();
    }
    poll(nullptr, 0, 10);  // polling another process's readiness, not synchronising
  }
  return absl::DeadlineExceededError(absl::StrCat("redis-server on port ", port_,
                                                  " did not answer PING within ",
                                                  options_.timeout.count(), " ms: ", Log()));
}

void RedisServer::Signal(int signal) {
  if (pid_ <= 0) {
    return;
  }
  kill(pid_, signal);
  if (paused_) {
    kill(pid_, SIGCONT);  // a stopped process handles SIGTERM only once continued
    paused_ = false;
  }
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

void RedisServer::Stop() { Signal(SIGTERM); }

void RedisServer::Kill() { Signal(SIGKILL); }

absl::Status RedisServer::Restart() {
  Stop();
  absl::Status spawned = Spawn();
  if (!spawned.ok()) {
    return spawned;
  }
  return WaitReady();
}

void RedisServer::Pause() {
  if (pid_ > 0 && !paused_) {
    kill(pid_, SIGSTOP);
    paused_ = true;
  }
}

void RedisServer::Resume() {
  if (pid_ > 0 && paused_) {
    kill(pid_, SIGCONT);
    paused_ = false;
  }
}

absl::StatusOr<std::string> RedisServer::Cli(const std::vector<std::string>& command,
                                             const std::string& password,
                                             const std::string& user) const {
  std::string line = absl::StrCat(kRedisCli, " -h 127.0.0.1 -p ", port_, " --no-auth-warning");
  if (!user.empty()) {
    absl::StrAppend(&line, " --user '", user, "'");
  }
  if (!password.empty()) {
    absl::StrAppend(&line, " -a '", password, "'");
  }
  for (const std::string& arg : command) {
    absl::StrAppend(&line, " '", arg, "'");  // test arguments: no quotes inside
  }
  absl::StrAppend(&line, " 2>&1");
  FILE* pipe = popen(line.c_str(), "r");
  if (pipe == nullptr) {
    return absl::InternalError(absl::StrCat("cannot run redis-cli: ", strerror(errno)));
  }
  std::string output;
  char buffer[4096];
  size_t n = 0;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) {
    output.append(buffer, n);
  }
  const int rc = pclose(pipe);
  if (rc != 0) {
    return absl::InternalError(absl::StrCat("redis-cli failed (", rc, "): ", output));
  }
  return output;
}

std::string RedisServer::Log() const {
  std::stringstream text;
  for (const char* name : {"/redis.log", "/stderr.log"}) {
    std::ifstream in(dir_ + name);
    text << in.rdbuf();
  }
  return text.str();
}

}  // namespace floodgate::testing
