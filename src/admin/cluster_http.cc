#include "src/admin/cluster_http.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "floodgate/clock.h"
#include "src/common/json.h"

namespace floodgate::admin {
namespace {

void Counter(std::string& out, const char* name, const char* help, uint64_t value) {
  absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " counter\n", name, " ",
                  value, "\n");
}

}  // namespace

std::string ClusterJson(const cluster::ClusterStats& stats) {
  const int64_t now = SystemClock::Get()->NowNs();
  std::string out = "{\"node\":";
  common::AppendJsonString(stats.self_id, out);
  absl::StrAppend(
      &out, ",\"quorum\":", stats.quorum ? "true" : "false", ",\"deaths\":", stats.deaths,
      ",\"failovers\":", stats.failovers, ",\"failure_mode_ops\":", stats.failure_mode_ops,
      ",\"shed_ops\":", stats.shed_ops, ",\"local_share_ops\":", stats.local_share_ops,
      ",\"local_share_refills\":", stats.local_share_refills, ",\"owned_ops\":", stats.owned_ops,
      ",\"warmup_fetches\":", stats.warmup_fetches, ",\"config_pushes\":", stats.config_pushes,
      ",\"member_count\":", stats.members, ",\"joins\":", stats.joins, ",\"leaves\":", stats.leaves,
      ",\"leaving\":", stats.leaving ? "true" : "false",
      ",\"handed_over_states\":", stats.handed_over_states,
      ",\"handed_over_bytes\":", stats.handed_over_bytes,
      ",\"adopted_states\":", stats.adopted_states, ",\"discovery\":{\"source\":");
  const cluster::DiscoveryInfo& d = stats.discovery;
  common::AppendJsonString(d.source, out);
  absl::StrAppend(&out, ",\"connected\":", d.connected ? "true" : "false", ",\"last_error\":");
  common::AppendJsonString(d.last_error, out);
  absl::StrAppend(&out, ",\"errors\":", d.errors, ",\"reconnects\":", d.reconnects,
                  ",\"updates\":", d.updates, ",\"revision\":", d.revision,
                  "},\"config_fingerprint\":\"",
                  absl::Hex(stats.config_fingerprint, absl::kZeroPad16),
                  "\",\"config_mismatched\":", stats.config_mismatched, ",\"members\":[");
  bool first = true;
  for (const cluster::PeerStats& p : stats.peers) {
    absl::StrAppend(&out, first ? "" : ",", "{\"id\":");
    first = false;
    common::AppendJsonString(p.id, out);
    out += ",\"address\":";
    common::AppendJsonString(p.address, out);
    absl::StrAppend(&out, ",\"self\":", p.self ? "true" : "false",
                    ",\"alive\":", p.alive ? "true" : "false",
                    ",\"config_differs\":", p.config_differs ? "true" : "false");
    if (!p.self) {
      absl::StrAppend(
          &out, ",\"last_contact_ms_ago\":",
          p.last_contact_ns == 0 ? -1 : (now - p.last_contact_ns) / 1'000'000,
          ",\"replication_lag_ms\":", absl::StrFormat("%.3f", p.replication_lag_ns / 1e6),
          ",\"forwarded\":", p.forwarded_txns, ",\"forward_batches\":", p.forward_batches,
          ",\"forward_errors\":", p.forward_errors, ",\"replicated\":", p.replicated_states);
    }
    absl::StrAppend(&out, ",\"ownership_share\":", absl::StrFormat("%.4f", p.ownership_share), "}");
  }
  out += "]}";
  return out;
}

