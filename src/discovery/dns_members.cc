#include "src/discovery/dns_members.h"

#include <algorithm>
#include <charconv>

#include "absl/strings/str_cat.h"
#include "src/common/text.h"

namespace floodgate::discovery {
namespace {

using common::AbslView;

// Whether `name` can be a DNS name: labels of letters, digits, '-' and '_' (SRV-style names)
// separated by dots, an optional final dot, 253 characters at most. Deliberately loose (no
// per-label length or hyphen-placement rules): the resolver answers NXDOMAIN for the rest.
bool IsDnsName(std::string_view name) {
  if (name.empty() || name.size() > 254 || name.front() == '.') {
    return false;
  }
  bool previous_dot = false;
  for (const char c : name) {
    const bool dot = c == '.';
    if (dot && previous_dot) {
      return false;
    }
    if (!dot && !(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z') && !(c >= '0' && c <= '9') &&
        c != '-' && c != '_') {
      return false;
    }
    previous_dot = dot;
  }
  return true;
}

// Whether the last label of `name` is all digits: an IPv4 address, never a DNS name (no
// top-level domain is numeric).
bool LooksLikeIpv4(std::string_view name) {
  if (name.ends_with('.')) {
    name.remove_suffix(1);
  }
  const size_t dot = name.rfind('.');
  const std::string_view last = dot == std::string_view::npos ? name : name.substr(dot + 1);
  return !last.empty() &&
         std::all_of(last.begin(), last.end(), [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

absl::StatusOr<DnsTarget> ParseDnsTarget(std::string_view name_port) {
  const auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("--peers-dns \"", AbslView(name_port), "\": ", AbslView(why)));
  };
  const size_t colon = name_port.rfind(':');
  if (colon == std::string_view::npos) {
    return bad(
        "expected NAME:PORT, a headless Service name and the peer port, as "
        "floodgate-peers.default.svc.cluster.local:7946");
  }
  const std::string_view name = name_port.substr(0, colon);
  const std::string_view port_text = name_port.substr(colon + 1);
  if (name.empty()) {
    return bad("the name before ':' is empty");
  }
  if (LooksLikeIpv4(name) || name.find_first_of("[]") != std::string_view::npos) {
    return bad("expected a DNS name, not an IP address (fixed addresses go in --peers)");
  }
  if (!IsDnsName(name)) {
    return bad(
        "the name must be a DNS name (letters, digits, '-', '_' and dots), not an address or a "
        "URL");
  }
  uint32_t port = 0;
  const auto [end, ec] =
      std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty()) {
    return bad("the port after ':' is missing");
  }
  if (ec != std::errc() || end != port_text.data() + port_text.size() || port > 65535) {
    return bad("the port must be a number from 1 to 65535");
  }
  if (port == 0) {
    return bad("port 0 is not a peer port (the port every member's peer listener uses)");
  }
  return DnsTarget{std::string(name), static_cast<uint16_t>(port)};
}

std::vector<Node> MembersFromAddresses(const std::vector<std::string>& addresses, uint16_t port) {
  std::vector<Node> members;
  members.reserve(addresses.size());
  for (const std::string& address : addresses) {
    const bool v6 = address.find(':') != std::string::npos;
    members.push_back(Node{
        address, v6 ? absl::StrCat("[", address, "]:", port) : absl::StrCat(address, ":", port)});
  }
  std::sort(members.begin(), members.end(),
            [](const Node& a, const Node& b) { return a.id < b.id; });
  members.erase(std::unique(members.begin(), members.end()), members.end());
  return members;
}

}  // namespace floodgate::discovery
