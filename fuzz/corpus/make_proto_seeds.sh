#!/usr/bin/env bash
# Writes the protobuf seeds of grpc_message_fuzzer and peer_message_fuzzer from the text-format
# messages below, with protoc (run from anywhere; the seeds are committed, this only remakes
# them after a .proto change). peer_message_fuzzer's first byte picks the message: even
# Forward, odd Replicate.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
proto=$here/../../proto
encode() {  # encode <message type> <proto file> <out file> [prefix byte]; text on stdin
  local type=$1 file=$2 out=$3 prefix=${4:-}
  { [ -n "$prefix" ] && printf "\\x$prefix"
    protoc --proto_path="$proto" --encode="$type" "$proto/$file"; } > "$out"
}
rls=envoy.service.ratelimit.v3.RateLimitRequest
rls_file=envoy/service/ratelimit/v3/rls.proto
encode $rls $rls_file "$here/grpc_message_fuzzer/user" <<'T'
domain: "api"
descriptors { entries { key: "user" value: "alice" } entries { key: "path" value: "/login" } }
hits_addend: 1
T
encode $rls $rls_file "$here/grpc_message_fuzzer/two_descriptors" <<'T'
domain: "api"
descriptors { entries { key: "ip" value: "10.0.0.1" } hits_addend { value: 3 } }
descriptors { entries { key: "queue" value: "q" } limit { requests_per_unit: 5 unit: SECOND } }
T
encode $rls $rls_file "$here/grpc_message_fuzzer/concurrency" <<'T'
domain: "api"
descriptors { entries { key: "conc" value: "x" } }
T
encode $rls $rls_file "$here/grpc_message_fuzzer/unknown_domain" <<'T'
domain: "nope"
descriptors { entries { key: "user" value: "caf\303\251" } }
hits_addend: 4294967295
T
peer_file=floodgate/peer/v1/peer.proto
encode floodgate.peer.v1.ForwardRequest $peer_file "$here/peer_message_fuzzer/forward" 00 <<'T'
protocol_version: 1
from: "node-b"
txns {
  ops { key_hash: 42 limit { algorithm: 0 requests_per_period: 5 period_ns: 60000000000 } hits: 1 }
  ops { key_hash: 43 limit { algorithm: 2 requests_per_period: 10 period_ns: 1000000000 burst: 20 } hits: 2 }
}
txns {
  ops { key_hash: 44 limit { algorithm: 4 requests_per_period: 2 period_ns: 60000000000 } hits: 1 lease: 7 }
}
txns {
  ops { key_hash: 44 limit { algorithm: 4 requests_per_period: 2 period_ns: 60000000000 } release: true lease: 7 }
}
T
encode floodgate.peer.v1.ForwardRequest $peer_file "$here/peer_message_fuzzer/forward_report" 02 <<'T'
protocol_version: 1
from: "node-c"
report: true
txns { ops { key_hash: 45 limit { algorithm: 1 requests_per_period: 3 period_ns: 1000000000 } hits: 1 shadow: true } }
T
encode floodgate.peer.v1.ReplicateRequest $peer_file "$here/peer_message_fuzzer/replicate" 01 <<'T'
protocol_version: 1
from: "node-a"
states { key_hash: 42 limit { algorithm: 0 requests_per_period: 5 period_ns: 60000000000 } expiry_ns: 1700000100000000000 data: 3 }
states { key_hash: 46 limit { algorithm: 1 requests_per_period: 3 period_ns: 1000000000 } expiry_ns: 1700000042000000000 data: 4294967298 }
now_ns: 1700000041000000000
T
encode floodgate.peer.v1.ReplicateRequest $peer_file "$here/peer_message_fuzzer/replicate_ends_of_time" 03 <<'T'
protocol_version: 1
from: "node-a"
states { key_hash: 47 limit { algorithm: 3 requests_per_period: 3 period_ns: 1000000000 burst: 5 } expiry_ns: 9223372036854775807 data: 2 }
states { key_hash: 48 limit { algorithm: 4 requests_per_period: 2 period_ns: 60000000000 } expiry_ns: -9223372036854775807 data: 1 }
now_ns: -9223372036854775808
T
