#include "testing/redis_cluster.h"

#include <poll.h>

#include <iostream>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace floodgate::testing {
namespace {

// Polls `done` (every 50 ms, bounded): waiting on other processes, not synchronising.
template <typename Fn>
absl::Status PollUntil(Fn done, std::chrono::milliseconds timeout, const std::string& what) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  absl::Status last = absl::OkStatus();
  while (std::chrono::steady_clock::now() < deadline) {
    last = done();
    if (last.ok()) {
      return absl::OkStatus();
    }
    poll(nullptr, 0, 50);
  }
  return absl::DeadlineExceededError(absl::StrCat(what, ": ", last.message()));
}

// One line of CLUSTER NODES: "<id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch>
// <link> <slot> <slot>...".
struct NodeLine {
  std::string id;
  int port = 0;
  bool master = false;
  bool failed = false;
  std::vector<std::pair<int, int>> ranges;
};

std::vector<NodeLine> ParseNodes(const std::string& text) {
  std::vector<NodeLine> lines;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipWhitespace())) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (f.size() < 8) {
      continue;
    }
    NodeLine node;
    node.id = std::string(f[0]);
    absl::string_view address = f[1].substr(0, f[1].find('@'));
    (void)absl::SimpleAtoi(address.substr(address.rfind(':') + 1), &node.port);
    node.master = absl::StrContains(f[2], "master");
    node.failed = absl::StrContains(f[2], "fail") && !absl::StrContains(f[2], "fail?");
    for (size_t i = 8; i < f.size(); ++i) {
      if (absl::StartsWith(f[i], "[")) {
        continue;  // a migration in progress, not ownership
      }
      std::vector<absl::string_view> bounds = absl::StrSplit(f[i], '-');
      int first = 0, last = 0;
      if (!absl::SimpleAtoi(bounds[0], &first)) {
        continue;
      }
      last = first;
      if (bounds.size() == 2 && !absl::SimpleAtoi(bounds[1], &last)) {
        continue;
      }
      node.ranges.emplace_back(first, last);
    }
    lines.push_back(std::move(node));
  }
  return lines;
}

}  // namespace

absl::StatusOr<std::unique_ptr<RedisCluster>> RedisCluster::Start(RedisClusterOptions options) {
  // A node's cluster bus listens on its port + 10000, which the free-port pick does not hold:
  // it may collide with another process. Such a setup fails; one more try with new ports.
  absl::StatusOr<std::unique_ptr<RedisCluster>> cluster = StartOnce(options);
  if (!cluster.ok()) {
    std::cerr << "redis cluster: setup failed, trying once more: " << cluster.status() << "\n";
    cluster = StartOnce(options);
  }
  return cluster;
}

absl::StatusOr<std::unique_ptr<RedisCluster>> RedisCluster::StartOnce(
    const RedisClusterOptions& options) {
  auto cluster = std::unique_ptr<RedisCluster>(new RedisCluster());
  const int count = options.masters * (1 + options.replicas_per_master);
  std::vector<std::string> create = {"--cluster", "create"};
  for (int i = 0; i < count; ++i) {
    RedisServerOptions server;
    server.args = {"--cluster-enabled",      "yes",
                   "--cluster-config-file",  "nodes.conf",
                   "--cluster-node-timeout", std::to_string(options.node_timeout_ms)};
    absl::StatusOr<std::unique_ptr<RedisServer>> started = RedisServer::Start(server);
    if (!started.ok()) {
      return started.status();
    }
    create.push_back((*started)->address());
    cluster->nodes_.push_back(std::move(*started));
  }
  create.insert(create.end(), {"--cluster-replicas", std::to_string(options.replicas_per_master),
                               "--cluster-yes"});
  absl::StatusOr<std::string> created = cluster->nodes_[0]->Cli(create);
  if (!created.ok()) {
    return created.status();
  }
  if (!absl::StrContains(*created, "All 16384 slots covered")) {
    return absl::InternalError(absl::StrCat("redis-cli --cluster create: ", *created));
  }
  absl::Status ok = cluster->WaitOk(options.timeout);
  if (!ok.ok()) {
    return ok;
  }
  // Every replica attached to its master, so a failover has someone to promote.
  ok = PollUntil(
      [&]() -> absl::Status {
        for (size_t i = 0; i < cluster->size(); ++i) {
          absl::StatusOr<std::string> role = cluster->nodes_[i]->Cli({"ROLE"});
          if (!role.ok()) {
            return role.status();
          }
          if (absl::StartsWith(*role, "slave") && !absl::StrContains(*role, "connected")) {
            return absl::UnavailableError(absl::StrCat("replica ", i, ": ", *role));
          }
        }
        return absl::OkStatus();
      },
      options.timeout, "replicas connected");
  if (!ok.ok()) {
    return ok;
  }
  return cluster;
}

absl::StatusOr<std::string> RedisCluster::NodeId(size_t i) const {
  absl::StatusOr<std::string> id = nodes_[i]->Cli({"CLUSTER", "MYID"});
  if (!id.ok()) {
    return id.status();
  }
  return std::string(absl::StripAsciiWhitespace(*id));
}

