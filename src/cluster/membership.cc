#include "src/cluster/membership.h"

#include <algorithm>
#include <bit>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

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
    : members_(std::move(members)),
      self_(self),
      clock_(clock),
      dead_after_ns_(dead_after_ns),
      alive_(uint64_t{1} << self),
      last_contact_ns_(members_.size(), 0) {}

bool Membership::HasQuorum(uint64_t mask, int members) { return 2 * std::popcount(mask) > members; }

void Membership::SetAlive(int i, bool alive) {
  const uint64_t bit = uint64_t{1} << i;
  const uint64_t old = alive_.load(std::memory_order_relaxed);
  if (alive) {
    alive_.store(old | bit, std::memory_order_release);
  } else if ((old & bit) != 0) {
    alive_.store(old & ~bit, std::memory_order_release);
    deaths_.fetch_add(1, std::memory_order_relaxed);
  }
}

void Membership::RecordContact(int i) {
  if (i < 0 || i >= size() || i == self_) {
    return;
  }
  absl::MutexLock lock(&mu_);
  last_contact_ns_[i] = clock_->NowNs();
  SetAlive(i, true);
}

void Membership::RecordFailure(int i) {
  if (i < 0 || i >= size() || i == self_) {
    return;
  }
  absl::MutexLock lock(&mu_);
  SetAlive(i, false);
}

void Membership::Tick() {
  const int64_t now = clock_->NowNs();
  absl::MutexLock lock(&mu_);
  for (int i = 0; i < size(); ++i) {
    if (i != self_ && now - last_contact_ns_[i] > dead_after_ns_) {
      SetAlive(i, false);
    }
  }
}

int64_t Membership::last_contact_ns(int i) const {
  absl::MutexLock lock(&mu_);
  return last_contact_ns_[i];
}

int Membership::Rank(uint64_t key_hash, uint64_t mask, absl::Span<int> out) const {
  // Selection of the top out.size() scores; clusters are small, so this is a few compares.
  uint64_t scores[kMaxMembers];
  int n = 0;
  for (int i = 0; i < size(); ++i) {
    if ((mask >> i) & 1) {
      const uint64_t score = RendezvousScore(key_hash, members_[i].seed);
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
  for (int i = 0; i < size(); ++i) {
    if ((mask >> i) & 1) {
      const uint64_t score = RendezvousScore(key_hash, members_[i].seed);
      if (best < 0 || score > best_score) {
        best = i;
        best_score = score;
      }
    }
  }
  return best;
}

}  // namespace floodgate::cluster
