#pragma once

// The leases of one concurrency key: which check holds which of the key's slots, so that a
// release frees exactly the slots its own check took, once (docs/algorithms.md, "Concurrency").
//
// The key's KeyState (algorithms.h) counts the slots held per lease epoch; a LeaseBook names the
// holders. A check that Decide admits records a Lease under a token the caller chose (a random,
// unguessable 64-bit value: the limiter mints it); a release looks its token up, and only a
// live lease found there frees anything: ReleaseLease takes exactly its slots from the epoch they
// were counted in. A made-up token finds nothing, a replayed one finds nothing (the first release
// removed it), an expired one finds nothing (its slots have aged out of the state too).
//
// Memory: one Lease (24 bytes) per live lease, never more than the slots held, so never more
// than the limit once Prune has run (Add prunes). Pure: no clock, no lock; not thread-safe (the
// store keeps one per key under that key's shard lock).

#include <cstddef>
#include <cstdint>

#include "absl/container/inlined_vector.h"
#include "floodgate/limit.h"
#include "src/core/algorithms.h"

namespace floodgate::core {

// The slots that one check acquired on one concurrency key.
struct Lease {
  uint64_t token = 0;     // what the holder presents to release; never 0
  int64_t expiry_ns = 0;  // when the slots age out of the state: the admitting Outcome's expiry
  uint64_t count = 0;     // slots held (the check's hits)
  friend bool operator==(const Lease&, const Lease&) = default;
};
static_assert(sizeof(Lease) == 24);

class LeaseBook {
 public:
  // Records that `count` slots were acquired under `token` by a Decide whose Outcome.next has
  // expiry_ns `expiry_ns`; first drops the leases that are dead at now_ns. A token already in
  // the book (the same limit twice in one check) adds to that lease. token 0 is ignored.
  void Add(uint64_t token, uint64_t count, int64_t expiry_ns, int64_t now_ns);

  // Returns the live lease `token` (nullptr when unknown, released or expired at now_ns).
  // Valid until the book next changes.
  const Lease* Find(uint64_t token, int64_t now_ns) const;

  // Removes lease `token`, if present. Returns whether it was.
  bool Remove(uint64_t token);

  // Drops every lease that is dead at now_ns (its slots have aged out).
  void Prune(int64_t now_ns);

  bool empty() const { return leases_.empty(); }
  size_t size() const { return leases_.size(); }
  // Heap memory held beyond the object itself (0 while one lease fits inline).
  size_t heap_bytes() const {
    return leases_.capacity() > kInline ? leases_.capacity() * sizeof(Lease) : 0;
  }

 private:
  static constexpr size_t kInline = 1;
  absl::InlinedVector<Lease, kInline> leases_;
};

// Returns the state after `lease` (live at now_ns, found in the key's LeaseBook) gives back its
// slots: core::Release of lease.count from the lease epoch the slots were counted in. The
// caller removes the lease from the book.
KeyState ReleaseLease(const LimitSpec& spec, const KeyState& state, int64_t now_ns,
                      const Lease& lease);

}  // namespace floodgate::core
