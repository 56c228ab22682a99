#include "src/core/leases.h"

#include <algorithm>
#include <cstdint>
#include <limits>

#include "src/core/algorithms.h"

// A lease is live while now_ns < expiry_ns: expiry_ns is the state's expiry right after the
// admitting Decide, the end of the epoch its slots were counted in plus one lease period, which
// is exactly when core::ReadSlots drops them (they are prev for the second half). The slots were
// counted in that epoch even when the clock had stepped back (I3), so the last instant of that
// epoch, expiry_ns - period_ns - 1, names the epoch for core::Release whatever now_ns is.

namespace floodgate::core {

void LeaseBook::Add(uint64_t token, uint64_t count, int64_t expiry_ns, int64_t now_ns) {
  if (token == 0 || count == 0) {
    return;
  }
  Prune(now_ns);
  for (Lease& lease : leases_) {
    if (lease.token == token) {
      lease.count += count;  // both <= the limit < 2^32
      lease.expiry_ns = std::max(lease.expiry_ns, expiry_ns);
      return;
    }
  }
  leases_.push_back(Lease{.token = token, .expiry_ns = expiry_ns, .count = count});
}

const Lease* LeaseBook::Find(uint64_t token, int64_t now_ns) const {
  if (token == 0) {
    return nullptr;
  }
  for (const Lease& lease : leases_) {
    if (lease.token == token) {
      return lease.expiry_ns > now_ns ? &lease : nullptr;
    }
  }
  return nullptr;
}

bool LeaseBook::Remove(uint64_t token) {
  for (size_t i = 0; i < leases_.size(); ++i) {
    if (leases_[i].token == token) {
      leases_[i] = leases_.back();  // order does not matter
      leases_.pop_back();
      return true;
    }
  }
  return false;
}

void LeaseBook::Prune(int64_t now_ns) {
  leases_.erase(std::remove_if(leases_.begin(), leases_.end(),
                               [now_ns](const Lease& l) { return l.expiry_ns <= now_ns; }),
                leases_.end());
  if (leases_.empty()) {
    leases_.shrink_to_fit();  // back to inline storage: an idle key holds no heap memory
  }
}

KeyState ReleaseLease(const LimitSpec& spec, const KeyState& state, int64_t now_ns,
                      const Lease& lease) {
  // The last instant of the lease's epoch (see the block above); no overflow near INT64_MIN.
  const int64_t min_ns = std::numeric_limits<int64_t>::min();
  const int64_t in_epoch_ns =
      lease.expiry_ns > min_ns + spec.period_ns ? lease.expiry_ns - spec.period_ns - 1 : min_ns;
  return Release(spec, state, now_ns, lease.count, in_epoch_ns);
}

}  // namespace floodgate::core
