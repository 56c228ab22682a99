#pragma once

// Looks up the addresses of one DNS name: its A and AAAA records. DnsDiscovery (dns_discovery.h)
// asks one every few seconds; tests give it a fake.
//
// Thread-safety: Resolve runs on one thread at a time (the discovery's own); Interrupt may be
// called from any thread, during a Resolve or not.

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace floodgate::discovery {

class DnsResolver {
 public:
  virtual ~DnsResolver() = default;

  // Returns the textual addresses ("10.0.0.7", "fd00::7") of `name`'s A and AAAA records, A
  // first, in answer order. An empty list is an answer: the server said the name has no such
  // records (NXDOMAIN, or NODATA for both types). Unavailable when the lookup failed (no answer
  // within the query timeout, SERVFAIL, REFUSED, connection refused), its message in the user's
  // terms and naming the name and the servers; Cancelled once Interrupt was called.
  virtual absl::StatusOr<std::vector<std::string>> Resolve(const std::string& name) = 0;

  // Makes the running Resolve, and every later one, return Cancelled at once.
  virtual void Interrupt() = 0;
};

struct AresResolverOptions {
  // The servers to ask, as c-ares takes them: "127.0.0.1:5353", "[::1]:53,10.0.0.10" (port 53
  // when none). Empty: the system's, from /etc/resolv.conf. Search domains and ndots always come
  // from /etc/resolv.conf, as for every other program in the pod.
  std::string servers;
  // The bound on one Resolve, both record types and any search domains included.
  absl::Duration query_timeout = absl::Seconds(1);
};

// Returns a resolver on c-ares (a channel of its own, one try per query: the caller retries).
// InvalidArgument for a malformed `servers` or a timeout not above zero; Internal when c-ares
// cannot start (no /etc/resolv.conf is not an error: c-ares then asks 127.0.0.1).
absl::StatusOr<std::unique_ptr<DnsResolver>> NewAresResolver(const AresResolverOptions& options);

}  // namespace floodgate::discovery
