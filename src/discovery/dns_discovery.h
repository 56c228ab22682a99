#pragma once

// Discovery from DNS (--peers-dns NAME:PORT): the members are the A and AAAA records of NAME,
// typically a Kubernetes headless Service, each listening for peers on PORT. The platform
// publishes and withdraws the records (a pod turning ready or going away), so this source only
// reads: Deregister does nothing.
//
// It resolves NAME on its own thread every `interval`, and at once on Refresh. What an answer
// does:
//   - addresses: the members, Node{id = "IP", address = "IP:PORT" or "[IPv6]:PORT"}, sorted by
//     id; on_change runs when they differ from the list last reported.
//   - no records (NXDOMAIN, or NODATA for both A and AAAA): the server answered, so connected
//     stays true, but the last list is kept and last_error says so. A headless Service with no
//     ready pod publishes nothing, which is what a cluster going through a bad rollout or a
//     readiness flap looks like: dropping every member then would split the cluster into single
//     nodes for nothing. Only when no list was ever reported is the empty list reported (a node
//     starting before any pod is ready, itself included, serves alone until the records appear).
//     Whether the answer was authoritative is not asked: the pod's resolver forwards the zone's
//     answer, and a resolver lying about a name is not something a client can check.
//   - a failed lookup (no answer within `query_timeout`, SERVFAIL, REFUSED, connection refused,
//     or either record type failing): the last list is kept; connected = false, last_error says
//     what failed and errors counts it; the next try comes after a backoff that starts at
//     `retry_initial` and doubles up to `interval`. The first answer after failures counts a
//     reconnect.
//
// Thread-safety: as Discovery (discovery.h). Start once; Stop may not be called from on_change or
// on_lookup (it waits for the thread they run on).

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "src/discovery/discovery.h"
#include "src/discovery/dns_resolver.h"

namespace floodgate::discovery {

struct DnsDiscoveryOptions {
  std::string name;   // the name to resolve (ParseDnsTarget reads --peers-dns into name and port)
  uint16_t port = 0;  // the peer port every member listens on, 1 to 65535
  // The DNS servers to ask, "IP[:PORT],..." ("127.0.0.1:5353" in tests); empty: /etc/resolv.conf.
  std::string servers;
  absl::Duration interval = absl::Seconds(2);       // between lookups that succeeded
  absl::Duration query_timeout = absl::Seconds(1);  // the bound on one lookup (A and AAAA)
  absl::Duration start_timeout = absl::Seconds(2);  // how long Start waits for the first answer
  absl::Duration retry_initial = absl::Milliseconds(200);  // the first backoff after a failure
  // Called on the source's thread after every lookup, with the status it left (tests wait on it;
  // the server may log from it). Must not block.
  std::function<void(const DiscoveryStatus&)> on_lookup;
};

// Returns a DNS discovery source, not started, asking c-ares (dns_resolver.h). InvalidArgument for
// an empty name, port 0, durations not above zero or malformed servers.
absl::StatusOr<std::unique_ptr<Discovery>> NewDnsDiscovery(DnsDiscoveryOptions options);

// The same with a given resolver (`options.servers` and `query_timeout` are then the resolver's
// business). Tests give a fake.
absl::StatusOr<std::unique_ptr<Discovery>> NewDnsDiscovery(DnsDiscoveryOptions options,
                                                           std::unique_ptr<DnsResolver> resolver);

}  // namespace floodgate::discovery
