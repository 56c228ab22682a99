#pragma once

// A Store whose state lives in Redis (src/redis), so that stateless nodes share every limit
// through it: each transaction is decided inside Redis by one server-side Lua script
// (redis_scripts.h), with the memory store's answers (script_args.h says how exactly: every
// decision is core::Decide's at now rounded down to a microsecond for all ordinary limits).
//
// Keys. A state lives under `<key_prefix>{<16 hex digits>}<state key>`: the hex digits are a
// fixed-seed hash of the state key's descriptor part (domain and entries), so one descriptor's
// limits share a Redis Cluster hash slot, and the raw state key follows, so two states never
// share a key. Every key expires when its state is back to fresh (idle keys cost nothing). With
// envoy_key_layout, fixed windows of Envoy's units live under envoyproxy/ratelimit's own keys
// (a plain counter per window), so both services can count against one Redis during a
// migration; envoyproxy/ratelimit charges refused hits and we do not.
//
// Atomicity. A transaction (one Apply's ops) is all or nothing, as the memory store's, within
// one script call. Single and Sentinel mode: the whole transaction is one call. Cluster mode: its
// ops are grouped by hash slot and each group is one call, so a transaction is atomic per
// descriptor, and across descriptors only when they share a slot (Envoy-layout keys carry no
// hash tag: each is its own group); when one group refuses, another may already have committed.
//
// Pipelining. Calls go through the client's pipelined connections, never blocking a thread:
// while fewer than max_inflight_batches calls are in flight for a slot group (single mode: one
// group), a transaction is sent at once; past that, transactions wait and the next reply sends
// up to max_batch of them together in one EVALSHA (the script decides each atomically on its
// own), so under load Redis runs one script call for many checks.
//
// Failures. When a call gets no usable reply (timeout, open breaker, lost connection, an error
// reply or a malformed one), each of its ops is decided by its failure_mode: kOpen allowed;
// kClosed refused with Decision::unavailable; kLocal decided on local_fallback (the whole
// limit, by key_hash, as a single node would; without a fallback, as kOpen). A transaction
// whose ops fail differently is then not atomic. An error reply for one transaction of a batch
// (a script error on a malformed value) fails that transaction only.
//
// Lifetime and threads: every method may be called from any thread at once. `client` (and
// `local_fallback`) must outlive the store. The destructor fails the transactions still queued
// (by failure mode) and waits for the calls in flight, which the client ends within its
// timeout. Apply must not be called on a client io thread (it waits for one).

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "floodgate/store.h"
#include "src/redis/redis_client.h"

namespace floodgate::redis_store {

struct RedisStoreOptions {
  std::string key_prefix = "fg:";        // every key we write starts with it
  int max_batch = 64;                    // transactions per EVALSHA at most
  int max_inflight_batches = 4;          // script calls in flight per slot group before batching
  bool envoy_key_layout = false;         // fixed windows under envoyproxy/ratelimit's keys
  std::string envoy_prefix;              // its CACHE_KEY_PREFIX
  LocalStore* local_fallback = nullptr;  // failure_mode: local decides here when Redis can't
  // kCluster groups a transaction's ops by hash slot; the other modes send it whole.
  redis::ClientOptions::Mode mode = redis::ClientOptions::Mode::kSingle;
  // Apply's wait at most (then its ops are decided by failure mode): the client's timeout for
  // up to three round trips (EVALSHA, NOSCRIPT's SCRIPT LOAD and the retry) plus slack.
  int64_t sync_timeout_ms = 1000;
};

struct RedisStoreStats {
  uint64_t transactions = 0;  // Apply / ApplyAsync calls with ops
  uint64_t ops = 0;
  uint64_t script_calls = 0;         // EVALSHA sent (retries included)
  uint64_t batched_calls = 0;        // ... of which carried more than one transaction
  uint64_t queued_transactions = 0;  // parts that waited for a free call slot
  uint64_t noscript_reloads = 0;     // SCRIPT LOAD after a NOSCRIPT reply
  uint64_t call_failures = 0;        // calls without a reply (timeout, breaker, connection)
  uint64_t error_replies = 0;        // error replies (whole call, or one transaction in it)
  uint64_t malformed_replies = 0;    // replies of the wrong shape
  uint64_t failed_ops_open = 0;      // ops decided by failure_mode: open
  uint64_t failed_ops_closed = 0;    // ... closed
  uint64_t failed_ops_local = 0;     // ... local (or open, without a fallback store)
  uint64_t sync_timeouts = 0;        // Apply calls that stopped waiting
  uint64_t unsupported_ops = 0;      // ops refused: no state key, or no exact unit
};

// See the header comment. GetStats reports zeros (the state is in Redis); ReclaimExpired does
// nothing (Redis expires the keys).
class RedisStore : public Store {
 public:
  virtual RedisStoreStats GetRedisStats() const = 0;
};

// Returns a store over `client`, or InvalidArgument for bad options (prefix empty, max_batch or
// max_inflight_batches < 1).
absl::StatusOr<std::unique_ptr<RedisStore>> NewRedisStore(redis::Client* client,
                                                          RedisStoreOptions options);

}  // namespace floodgate::redis_store
