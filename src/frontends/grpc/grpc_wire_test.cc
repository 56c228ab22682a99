#include "src/frontends/grpc/grpc_wire.h"

#include <gtest/gtest.h>

#include <string>

namespace floodgate::frontends::grpc_wire {
namespace {

std::string Frame(std::string_view message, char flag = 0) {
  std::string out;
  AppendPrefix(static_cast<uint32_t>(message.size()), out);
  out[0] = flag;
  out.append(message);
  return out;
}

TEST(GrpcWireTest, PrefixIsFlagThenBigEndianLength) {
  std::string out;
  AppendPrefix(0x01020304, out);
  EXPECT_EQ(out, std::string("\x00\x01\x02\x03\x04", 5));
  EXPECT_EQ(DeclaredLength(out), 0x01020304u);
  EXPECT_EQ(DeclaredLength(std::string("\x00\x00\x00\x01", 4)), std::nullopt);
  EXPECT_EQ(DeclaredLength(std::string("\x00\xff\xff\xff\xff", 5)), 0xffffffffu);
}

TEST(GrpcWireTest, ParsesExactlyOneMessage) {
  // The parsed view points into the body: keep the bodies alive while it is read.
  const std::string body = Frame("hello");
  auto parsed = ParseUnaryBody(body, 100);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, "hello");
  const std::string empty_body = Frame("");
  auto empty = ParseUnaryBody(empty_body, 100);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(*empty, "");
}

TEST(GrpcWireTest, RejectsMissingTruncatedAndExtraMessages) {
  EXPECT_EQ(ParseUnaryBody("", 100).status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(ParseUnaryBody(std::string("\x00\x00", 2), 100).status().code(),
            absl::StatusCode::kInternal);
  std::string truncated = Frame("hello");
  truncated.pop_back();
  auto t = ParseUnaryBody(truncated, 100);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInternal);
  EXPECT_NE(t.status().message().find("ends inside its message"), std::string::npos);
  EXPECT_EQ(ParseUnaryBody(Frame("a") + Frame("b"), 100).status().code(),
            absl::StatusCode::kInternal);
  EXPECT_EQ(ParseUnaryBody(Frame("a") + "x", 100).status().code(), absl::StatusCode::kInternal);
}

TEST(GrpcWireTest, OversizedIsResourceExhaustedBeforeTheBytesArrive) {
  std::string prefix;
  AppendPrefix(3 << 20, prefix);
  auto big = ParseUnaryBody(prefix, 1 << 20);
  EXPECT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(big.status().message(), "Received message larger than max (3145728 vs. 1048576)");
  EXPECT_TRUE(ParseUnaryBody(Frame(std::string(100, 'x')), 100).ok());
  EXPECT_EQ(ParseUnaryBody(Frame(std::string(101, 'x')), 100).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(GrpcWireTest, CompressedFlagIsUnimplementedOtherFlagsInternal) {
  EXPECT_EQ(ParseUnaryBody(Frame("x", 1), 100).status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(ParseUnaryBody(Frame("x", 2), 100).status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(ParseUnaryBody(Frame("x", '\x80'), 100).status().code(), absl::StatusCode::kInternal);
}

TEST(GrpcWireTest, ContentTypes) {
  EXPECT_TRUE(IsGrpcContentType("application/grpc"));
  EXPECT_TRUE(IsGrpcContentType("application/grpc+proto"));
  EXPECT_TRUE(IsGrpcContentType("Application/GRPC;charset=utf-8"));
  EXPECT_FALSE(IsGrpcContentType("application/grpcx"));
  EXPECT_FALSE(IsGrpcContentType("application/json"));
  EXPECT_FALSE(IsGrpcContentType("application/grp"));
  EXPECT_FALSE(IsGrpcContentType(""));
}

TEST(GrpcWireTest, StatusCodes) {
  EXPECT_EQ(StatusCodeText(absl::StatusCode::kOk), "0");
  EXPECT_EQ(StatusCodeText(absl::StatusCode::kInvalidArgument), "3");
  EXPECT_EQ(StatusCodeText(absl::StatusCode::kResourceExhausted), "8");
  EXPECT_EQ(StatusCodeText(absl::StatusCode::kUnimplemented), "12");
  EXPECT_EQ(StatusCodeText(absl::StatusCode::kUnauthenticated), "16");
  EXPECT_EQ(StatusCodeText(static_cast<absl::StatusCode>(99)), "2");
}

TEST(GrpcWireTest, PercentEncodesGrpcMessage) {
  EXPECT_EQ(PercentEncode("plain text: ok!"), "plain text: ok!");
  EXPECT_EQ(PercentEncode("100%"), "100%25");
  EXPECT_EQ(PercentEncode("a\r\nb"), "a%0D%0Ab");
  EXPECT_EQ(PercentEncode("caf\xc3\xa9"), "caf%C3%A9");  // UTF-8 bytes, one by one
  EXPECT_EQ(PercentEncode(std::string("\x00\x7f", 2)), "%00%7F");
}

}  // namespace
}  // namespace floodgate::frontends::grpc_wire
