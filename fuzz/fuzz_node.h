#pragma once

// A single node for the fuzz targets: a sharded store, the limiter with a small config of every
// algorithm (domain "api", fuzz/fuzz_node.cc), the rate limit service and the HTTP handlers, as
// the server wires them, but without sockets or threads. Built once per fuzzing process
// (Node::Get); the store keeps its state from one input to the next, as a server would.
//
// The clock is a FakeClock that each input moves forward (Advance), so that windows roll over
// and leases expire during a run without reading the real clock.
//
// Thread-safety: libFuzzer calls a target from one thread; so does everything here.

#include <cstdint>
#include <memory>

#include "floodgate/store.h"
#include "src/admin/node_admin.h"
#include "src/frontends/http/http_handlers.h"
#include "src/limiter/limiter.h"
#include "src/service/metrics.h"
#include "src/service/rate_limit_service.h"
#include "testing/fake_clock.h"

namespace floodgate::fuzz {

class Node {
 public:
  // Returns the process's node, built on first use (aborts if the config does not load).
  static Node& Get();

  // Moves the clock forward by `ns` (an input's first bytes, say).
  void Advance(int64_t ns) { clock_.Set(clock_.NowNs() + ns); }
  int64_t now_ns() const { return clock_.NowNs(); }

  service::RateLimitService& service() { return *service_; }
  const frontends::HttpHandlers& handlers() const { return *handlers_; }
  frontends::HttpScratch& scratch() { return scratch_; }
  LocalStore& store() { return *store_; }
  service::ServerMetrics& metrics() { return metrics_; }
  const service::RequestLimits& limits() const { return service_->limits(); }

 private:
  Node();

  testing::FakeClock clock_;
  std::unique_ptr<LocalStore> store_;
  std::unique_ptr<limiter::Limiter> limiter_;
  service::ServerMetrics metrics_;
  std::unique_ptr<service::RateLimitService> service_;
  std::unique_ptr<admin::NodeAdmin> admin_;
  std::unique_ptr<frontends::HttpHandlers> handlers_;
  frontends::HttpScratch scratch_;
};

}  // namespace floodgate::fuzz
