#include "testing/cluster_harness.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <sstream>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "testing/server_process.h"

namespace floodgate::testing {
namespace {

constexpr char kListening[] = "floodgate: listening ";

// Reserves `n` distinct free TCP ports on 127.0.0.1 (all held open until every one is picked).
absl::StatusOr<std::vector<int>> PickFreePorts(int n) {
  std::vector<int> fds, ports;
  absl::Status status;
  for (int i = 0; i < n && status.ok(); ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      status = absl::InternalError(absl::StrCat("cannot reserve a port: ", strerror(errno)));
    } else {
      ports.push_back(ntohs(address.sin_port));
    }
    if (fd >= 0) {
      fds.push_back(fd);
    }
  }
  for (const int fd : fds) {
    close(fd);
  }
  if (!status.ok()) {
    return status;
  }
  return ports;
}

// Writes `text` with write(2) only: usable between fork and exec.
void WriteRaw(int fd, const char* text) { (void)!write(fd, text, strlen(text)); }

}  // namespace

std::string ClusterNode::HttpAddress() const { return absl::StrCat(host, ":", http_port); }
std::string ClusterNode::GrpcAddress() const { return absl::StrCat(host, ":", grpc_port); }
std::string ClusterNode::PeerAddress() const { return absl::StrCat(host, ":", peer_port); }

// One node. `info` is written only during Start. Kill/Restart/Pause/Resume of a node hold
// `op_mu` for their whole run; `mu` guards what the stdout reader thread shares.
struct ClusterHarness::Node {
  ClusterNode info;
  std::string stderr_path;

  absl::Mutex op_mu;
  std::thread reader;  // the current run's stdout reader; started and joined under op_mu

  mutable absl::Mutex mu;
  pid_t pid ABSL_GUARDED_BY(mu) = -1;
  int runs ABSL_GUARDED_BY(mu) = 0;
  std::string stdout_text ABSL_GUARDED_BY(mu);  // all runs
  size_t run_start ABSL_GUARDED_BY(mu) = 0;     // where the current run's stdout begins
  bool stdout_closed ABSL_GUARDED_BY(mu) = true;

  // Returns whether the current run printed its listening line, or closed stdout.
  static bool ListeningOrClosed(Node* node) ABSL_EXCLUSIVE_LOCKS_REQUIRED(node->mu) {
    const size_t at = node->stdout_text.find(kListening, node->run_start);
    return node->stdout_closed ||
           (at != std::string::npos && node->stdout_text.find('\n', at) != std::string::npos);
  }
};

// Runs fork() on one long-lived thread. PR_SET_PDEATHSIG fires when the thread that forked
// exits, not the process; forking here, rather than on whatever thread calls Restart, means a
// node dies exactly when the harness (or the whole test process) does.
class ClusterHarness::Spawner {
 public:
  Spawner() : thread_([this] { Loop(); }) {}
  ~Spawner() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    thread_.join();
  }

  // Runs `fork_exec` on the spawner thread and returns its result.
  pid_t Run(std::function<pid_t()> fork_exec) {
    std::packaged_task<pid_t()> task(std::move(fork_exec));
    std::future<pid_t> result = task.get_future();
    {
      absl::MutexLock lock(&mu_);
      tasks_.push_back(std::move(task));
    }
    return result.get();
  }

 private:
  void Loop() {
    while (true) {
      std::packaged_task<pid_t()> task;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](Spawner* s)
                 ABSL_SHARED_LOCKS_REQUIRED(s->mu_) { return s->stop_ || !s->tasks_.empty(); },
            this));
        if (tasks_.empty()) {
          return;
        }
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
    }
  }

  absl::Mutex mu_;
  std::deque<std::packaged_task<pid_t()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // last, so that it starts after the fields it uses
};

ClusterHarness::ClusterHarness() = default;

