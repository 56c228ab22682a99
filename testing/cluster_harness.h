#pragma once

// Starts N `floodgate serve` processes that form one cluster, for cluster tests.
//
// Each node gets an id ("n0", "n1", ...), an HTTP and a gRPC port (chosen by the node on its
// first start, then kept), and a peer port picked in advance, since every node must know every
// peer's address before it starts. With cluster flags on, node i runs
//
//   floodgate serve --config DIR --http H:P --grpc H:Q --node-id ni --peer H:R
//                   --peers n0=H0:R0,n1=H1:R1,...  EXTRA_ARGS...
//
// (EXTRA_ARGS come last, so they override). Nodes are spawned together and then awaited, so a
// node that waits for its peers before serving still starts. A node is up when it prints
// "floodgate: listening http=P grpc=Q ..." on stdout.
//
// With `network_namespaces`, node i runs in its own network namespace on 10.X.Y.(i+1)
// (netns.h), the test reaches every node from the root namespace, and Partition() cuts traffic
// between groups of nodes. Without root (or without `ip`) the harness falls back to loopback
// and says why in network_error().
//
// Nodes are started from a thread the harness owns, with PR_SET_PDEATHSIG: when the harness or
// the test process dies (a crash, a ctest timeout), the nodes die with it. Namespaces left by a
// dead test are removed by the next harness that uses namespaces.
//
// This is its own launcher rather than a wrapper of ServerProcess (server_process.h): nodes must
// start inside a namespace, start all before any is awaited, keep their stderr across restarts,
// and not outlive the test.

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "testing/netns.h"

namespace floodgate::testing {

struct ClusterOptions {
  // Passes --cluster-key, --node-id, --peer and --peers. False starts N plain servers.
  bool cluster_flags = true;
  // Runs each node in its own network namespace (needs root); falls back to loopback.
  bool network_namespaces = false;
  // The floodgate binary; "" means FloodgateBinary().
  std::string binary;
  // How long a node may take to print its listening line.
  absl::Duration start_timeout = absl::Seconds(30);
  // How long Kill waits for a node to exit after a catchable signal before it sends SIGKILL.
  absl::Duration stop_timeout = absl::Seconds(10);
  // Where node logs go (node-<i>.stderr); kept. "" means a temporary directory, removed by the
  // destructor.
  std::string log_dir;
  // When set (one per node), node i serves config_dirs[i] instead of the shared config_dir.
  std::vector<std::string> config_dirs;
};

// Where one node listens. Fixed for the harness's lifetime.
struct ClusterNode {
  std::string id;    // "n0", "n1", ...
  std::string host;  // IPv4 address it listens on, reachable from the test: 127.0.0.1 or 10.X.Y.i
  int http_port = 0;
  int grpc_port = 0;
  int peer_port = 0;  // reserved even without cluster flags
  std::string netns;  // its network namespace; "" on loopback

  std::string HttpAddress() const;  // "host:http_port"
  std::string GrpcAddress() const;  // "host:grpc_port"
  std::string PeerAddress() const;  // "host:peer_port"
};

// A running cluster of floodgate processes.
//
// Thread-safety: every method may be called from any thread (a test may kill and restart nodes
// from a "nemesis" thread while others send load). Operations on one node are serialized;
// node(i) never changes after Start returns.
class ClusterHarness {
 public:
  // Starts `n` nodes serving `config_dir`, with `extra_args` appended to every command line.
  // Fails, with the failing node's stderr in the message, when a node exits or does not print
  // its listening line within options.start_timeout.
  static absl::StatusOr<std::unique_ptr<ClusterHarness>> Start(
      int n, const std::string& config_dir, std::vector<std::string> extra_args = {},
      ClusterOptions options = {});
  // Kills every node (SIGKILL) and removes the namespaces.
  ~ClusterHarness();
  ClusterHarness(const ClusterHarness&) = delete;
  ClusterHarness& operator=(const ClusterHarness&) = delete;

  int size() const { return static_cast<int>(nodes_.size()); }
  const ClusterNode& node(int i) const;
  // Returns whether node i's process is running (started and not killed by us; a node that
  // crashed by itself still counts until Kill reaps it).
  bool running(int i) const;
  // Returns node i's pid, or -1 when it is not running.
  pid_t pid(int i) const;

  // True when the nodes run in network namespaces (Partition works).
  bool isolated() const { return network_ != nullptr; }
  // Why namespaces were requested but not used; "" otherwise.
  const std::string& network_error() const { return network_error_; }
  // The namespaces, or nullptr on loopback.
  NetnsNetwork* network() const { return network_.get(); }

  // Sends `signal` to node i and waits until it exits (SIGKILL after options.stop_timeout);
  // returns the wait status. FailedPrecondition when it is not running; InvalidArgument for
  // SIGSTOP/SIGCONT (use Pause/Resume).
  absl::StatusOr<int> Kill(int i, int signal = 9);
  // Starts node i again with the same id, ports and namespace. FailedPrecondition when it is
  // running; the error carries its stderr when it does not come up.
  absl::Status Restart(int i);
  // Stops (SIGSTOP) and continues (SIGCONT) node i: a hung node that keeps its sockets.
  absl::Status Pause(int i);
  absl::Status Resume(int i);

  // Returns everything node i wrote to stderr over all its runs, each run headed by a line
  // "=== cluster harness: run K: <command> ===".
  std::string Stderr(int i) const;
  // Returns everything node i wrote to stdout over all its runs.
  std::string Stdout(int i) const;

  // Cuts traffic between the nodes of `a` and those of `b` (indices), both ways; the test
  // process still reaches every node. FailedPrecondition when not isolated().
  absl::Status Partition(const std::vector<int>& a, const std::vector<int>& b);
  // Removes every cut.
  absl::Status Heal();

 private:
  struct Node;
  class Spawner;

  ClusterHarness();
  absl::Status Spawn(int i);
  absl::Status AwaitListening(int i);
  absl::StatusOr<int> Reap(int i, absl::Duration timeout);

  ClusterOptions options_;
  std::string config_dir_;
  std::vector<std::string> extra_args_;
  std::string log_dir_;
  bool remove_log_dir_ = false;
  std::string network_error_;
  std::unique_ptr<NetnsNetwork> network_;
  std::unique_ptr<Spawner> spawner_;
  std::vector<std::unique_ptr<Node>> nodes_;
};

}  // namespace floodgate::testing
