#include "src/cluster/membership.h"

#include <algorithm>
#include <bit>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "src/common/log.h"

namespace floodgate::cluster {
namespace {

// splitmix64's finalizer: a bijection with good avalanche.
uint64_t Mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ULL;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBULL;
  x ^= x >> 31;
  return x;
}

}  // namespace

uint64_t NodeSeed(std::string_view node_id) {
  uint64_t h = 0xCBF29CE484222325ULL;  // FNV-1a, then mixed
  for (unsigned char c : node_id) {
    h = (h ^ c) * 0x100000001B3ULL;
  }
  return Mix64(h);
}

uint64_t RendezvousScore(uint64_t key_hash, uint64_t member_seed) {
  return Mix64(key_hash ^ member_seed);
}

absl::StatusOr<std::vector<Member>> ParsePeers(std::string_view spec) {
  std::vector<Member> members;
  absl::flat_hash_set<std::string> ids;
  for (absl::string_view part :
       absl::StrSplit(absl::string_view(spec.data(), spec.size()), ',', absl::SkipWhitespace())) {
    part = absl::StripAsciiWhitespace(part);
    const std::string_view item(part.data(), part.size());
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos || eq == 0 || eq + 1 == item.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--peers: expected ID=HOST:PORT, got \"", std::string(item), "\""));
    }
    Member m;
    m.id = std::string(item.substr(0, eq));
    m.address = std::string(item.substr(eq + 1));
    const size_t colon = m.address.rfind(':');
    uint32_t port = 0;
    if (colon == std::string::npos ||
        !absl::SimpleAtoi(absl::string_view(m.address).substr(colon + 1), &port) || port == 0 ||
        port > 65535) {
      return absl::InvalidArgumentError(
          absl::StrCat("--peers: bad address for ", m.id, ": \"", m.address, "\""));
    }
    if (!ids.insert(m.id).second) {
      return absl::InvalidArgumentError(absl::StrCat("--peers: node id ", m.id, " repeated"));
    }
    m.seed = NodeSeed(m.id);
    members.push_back(std::move(m));
  }
  if (members.empty()) {
    return absl::InvalidArgumentError("--peers: no members");
  }
  if (members.size() > kMaxMembers) {
    return absl::InvalidArgumentError(absl::StrCat("--peers: at most ", kMaxMembers, " members"));
  }
  std::sort(members.begin(), members.end(),
            [](const Member& a, const Member& b) { return a.id < b.id; });
  return members;
}

Membership::Membership(std::vector<Member> members, int self, const Clock* clock,
                       int64_t dead_after_ns)
    : self_(self), clock_(clock), dead_after_ns_(dead_after_ns) {
  absl::MutexLock lock(&mu_);
  const int n = std::min<int>(static_cast<int>(members.size()), kMaxMembers);
  uint64_t mask = 0;
  for (int i = 0; i < n; ++i) {
    members[i].seed = NodeSeed(members[i].id);
    seeds_[i].store(members[i].seed, std::memory_order_relaxed);
    slot_[i] = std::move(members[i]);
    mask |= uint64_t{1} << i;
  }
  slots_used_.store(n, std::memory_order_release);
  members_mask_.store(mask, std::memory_order_release);
  alive_.store(self >= 0 && self < n ? uint64_t{1} << self : 0, std::memory_order_release);
  quorum_ = HasQuorum(alive_mask(), std::popcount(mask));
}

bool Membership::HasQuorum(uint64_t mask, int members) { return 2 * std::popcount(mask) > members; }

int Membership::size() const { return std::popcount(member_mask()); }

Member Membership::member(int i) const {
  if (i < 0 || i >= kMaxMembers) {
    return Member{};
  }
  absl::MutexLock lock(&mu_);
  return slot_[i];
}

std::vector<Member> Membership::members() const {
  const uint64_t mask = member_mask();
  std::vector<Member> out;
  absl::MutexLock lock(&mu_);
  for (int i = 0; i < slots(); ++i) {
    if ((mask >> i) & 1) {
      out.push_back(slot_[i]);
    }
  }
  return out;
}

int Membership::SlotOf(std::string_view id) const {
  absl::MutexLock lock(&mu_);
  for (int i = 0; i < slots(); ++i) {
    if (slot_[i].id == id) {
      return i;
    }
  }
  return -1;
}

