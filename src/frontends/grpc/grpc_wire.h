#pragma once

// gRPC's wire format over HTTP/2 (grpc/doc/PROTOCOL-HTTP2.md), the parts a unary server needs:
// the 5-byte Length-Prefixed-Message (1 byte Compressed-Flag, 4 bytes big-endian length, the
// message), content-type recognition, grpc-status codes and grpc-message percent-encoding.
// Pure functions, no I/O: the native gRPC server (grpc_native.h) and its tests use them.
//
// Thread-safety: stateless; call from any thread.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace floodgate::frontends::grpc_wire {

inline constexpr size_t kPrefixBytes = 5;

// Returns the message length a body declares in its first 5 bytes, or nullopt if fewer than 5
// bytes have arrived. Lets a server refuse an oversized message before buffering it.
std::optional<uint32_t> DeclaredLength(std::string_view body);

// Returns the one message of a unary request body (prefix + message, nothing after it):
//   ResourceExhausted when the declared length exceeds `max_bytes`,
//   Unimplemented when the Compressed-Flag is set (this server advertises no encodings),
//   Internal when the body holds no complete message, or more than one.
// The view points into `body`.
absl::StatusOr<std::string_view> ParseUnaryBody(std::string_view body, size_t max_bytes);

// Appends the 5-byte prefix (uncompressed) for a message of `length` bytes to `out`.
void AppendPrefix(uint32_t length, std::string& out);

// Returns whether a content-type names gRPC: "application/grpc" alone or followed by "+..."
// (e.g. +proto) or ";..." parameters. Case-insensitive, as media types are.
bool IsGrpcContentType(std::string_view content_type);

// Returns the grpc-status value for a code ("0" ... "16"); unknown codes map to "2" (UNKNOWN).
std::string_view StatusCodeText(absl::StatusCode code);

// Percent-encodes a grpc-message value: bytes outside printable ASCII (0x20-0x7E) and '%'
// become %XX (uppercase hex); the rest pass through. UTF-8 text thus survives byte for byte.
std::string PercentEncode(std::string_view message);

// Returns the message ResourceExhausted carries for an oversized request, worded as grpc++
// words it ("Received message larger than max (N vs. M)").
std::string TooLargeMessage(uint64_t length, size_t max_bytes);

}  // namespace floodgate::frontends::grpc_wire
