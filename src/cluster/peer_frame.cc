#include "src/cluster/peer_frame.h"

#include <google/protobuf/message_lite.h>

#include "absl/base/internal/endian.h"
#include "absl/strings/str_cat.h"

namespace floodgate::cluster {

bool KnownFrameType(uint8_t type) {
  return (type >= 1 && type <= 3) || (type >= 10 && type <= 23) || type == 30;
}

std::string FrameTypeName(uint8_t type) {
  static constexpr const char* kNames[] = {
      "forward",     "forward answer",     "replicate",  "replicate answer",
      "fetch",       "fetch answer",       "ping",       "ping answer",
      "push config", "push config answer", "get config", "get config answer",
      "top refused", "top refused answer"};
  switch (type) {
    case 1:
      return "hello";
    case 2:
      return "challenge";
    case 3:
      return "auth";
    case 30:
      return "error";
    default:
      break;
  }
  if (type >= 10 && type <= 23) {
    return kNames[type - 10];
  }
  return absl::StrCat("unknown(", type, ")");
}

void EncodeFrameHeader(const FrameHeader& header, char* out) {
  absl::little_endian::Store32(out, header.length);
  out[4] = static_cast<char>(header.type);
  absl::little_endian::Store64(out + 5, header.call_id);
}

FrameHeader DecodeFrameHeader(const char* in, uint8_t* raw_type) {
  FrameHeader header;
  header.length = absl::little_endian::Load32(in);
  *raw_type = static_cast<uint8_t>(in[4]);
  header.type = static_cast<FrameType>(*raw_type);
  header.call_id = absl::little_endian::Load64(in + 5);
  return header;
}

absl::Status AppendFrame(FrameType type, uint64_t call_id,
                         const google::protobuf::MessageLite& message, std::string* out) {
  const size_t size = message.ByteSizeLong();
  if (size > kMaxPayload) {
    return absl::InvalidArgumentError(absl::StrCat(FrameTypeName(static_cast<uint8_t>(type)),
                                                   " frame of ", size, " bytes; at most ",
                                                   kMaxPayload));
  }
  const size_t start = out->size();
  out->resize(start + kFrameHeaderSize + size);
  char* at = out->data() + start;
  EncodeFrameHeader({static_cast<uint32_t>(size), type, call_id}, at);
  message.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(at + kFrameHeaderSize));
  return absl::OkStatus();
}

void FrameDecoder::Feed(std::string_view bytes) {
  // Drop what was taken before growing, so the buffer holds at most one frame and a read.
  if (consumed_ > 0 && (consumed_ == buffer_.size() || consumed_ >= 64 * 1024)) {
    buffer_.erase(0, consumed_);
    consumed_ = 0;
  }
  buffer_.append(bytes);
}

absl::Status FrameDecoder::Next(Frame* frame, bool* got) {
  *got = false;
  const size_t available = buffer_.size() - consumed_;
  if (available < kFrameHeaderSize) {
    return absl::OkStatus();
  }
  uint8_t raw_type = 0;
  const FrameHeader header = DecodeFrameHeader(buffer_.data() + consumed_, &raw_type);
  if (!KnownFrameType(raw_type)) {
    return absl::InvalidArgumentError(absl::StrCat("unknown frame type ", raw_type));
  }
  if (header.length > kMaxPayload) {
    return absl::InvalidArgumentError(
        absl::StrCat("frame of ", header.length, " bytes; at most ", kMaxPayload));
  }
  if (available < kFrameHeaderSize + header.length) {
    return absl::OkStatus();
  }
  frame->type = header.type;
  frame->call_id = header.call_id;
  frame->payload = std::string_view(buffer_.data() + consumed_ + kFrameHeaderSize, header.length);
  consumed_ += kFrameHeaderSize + header.length;
  *got = true;
  return absl::OkStatus();
}

}  // namespace floodgate::cluster