MembershipChange Membership::SetMembers(const std::vector<Member>& members,
                                        const SlotChanged& on_slot) {
  AliveChanges changes;
  MembershipChange change = ApplyMembers(members, on_slot, changes);
  LogChanges(changes, "members changed");
  return change;
}

MembershipChange Membership::ApplyMembers(const std::vector<Member>& members,
                                          const SlotChanged& on_slot, AliveChanges& changes) {
  MembershipChange change;
  const int64_t now = clock_->NowNs();
  absl::MutexLock lock(&mu_);
  const std::string& self_id = slot_[self_].id;
  uint64_t mask = members_mask_.load(std::memory_order_relaxed);
  // Leavers first, so that their slots may be reused below.
  for (int i = 0; i < slots(); ++i) {
    if (i == self_ || ((mask >> i) & 1) == 0) {
      continue;
    }
    bool stays = false;
    for (const Member& m : members) {
      stays |= m.id == slot_[i].id;
    }
    if (!stays) {
      mask &= ~(uint64_t{1} << i);
      members_mask_.store(mask, std::memory_order_release);
      SetAlive(i, false);
      left_at_ns_[i] = now;
      leaves_.fetch_add(1, std::memory_order_relaxed);
      change.left.push_back(slot_[i].id);
    }
  }
  for (const Member& m : members) {
    if (m.id == self_id || m.id.empty()) {
      continue;
    }
    int slot = -1;
    for (int i = 0; i < slots(); ++i) {
      if (slot_[i].id == m.id) {
        slot = i;
      }
    }
    if (slot < 0) {
      // A slot never used, else the one whose member left longest ago.
      if (slots() < kMaxMembers) {
        slot = slots();
        slots_used_.store(slot + 1, std::memory_order_release);
      } else {
        for (int i = 0; i < kMaxMembers; ++i) {
          if (((mask >> i) & 1) == 0 && i != self_ &&
              (slot < 0 || left_at_ns_[i] < left_at_ns_[slot])) {
            slot = i;
          }
        }
      }
      if (slot < 0) {
        change.error = absl::StrCat("at most ", kMaxMembers, " members: ", m.id, " left out");
        continue;
      }
      slot_[slot] = Member{m.id, m.address, NodeSeed(m.id)};
      seeds_[slot].store(slot_[slot].seed, std::memory_order_release);
      change.slots.push_back(slot);
      if (on_slot) {
        on_slot(slot, slot_[slot]);
      }
    } else if (slot_[slot].address != m.address) {
      slot_[slot].address = m.address;
      change.slots.push_back(slot);
      if (on_slot) {
        on_slot(slot, slot_[slot]);
      }
    }
    if (((mask >> slot) & 1) == 0) {
      mask |= uint64_t{1} << slot;
      members_mask_.store(mask, std::memory_order_release);
      last_contact_ns_[slot] = now;
      SetAlive(slot, true);
      joins_.fetch_add(1, std::memory_order_relaxed);
      change.joined.push_back(m.id);
    }
  }
  NoteQuorum(changes);
  return change;
}

void Membership::SetLeaving() {
  absl::MutexLock lock(&mu_);
  leaving_.store(true, std::memory_order_release);
  const uint64_t bit = uint64_t{1} << self_;
  members_mask_.fetch_and(~bit, std::memory_order_acq_rel);
  alive_.fetch_and(~bit, std::memory_order_acq_rel);
}

void Membership::SetAlive(int i, bool alive, AliveChanges* changes) {
  const uint64_t bit = uint64_t{1} << i;
  const uint64_t old = alive_.load(std::memory_order_relaxed);
  if (alive) {
    if ((members_mask_.load(std::memory_order_relaxed) & bit) != 0 && (old & bit) == 0) {
      alive_.store(old | bit, std::memory_order_release);
      if (changes != nullptr) {
        changes->returned.push_back(slot_[i].id);
      }
    }
  } else if ((old & bit) != 0) {
    alive_.store(old & ~bit, std::memory_order_release);
    deaths_.fetch_add(1, std::memory_order_relaxed);
    if (changes != nullptr) {
      changes->died.push_back(slot_[i].id);
    }
  }
}