absl::StatusOr<std::unique_ptr<ClusterHarness>> ClusterHarness::Start(
    int n, const std::string& config_dir, std::vector<std::string> extra_args,
    ClusterOptions options) {
  if (n < 1 || n > 250) {
    return absl::InvalidArgumentError("a cluster has 1 to 250 nodes");
  }
  std::unique_ptr<ClusterHarness> h(new ClusterHarness());
  h->options_ = std::move(options);
  if (h->options_.binary.empty()) {
    h->options_.binary = FloodgateBinary();
  }
  h->config_dir_ = config_dir;
  h->extra_args_ = std::move(extra_args);
  if (h->options_.log_dir.empty()) {
    h->log_dir_ = MakeTempDir();
    h->remove_log_dir_ = true;
  } else {
    h->log_dir_ = h->options_.log_dir;
    std::error_code ignored;
    std::filesystem::create_directories(h->log_dir_, ignored);
  }
  if (h->log_dir_.empty()) {
    return absl::InternalError("cannot create a log directory");
  }

  if (h->options_.network_namespaces) {
    (void)RemoveStaleNamespaces();  // best effort; Create reports real problems
    absl::StatusOr<std::unique_ptr<NetnsNetwork>> network = NetnsNetwork::Create(n);
    if (network.ok()) {
      h->network_ = *std::move(network);
    } else {
      h->network_error_ = std::string(network.status().message());
    }
  }
  absl::StatusOr<std::vector<int>> peer_ports = PickFreePorts(n);
  if (!peer_ports.ok()) {
    return peer_ports.status();
  }
  h->spawner_ = std::make_unique<Spawner>();
  for (int i = 0; i < n; ++i) {
    auto node = std::make_unique<Node>();
    node->info.id = absl::StrCat("n", i);
    node->info.host = h->isolated() ? h->network_->Address(i) : "127.0.0.1";
    node->info.netns = h->isolated() ? h->network_->Namespace(i) : "";
    node->info.peer_port = (*peer_ports)[i];
    node->stderr_path = absl::StrCat(h->log_dir_, "/node-", i, ".stderr");
    h->nodes_.push_back(std::move(node));
  }
  // Spawn all, then await all: a node may wait for its peers before it serves.
  for (int i = 0; i < n; ++i) {
    absl::MutexLock lock(&h->nodes_[i]->op_mu);
    if (absl::Status s = h->Spawn(i); !s.ok()) {
      return s;
    }
  }
  for (int i = 0; i < n; ++i) {
    absl::MutexLock lock(&h->nodes_[i]->op_mu);
    if (absl::Status s = h->AwaitListening(i); !s.ok()) {
      return s;
    }
  }
  return h;
}

ClusterHarness::~ClusterHarness() {
  for (auto& node : nodes_) {
    absl::MutexLock lock(&node->op_mu);
    pid_t pid;
    {
      absl::MutexLock state(&node->mu);
      pid = node->pid;
    }
    if (pid > 0) {
      kill(pid, SIGKILL);
    }
  }
  for (int i = 0; i < size(); ++i) {
    absl::MutexLock lock(&nodes_[i]->op_mu);
    (void)Reap(i, absl::Seconds(10));
  }
  spawner_.reset();
  network_.reset();
  if (remove_log_dir_) {
    std::error_code ignored;
    std::filesystem::remove_all(log_dir_, ignored);
  }
}

const ClusterNode& ClusterHarness::node(int i) const { return nodes_.at(i)->info; }

bool ClusterHarness::running(int i) const { return pid(i) > 0; }

pid_t ClusterHarness::pid(int i) const {
  const Node& node = *nodes_.at(i);
  absl::MutexLock lock(&node.mu);
  return node.pid;
}

