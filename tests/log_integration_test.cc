// The log of the real binary (docs/operations.md, "Logs"): with --log-format json every line on
// stderr is one JSON object with ts, level and event; the start-up line names what is served
// and where; an admin PUT is audited with the domain, the outcome and the client's address, and
// never the token.

#include <gmock/gmock.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "testing/http_client.h"
#include "testing/server_process.h"

namespace floodgate {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr char kToken[] = "s3cret-token";
constexpr char kConfig[] = R"(domain: web
descriptors:
  - key: user
    rate_limit: {unit: day, requests_per_unit: 2}
  - key: ip
    rate_limit: {unit: second, requests_per_unit: 10}
)";
constexpr char kNewDomain[] = R"(domain: api
descriptors:
  - key: key
    rate_limit: {unit: minute, requests_per_unit: 5}
)";

// Parses every line of `text` as a JSON object (failing the test on one that is not).
std::vector<google::protobuf::Struct> JsonLines(const std::string& text) {
  std::vector<google::protobuf::Struct> out;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    google::protobuf::Struct object;
    const auto parsed = google::protobuf::util::JsonStringToMessage(std::string(line), &object);
    EXPECT_TRUE(parsed.ok()) << parsed.ToString() << ": " << line;
    out.push_back(std::move(object));
  }
  return out;
}

std::string Str(const google::protobuf::Struct& line, const std::string& key) {
  const auto it = line.fields().find(key);
  return it == line.fields().end() ? "<missing " + key + ">" : it->second.string_value();
}

double Num(const google::protobuf::Struct& line, const std::string& key) {
  const auto it = line.fields().find(key);
  return it == line.fields().end() ? -1 : it->second.number_value();
}

class LogIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir();
    ASSERT_FALSE(dir_.empty());
    std::ofstream(fs::path(dir_) / "web.yaml") << kConfig;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string dir_;
};

TEST_F(LogIntegrationTest, JsonLinesWithTheStartAndTheAdminAudit) {
  auto server = testing::ServerProcess::Start(
      testing::FloodgateBinary(),
      {"--config", dir_, "--admin-token", kToken, "--log-format", "json"});
  ASSERT_TRUE(server.ok()) << server.status();

  // The start-up line is written before the "listening" line Start waited for.
  std::vector<google::protobuf::Struct> lines = JsonLines((*server)->Stderr());
  ASSERT_EQ(lines.size(), 1u) << (*server)->Stderr();
  const google::protobuf::Struct& started = lines[0];
  EXPECT_EQ(Str(started, "event"), "started");
  EXPECT_EQ(Str(started, "level"), "info");
  EXPECT_THAT(Str(started, "ts"),
              ::testing::MatchesRegex("20[0-9][0-9]-[01][0-9]-[0-3][0-9]T[0-9:]{8}\\.[0-9]{3}Z"));
  EXPECT_EQ(Str(started, "http"), absl::StrCat("127.0.0.1:", (*server)->http_port()));
  EXPECT_EQ(Str(started, "grpc"), absl::StrCat("127.0.0.1:", (*server)->grpc_port()));
  EXPECT_EQ(Str(started, "config"), dir_);
  EXPECT_EQ(Str(started, "store"), "memory");
  EXPECT_EQ(Str(started, "members_from"), "none");
  EXPECT_THAT(Str(started, "version"), ::testing::MatchesRegex("[0-9]+\\.[0-9]+\\.[0-9]+"));
  EXPECT_EQ(Num(started, "domains"), 1);
  EXPECT_EQ(Num(started, "limits"), 2);

  // An admin PUT, and one refused for a wrong token: both audited, with the client's address.
  testing::HttpClient client((*server)->http_port());
  const testing::HttpResponse put = client.Request(
      "PUT", "/v1/config/api", kNewDomain, {{"Authorization", absl::StrCat("Bearer ", kToken)}});
  ASSERT_EQ(put.status, 200) << put.body;
  const testing::HttpResponse wrong = client.Request("PUT", "/v1/config/api", kNewDomain,
                                                     {{"Authorization", "Bearer not-the-token"}});
  ASSERT_EQ(wrong.status, 401) << wrong.body;
  ASSERT_EQ((*server)->Stop(), 0);

  const std::string err = (*server)->Stderr();
  EXPECT_THAT(err, ::testing::Not(HasSubstr(kToken)));
  lines = JsonLines(err);
  std::map<std::string, std::vector<google::protobuf::Struct>> by_event;
  for (const google::protobuf::Struct& line : lines) {
    EXPECT_FALSE(Str(line, "ts").empty());
    EXPECT_THAT(Str(line, "level"), ::testing::AnyOf("info", "warn", "error"));
    by_event[Str(line, "event")].push_back(line);
  }
  ASSERT_EQ(by_event["config_change"].size(), 1u) << err;
  const google::protobuf::Struct& audit = by_event["config_change"][0];
  EXPECT_EQ(Str(audit, "source"), "admin");
  EXPECT_EQ(Str(audit, "action"), "put");
  EXPECT_EQ(Str(audit, "domain"), "api");
  EXPECT_EQ(Str(audit, "outcome"), "ok");
  EXPECT_EQ(Num(audit, "version"), 2);
  EXPECT_THAT(Str(audit, "client"), StartsWith("127.0.0.1:"));
  EXPECT_TRUE(audit.fields().at("token").bool_value());
  ASSERT_EQ(by_event["admin_refused"].size(), 1u) << err;
  EXPECT_EQ(Num(by_event["admin_refused"][0], "status"), 401);
  EXPECT_EQ(Str(by_event["admin_refused"][0], "why"), "wrong token");
  EXPECT_THAT(Str(by_event["admin_refused"][0], "client"), StartsWith("127.0.0.1:"));
  EXPECT_EQ(by_event["draining"].size(), 1u) << err;
  EXPECT_EQ(by_event["stopped"].size(), 1u) << err;
}

TEST_F(LogIntegrationTest, PlainIsTheDefault) {
  auto server = testing::ServerProcess::Start(testing::FloodgateBinary(), {"--config", dir_});
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_THAT(
      (*server)->Stderr(),
      ::testing::MatchesRegex("[-0-9]+T[0-9:.]+Z INFO started version=[0-9.]+ http=127\\.0\\."
                              "0\\.1:[0-9]+ .* domains=1 limits=2\n"));
}

}  // namespace
}  // namespace floodgate
