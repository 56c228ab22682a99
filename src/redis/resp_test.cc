#include "src/redis/resp.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace floodgate::redis {
namespace {

using Type = Reply::Type;

// Parses every reply of `bytes` fed whole; fails the test on an error.
std::vector<Reply> ParseAll(std::string_view bytes, ReplyParser& parser) {
  parser.Feed(bytes);
  std::vector<Reply> replies;
  while (true) {
    Reply reply;
    bool got = false;
    absl::Status status = parser.Next(reply, &got);
    EXPECT_TRUE(status.ok()) << status;
    if (!status.ok() || !got) {
      return replies;
    }
    replies.push_back(std::move(reply));
  }
}

// Returns the parser's error for `bytes` (OK when none).
absl::Status ErrorOf(std::string_view bytes, ReplyLimits limits = {}) {
  ReplyParser parser(limits);
  parser.Feed(bytes);
  while (true) {
    Reply reply;
    bool got = false;
    absl::Status status = parser.Next(reply, &got);
    if (!status.ok() || !got) {
      return status;
    }
  }
}

std::string Describe(const Reply& reply) {
  switch (reply.type) {
    case Type::kStatus:
      return "+" + reply.str;
    case Type::kError:
      return "-" + reply.str;
    case Type::kInteger:
      return absl::StrCat(":", reply.integer);
    case Type::kString:
      return absl::StrCat("$", reply.str.size(), "=", reply.str);
    case Type::kNil:
      return "nil";
    case Type::kArray: {
      std::string out = "[";
      for (const Reply& element : reply.elements) {
        absl::StrAppend(&out, Describe(element), ",");
      }
      return out + "]";
    }
  }
  return "?";
}

TEST(AppendCommandTest, EncodesAnArrayOfBulkStrings) {
  std::string out = "x";
  const std::vector<std::string_view> args = {"SET", "k", std::string_view("a\0b\r\n", 5), ""};
  AppendCommand(args, out);
  EXPECT_EQ(out, std::string("x*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\na\0b\r\n\r\n$0\r\n\r\n", 38));
  EXPECT_EQ(EncodeCommand({}), "*0\r\n");
}

TEST(ReplyParserTest, ParsesEveryType) {
  ReplyParser parser;
  const std::vector<Reply> replies = ParseAll(
      "+OK\r\n-ERR wrong\r\n:42\r\n:-9223372036854775808\r\n$5\r\nhe\r\no\r\n$0\r\n\r\n$-1\r\n"
      "*-1\r\n*0\r\n*3\r\n:1\r\n*2\r\n$1\r\na\r\n$-1\r\n+x\r\n",
      parser);
  std::vector<std::string> described;
  for (const Reply& reply : replies) {
    described.push_back(Describe(reply));
  }
  EXPECT_EQ(described, (std::vector<std::string>{
                           "+OK", "-ERR wrong", ":42", ":-9223372036854775808", "$5=he\r\no",
                           "$0=", "nil", "nil", "[]", "[:1,[$1=a,nil,],+x,]"}));
  EXPECT_EQ(parser.buffered(), 0u);
}

// The same stream split at every byte boundary, and fed byte by byte, gives the same replies.
TEST(ReplyParserTest, SplitFeedsAtEveryBoundary) {
  const std::string stream =
      "+OK\r\n:123\r\n$12\r\nhello\r\nworld\r\n*2\r\n*1\r\n-ERR x\r\n$3\r\nabc\r\n$-1\r\n";
  ReplyParser whole_parser;
  std::vector<std::string> expected;
  for (const Reply& reply : ParseAll(stream, whole_parser)) {
    expected.push_back(Describe(reply));
  }
  ASSERT_EQ(expected.size(), 5u);
  for (size_t cut = 0; cut <= stream.size(); ++cut) {
    ReplyParser parser;
    std::vector<std::string> got;
    for (const Reply& reply : ParseAll(stream.substr(0, cut), parser)) {
      got.push_back(Describe(reply));
    }
    for (const Reply& reply : ParseAll(stream.substr(cut), parser)) {
      got.push_back(Describe(reply));
    }
    EXPECT_EQ(got, expected) << "cut at " << cut;
  }
  ReplyParser parser;
  std::vector<std::string> got;
  for (char c : stream) {
    for (const Reply& reply : ParseAll(std::string_view(&c, 1), parser)) {
      got.push_back(Describe(reply));
    }
  }
  EXPECT_EQ(got, expected);
}

TEST(ReplyParserTest, MalformedStreamsAreErrorsThatStick) {
  EXPECT_FALSE(ErrorOf("hello\r\n").ok());
  EXPECT_FALSE(ErrorOf("\r\n").ok());
  EXPECT_FALSE(ErrorOf("+OK\n").ok());
  EXPECT_FALSE(ErrorOf("+O\rK\r\n").ok());
  EXPECT_FALSE(ErrorOf(":12a\r\n").ok());
  EXPECT_FALSE(ErrorOf(":\r\n").ok());
  EXPECT_FALSE(ErrorOf(":9223372036854775808\r\n").ok());
  EXPECT_FALSE(ErrorOf(":+1\r\n").ok());
  EXPECT_FALSE(ErrorOf("$-2\r\n").ok());
  EXPECT_FALSE(ErrorOf("$3\r\nabcde\r\n").ok());
  EXPECT_FALSE(ErrorOf("* 1\r\n").ok());
  EXPECT_FALSE(ErrorOf("_\r\n").ok());  // RESP3
  absl::Status status = ErrorOf("garbage\r\n");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("unexpected type byte 'g'"), std::string::npos) << status;

