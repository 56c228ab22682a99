#pragma once

// Starts the real `floodgate serve` binary for integration tests, on free ports, and stops it.
//
// The child is started with --http 127.0.0.1:0 --grpc 127.0.0.1:0 (unless the caller passes its
// own) and the ports are read from the "floodgate: listening http=P grpc=Q" line it prints once
// it serves, so no test sleeps or polls for readiness.

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace floodgate::testing {

class ServerProcess {
 public:
  // Starts `binary serve <args>`. Fails if it exits or prints no listening line within 30 s.
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(const std::string& binary,
                                                              std::vector<std::string> args);
  ~ServerProcess();

  int http_port() const { return http_port_; }
  int grpc_port() const { return grpc_port_; }
  pid_t pid() const { return pid_; }

  // Sends `signal` (SIGTERM by default) and waits; returns the exit status as waitpid gives it.
  int Stop(int signal = 15);
  // Returns everything the child wrote to stderr so far (for diagnostics).
  std::string Stderr() const;

 private:
  ServerProcess() = default;
  pid_t pid_ = -1;
  int http_port_ = 0;
  int grpc_port_ = 0;
  std::string stderr_path_;
};

// Returns the path of the floodgate binary under test (the FLOODGATE_BINARY compile definition).
std::string FloodgateBinary();

// Returns a new empty directory under /tmp; the caller removes it.
std::string MakeTempDir();

}  // namespace floodgate::testing