std::string ClusterPrometheus(const cluster::ClusterStats& stats) {
  std::string out;
  int alive = 0;
  for (const auto& p : stats.peers) {
    alive += p.alive;
  }
  absl::StrAppend(&out,
                  "# HELP floodgate_cluster_members_alive Members this node sees alive, itself "
                  "included.\n# TYPE floodgate_cluster_members_alive gauge\n"
                  "floodgate_cluster_members_alive ",
                  alive, "\n# HELP floodgate_cluster_quorum 1 when this node sees a majority.\n",
                  "# TYPE floodgate_cluster_quorum gauge\nfloodgate_cluster_quorum ",
                  stats.quorum ? 1 : 0, "\n");
  absl::StrAppend(&out,
                  "# HELP floodgate_cluster_members Current members, this node included unless it "
                  "is leaving.\n# TYPE floodgate_cluster_members gauge\nfloodgate_cluster_members ",
                  stats.members, "\n");
  Counter(out, "floodgate_cluster_member_deaths_total", "Members seen going dead.", stats.deaths);
  Counter(out, "floodgate_cluster_joins_total", "Members that joined at run time (discovery).",
          stats.joins);
  Counter(out, "floodgate_cluster_leaves_total",
          "Members that left at run time (deregistered, or removed by discovery).", stats.leaves);
  Counter(out, "floodgate_cluster_handed_over_states_total",
          "Key states this node handed to their new owners when it left.",
          stats.handed_over_states);
  Counter(out, "floodgate_cluster_handed_over_bytes_total",
          "Bytes of the key states this node handed over when it left.", stats.handed_over_bytes);
  Counter(out, "floodgate_cluster_adopted_states_total",
          "Key states other members handed to this node when they left (--replicas 1).",
          stats.adopted_states);
  const cluster::DiscoveryInfo& d = stats.discovery;
  absl::StrAppend(&out,
                  "# HELP floodgate_cluster_discovery_connected 1 while the discovery source "
                  "(etcd, dns; static: always) answers.\n"
                  "# TYPE floodgate_cluster_discovery_connected gauge\n"
                  "floodgate_cluster_discovery_connected{source=\"",
                  d.source, "\"} ", d.connected ? 1 : 0, "\n");
  absl::StrAppend(&out,
                  "# HELP floodgate_cluster_config_mismatched_members Members that serve another "
                  "config than this node (different limits for the same keys: a bypass).\n"
                  "# TYPE floodgate_cluster_config_mismatched_members gauge\n"
                  "floodgate_cluster_config_mismatched_members ",
                  stats.config_mismatched, "\n");
  Counter(out, "floodgate_cluster_discovery_errors_total",
          "Failed calls to the discovery source (the last member list is kept).", d.errors);
  Counter(out, "floodgate_cluster_discovery_reconnects_total",
          "Times the discovery source came back after failing.", d.reconnects);
  Counter(out, "floodgate_cluster_failovers_total",
          "Forwarded checks retried on another owner after the owner failed.", stats.failovers);
  Counter(out, "floodgate_cluster_failure_mode_ops_total",
          "Limit checks decided by the limit's failure mode (no owner reachable, or shed).",
          stats.failure_mode_ops);
  Counter(out, "floodgate_cluster_shed_ops_total",
          "Limit checks a front end past its in-flight bounds had decided by failure mode "
          "instead of waiting for the key's owner.",
          stats.shed_ops);
  Counter(out, "floodgate_cluster_local_share_ops_total",
          "Limit checks decided from this node's share (consistency: local).",
          stats.local_share_ops);
  Counter(out, "floodgate_cluster_local_share_refills_total",
          "consistency: local checks sent to the owner because this node's share was spent.",
          stats.local_share_refills);
  Counter(out, "floodgate_cluster_owned_ops_total", "Limit checks decided here as the owner.",
          stats.owned_ops);
  Counter(out, "floodgate_cluster_warmup_fetches_total",
          "Keys fetched from replicas by this node after it (re)started.", stats.warmup_fetches);
  Counter(out, "floodgate_cluster_config_pushes_total",
          "Config changes received from peers and applied.", stats.config_pushes);
  absl::StrAppend(&out,
                  "# HELP floodgate_cluster_peer_auth_failures_total Peer connections refused in "
                  "the handshake (here or by the member dialled), by reason.\n"
                  "# TYPE floodgate_cluster_peer_auth_failures_total counter\n");
  const std::pair<const char*, uint64_t> reasons[] = {
      {"bad_key", stats.auth_failures.bad_key},
      {"not_member", stats.auth_failures.not_member},
      {"version", stats.auth_failures.version},
      {"malformed", stats.auth_failures.malformed}};
  for (const auto& [reason, count] : reasons) {
    absl::StrAppend(&out, "floodgate_cluster_peer_auth_failures_total{reason=\"", reason, "\"} ",
                    count, "\n");
  }
  struct Family {
    const char* name;
    const char* type;
    const char* help;
  };
  const Family families[] = {
      {"floodgate_cluster_peer_alive", "gauge", "1 while the peer is alive in this node's view."},
      {"floodgate_cluster_ownership_share", "gauge",
       "Fraction of keys the member owns in this node's view."},
      {"floodgate_cluster_forwarded_total", "counter", "Checks forwarded to the peer."},
      {"floodgate_cluster_forward_batches_total", "counter",
       "Writes that carried forwarded checks; forwarded/batches is the mean batch size."},
      {"floodgate_cluster_forward_errors_total", "counter", "Forwarded checks that failed."},
      {"floodgate_cluster_replicated_states_total", "counter",
       "Key states replicated to the peer."},
      {"floodgate_cluster_replication_lag_seconds", "gauge",
       "Last replication batch: oldest state queued to acknowledged."},
  };
  for (int f = 0; f < 7; ++f) {
    absl::StrAppend(&out, "# HELP ", families[f].name, " ", families[f].help, "\n# TYPE ",
                    families[f].name, " ", families[f].type, "\n");
    for (const auto& p : stats.peers) {
      if (p.self && f != 1) {
        continue;
      }
      std::string value;
      switch (f) {
        case 0:
          value = p.alive ? "1" : "0";
          break;
        case 1:
          value = absl::StrFormat("%.4f", p.ownership_share);
          break;
        case 2:
          value = absl::StrCat(p.forwarded_txns);
          break;
        case 3:
          value = absl::StrCat(p.forward_batches);
          break;
        case 4:
          value = absl::StrCat(p.forward_errors);
          break;
        case 5:
          value = absl::StrCat(p.replicated_states);
          break;
        default:
          value = absl::StrFormat("%.6f", p.replication_lag_ns / 1e9);
          break;
      }
      absl::StrAppend(&out, families[f].name, "{peer=\"", p.id, "\"} ", value, "\n");
    }
  }
  return out;
}

}  // namespace floodgate::admin