  ReplyParser parser;
  parser.Feed("?\r\n+OK\r\n");
  Reply reply;
  bool got = false;
  EXPECT_FALSE(parser.Next(reply, &got).ok());
  EXPECT_FALSE(parser.Next(reply, &got).ok());
  EXPECT_FALSE(got);
  parser.Reset();
  parser.Feed("+OK\r\n");
  EXPECT_TRUE(parser.Next(reply, &got).ok());
  EXPECT_TRUE(got);
}

TEST(ReplyParserTest, Limits) {
  EXPECT_FALSE(ErrorOf("$536870913\r\n").ok());  // 512 MB + 1, refused before any byte of it
  EXPECT_TRUE(ErrorOf("$536870912\r\n").ok());   // waits for the bytes
  ReplyLimits limits;
  limits.max_depth = 3;
  EXPECT_TRUE(ErrorOf("*1\r\n*1\r\n*1\r\n:1\r\n", limits).ok());
  EXPECT_FALSE(ErrorOf("*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", limits).ok());
  EXPECT_FALSE(ErrorOf("*1\r\n*1\r\n*1\r\n*0\r\n", limits).ok());  // empty, still too deep
  EXPECT_FALSE(ErrorOf("*1048577\r\n").ok());
  EXPECT_TRUE(ErrorOf("*1048576\r\n").ok());
  limits = ReplyLimits{};
  limits.max_total_elements = 4;
  EXPECT_TRUE(ErrorOf("*3\r\n:1\r\n:2\r\n:3\r\n", limits).ok());
  EXPECT_FALSE(ErrorOf("*2\r\n*2\r\n:1\r\n:2\r\n:3\r\n", limits).ok());
  limits = ReplyLimits{};
  limits.max_line_bytes = 8;
  EXPECT_FALSE(ErrorOf("+123456789", limits).ok());  // no CRLF yet, already too long
  EXPECT_FALSE(ErrorOf("+123456789\r\n", limits).ok());
  // The default nesting: 16 levels accepted, 17 not.
  std::string deep;
  for (int i = 0; i < 16; ++i) {
    deep += "*1\r\n";
  }
  EXPECT_TRUE(ErrorOf(deep + ":1\r\n").ok());
  deep += "*1\r\n";
  EXPECT_FALSE(ErrorOf(deep).ok());
}

TEST(ReplyParserTest, LargeBulkAcrossManyFeeds) {
  const std::string payload(1 << 20, 'z');
  const std::string stream = absl::StrCat("$", payload.size(), "\r\n", payload, "\r\n:7\r\n");
  ReplyParser parser;
  std::vector<Reply> replies;
  for (size_t at = 0; at < stream.size(); at += 1000) {
    for (Reply& reply : ParseAll(std::string_view(stream).substr(at, 1000), parser)) {
      replies.push_back(std::move(reply));
    }
  }
  ASSERT_EQ(replies.size(), 2u);
  EXPECT_EQ(replies[0].str, payload);
  EXPECT_EQ(replies[1].integer, 7);
}

}  // namespace
}  // namespace floodgate::redis