// Requires nodes_[i]->op_mu.
absl::Status ClusterHarness::Spawn(int i) {
  Node& node = *nodes_[i];
  const ClusterNode& info = node.info;
  std::vector<std::string> argv = {
      options_.binary, "serve",
      "--config",      options_.config_dirs.empty() ? config_dir_ : options_.config_dirs.at(i),
      "--http",        absl::StrCat(info.host, ":", info.http_port),
      "--grpc",        absl::StrCat(info.host, ":", info.grpc_port)};
  if (options_.cluster_flags) {
    std::vector<std::string> peers;
    for (const auto& other : nodes_) {
      peers.push_back(absl::StrCat(other->info.id, "=", other->info.PeerAddress()));
    }
    // Every member proves the cluster key on each peer connection (docs/cluster.md).
    argv.insert(argv.end(), {"--cluster-key", "cluster-harness-key", "--node-id", info.id, "--peer",
                             info.PeerAddress(), "--peers", absl::StrJoin(peers, ",")});
  }
  argv.insert(argv.end(), extra_args_.begin(), extra_args_.end());

  int runs;
  {
    absl::MutexLock lock(&node.mu);
    runs = ++node.runs;
  }
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", strerror(errno)));
  }
  const int err_fd =
      open(node.stderr_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  const int ns_fd = info.netns.empty() ? -1
                                       : open(absl::StrCat("/run/netns/", info.netns).c_str(),
                                              O_RDONLY | O_CLOEXEC);
  if (err_fd < 0 || (!info.netns.empty() && ns_fd < 0)) {
    const std::string error = strerror(errno);
    close(out[0]);
    close(out[1]);
    if (err_fd >= 0) close(err_fd);
    return absl::InternalError(
        absl::StrCat("node ", info.id, ": cannot open log or namespace: ", error));
  }
  const std::string header = absl::StrCat("=== cluster harness: run ", runs,
                                          info.netns.empty() ? "" : " in netns " + info.netns, ": ",
                                          absl::StrJoin(argv, " "), " ===\n");
  WriteRaw(err_fd, header.c_str());

  // Everything the child touches is prepared here: between fork and exec only async-signal-safe
  // calls are allowed (the test process has other threads).
  std::vector<char*> cargv;
  for (std::string& a : argv) {
    cargv.push_back(a.data());
  }
  cargv.push_back(nullptr);
  const pid_t parent = getpid();
  const int out_w = out[1];
  const pid_t pid = spawner_->Run([&]() -> pid_t {
    const pid_t child = fork();
    if (child != 0) {
      return child;
    }
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) {
      _exit(127);
    }
    dup2(out_w, 1);
    dup2(err_fd, 2);
    if (ns_fd >= 0 && setns(ns_fd, CLONE_NEWNET) != 0) {
      WriteRaw(2, "cluster harness: setns failed\n");
      _exit(126);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execv(cargv[0], cargv.data());
    WriteRaw(2, "cluster harness: exec failed: ");
    WriteRaw(2, cargv[0]);
    WriteRaw(2, "\n");
    _exit(127);
  });
  const int fork_errno = errno;
  close(out[1]);
  close(err_fd);
  if (ns_fd >= 0) {
    close(ns_fd);
  }
  if (pid < 0) {
    close(out[0]);
    return absl::InternalError(absl::StrCat("fork: ", strerror(fork_errno)));
  }
  {
    absl::MutexLock lock(&node.mu);
    node.pid = pid;
    node.run_start = node.stdout_text.size();
    node.stdout_closed = false;
  }
  node.reader = std::thread([&node, fd = out[0]] {
    char buf[4096];
    while (true) {
      const ssize_t n = read(fd, buf, sizeof(buf));
      if (n < 0 && errno == EINTR) {
        continue;
      }
      absl::MutexLock lock(&node.mu);
      if (n <= 0) {
        node.stdout_closed = true;
        break;
      }
      node.stdout_text.append(buf, static_cast<size_t>(n));
    }
    close(fd);
  });
  return absl::OkStatus();
}

// Requires nodes_[i]->op_mu.
absl::Status ClusterHarness::AwaitListening(int i) {
  Node& node = *nodes_[i];
  std::string line;
  {
    absl::MutexLock lock(&node.mu);
    node.mu.AwaitWithTimeout(absl::Condition(&Node::ListeningOrClosed, &node),
                             options_.start_timeout);
    const size_t at = node.stdout_text.find(kListening, node.run_start);
    if (at != std::string::npos) {
      const size_t end = node.stdout_text.find('\n', at);
      if (end != std::string::npos) {
        line = node.stdout_text.substr(at, end - at);
      }
    }
  }
  int http = 0, grpc = 0;
  if (std::sscanf(line.c_str(), "floodgate: listening http=%d grpc=%d", &http, &grpc) != 2) {
    if (const pid_t p = pid(i); p > 0) {
      kill(p, SIGKILL);
    }
    (void)Reap(i, absl::Seconds(10));
    std::string err = Stderr(i);
    if (err.size() > 8192) {
      err = "..." + err.substr(err.size() - 8192);
    }
    return absl::UnavailableError(
        absl::StrCat("node ", node.info.id, " did not start; stderr:\n", err));
  }
  ClusterNode& info = node.info;
  if ((info.http_port != 0 && info.http_port != http) ||
      (info.grpc_port != 0 && info.grpc_port != grpc)) {
    if (const pid_t p = pid(i); p > 0) {
      kill(p, SIGKILL);
    }
    (void)Reap(i, absl::Seconds(10));
    return absl::InternalError(absl::StrCat("node ", info.id, " listens on http=", http,
                                            " grpc=", grpc, ", expected ", info.http_port, " ",
                                            info.grpc_port));
  }
  info.http_port = http;  // only changes during Start (first run on port 0)
  info.grpc_port = grpc;
  return absl::OkStatus();
}

