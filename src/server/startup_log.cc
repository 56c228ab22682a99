#include "src/server/startup_log.h"

#include <memory>
#include <string>

#include "src/common/log.h"

namespace floodgate::server {
namespace {

size_t CountNode(const core::DescriptorNode& node) {
  size_t n = node.limits.size();
  for (const core::DescriptorNode& child : node.children) {
    n += CountNode(child);
  }
  return n;
}

// Where the members come from.
std::string_view MembersFrom(const ServerOptions& options) {
  if (!options.etcd.empty()) {
    return "etcd";
  }
  if (!options.peers_dns.empty()) {
    return "dns";
  }
  if (!options.peers.empty()) {
    return "peers";
  }
  return "none";
}

}  // namespace

std::string RedactUrl(std::string_view url) {
  const size_t scheme = url.find("://");
  if (scheme == std::string_view::npos) {
    return std::string(url);
  }
  const size_t start = scheme + 3;
  const size_t at = url.rfind('@', url.find('/', start));
  if (at == std::string_view::npos || at < start) {
    return std::string(url);
  }
  const size_t colon = url.find(':', start);
  if (colon == std::string_view::npos || colon > at) {
    return std::string(url);  // a user name alone is no secret
  }
  return std::string(url.substr(0, colon + 1)) + "***" + std::string(url.substr(at));
}

size_t CountLimits(const core::Config& config) {
  size_t n = 0;
  for (const auto& [name, domain] : config.domains) {
    if (domain != nullptr) {
      n += CountNode(domain->root);
    }
  }
  return n;
}

void LogStarted(const ServerOptions& options, Server& server, std::string_view version) {
  const std::shared_ptr<const core::Config> config = server.limiter()->config();
  const std::string http = options.http_address.substr(0, options.http_address.rfind(':') + 1) +
                           std::to_string(server.http_port());
  const std::string grpc = options.grpc_address.substr(0, options.grpc_address.rfind(':') + 1) +
                           std::to_string(server.grpc_port());
  const std::string store = RedactUrl(options.store);
  common::Log(common::LogLevel::kInfo, "started",
              {{"version", version},
               {"http", http},
               {"grpc", grpc},
               {"node", options.node_id.empty() ? "-" : options.node_id},
               {"peer", options.peer_address.empty() ? "-" : options.peer_address},
               {"members_from", MembersFrom(options)},
               {"peers", options.peers.empty() ? "-" : options.peers},
               {"store", store},
               {"config", options.config_path.empty() ? "-" : options.config_path},
               {"xds", options.xds_server.empty() ? "-" : options.xds_server},
               {"config_version", config != nullptr ? config->version : 0},
               {"domains", config != nullptr ? config->domains.size() : 0},
               {"limits", config != nullptr ? CountLimits(*config) : 0}});
}

}  // namespace floodgate::server
