// Fuzzes what another member sends on the peer port: a ForwardRequest (transactions of ops) or
// a ReplicateRequest (states), as protobuf bytes, decoded with peer_wire's FromProto and
// applied to a real store the way the peer server and ClusterStore do (DoForward: Apply at this
// node's now; DoReplicate: MergeStates at max(now, the sender's now), then GetState). The
// sender's now is any int64. The first byte picks the message.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "floodgate/peer/v1/peer.pb.h"
#include "floodgate/store.h"
#include "fuzz/fuzz_node.h"
#include "src/cluster/peer_wire.h"

namespace {

namespace pb = floodgate::peer::v1;
using floodgate::Decision;
using floodgate::StateRecord;
using floodgate::StoreOp;

// The peer server's bounds (peer_server.cc): a batch over them is refused before decoding.
constexpr int kMaxTxnsPerBatch = 4096;
constexpr int kMaxOpsPerTxn = 256;

void Forward(floodgate::fuzz::Node& node, const uint8_t* data, size_t size) {
  pb::ForwardRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size)) ||
      request.txns_size() > kMaxTxnsPerBatch) {
    return;
  }
  absl::InlinedVector<StoreOp, 8> ops;
  absl::InlinedVector<Decision, 8> decisions;
  for (const pb::Txn& txn : request.txns()) {
    if (txn.ops_size() == 0 || txn.ops_size() > kMaxOpsPerTxn) {
      return;
    }
    ops.clear();
    for (const pb::Op& op : txn.ops()) {
      auto parsed = floodgate::cluster::FromProto(op);
      if (!parsed.ok()) {
        return;
      }
      ops.push_back(*parsed);
    }
    decisions.assign(ops.size(), Decision{});
    (void)node.store().Apply(ops, node.now_ns(), absl::MakeSpan(decisions));
    pb::TxnResult result;
    for (const Decision& d : decisions) {
      floodgate::cluster::ToProto(d, result.add_decisions());
    }
  }
}

void Replicate(floodgate::fuzz::Node& node, const uint8_t* data, size_t size) {
  pb::ReplicateRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) {
    return;
  }
  std::vector<StateRecord> records;
  for (const pb::State& state : request.states()) {
    auto record = floodgate::cluster::FromProto(state);
    if (!record.ok()) {
      return;
    }
    records.push_back(*record);
  }
  const int64_t now = std::max(node.now_ns(), request.now_ns());
  node.store().MergeStates(records, now);
  for (const StateRecord& sent : records) {
    StateRecord held;
    if (node.store().GetState(sent.key_hash, now, &held)) {
      pb::State correction;
      held.spec = sent.spec;
      floodgate::cluster::ToProto(held, &correction);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) {
    return 0;
  }
  floodgate::fuzz::Node& node = floodgate::fuzz::Node::Get();
  node.Advance(11'000'000);
  if (data[0] % 2 == 0) {
    Forward(node, data + 1, size - 1);
  } else {
    Replicate(node, data + 1, size - 1);
  }
  return 0;
}
