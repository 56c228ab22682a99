#pragma once

// Starts the real `etcd` binary (Debian's etcd-server) for integration tests: one member on
// 127.0.0.1 with free client and peer ports and a fresh data folder, quiet (errors only) and
// with short raft timings so it elects itself at once. Start and Restart return once etcd
// answers a real Range call (bounded polling of that call, no sleeps).
//
// Thread-safety: one thread at a time.

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace floodgate::testing {

class EtcdServer {
 public:
  // Starts etcd and waits (at most `timeout`) until it answers.
  static absl::StatusOr<std::unique_ptr<EtcdServer>> Start(
      std::chrono::milliseconds timeout = std::chrono::seconds(20));
  // Kills etcd and removes its data folder.
  ~EtcdServer();
  EtcdServer(const EtcdServer&) = delete;
  EtcdServer& operator=(const EtcdServer&) = delete;

  // Returns the client URL, "http://127.0.0.1:<port>".
  std::string endpoint() const;
  int client_port() const { return client_port_; }
  bool running() const { return pid_ > 0; }

  // Stops etcd gracefully (SIGTERM) and waits for it to exit.
  void Stop();
  // Kills etcd (SIGKILL) and waits for it to exit: a crash.
  void Kill();
  // Starts etcd again on the same ports and data folder (stopping it first if it runs) and
  // waits (at most `timeout`) until it answers.
  absl::Status Restart(std::chrono::milliseconds timeout = std::chrono::seconds(20));
  // Returns what etcd wrote to stderr so far (for failure messages).
  std::string Log() const;

 private:
  EtcdServer() = default;
  absl::Status Spawn();
  absl::Status WaitReady(std::chrono::milliseconds timeout);
  void Signal(int signal);

  pid_t pid_ = -1;
  int client_port_ = 0;
  int peer_port_ = 0;
  std::string dir_;  // holds data/ and etcd.log
};

}  // namespace floodgate::testing
