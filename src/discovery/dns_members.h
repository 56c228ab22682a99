#pragma once

// The pure parts of DNS discovery (dns_discovery.h): reading --peers-dns NAME:PORT and turning
// the addresses a name resolves to into a member list.
//
// Thread-safety: every function is pure.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "src/discovery/discovery.h"

namespace floodgate::discovery {

// What --peers-dns names: a DNS name (a Kubernetes headless Service) and the peer port every
// member listens on.
struct DnsTarget {
  std::string name;
  uint16_t port = 0;

  bool operator==(const DnsTarget&) const = default;
};

// Parses "NAME:PORT" (as "floodgate-peers.default.svc.cluster.local:7946"). InvalidArgument,
// naming the flag and what is wrong, for an empty name, a missing or non-numeric port, port 0 or
// a port past 65535, or a name that is not a DNS name (an IP address, spaces, a URL).
absl::StatusOr<DnsTarget> ParseDnsTarget(std::string_view name_port);

// Returns the members that `addresses` (textual IPv4 and IPv6 addresses, as resolved) stand for:
// one Node per distinct address, id = the address ("10.0.0.7", "fd00::7"), address = where its
// peer listener is ("10.0.0.7:7946", "[fd00::7]:7946"), sorted by id.
std::vector<Node> MembersFromAddresses(const std::vector<std::string>& addresses, uint16_t port);

}  // namespace floodgate::discovery