void Membership::NoteQuorum(AliveChanges& changes) {
  changes.alive = std::popcount(alive_mask());
  changes.members = size();
  const bool now = HasQuorum(alive_mask(), changes.members);
  if (now != quorum_ && !leaving()) {  // a node that leaves loses it on purpose: no news
    changes.quorum = now ? 1 : -1;
  }
  quorum_ = now;
}

void Membership::LogChanges(const AliveChanges& changes, std::string_view why) {
  for (const std::string& id : changes.died) {
    common::Log(
        common::LogLevel::kWarn, "peer_dead",
        {{"peer", id}, {"why", why}, {"alive", changes.alive}, {"members", changes.members}});
  }
  for (const std::string& id : changes.returned) {
    common::Log(common::LogLevel::kInfo, "peer_alive",
                {{"peer", id}, {"alive", changes.alive}, {"members", changes.members}});
  }
  if (changes.quorum != 0) {
    common::Log(changes.quorum > 0 ? common::LogLevel::kInfo : common::LogLevel::kWarn,
                changes.quorum > 0 ? "quorum_reached" : "quorum_lost",
                {{"alive", changes.alive}, {"members", changes.members}});
  }
}

bool Membership::RecordContact(int i) {
  if (i < 0 || i >= slots() || i == self_) {
    return false;
  }
  AliveChanges changes;
  {
    absl::MutexLock lock(&mu_);
    last_contact_ns_[i] = clock_->NowNs();
    SetAlive(i, true, &changes);
    if (changes.returned.empty()) {
      return false;  // the common case: it was alive already
    }
    NoteQuorum(changes);
  }
  LogChanges(changes, "");
  return true;
}

void Membership::RecordFailure(int i) {
  if (i < 0 || i >= slots() || i == self_) {
    return;
  }
  AliveChanges changes;
  {
    absl::MutexLock lock(&mu_);
    SetAlive(i, false, &changes);
    if (changes.died.empty()) {
      return;
    }
    NoteQuorum(changes);
  }
  LogChanges(changes, "call failed");
}

void Membership::Tick() {
  const int64_t now = clock_->NowNs();
  AliveChanges changes;
  {
    absl::MutexLock lock(&mu_);
    for (int i = 0; i < slots(); ++i) {
      if (i != self_ && now - last_contact_ns_[i] > dead_after_ns_) {
        SetAlive(i, false, &changes);
      }
    }
    if (changes.died.empty()) {
      return;
    }
    NoteQuorum(changes);
  }
  LogChanges(changes, "silent");
}

int64_t Membership::last_contact_ns(int i) const {
  if (i < 0 || i >= kMaxMembers) {
    return 0;
  }
  absl::MutexLock lock(&mu_);
  return last_contact_ns_[i];
}

int Membership::Rank(uint64_t key_hash, uint64_t mask, absl::Span<int> out) const {
  // Selection of the top out.size() scores; clusters are small, so this is a few compares.
  uint64_t scores[kMaxMembers];
  int n = 0;
  for (uint64_t bits = mask; bits != 0; bits &= bits - 1) {
    const int i = std::countr_zero(bits);
    {
      const uint64_t score = RendezvousScore(key_hash, seeds_[i].load(std::memory_order_relaxed));
      // Insertion into out[0..n) by descending score (ties cannot matter: seeds differ).
      int pos = std::min<int>(n, static_cast<int>(out.size()));
      while (pos > 0 && scores[pos - 1] < score) {
        if (pos < static_cast<int>(out.size())) {
          scores[pos] = scores[pos - 1];
          out[pos] = out[pos - 1];
        }
        --pos;
      }
      if (pos < static_cast<int>(out.size())) {
        scores[pos] = score;
        out[pos] = i;
        n = std::min<int>(n + 1, static_cast<int>(out.size()));
      }
    }
  }
  return n;
}

int Membership::Owner(uint64_t key_hash, uint64_t mask) const {
  int best = -1;
  uint64_t best_score = 0;
  for (uint64_t bits = mask; bits != 0; bits &= bits - 1) {
    const int i = std::countr_zero(bits);
    {
      const uint64_t score = RendezvousScore(key_hash, seeds_[i].load(std::memory_order_relaxed));
      if (best < 0 || score > best_score) {
        best = i;
        best_score = score;
      }
    }
  }
  return best;
}

}  // namespace floodgate::cluster
