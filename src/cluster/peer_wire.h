#pragma once

// Conversions between the store's value types and the peer protocol's messages
// (proto/floodgate/peer/v1/peer.proto). Pure functions; safe from any thread.

#include <cstdint>

#include "absl/status/statusor.h"
#include "floodgate/decision.h"
#include "floodgate/limit.h"
#include "floodgate/peer/v1/peer.pb.h"
#include "floodgate/store.h"

namespace floodgate::cluster {

// The peer protocol version this node speaks; every request carries it.
inline constexpr uint32_t kProtocolVersion = 1;

void ToProto(const LimitSpec& spec, peer::v1::Limit* out);
// Returns the limit, or InvalidArgument for an unknown algorithm or an invalid spec.
absl::StatusOr<LimitSpec> FromProto(const peer::v1::Limit& limit);

// Routing fields (consistency, failure mode, shed) do not travel: the receiver decides as owner.
void ToProto(const StoreOp& op, peer::v1::Op* out);
absl::StatusOr<StoreOp> FromProto(const peer::v1::Op& op);

void ToProto(const Decision& d, peer::v1::Decision* out);
Decision FromProto(const peer::v1::Decision& d);

void ToProto(const StateRecord& r, peer::v1::State* out);
// Returns the record, or InvalidArgument for a bad limit.
absl::StatusOr<StateRecord> FromProto(const peer::v1::State& state);

}  // namespace floodgate::cluster
