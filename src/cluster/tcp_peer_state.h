#pragma once

// TcpPeerTransport's per-member state and what its callbacks share with it: internals of
// tcp_peer_transport.cc, in a header of their own to keep that file within bounds. Not for other
// users.

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "floodgate/store.h"
#include "src/cluster/peer_link.h"
#include "src/cluster/peer_transport.h"

namespace floodgate::cluster::tcp_internal {

// What callbacks share with the transport; they may outlive it (a ForwardAsync link lives on
// the caller's loop), so the handler is reached only through here, and Detach() cuts it.
struct Shared {
  absl::Mutex mu;
  PeerHandler* handler ABSL_GUARDED_BY(mu) = nullptr;
  AuthCounters auth;

  // Runs fn(handler) unless detached.
  template <typename Fn>
  void WithHandler(Fn&& fn) {
    absl::ReaderMutexLock lock(&mu);
    if (handler != nullptr) {
      fn(handler);
    }
  }
  void Detach() {
    absl::MutexLock lock(&mu);
    handler = nullptr;
  }
};

// One other member: the link on the transport's io thread, the replication and report queues,
// and the link's counters.
struct MemberState : std::enable_shared_from_this<MemberState> {
  int index = 0;
  std::string id;
  std::string address;
  std::shared_ptr<PeerLink> link;

  absl::Mutex mu;
  absl::flat_hash_map<uint64_t, StateRecord> replication ABSL_GUARDED_BY(mu);
  absl::Time replication_oldest ABSL_GUARDED_BY(mu);
  bool replication_in_flight ABSL_GUARDED_BY(mu) = false;
  bool replication_posted ABSL_GUARDED_BY(mu) = false;
  std::vector<StoreOp> reports ABSL_GUARDED_BY(mu);
  bool reports_posted ABSL_GUARDED_BY(mu) = false;
  uint64_t reports_queued ABSL_GUARDED_BY(mu) = 0;  // reports ever queued
  uint64_t reports_done ABSL_GUARDED_BY(mu) = 0;    // of those, acknowledged or given up
  // FlushReportsAsync callers waiting for reports_done to reach their target.
  struct FlushWaiter {
    uint64_t target = 0;
    boost::asio::io_context* loop = nullptr;
    PeerTransport::FlushDone done;
  };
  std::vector<FlushWaiter> flush_waiters ABSL_GUARDED_BY(mu);
  int64_t replication_lag_ns ABSL_GUARDED_BY(mu) = 0;

  std::atomic<uint64_t> forwarded_txns{0};
  std::atomic<uint64_t> forward_errors{0};
  std::atomic<uint64_t> replicated_states{0};
  std::atomic<uint64_t> replicated_bytes{0};
  std::atomic<uint64_t> dropped{0};
};

}  // namespace floodgate::cluster::tcp_internal
