#pragma once

// Conversions between the store's value types and the peer protocol's messages
// (proto/floodgate/peer/v1/peer.proto). Pure functions; safe from any thread.

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "floodgate/decision.h"
#include "floodgate/limit.h"
#include "floodgate/peer/v1/peer.pb.h"
#include "floodgate/store.h"
#include "src/cluster/peer_frame.h"
#include "src/core/top_keys.h"

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

// A member's top refused keys (GET /v1/top). FromProto keeps at most kMaxTopKeysPerAnswer keys,
// each cut to WindowedTopKeys::kMaxKeyBytes: what a peer sends stays bounded here.
inline constexpr size_t kMaxTopKeysPerAnswer = 1024;
void ToProto(const core::TopSnapshot& top, peer::v1::TopRefusedResponse* out);
core::TopSnapshot FromProto(const peer::v1::TopRefusedResponse& top);

// A forward request of one transaction: `ops`.
peer::v1::ForwardRequest ForwardRequestOf(absl::Span<const StoreOp> ops);

// Turns a call's outcome into a status and, when OK, the parsed answer: an error frame becomes
// its status, a frame of another type or a bad payload an Internal error naming `member`.
absl::Status DecodeAnswer(absl::Status status, const Frame& frame, FrameType expected,
                          google::protobuf::MessageLite* out, const std::string& member);
// Writes a one-transaction forward's decisions and whether it committed; an answer of the wrong
// shape is an Internal error naming `member`.
absl::Status DecisionsOf(const peer::v1::ForwardResponse& response, const std::string& member,
                         absl::Span<Decision> decisions, bool* committed);

}  // namespace floodgate::cluster
