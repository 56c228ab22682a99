#include "testing/server_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

extern char** environ;

namespace floodgate::testing {

std::string FloodgateBinary() {
#ifdef FLOODGATE_BINARY
  return FLOODGATE_BINARY;
#else
  return "build/floodgate";
#endif
}

std::string MakeTempDir() {
  char tmpl[] = "/tmp/floodgate-test-XXXXXX";
  return mkdtemp(tmpl) != nullptr ? std::string(tmpl) : std::string();
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(const std::string& binary,
                                                                    std::vector<std::string> args) {
  bool has_http = false, has_grpc = false;
  for (const std::string& a : args) {
    has_http |= a.rfind("--http", 0) == 0 && a.rfind("--http-threads", 0) != 0;
    has_grpc |= a.rfind("--grpc", 0) == 0;
  }
  std::vector<std::string> argv = {binary, "serve"};
  argv.insert(argv.end(), args.begin(), args.end());
  if (!has_http) {
    argv.insert(argv.end(), {"--http", "127.0.0.1:0"});
  }
  if (!has_grpc) {
    argv.insert(argv.end(), {"--grpc", "127.0.0.1:0"});
  }
  std::vector<char*> cargv;
  for (std::string& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);

  int out[2];
  if (pipe(out) != 0) {
    return absl::InternalError("pipe failed");
  }
  std::unique_ptr<ServerProcess> process(new ServerProcess());
  char path[] = "/tmp/floodgate-stderr-XXXXXX";
  int err_fd = mkstemp(path);
  process->stderr_path_ = path;

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err_fd, 2);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  const int rc =
      posix_spawn(&process->pid_, binary.c_str(), &actions, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  close(err_fd);
  if (rc != 0) {
    close(out[0]);
    return absl::InternalError(absl::StrCat("cannot start ", binary));
  }

  // Read stdout until the listening line; the child closing stdout or 30 s passing is failure.
  std::string seen;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (seen.find('\n') == std::string::npos) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd pfd{out[0], POLLIN, 0};
    if (left.count() <= 0 || poll(&pfd, 1, static_cast<int>(left.count())) <= 0) {
      break;
    }
    char buf[256];
    const ssize_t n = read(out[0], buf, sizeof(buf));
    if (n <= 0) {
      break;
    }
    seen.append(buf, static_cast<size_t>(n));
  }
  close(out[0]);
  if (std::sscanf(seen.c_str(), "floodgate: listening http=%d grpc=%d", &process->http_port_,
                  &process->grpc_port_) != 2) {
    const std::string err = process->Stderr();
    process->Stop(SIGKILL);
    return absl::InternalError(absl::StrCat("floodgate did not start: ", seen, err));
  }
  return process;
}

int ServerProcess::Stop(int signal) {
  if (pid_ <= 0) {
    return 0;
  }
  kill(pid_, signal);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
  return status;
}

std::string ServerProcess::Stderr() const {
  std::ifstream in(stderr_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

ServerProcess::~ServerProcess() {
  Stop(SIGKILL);
  if (!stderr_path_.empty()) {
    unlink(stderr_path_.c_str());
  }
}

}  // namespace floodgate::testing
