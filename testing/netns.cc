#include "testing/netns.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

extern char** environ;

namespace floodgate::testing {
namespace {

constexpr char kNetnsDir[] = "/run/netns/";

// Returns milliseconds left until `deadline`, at least 0.
int MillisLeft(absl::Time deadline) {
  const absl::Duration left = deadline - absl::Now();
  return left <= absl::ZeroDuration() ? 0 : static_cast<int>(absl::ToInt64Milliseconds(left) + 1);
}

bool PidAlive(int64_t pid) {
  return pid > 0 && pid <= INT32_MAX && (kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM);
}

// Returns the pid in a name made by this file ("fg<pid>-..."), or -1.
int64_t PidOfName(absl::string_view name) {
  if (name.size() < 4 || name.substr(0, 2) != "fg") {
    return -1;
  }
  const size_t dash = name.find('-');
  if (dash == absl::string_view::npos || dash == 2) {
    return -1;
  }
  int64_t pid = 0;
  const std::string digits(name.substr(2, dash - 2));
  return absl::SimpleAtoi(digits, &pid) ? pid : -1;
}

// Parses "a.b.c.d" or "a.b.c.d/len" into a host-order address and prefix length.
bool ParsePrefix(absl::string_view text, uint32_t& address, int& length) {
  std::string host(text);
  length = 32;
  const size_t slash = host.find('/');
  if (slash != std::string::npos) {
    if (!absl::SimpleAtoi(host.substr(slash + 1), &length) || length < 0 || length > 32) {
      return false;
    }
    host.resize(slash);
  }
  in_addr in{};
  if (inet_pton(AF_INET, host.c_str(), &in) != 1) {
    return false;
  }
  address = ntohl(in.s_addr);
  return true;
}

bool Overlaps(uint32_t a, int a_length, uint32_t b, int b_length) {
  const int bits = std::min(a_length, b_length);
  const uint32_t mask = bits == 0 ? 0 : ~uint32_t{0} << (32 - bits);
  return (a & mask) == (b & mask);
}

// Returns a 10.X.Y.0/24 that no route or address of the root namespace overlaps, starting from a
// candidate derived from the pid and instance so that concurrent tests pick different ones.
absl::StatusOr<std::pair<int, int>> PickSubnet(uint32_t seed) {
  absl::StatusOr<std::string> routes = RunIp({"-4", "route", "show", "table", "all"});
  if (!routes.ok()) {
    return routes.status();
  }
  std::vector<std::pair<uint32_t, int>> taken;
  for (absl::string_view line : absl::StrSplit(*routes, '\n')) {
    std::vector<absl::string_view> words = absl::StrSplit(line, ' ', absl::SkipEmpty());
    for (size_t i = 0; i < words.size() && i < 2; ++i) {
      uint32_t address = 0;
      int length = 0;
      if (ParsePrefix(words[i], address, length)) {
        taken.emplace_back(address, length);
        break;
      }
    }
  }
  for (uint32_t attempt = 0; attempt < 4096; ++attempt) {
    const uint32_t v = (seed + attempt * 40503u) & 0xffff;
    const uint32_t subnet = (10u << 24) | (v << 8);
    bool free = true;
    for (const auto& [address, length] : taken) {
      free = free && !Overlaps(subnet, 24, address, length);
    }
    if (free) {
      return std::make_pair(static_cast<int>(v >> 8), static_cast<int>(v & 0xff));
    }
  }
  return absl::ResourceExhaustedError("no free 10.X.Y.0/24 for a test network");
}

std::atomic<int> next_instance{0};

}  // namespace

absl::StatusOr<std::string> RunCommand(const std::vector<std::string>& argv,
                                       absl::Duration timeout) {
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", strerror(errno)));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawn_file_actions_adddup2(&actions, out[1], 2);
  std::vector<std::string> args = argv;
  std::vector<char*> cargv;
  for (std::string& a : args) {
    cargv.push_back(a.data());
  }
  cargv.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, cargv[0], &actions, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  const std::string command = absl::StrJoin(argv, " ");
  if (rc != 0) {
    close(out[0]);
    return absl::InternalError(absl::StrCat("cannot run ", command, ": ", strerror(rc)));
  }
  std::string output;
  const absl::Time deadline = absl::Now() + timeout;
  bool timed_out = false;
  while (true) {
    pollfd pfd{out[0], POLLIN, 0};
    const int ready = poll(&pfd, 1, MillisLeft(deadline));
    if (ready == 0) {
      timed_out = true;
      break;
    }
    if (ready < 0 && errno == EINTR) {
      continue;
    }
    char buf[4096];
    const ssize_t n = ready > 0 ? read(out[0], buf, sizeof(buf)) : -1;
    if (n <= 0) {
      break;
    }
    output.append(buf, static_cast<size_t>(n));
  }
  close(out[0]);
  if (timed_out) {
    kill(pid, SIGKILL);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    return absl::DeadlineExceededError(absl::StrCat(command, " timed out: ", output));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(absl::StrCat(command, " failed (status ", status, "): ", output));
  }
  return output;
}

absl::StatusOr<std::string> RunIp(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"ip"};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv);
}