// Requires nodes_[i]->op_mu. Waits up to `timeout` for the node to exit, then SIGKILLs it.
absl::StatusOr<int> ClusterHarness::Reap(int i, absl::Duration timeout) {
  Node& node = *nodes_[i];
  pid_t pid;
  {
    absl::MutexLock lock(&node.mu);
    pid = node.pid;
  }
  int status = 0;
  if (pid > 0) {
    // A pidfd becomes readable when the process exits: wait on it instead of polling waitpid.
    // (syscall: Debian 12's <sys/pidfd.h> lacks extern "C".)
    const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
    bool exited = false;
    if (pidfd >= 0) {
      pollfd pfd{pidfd, POLLIN, 0};
      const int64_t ms = absl::ToInt64Milliseconds(timeout);
      int ready;
      while ((ready = poll(&pfd, 1, static_cast<int>(ms))) < 0 && errno == EINTR) {
      }
      exited = ready > 0;
      close(pidfd);
    }
    if (!exited) {
      kill(pid, SIGKILL);
    }
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    absl::MutexLock lock(&node.mu);
    node.pid = -1;
  }
  if (node.reader.joinable()) {
    node.reader.join();  // stdout reaches EOF once the node is gone
  }
  return status;
}

absl::StatusOr<int> ClusterHarness::Kill(int i, int signal) {
  if (i < 0 || i >= size()) {
    return absl::InvalidArgumentError(absl::StrCat("no node ", i));
  }
  if (signal == SIGSTOP || signal == SIGCONT || signal <= 0) {
    return absl::InvalidArgumentError("Kill takes a terminating signal; see Pause and Resume");
  }
  Node& node = *nodes_[i];
  absl::MutexLock lock(&node.op_mu);
  const pid_t pid = this->pid(i);
  if (pid <= 0) {
    return absl::FailedPreconditionError(absl::StrCat("node ", node.info.id, " is not running"));
  }
  kill(pid, signal);
  if (signal != SIGKILL) {
    kill(pid, SIGCONT);  // a paused node must run to handle the signal
  }
  return Reap(i, signal == SIGKILL ? absl::Seconds(10) : options_.stop_timeout);
}

absl::Status ClusterHarness::Restart(int i) {
  if (i < 0 || i >= size()) {
    return absl::InvalidArgumentError(absl::StrCat("no node ", i));
  }
  Node& node = *nodes_[i];
  absl::MutexLock lock(&node.op_mu);
  if (pid(i) > 0) {
    return absl::FailedPreconditionError(absl::StrCat("node ", node.info.id, " is running"));
  }
  if (node.reader.joinable()) {
    node.reader.join();
  }
  if (absl::Status s = Spawn(i); !s.ok()) {
    return s;
  }
  return AwaitListening(i);
}

absl::Status ClusterHarness::Pause(int i) {
  const pid_t p = i >= 0 && i < size() ? pid(i) : -1;
  if (p <= 0 || kill(p, SIGSTOP) != 0) {
    return absl::FailedPreconditionError(absl::StrCat("node ", i, " is not running"));
  }
  return absl::OkStatus();
}

absl::Status ClusterHarness::Resume(int i) {
  const pid_t p = i >= 0 && i < size() ? pid(i) : -1;
  if (p <= 0 || kill(p, SIGCONT) != 0) {
    return absl::FailedPreconditionError(absl::StrCat("node ", i, " is not running"));
  }
  return absl::OkStatus();
}

std::string ClusterHarness::Stderr(int i) const {
  std::ifstream in(nodes_.at(i)->stderr_path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string ClusterHarness::Stdout(int i) const {
  const Node& node = *nodes_.at(i);
  absl::MutexLock lock(&node.mu);
  return node.stdout_text;
}

absl::Status ClusterHarness::Partition(const std::vector<int>& a, const std::vector<int>& b) {
  if (!isolated()) {
    return absl::FailedPreconditionError(
        absl::StrCat("nodes share the loopback network: ", network_error_));
  }
  return network_->Partition(a, b);
}

absl::Status ClusterHarness::Heal() {
  if (!isolated()) {
    return absl::FailedPreconditionError("nodes share the loopback network");
  }
  return network_->Heal();
}

}  // namespace floodgate::testing
