#include "src/discovery/etcd_member.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

namespace floodgate::discovery {
namespace {

TEST(EtcdMemberTest, EncodeThenDecode) {
  const Node node{"node-\"a\"\\", "10.0.0.1:7946"};
  const std::string value = EncodeMemberValue(node);
  EXPECT_EQ(value, R"({"id":"node-\"a\"\\","address":"10.0.0.1:7946"})");
  absl::StatusOr<Node> decoded = DecodeMemberValue(value);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, node);
}

TEST(EtcdMemberTest, DecodeAcceptsWhitespaceOtherFieldsAndEscapes) {
  absl::StatusOr<Node> node = DecodeMemberValue(
      " { \"version\" : 2, \"zone\":\"eu\\u002d1\", \"id\":\"caf\\u00e9\\ud83d\\ude00\","
      " \"ready\": true, \"note\": null, \"address\" : \"[::1]:7946\" }\n");
  ASSERT_TRUE(node.ok()) << node.status();
  EXPECT_EQ(node->id, "caf\xc3\xa9\xf0\x9f\x98\x80");
  EXPECT_EQ(node->address, "[::1]:7946");
}

TEST(EtcdMemberTest, DecodeRefusesWhatIsNotAFlatObject) {
  for (const char* bad : {"", "null", "[]", "{", "{\"address\":\"a:1\"", "{\"address\":1:2}",
                          "{\"address\":\"a:1\",}", "{\"address\":\"a:1\"} x",
                          "{\"x\":{\"y\":1},\"address\":\"a:1\"}", "{\"id\":\"n\"}",
                          "{\"address\":\"a\\q\"}", "{\"address\":\"a\x01\"}"}) {
    EXPECT_FALSE(DecodeMemberValue(bad).ok()) << bad;
  }
}

TEST(EtcdMemberTest, MemberListSortsByIdSkipsBadValuesAndFallsBackToTheKey) {
  const std::map<std::string, std::string> values = {
      {"/fg/c/members/b", R"({"id":"b","address":"h2:1"})"},
      {"/fg/c/members/a", R"({"id":"a","address":"h1:1"})"},
      {"/fg/c/members/broken", "not json"},
      {"/fg/c/members/from-key", R"({"address":"h3:1"})"},
  };
  const std::vector<Node> expected = {{"a", "h1:1"}, {"b", "h2:1"}, {"from-key", "h3:1"}};
  EXPECT_EQ(MemberList(values), expected);
  EXPECT_TRUE(MemberList({}).empty());
}

TEST(EtcdMemberTest, PrefixRangeEnd) {
  EXPECT_EQ(PrefixRangeEnd("/fg/members/"), "/fg/members0");
  EXPECT_EQ(PrefixRangeEnd("a\xff"), "b");
  EXPECT_EQ(PrefixRangeEnd("\xff\xff"), std::string(1, '\0'));
  EXPECT_EQ(PrefixRangeEnd(""), std::string(1, '\0'));
}

}  // namespace
}  // namespace floodgate::discovery