absl::Status NamespacesSupported() {
  const std::string probe = absl::StrCat("fg", getpid(), "-probe");
  absl::Status added = RunIp({"netns", "add", probe}).status();
  if (added.ok()) {
    (void)RunIp({"netns", "delete", probe});
  }
  return added;
}

absl::StatusOr<int> RemoveStaleNamespaces() {
  absl::StatusOr<std::string> list = RunIp({"netns", "list"});
  if (!list.ok()) {
    return list.status();
  }
  int removed = 0;
  for (absl::string_view line : absl::StrSplit(*list, '\n', absl::SkipEmpty())) {
    // Lines look like "fg123-0-1 (id: 3)" or just "fg123-0-1".
    const std::string name(line.substr(0, line.find(' ')));
    const int64_t pid = PidOfName(name);
    if (pid > 0 && !PidAlive(pid) && RunIp({"netns", "delete", name}).ok()) {
      ++removed;
    }
  }
  absl::StatusOr<std::string> links = RunIp({"-o", "link", "show"});
  if (!links.ok()) {
    return links.status();
  }
  for (absl::string_view line : absl::StrSplit(*links, '\n', absl::SkipEmpty())) {
    // "12: fg123-0@if11: <BROADCAST,...": the name is the second word, up to '@' or ':'.
    std::vector<absl::string_view> words = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (words.size() < 2) {
      continue;
    }
    absl::string_view name = words[1];
    name = name.substr(0, name.find_first_of("@:"));
    const int64_t pid = PidOfName(name);
    if (pid > 0 && !PidAlive(pid)) {
      (void)RunIp(
          {"link", "delete", "dev", std::string(name)});  // may already be gone with its peer
    }
  }
  return removed;
}

absl::StatusOr<int> SocketInNamespace(const std::string& ns, int domain, int type) {
  if (ns.empty()) {
    const int fd = socket(domain, type | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      return absl::InternalError(absl::StrCat("socket: ", strerror(errno)));
    }
    return fd;
  }
  // setns changes only the calling thread's namespace, so a short-lived thread enters it and
  // makes the socket there; sockets keep the namespace they were created in.
  absl::Status status;
  int fd = -1;
  std::thread([&] {
    const int ns_fd = open(absl::StrCat(kNetnsDir, ns).c_str(), O_RDONLY | O_CLOEXEC);
    if (ns_fd < 0) {
      status = absl::NotFoundError(absl::StrCat("namespace ", ns, ": ", strerror(errno)));
      return;
    }
    if (setns(ns_fd, CLONE_NEWNET) != 0) {
      status = absl::InternalError(absl::StrCat("setns ", ns, ": ", strerror(errno)));
    } else if ((fd = socket(domain, type | SOCK_CLOEXEC, 0)) < 0) {
      status = absl::InternalError(absl::StrCat("socket in ", ns, ": ", strerror(errno)));
    }
    close(ns_fd);
  }).join();
  if (!status.ok()) {
    return status;
  }
  return fd;
}

