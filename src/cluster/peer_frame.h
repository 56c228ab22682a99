#pragma once

// The peer protocol's framing (docs/cluster.md, "Peer protocol"). Every frame is a 13-byte
// header and a payload:
//
//   u32 payload length | u8 frame type | u64 call id      (all little-endian)
//
// followed by `payload length` bytes: one peer.proto message, which one given by the type. A
// request's answer carries the request's call id, so many calls may be in flight on one
// connection and answered in any order. Handshake frames use call id 0.
//
// FrameDecoder cuts frames out of a byte stream however it arrives (byte by byte included) and
// refuses a frame over kMaxPayload or of an unknown type before buffering its payload.
//
// Thread-safety: the functions are pure; a FrameDecoder belongs to one connection (one thread
// at a time).

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace google::protobuf {
class MessageLite;
}

namespace floodgate::cluster {

inline constexpr size_t kFrameHeaderSize = 13;
// A payload larger than this closes the connection.
inline constexpr uint32_t kMaxPayload = 16u << 20;

enum class FrameType : uint8_t {
  // Handshake (call id 0): Hello, Challenge, Auth messages.
  kHello = 1,
  kChallenge = 2,
  kAuth = 3,
  // Calls and their answers. An answer may also be kError (ErrorAnswer).
  kForward = 10,  // ForwardRequest (report = true: hits admitted elsewhere, counted)
  kForwardAnswer = 11,
  kReplicate = 12,  // ReplicateRequest
  kReplicateAnswer = 13,
  kFetch = 14,  // FetchRequest
  kFetchAnswer = 15,
  kPing = 16,  // PingRequest
  kPingAnswer = 17,
  kPushConfig = 18,  // PushConfigRequest
  kPushConfigAnswer = 19,
  kGetConfig = 20,  // GetConfigRequest
  kGetConfigAnswer = 21,
  kTopRefused = 22,  // TopRefusedRequest
  kTopRefusedAnswer = 23,
  kError = 30,  // ErrorAnswer: the call failed
};

// Returns whether `type` is a frame type this version knows.
bool KnownFrameType(uint8_t type);
// Returns a short name for logs ("forward", "unknown(7)").
std::string FrameTypeName(uint8_t type);

struct FrameHeader {
  uint32_t length = 0;
  FrameType type = FrameType::kError;
  uint64_t call_id = 0;
};

// Writes a header into `out` (kFrameHeaderSize bytes).
void EncodeFrameHeader(const FrameHeader& header, char* out);
// Reads a header from `in` (kFrameHeaderSize bytes) without checking it.
FrameHeader DecodeFrameHeader(const char* in, uint8_t* raw_type);

// Appends a frame with `message` as its payload to `out`. InvalidArgument (and nothing
// appended) when the message is over kMaxPayload.
absl::Status AppendFrame(FrameType type, uint64_t call_id,
                         const google::protobuf::MessageLite& message, std::string* out);

// One decoded frame; `payload` points into the decoder's buffer, valid until the next Feed or
// Next call.
struct Frame {
  FrameType type = FrameType::kError;
  uint64_t call_id = 0;
  std::string_view payload;
};

class FrameDecoder {
 public:
  // Adds bytes read from the connection.
  void Feed(std::string_view bytes);
  // Takes the next whole frame into *frame: true when there is one, false when more bytes are
  // needed. Once it returns an error (oversized or unknown type; the message says which), the
  // stream is broken: close the connection.
  absl::Status Next(Frame* frame, bool* got);
  // Returns the bytes buffered and not yet taken.
  size_t buffered() const { return buffer_.size() - consumed_; }

 private:
  std::string buffer_;
  size_t consumed_ = 0;
};

}  // namespace floodgate::cluster
