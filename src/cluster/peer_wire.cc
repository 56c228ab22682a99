#include "src/cluster/peer_wire.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "floodgate/status_macros.h"

namespace floodgate::cluster {
namespace pb = ::floodgate::peer::v1;

void ToProto(const LimitSpec& spec, pb::Limit* out) {
  out->set_algorithm(static_cast<uint32_t>(spec.algorithm));
  out->set_requests_per_period(spec.requests_per_period);
  out->set_period_ns(spec.period_ns);
  out->set_burst(spec.burst);
}

absl::StatusOr<LimitSpec> FromProto(const pb::Limit& limit) {
  if (limit.algorithm() > static_cast<uint32_t>(Algorithm::kConcurrency)) {
    return absl::InvalidArgumentError(absl::StrCat("unknown algorithm ", limit.algorithm()));
  }
  LimitSpec spec;
  spec.algorithm = static_cast<Algorithm>(limit.algorithm());
  spec.requests_per_period = limit.requests_per_period();
  spec.period_ns = limit.period_ns();
  spec.burst = limit.burst();
  FG_RETURN_IF_ERROR(ValidateLimitSpec(spec));
  return spec;
}

void ToProto(const StoreOp& op, pb::Op* out) {
  out->set_key_hash(op.key_hash);
  ToProto(op.spec, out->mutable_limit());
  out->set_hits(op.hits);
  out->set_release(op.kind == StoreOp::Kind::kRelease);
  out->set_lease(op.lease);
  out->set_shadow(op.shadow);
}

absl::StatusOr<StoreOp> FromProto(const pb::Op& op) {
  StoreOp out;
  out.key_hash = op.key_hash();
  FG_ASSIGN_OR_RETURN(out.spec, FromProto(op.limit()));
  out.hits = op.hits();
  out.kind = op.release() ? StoreOp::Kind::kRelease : StoreOp::Kind::kCheck;
  out.lease = op.lease();
  out.shadow = op.shadow();
  return out;
}

void ToProto(const Decision& d, pb::Decision* out) {
  out->set_allowed(d.allowed);
  out->set_limit(d.limit);
  out->set_remaining(d.remaining);
  out->set_retry_after_ns(d.retry_after_ns);
  out->set_reset_after_ns(d.reset_after_ns);
  out->set_delay_ns(d.delay_ns);
}

Decision FromProto(const pb::Decision& d) {
  Decision out;
  out.allowed = d.allowed();
  out.limit = d.limit();
  out.remaining = d.remaining();
  out.retry_after_ns = d.retry_after_ns();
  out.reset_after_ns = d.reset_after_ns();
  out.delay_ns = d.delay_ns();
  return out;
}

void ToProto(const StateRecord& r, pb::State* out) {
  out->set_key_hash(r.key_hash);
  ToProto(r.spec, out->mutable_limit());
  out->set_expiry_ns(r.expiry_ns);
  out->set_data(r.data);
  if (r.lowered) {
    out->set_lowered(true);
    out->set_before_expiry_ns(r.before_expiry_ns);
    out->set_before_data(r.before_data);
  }
}

absl::StatusOr<StateRecord> FromProto(const pb::State& state) {
  FG_ASSIGN_OR_RETURN(LimitSpec spec, FromProto(state.limit()));
  return StateRecord{.key_hash = state.key_hash(),
                     .spec = spec,
                     .expiry_ns = state.expiry_ns(),
                     .data = state.data(),
                     .lowered = state.lowered(),
                     .before_expiry_ns = state.before_expiry_ns(),
                     .before_data = state.before_data()};
}

// Turns a call's outcome into a status and, when OK, the parsed answer.
absl::Status DecodeAnswer(absl::Status status, const Frame& frame, FrameType expected,
                          google::protobuf::MessageLite* out, const std::string& member) {
  if (!status.ok()) {
    return status;
  }
  if (frame.type == FrameType::kError) {
    pb::ErrorAnswer error;
    if (!error.ParseFromArray(frame.payload.data(), static_cast<int>(frame.payload.size())) ||
        error.code() == 0 || error.code() > 16) {
      return absl::InternalError(absl::StrCat("peer ", member, " sent a malformed error"));
    }
    return absl::Status(static_cast<absl::StatusCode>(error.code()),
                        absl::StrCat("peer ", member, ": ", error.message()));
  }
  if (frame.type != expected ||
      !out->ParseFromArray(frame.payload.data(), static_cast<int>(frame.payload.size()))) {
    return absl::InternalError(absl::StrCat("peer ", member, " answered with a malformed ",
                                            FrameTypeName(static_cast<uint8_t>(frame.type)),
                                            " frame"));
  }
  return absl::OkStatus();
}

absl::Status DecisionsOf(const pb::ForwardResponse& response, const std::string& member,
                         absl::Span<Decision> decisions, bool* committed) {
  if (response.results_size() != 1 ||
      response.results(0).decisions_size() != static_cast<int>(decisions.size())) {
    return absl::InternalError(absl::StrCat("peer ", member, " answered a transaction of ",
                                            decisions.size(), " ops with a wrong count"));
  }
  const pb::TxnResult& result = response.results(0);
  for (size_t i = 0; i < decisions.size(); ++i) {
    decisions[i] = FromProto(result.decisions(static_cast<int>(i)));
  }
  *committed = result.committed();
  return absl::OkStatus();
}

peer::v1::ForwardRequest ForwardRequestOf(absl::Span<const StoreOp> ops) {
  peer::v1::ForwardRequest request;
  peer::v1::Txn* txn = request.add_txns();
  for (const StoreOp& op : ops) {
    ToProto(op, txn->add_ops());
  }
  return request;
}

void ToProto(const core::TopSnapshot& top, peer::v1::TopRefusedResponse* out) {
  out->set_total(top.total);
  for (const core::TopKey& key : top.keys) {
    peer::v1::TopKey* k = out->add_keys();
    k->set_key(key.key);
    k->set_count(key.count);
    k->set_error(key.error);
  }
}

core::TopSnapshot FromProto(const peer::v1::TopRefusedResponse& top) {
  core::TopSnapshot out;
  out.total = top.total();
  for (const peer::v1::TopKey& key : top.keys()) {
    if (out.keys.size() >= kMaxTopKeysPerAnswer) {
      break;
    }
    out.keys.push_back(
        core::TopKey{std::string(core::TruncateKey(key.key(), core::WindowedTopKeys::kMaxKeyBytes)),
                     key.count(), key.error()});
  }
  return out;
}

}  // namespace floodgate::cluster
