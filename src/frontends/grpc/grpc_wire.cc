#include "src/frontends/grpc/grpc_wire.h"

#include <array>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace floodgate::frontends::grpc_wire {

std::optional<uint32_t> DeclaredLength(std::string_view body) {
  if (body.size() < kPrefixBytes) {
    return std::nullopt;
  }
  const auto byte = [&](size_t i) { return static_cast<uint32_t>(static_cast<uint8_t>(body[i])); };
  return (byte(1) << 24) | (byte(2) << 16) | (byte(3) << 8) | byte(4);
}

absl::StatusOr<std::string_view> ParseUnaryBody(std::string_view body, size_t max_bytes) {
  const std::optional<uint32_t> length = DeclaredLength(body);
  if (!length.has_value()) {
    return absl::InternalError(body.empty() ? "the request has no message"
                                            : "the request ends inside a message prefix");
  }
  if (*length > max_bytes) {
    return absl::ResourceExhaustedError(TooLargeMessage(*length, max_bytes));
  }
  const uint8_t flag = static_cast<uint8_t>(body[0]);
  if (flag == 1) {
    return absl::UnimplementedError(
        "compressed messages are not supported (this server accepts identity only)");
  }
  if (flag != 0) {
    return absl::InternalError(absl::StrCat("invalid Compressed-Flag ", flag));
  }
  const size_t total = kPrefixBytes + static_cast<size_t>(*length);
  if (body.size() < total) {
    return absl::InternalError(absl::StrCat("the request ends inside its message (", body.size(),
                                            " of ", total, " bytes)"));
  }
  if (body.size() > total) {
    return absl::InternalError("a unary call takes exactly one request message");
  }
  return body.substr(kPrefixBytes, *length);
}

void AppendPrefix(uint32_t length, std::string& out) {
  const char prefix[kPrefixBytes] = {0, static_cast<char>(length >> 24),
                                     static_cast<char>(length >> 16),
                                     static_cast<char>(length >> 8), static_cast<char>(length)};
  out.append(prefix, kPrefixBytes);
}

bool IsGrpcContentType(std::string_view content_type) {
  constexpr std::string_view kGrpc = "application/grpc";
  if (content_type.size() < kGrpc.size()) {
    return false;
  }
  for (size_t i = 0; i < kGrpc.size(); ++i) {
    if (absl::ascii_tolower(static_cast<unsigned char>(content_type[i])) != kGrpc[i]) {
      return false;
    }
  }
  return content_type.size() == kGrpc.size() || content_type[kGrpc.size()] == '+' ||
         content_type[kGrpc.size()] == ';';
}

std::string_view StatusCodeText(absl::StatusCode code) {
  static constexpr std::array<std::string_view, 17> kText = {
      "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16"};
  const int value = static_cast<int>(code);
  return value >= 0 && value < static_cast<int>(kText.size()) ? kText[value] : kText[2];
}

std::string PercentEncode(std::string_view message) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(message.size());
  for (const char c : message) {
    const auto b = static_cast<uint8_t>(c);
    if (b >= 0x20 && b <= 0x7E && b != '%') {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[b >> 4]);
      out.push_back(kHex[b & 0xF]);
    }
  }
  return out;
}

std::string TooLargeMessage(uint64_t length, size_t max_bytes) {
  return absl::StrCat("Received message larger than max (", length, " vs. ", max_bytes, ")");
}

}  // namespace floodgate::frontends::grpc_wire
