#pragma once

// A pipelined Redis client of our own: RESP2 over a few long-lived connections per Redis node,
// many commands in flight on each, every command bounded by a timeout. One interface for the
// three deployments a `--store` URL names: one server (redis://, rediss://), a master found
// through Sentinel (redis-sentinel://) and Redis Cluster (redis-cluster://, slot routing with
// MOVED/ASK and topology refresh). docs/backends.md.
//
// Thread-safety: every method of Client may be called from any thread at once. Callbacks run on
// the client's own io thread(s), never inline in Send, and must not block.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace floodgate::redis {

// One RESP2 reply. Errors from the server (`-ERR ...`) are replies of type kError, not a failed
// Status: a failed Status means the command got no reply (timeout, connection lost, circuit open).
struct Reply {
  enum class Type : uint8_t { kStatus, kError, kInteger, kString, kNil, kArray };
  Type type = Type::kNil;
  int64_t integer = 0;          // kInteger
  std::string str;              // kStatus, kError, kString
  std::vector<Reply> elements;  // kArray
};

// Where and how to reach Redis, parsed from a --store URL (ParseStoreUrl).
struct Endpoint {
  std::string host;
  uint16_t port = 6379;
};

struct ClientOptions {
  enum class Mode : uint8_t { kSingle, kSentinel, kCluster };
  Mode mode = Mode::kSingle;
  // kSingle: one address; kSentinel: the sentinels; kCluster: the seed nodes.
  std::vector<Endpoint> endpoints;
  std::string master_name;  // kSentinel
  std::string username;     // AUTH username (empty: AUTH with the password alone)
  std::string password;     // empty: no AUTH
  int db = 0;               // SELECT (single and sentinel only; Cluster has db 0 alone)
  bool tls = false;         // rediss:// (TLS files below)
  std::string tls_ca_file;  // required with tls
  std::string tls_cert_file;
  std::string tls_key_file;

  // Per command: from Send until its reply. On expiry the callback gets DeadlineExceeded.
  int64_t timeout_ms = 50;
  int64_t connect_timeout_ms = 1000;
  // Connections per Redis node; commands are spread over them, pipelined on each.
  int connections_per_node = 2;
  // Commands waiting or in flight per node at most; past it Send fails at once
  // (ResourceExhausted) instead of queueing without bound.
  int max_pending_per_node = 65536;
  // Circuit breaker: after `breaker_failures` failed commands in a row on a node, commands to
  // it fail at once (Unavailable) for `breaker_open_ms`, then one probe decides.
  int breaker_failures = 5;
  int64_t breaker_open_ms = 1000;
  // Reconnect backoff: from min, doubling up to max, with jitter.
  int64_t reconnect_min_ms = 50;
  int64_t reconnect_max_ms = 2000;
  int io_threads = 1;
};

// Parses redis://[USER:PASS@]HOST:PORT[/DB], rediss://..., redis-sentinel://[USER:PASS@]
// HOST:PORT[,HOST:PORT...]/MASTER_NAME[/DB], redis-cluster://[USER:PASS@]HOST:PORT[,HOST:PORT...].
// Query parameters (?timeout_ms=..&connections=..) override the defaults above. InvalidArgument
// naming what is wrong otherwise.
absl::StatusOr<ClientOptions> ParseStoreUrl(std::string_view url);

struct ClientStats {
  uint64_t commands = 0;      // sent
  uint64_t replies = 0;       // received
  uint64_t timeouts = 0;      // callbacks given DeadlineExceeded
  uint64_t failures = 0;      // callbacks given any other failure
  uint64_t breaker_open = 0;  // commands refused at once by an open breaker
  uint64_t reconnects = 0;    // connections re-established
  uint64_t redirects = 0;     // MOVED and ASK followed (Cluster)
  uint64_t connected_nodes = 0;
  uint64_t pending = 0;  // commands waiting or in flight now
};

class Client {
 public:
  using Callback = absl::AnyInvocable<void(absl::StatusOr<Reply>) &&>;

  virtual ~Client() = default;

  // Sends one command (its arguments, binary safe). In Cluster mode `slot_key` routes it: the key
  // whose hash slot the command touches (every key of the command must share it); elsewhere it is
  // ignored. `callback` runs exactly once, on a client io thread: with the reply (an error reply
  // included), or a failed Status (DeadlineExceeded, Unavailable, ResourceExhausted).
  virtual void Send(absl::Span<const std::string_view> args, std::string_view slot_key,
                    Callback callback) = 0;

  // Whether every node the client needs is connected and its breaker closed.
  virtual bool Healthy() const = 0;
  virtual ClientStats GetStats() const = 0;
  // Fails every pending callback (Cancelled), closes the connections, joins the threads.
  // Idempotent; the destructor calls it.
  virtual void Stop() = 0;
};

// Starts a client: its io threads and connections (connecting in the background: Send works at
// once and queues until connected or the command's timeout). InvalidArgument for bad options.
absl::StatusOr<std::unique_ptr<Client>> NewClient(const ClientOptions& options);

// Redis Cluster's hash slot of `key` (CRC16-XMODEM of the hash tag or the key, mod 16384).
uint16_t HashSlot(std::string_view key);

}  // namespace floodgate::redis
