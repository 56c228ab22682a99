// ClusterStore's membership changes at run time (discovery, graceful leave) and its stats.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "src/cluster/cluster_store.h"
#include "src/common/rate_limited_log.h"

namespace floodgate::cluster {

MembershipChange ClusterStore::SetMembers(const std::vector<Member>& members) {
  if (stopping_.load()) {
    return {};
  }
  MembershipChange change =
      membership_->SetMembers(members, [this](int slot, const Member& member) {
        transport_->SetMember(slot, member.id, member.address);
      });
  // Discovery's changes, not a caller's: bounded by how fast members come and go.
  for (const std::string& id : change.joined) {
    transport_->PeerIsUp(membership_->SlotOf(id));  // a node that rejoins: no stale backoff
    common::Log(common::LogLevel::kInfo, "member_joined",
                {{"peer", id}, {"members", membership_->size()}});
  }
  for (const std::string& id : change.left) {
    common::Log(common::LogLevel::kInfo, "member_left",
                {{"peer", id}, {"members", membership_->size()}});
  }
  if (!change.error.empty()) {
    common::Log(common::LogLevel::kError, "members_refused", {{"error", change.error}});
  }
  return change;
}

LeaveResult ClusterStore::Leave(absl::Duration timeout) {
  const absl::Time start = absl::Now();
  membership_->SetLeaving();
  const PeerTransport::Flushed flushed = transport_->FlushReplication(timeout);
  handed_over_states_.fetch_add(flushed.states, std::memory_order_relaxed);
  handed_over_bytes_.fetch_add(flushed.bytes, std::memory_order_relaxed);
  if (options_.replicas < 2) {
    HandOverOwned(start + timeout);
  }
  return LeaveResult{handed_over_states_.load(std::memory_order_relaxed),
                     handed_over_bytes_.load(std::memory_order_relaxed), absl::Now() - start};
}

void ClusterStore::HandOverOwned(absl::Time deadline) {
  // Ownership as it was with this node (leaving now) and as it is without it.
  const int self = membership_->self();
  const uint64_t stay = membership_->alive_mask() & ~(uint64_t{1} << self);
  const uint64_t before = stay | (uint64_t{1} << self);
  absl::flat_hash_map<int, std::vector<StateRecord>> by_owner;
  const auto add = [&](const StateRecord& record) {
    if (membership_->Owner(record.key_hash, before) != self) {
      return;  // held here for a local share or as another owner's stand-in
    }
    const int next = membership_->Owner(record.key_hash, stay);
    if (next >= 0) {
      by_owner[next].push_back(record);
    }
  };
  const int64_t now = options_.clock->NowNs();
  local_->ForEachLive(now, add);
  {
    // States handed to this node by an earlier leaver and not checked here since: this node
    // owns them too (a rolling shrink passes them on).
    absl::MutexLock lock(&adopted_mu_);
    for (const auto& [key, state] : adopted_) {
      if (state.expiry_ns > now) {
        add(StateRecord{key, {}, state.expiry_ns, state.data});
      }
    }
  }
  for (const auto& [owner, records] : by_owner) {
    if (absl::Now() >= deadline) {
      common::Log(common::LogLevel::kWarn, "leave_out_of_time",
                  {{"note", "some states were not handed over"}});
      return;
    }
    absl::StatusOr<uint64_t> bytes = transport_->HandOver(owner, records);
    if (!bytes.ok()) {
      common::RateLimitedLog::Default().Log(common::LogLevel::kWarn, "hand_over_failed",
                                            {{"peer", membership_->member(owner).id},
                                             {"states", records.size()},
                                             {"error", bytes.status().message()}});
      continue;
    }
    handed_over_states_.fetch_add(records.size(), std::memory_order_relaxed);
    handed_over_bytes_.fetch_add(*bytes, std::memory_order_relaxed);
  }
}

void ClusterStore::SetDiscovery(std::function<DiscoveryInfo()> info,
                                std::function<void()> refresh) {
  absl::MutexLock lock(&discovery_mu_);
  discovery_info_ = std::move(info);
  discovery_refresh_ = std::move(refresh);
}

void ClusterStore::OnMemberDeath() {
  absl::MutexLock lock(&discovery_mu_);
  if (discovery_refresh_) {
    discovery_refresh_();
  }
}

// ---------------------------------------------------------------------------------------------
// Stats

ClusterStats ClusterStore::GetClusterStats() const {
  ClusterStats stats;
  stats.self_id = options_.self_id;
  const uint64_t mask = membership_->alive_mask();
  stats.quorum = Membership::HasQuorum(mask, membership_->size());
  stats.deaths = membership_->deaths();
  stats.failovers = failovers_.load(std::memory_order_relaxed);
  stats.failure_mode_ops = failure_mode_ops_.load(std::memory_order_relaxed);
  stats.shed_ops = shed_ops_.load(std::memory_order_relaxed);
  stats.local_share_ops = local_share_ops_.load(std::memory_order_relaxed);
  stats.local_share_refills = local_share_refills_.load(std::memory_order_relaxed);
  stats.owned_ops = owned_ops_.load(std::memory_order_relaxed);
  stats.warmup_fetches = warmup_fetches_.load(std::memory_order_relaxed);
  stats.config_pushes = gossip_->config_pushes();
  stats.auth_failures = transport_->GetAuthStats();
  // Ownership share in this node's view, from a fixed sample of the hash space.
  constexpr int kSamples = 4096;
  std::vector<int> owned(kMaxMembers, 0);
  for (int s = 0; s < kSamples; ++s) {
    const uint64_t key = (static_cast<uint64_t>(s) + 1) * 0x9E3779B97F4A7C15ULL;
    const int owner = membership_->Owner(key, mask);
    if (owner >= 0) {
      ++owned[owner];
    }
  }
  const uint64_t members = membership_->member_mask();
  stats.members = membership_->size();
  stats.joins = membership_->joins();
  stats.leaves = membership_->leaves();
  stats.leaving = membership_->leaving();
  stats.config_fingerprint = gossip_->config_fingerprint();
  {
    absl::MutexLock lock(&discovery_mu_);
    if (discovery_info_) {
      stats.discovery = discovery_info_();
    } else {
      stats.discovery.source = "static";
    }
  }
  stats.handed_over_states = handed_over_states_.load(std::memory_order_relaxed);
  stats.adopted_states = adopted_states_.load(std::memory_order_relaxed);
  stats.handed_over_bytes = handed_over_bytes_.load(std::memory_order_relaxed);
  for (int i = 0; i < membership_->slots(); ++i) {
    if (((members >> i) & 1) == 0 && i != membership_->self()) {
      continue;
    }
    const Member member = membership_->member(i);
    PeerStats peer;
    peer.id = member.id;
    peer.address = member.address;
    peer.self = i == membership_->self();
    peer.alive = ((mask >> i) & 1) != 0;
    peer.last_contact_ns = membership_->last_contact_ns(i);
    peer.ownership_share = static_cast<double>(owned[i]) / kSamples;
    peer.config_differs = !peer.self && gossip_->config_differs(i);
    stats.config_mismatched += peer.config_differs;
    if (!peer.self) {
      static_cast<PeerLinkStats&>(peer) = transport_->GetLinkStats(i);
    }
    stats.peers.push_back(std::move(peer));
  }
  return stats;
}

}  // namespace floodgate::cluster
