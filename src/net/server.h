#pragma once

// What a listening server offers its owner: start, the port it got, and a drain. Every front end
// (HTTP, native gRPC, grpc++) implements it, so that the wiring (src/server) starts and stops
// them alike.
//
// Thread-safety: Start and Shutdown from one thread (the owner's); port() from any thread after
// Start. The server's work runs on its own threads.

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace floodgate::net {

class Server {
 public:
  virtual ~Server() = default;

  // Binds and starts serving. InvalidArgument for a bad address or options, Unavailable when
  // the port cannot be bound.
  virtual absl::Status Start() = 0;
  // Returns the bound port (after Start; the one picked when asked for port 0).
  virtual int port() const = 0;
  // Drains: health checks report not serving, the listener closes, calls in flight finish within
  // `grace`; then connections close and the server's threads join. Idempotent.
  virtual void Shutdown(absl::Duration grace) = 0;
};

}  // namespace floodgate::net