absl::StatusOr<size_t> RedisCluster::AnyRunning() const {
  for (size_t i = 0; i < nodes_.size(); ++i) {
    if (nodes_[i]->running()) {
      return i;
    }
  }
  return absl::UnavailableError("no node runs");
}

absl::StatusOr<size_t> RedisCluster::MasterOf(int slot) const {
  absl::StatusOr<size_t> asked = AnyRunning();
  if (!asked.ok()) {
    return asked.status();
  }
  absl::StatusOr<std::string> nodes = nodes_[*asked]->Cli({"CLUSTER", "NODES"});
  if (!nodes.ok()) {
    return nodes.status();
  }
  for (const NodeLine& line : ParseNodes(*nodes)) {
    if (!line.master || line.failed) {
      continue;
    }
    for (auto [first, last] : line.ranges) {
      if (slot >= first && slot <= last) {
        for (size_t i = 0; i < nodes_.size(); ++i) {
          if (nodes_[i]->port() == line.port) {
            return i;
          }
        }
      }
    }
  }
  return absl::NotFoundError(absl::StrCat("no master for slot ", slot));
}

absl::Status RedisCluster::WaitOk(std::chrono::milliseconds timeout, int slot) const {
  return PollUntil(
      [&]() -> absl::Status {
        std::optional<int> owner_port;
        for (const auto& node : nodes_) {
          if (!node->running()) {
            continue;
          }
          absl::StatusOr<std::string> info = node->Cli({"CLUSTER", "INFO"});
          if (!info.ok()) {
            return info.status();
          }
          if (!absl::StrContains(*info, "cluster_state:ok")) {
            return absl::UnavailableError(absl::StrCat(node->address(), " not ok yet"));
          }
          if (slot < 0) {
            continue;
          }
          absl::StatusOr<std::string> text = node->Cli({"CLUSTER", "NODES"});
          if (!text.ok()) {
            return text.status();
          }
          int port = 0;
          for (const NodeLine& line : ParseNodes(*text)) {
            for (auto [first, last] : line.ranges) {
              if (line.master && !line.failed && slot >= first && slot <= last) {
                port = line.port;
              }
            }
          }
          if (port == 0 || (owner_port && *owner_port != port)) {
            return absl::UnavailableError(absl::StrCat("nodes disagree on slot ", slot));
          }
          owner_port = port;
        }
        return absl::OkStatus();
      },
      timeout, "cluster_state:ok");
}

absl::Status RedisCluster::BeginMigration(int slot, size_t from, size_t to) {
  absl::StatusOr<std::string> from_id = NodeId(from);
  absl::StatusOr<std::string> to_id = NodeId(to);
  if (!from_id.ok() || !to_id.ok()) {
    return absl::InternalError("CLUSTER MYID failed");
  }
  const std::string s = std::to_string(slot);
  absl::StatusOr<std::string> importing =
      nodes_[to]->Cli({"CLUSTER", "SETSLOT", s, "IMPORTING", *from_id});
  if (!importing.ok() || !absl::StrContains(*importing, "OK")) {
    return absl::InternalError(absl::StrCat("IMPORTING: ", importing.ok() ? *importing : ""));
  }
  absl::StatusOr<std::string> migrating =
      nodes_[from]->Cli({"CLUSTER", "SETSLOT", s, "MIGRATING", *to_id});
  if (!migrating.ok() || !absl::StrContains(*migrating, "OK")) {
    return absl::InternalError(absl::StrCat("MIGRATING: ", migrating.ok() ? *migrating : ""));
  }
  return absl::OkStatus();
}

absl::Status RedisCluster::MigrateKey(const std::string& key, size_t from, size_t to) {
  absl::StatusOr<std::string> moved = nodes_[from]->Cli(
      {"MIGRATE", "127.0.0.1", std::to_string(nodes_[to]->port()), key, "0", "5000"});
  if (!moved.ok() || !absl::StrContains(*moved, "OK")) {
    return absl::InternalError(absl::StrCat("MIGRATE: ", moved.ok() ? *moved : ""));
  }
  return absl::OkStatus();
}

absl::Status RedisCluster::FinishMigration(int slot, size_t from, size_t to) {
  absl::StatusOr<std::string> to_id = NodeId(to);
  if (!to_id.ok()) {
    return to_id.status();
  }
  // The new owner first (it bumps its epoch), then the old one; the others learn by gossip, and
  // are told too where they take it (a replica refuses SETSLOT: ignored).
  std::vector<size_t> order = {to, from};
  for (size_t i = 0; i < nodes_.size(); ++i) {
    if (i != to && i != from && nodes_[i]->running()) {
      order.push_back(i);
    }
  }
  for (size_t k = 0; k < order.size(); ++k) {
    absl::StatusOr<std::string> set =
        nodes_[order[k]]->Cli({"CLUSTER", "SETSLOT", std::to_string(slot), "NODE", *to_id});
    if (k < 2 && (!set.ok() || !absl::StrContains(*set, "OK"))) {
      return absl::InternalError(absl::StrCat("SETSLOT NODE: ", set.ok() ? *set : ""));
    }
  }
  return absl::OkStatus();
}

}  // namespace floodgate::testing
