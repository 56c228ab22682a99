#pragma once

// Starts the real `redis-server` (Debian's redis-server, 7.x) for integration tests: on
// 127.0.0.1 with a free port and a fresh folder, no persistence (--save '' --appendonly no),
// logging to a file there. Start and Restart return once the server answers PING on its plain
// port (bounded polling of that call, no sleeps); an answer such as -NOAUTH counts, since the
// server is serving. Extra arguments (--requirepass, --cluster-enabled yes, ...), a config file
// (which `--sentinel` needs: Sentinel rewrites it) and a TLS port are options, so Sentinel and
// Cluster tests start their processes with it too.
//
// Thread-safety: one thread at a time.

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace floodgate::testing {

struct RedisServerOptions {
  // Appended to the command line, e.g. {"--requirepass", "s3cret"}.
  std::vector<std::string> args;
  // Not empty: written to <dir>/redis.conf, which comes first on the command line.
  std::string config_text;
  // Runs `redis-server <dir>/redis.conf ... --sentinel` (config_text may stay empty; the port
  // and dir are set for you).
  bool sentinel = false;
  // All three set: a TLS port as well (tls_port()), clients not asked for certificates.
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_ca_file;
  std::chrono::milliseconds timeout = std::chrono::seconds(10);
};

class RedisServer {
 public:
  static absl::StatusOr<std::unique_ptr<RedisServer>> Start(RedisServerOptions options = {});
  // Kills the server (SIGKILL) and removes its folder.
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  int port() const { return port_; }
  int tls_port() const { return tls_port_; }  // 0 without TLS
  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0; }
  const std::string& dir() const { return dir_; }
  // Returns "127.0.0.1:<port>".
  std::string address() const;

  // SIGTERM, and waits for the exit.
  void Stop();
  // SIGKILL, and waits for the exit: a crash.
  void Kill();
  // Starts it again on the same ports and folder (stopping it first if it runs) and waits until
  // it answers.
  absl::Status Restart();
  // SIGSTOP / SIGCONT: a stalled server (connections stay open, nothing is answered).
  void Pause();
  void Resume();

  // Runs one command through redis-cli on the plain port (with `--user`/`-a` when given) and
  // returns its output; for test setup (CONFIG SET, CLUSTER ADDSLOTS, ...).
  absl::StatusOr<std::string> Cli(const std::vector<std::string>& command,
                                  const std::string& password = "",
                                  const std::string& user = "") const;
  // Returns what the server logged so far (for failure messages).
  std::string Log() const;

 private:
  explicit RedisServer(RedisServerOptions options) : options_(std::move(options)) {}
  absl::Status Spawn();
  absl::Status WaitReady();
  void Signal(int signal);

  RedisServerOptions options_;
  pid_t pid_ = -1;
  bool paused_ = false;
  int port_ = 0;
  int tls_port_ = 0;
  std::string dir_;
};

}  // namespace floodgate::testing
