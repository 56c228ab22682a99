#pragma once

// Network namespaces for cluster tests, built with the `ip` command (iproute2) only.
//
// NetnsNetwork gives each of N members its own network namespace, joined by a bridge that lives
// in a namespace of its own, and gives the root namespace (where the test runs) an address on
// the same /24, so the test reaches every member directly:
//
//   root namespace                 fg<pid>-<k>-br              fg<pid>-<k>-i (one per member)
//   fg<pid>-<k> 10.X.Y.254  --veth--  bridge br0  --veth v<i>--  eth0 10.X.Y.(i+1)
//
// Partition(A, B) adds blackhole routes inside the members' namespaces, so members of A and B
// cannot exchange packets (a connect fails at once, established connections stop delivering)
// while the root namespace still reaches everyone. Heal() removes them.
//
// Names carry the creating process's pid, so RemoveStaleNamespaces() can delete what a crashed
// test left behind (namespaces and root-side links whose pid is no longer alive). Needs root
// (CAP_SYS_ADMIN and CAP_NET_ADMIN); Create fails cleanly, leaving nothing behind, without it.

#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace floodgate::testing {

// Runs `argv` (argv[0] is looked up in PATH) and returns its stdout and stderr, interleaved.
// Internal error carrying the output when it exits non-zero; DeadlineExceeded (after killing
// it) when it runs longer than `timeout`.
absl::StatusOr<std::string> RunCommand(const std::vector<std::string>& argv,
                                       absl::Duration timeout = absl::Seconds(10));
// Runs `ip args...` (see RunCommand).
absl::StatusOr<std::string> RunIp(const std::vector<std::string>& args);

// Returns OK when this process can create network namespaces (it adds and deletes one).
absl::Status NamespacesSupported();

// Deletes the namespaces and root-namespace links named fg<pid>-... whose pid is not a live
// process (left by a test that crashed or was killed). Returns how many namespaces it removed.
absl::StatusOr<int> RemoveStaleNamespaces();

// Returns a new socket (close-on-exec) in network namespace `ns`; "" means the namespace of the
// calling process. The socket stays in that namespace whichever thread uses it later.
absl::StatusOr<int> SocketInNamespace(const std::string& ns, int domain, int type);

// Opens a TCP connection from namespace `ns` ("" = the caller's) to `host:port` (IPv4 literal)
// and closes it. OK when it connected within `timeout`; Unavailable with the reason otherwise.
absl::Status TcpConnect(const std::string& ns, const std::string& host, int port,
                        absl::Duration timeout = absl::Seconds(2));

// N namespaces on one bridge, reachable from the root namespace. See the file comment.
//
// Thread-safety: Partition and Heal may be called from any thread (they are serialized); the
// accessors are safe at any time. The destructor deletes every namespace and link it made.
class NetnsNetwork {
 public:
  // Creates `n` (1..250) member namespaces. Fails, after removing what it made, when `ip` is
  // missing or the caller may not create namespaces.
  static absl::StatusOr<std::unique_ptr<NetnsNetwork>> Create(int n);
  ~NetnsNetwork();
  NetnsNetwork(const NetnsNetwork&) = delete;
  NetnsNetwork& operator=(const NetnsNetwork&) = delete;

  int size() const { return static_cast<int>(members_.size()); }
  // Returns member i's namespace name (for `ip netns exec` or SocketInNamespace).
  const std::string& Namespace(int i) const { return members_[i].ns; }
  // Returns member i's IPv4 address, e.g. "10.23.7.1".
  const std::string& Address(int i) const { return members_[i].address; }
  // Returns the root namespace's address on the network, e.g. "10.23.7.254".
  const std::string& RootAddress() const { return root_address_; }

  // Cuts traffic between every member of `a` and every member of `b`, both ways. Adds to any
  // partition already in place. InvalidArgument when an index is out of range or in both sets.
  absl::Status Partition(const std::vector<int>& a, const std::vector<int>& b);
  // Removes every cut made by Partition.
  absl::Status Heal();

 private:
  struct Member {
    std::string ns;
    std::string address;
  };
  NetnsNetwork() = default;
  absl::Status Build(int n);
  void Destroy();

  std::string prefix_;  // fg<pid>-<k>
  std::string bridge_ns_;
  std::string root_link_;
  std::string root_address_;
  std::vector<Member> members_;
  absl::Mutex mu_;
  std::set<std::pair<int, int>> blocked_ ABSL_GUARDED_BY(mu_);  // (from, to) blackholed
};

}  // namespace floodgate::testing