absl::Status TcpConnect(const std::string& ns, const std::string& host, int port,
                        absl::Duration timeout) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &address.sin_addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("not an IPv4 address: ", host));
  }
  absl::StatusOr<int> fd = SocketInNamespace(ns, AF_INET, SOCK_STREAM | SOCK_NONBLOCK);
  if (!fd.ok()) {
    return fd.status();
  }
  const std::string what =
      absl::StrCat("connect ", ns.empty() ? "(root)" : ns, " -> ", host, ":", port, ": ");
  int error = 0;
  if (connect(*fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
    error = errno;
    if (error == EINPROGRESS) {
      pollfd pfd{*fd, POLLOUT, 0};
      const int ready = poll(&pfd, 1, MillisLeft(absl::Now() + timeout));
      socklen_t length = sizeof(error);
      if (ready <= 0) {
        error = ETIMEDOUT;
      } else if (getsockopt(*fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0) {
        error = errno;
      }
    }
  }
  close(*fd);
  if (error != 0) {
    return absl::UnavailableError(absl::StrCat(what, strerror(error)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<NetnsNetwork>> NetnsNetwork::Create(int n) {
  if (n < 1 || n > 250) {
    return absl::InvalidArgumentError("a test network has 1 to 250 members");
  }
  std::unique_ptr<NetnsNetwork> network(new NetnsNetwork());
  absl::Status built = network->Build(n);
  if (!built.ok()) {
    network->Destroy();
    return built;
  }
  return network;
}

absl::Status NetnsNetwork::Build(int n) {
  const int instance = next_instance.fetch_add(1) % 100;  // keeps link names within 15 bytes
  const pid_t pid = getpid();
  prefix_ = absl::StrCat("fg", pid, "-", instance);
  bridge_ns_ = absl::StrCat(prefix_, "-br");
  root_link_ = prefix_;

  absl::StatusOr<std::pair<int, int>> subnet =
      PickSubnet(static_cast<uint32_t>(pid) * 2654435761u + static_cast<uint32_t>(instance));
  if (!subnet.ok()) {
    return subnet.status();
  }
  const std::string net = absl::StrCat("10.", subnet->first, ".", subnet->second, ".");
  root_address_ = absl::StrCat(net, "254");

  // Every step is checked; on failure Create calls Destroy, which deletes whatever exists.
  auto ip = [](std::vector<std::string> args) { return RunIp(args).status(); };
  absl::Status s = ip({"netns", "add", bridge_ns_});
  if (!s.ok()) {
    return s;
  }
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"-n", bridge_ns_, "link", "set", "dev", "lo", "up"},
           {"-n", bridge_ns_, "link", "add", "br0", "type", "bridge"},
           {"-n", bridge_ns_, "link", "set", "dev", "br0", "up"},
           {"link", "add", root_link_, "type", "veth", "peer", "name", "uplink", "netns",
            bridge_ns_},
           {"-n", bridge_ns_, "link", "set", "dev", "uplink", "master", "br0", "up"},
           {"addr", "add", absl::StrCat(root_address_, "/24"), "dev", root_link_},
           {"link", "set", "dev", root_link_, "up"}}) {
    if (s = ip(args); !s.ok()) {
      return s;
    }
  }
  for (int i = 0; i < n; ++i) {
    Member member{absl::StrCat(prefix_, "-", i), absl::StrCat(net, i + 1)};
    if (s = ip({"netns", "add", member.ns}); !s.ok()) {
      return s;
    }
    members_.push_back(member);
    const std::string port = absl::StrCat("v", i);
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"-n", member.ns, "link", "set", "dev", "lo", "up"},
             {"-n", bridge_ns_, "link", "add", port, "type", "veth", "peer", "name", "eth0",
              "netns", member.ns},
             {"-n", bridge_ns_, "link", "set", "dev", port, "master", "br0", "up"},
             {"-n", member.ns, "addr", "add", absl::StrCat(member.address, "/24"), "dev", "eth0"},
             {"-n", member.ns, "link", "set", "dev", "eth0", "up"}}) {
      if (s = ip(args); !s.ok()) {
        return s;
      }
    }
  }
  return absl::OkStatus();
}

void NetnsNetwork::Destroy() {
  // Deleting a namespace deletes its veth ends and their peers; the root link goes with the
  // bridge namespace, and is deleted by name too in case a process still holds that namespace.
  for (const Member& member : members_) {
    (void)RunIp({"netns", "delete", member.ns});
  }
  members_.clear();
  if (!root_link_.empty()) {
    (void)RunIp({"link", "delete", "dev", root_link_});
  }
  if (!bridge_ns_.empty()) {
    (void)RunIp({"netns", "delete", bridge_ns_});
  }
}

NetnsNetwork::~NetnsNetwork() { Destroy(); }

absl::Status NetnsNetwork::Partition(const std::vector<int>& a, const std::vector<int>& b) {
  for (const int i : a) {
    for (const int j : b) {
      if (i < 0 || i >= size() || j < 0 || j >= size()) {
        return absl::InvalidArgumentError(absl::StrCat("no member ", i < 0 || i >= size() ? i : j));
      }
      if (i == j) {
        return absl::InvalidArgumentError(absl::StrCat("member ", i, " is on both sides"));
      }
    }
  }
  absl::MutexLock lock(&mu_);
  for (const int i : a) {
    for (const int j : b) {
      for (const auto& [from, to] : {std::make_pair(i, j), std::make_pair(j, i)}) {
        if (blocked_.contains({from, to})) {
          continue;
        }
        absl::Status s = RunIp({"-n", members_[from].ns, "route", "add", "blackhole",
                                absl::StrCat(members_[to].address, "/32")})
                             .status();
        if (!s.ok()) {
          return s;
        }
        blocked_.insert({from, to});
      }
    }
  }
  return absl::OkStatus();
}

absl::Status NetnsNetwork::Heal() {
  absl::MutexLock lock(&mu_);
  absl::Status first_error;
  for (auto it = blocked_.begin(); it != blocked_.end();) {
    const auto [from, to] = *it;
    absl::Status s = RunIp({"-n", members_[from].ns, "route", "delete", "blackhole",
                            absl::StrCat(members_[to].address, "/32")})
                         .status();
    if (s.ok()) {
      it = blocked_.erase(it);
    } else {
      first_error.Update(s);
      ++it;
    }
  }
  return first_error;
}

}  // namespace floodgate::testing
