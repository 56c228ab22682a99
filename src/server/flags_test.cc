#include "src/server/flags.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

extern char** environ;

namespace floodgate::server {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;

class FlagsTest : public ::testing::Test {
 protected:
  // The parser reads FLOODGATE_* variables: start every test without any.
  void SetUp() override {
    std::vector<std::string> names;
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string entry = *e;
      if (absl::StartsWith(entry, "FLOODGATE_")) {
        names.push_back(entry.substr(0, entry.find('=')));
      }
    }
    for (const std::string& name : names) {
      unsetenv(name.c_str());
    }
  }
  void TearDown() override { SetUp(); }

  // envoyproxy/ratelimit's variables, as a test gives them (never the process's).
  using Env = std::map<std::string, std::string>;

  static CommandLine Parse(std::vector<std::string> args, Env envoy = {}) {
    args.insert(args.begin(), "floodgate");
    std::vector<const char*> argv;
    for (const std::string& a : args) {
      argv.push_back(a.c_str());
    }
    return ParseCommandLine(static_cast<int>(argv.size()), argv.data(),
                            [&envoy](const std::string& name) -> std::optional<std::string> {
                              auto it = envoy.find(name);
                              if (it == envoy.end()) {
                                return std::nullopt;
                              }
                              return it->second;
                            });
  }

  // Parses `args` and expects a refusal (exit 2, nothing to stdout); returns its message.
  static std::string Refusal(std::vector<std::string> args, Env envoy = {}) {
    CommandLine line = Parse(args, std::move(envoy));
    EXPECT_EQ(line.kind, CommandLine::Kind::kExit);
    EXPECT_EQ(line.exit_code, kExitUsage);
    EXPECT_THAT(line.out, IsEmpty());
    return line.err;
  }
};

TEST_F(FlagsTest, ServeWithDefaults) {
  CommandLine line = Parse({"serve", "--config", "examples/"});
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
  const ServerOptions defaults;
  const ServerOptions& o = line.serve.options;
  EXPECT_EQ(o.config_path, "examples/");
  EXPECT_EQ(o.http_address, defaults.http_address);
  EXPECT_EQ(o.grpc_address, defaults.grpc_address);
  EXPECT_EQ(o.http_threads, defaults.http_threads);
  EXPECT_EQ(o.max_connections, defaults.max_connections);
  EXPECT_EQ(o.max_memory_bytes, 0u);
  EXPECT_EQ(o.config_poll, defaults.config_poll);
  EXPECT_EQ(o.replicas, defaults.replicas);
  EXPECT_EQ(o.peer_batch_delay, absl::Microseconds(500));
  EXPECT_EQ(o.grpc_impl, "native");
  EXPECT_EQ(line.serve.drain_timeout, absl::Seconds(5));
  EXPECT_EQ(line.serve.log_format, common::LogFormat::kPlain);
  EXPECT_EQ(line.serve.log_level, common::LogLevel::kInfo);
}

TEST_F(FlagsTest, LogFormatAndLevel) {
  CommandLine line =
      Parse({"serve", "--config", "c", "--log-format", "json", "--log-level", "warn"});
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
  EXPECT_EQ(line.serve.log_format, common::LogFormat::kJson);
  EXPECT_EQ(line.serve.log_level, common::LogLevel::kWarn);
}

TEST_F(FlagsTest, BothFormsOfAValue) {
  CommandLine line = Parse({"serve", "--config=a.yaml", "--http", "127.0.0.1:0", "--http-threads=4",
                            "--admin-token", "s3cret"});
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
  EXPECT_EQ(line.serve.options.config_path, "a.yaml");
  EXPECT_EQ(line.serve.options.http_address, "127.0.0.1:0");
  EXPECT_EQ(line.serve.options.http_threads, 4);
  EXPECT_EQ(line.serve.options.admin_token, "s3cret");
}

TEST_F(FlagsTest, StateDirAndEmptyConfigSwitch) {
  CommandLine line = Parse({"serve", "--config", "c/", "--state-dir", "/var/lib/fg",
                            "--allow-empty-config", "--http", "127.0.0.1:0"});
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
  EXPECT_EQ(line.serve.options.state_dir, "/var/lib/fg");
  EXPECT_TRUE(line.serve.options.allow_empty_config);
  EXPECT_EQ(line.serve.options.http_address, "127.0.0.1:0");  // the switch took no value

  line = Parse({"serve", "--config", "c/"});
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
  EXPECT_EQ(line.serve.options.state_dir, "");
  EXPECT_FALSE(line.serve.options.allow_empty_config);

  setenv("FLOODGATE_STATE_DIR", "/srv/state", 1);
  setenv("FLOODGATE_ALLOW_EMPTY_CONFIG", "true", 1);
  line = Parse({"serve", "--config", "c/"});
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
  EXPECT_EQ(line.serve.options.state_dir, "/srv/state");
  EXPECT_TRUE(line.serve.options.allow_empty_config);
}

// issue 11: `--admin_token s3cret` started a server with no admin token.
TEST_F(FlagsTest, UnknownFlagIsRefusedByName) {
  EXPECT_THAT(Refusal({"serve", "--config", "a", "--admin_token", "s3cret"}),
              HasSubstr("unknown flag --admin_token for floodgate serve (did you mean "
                        "--admin-token?)"));
  EXPECT_THAT(Refusal({"serve", "--config", "a", "--htpp-threads", "4"}),
              HasSubstr("unknown flag --htpp-threads"));
  EXPECT_THAT(Refusal({"serve", "--bogus=1", "--config", "a"}), HasSubstr("unknown flag --bogus"));
  EXPECT_THAT(Refusal({"check", "--config", "a", "--domain", "d", "--http", "x"}),
              HasSubstr("unknown flag --http for floodgate check"));
  EXPECT_THAT(Refusal({"--config", "a", "serve"}), HasSubstr("unknown flag --config"));
  EXPECT_THAT(Refusal({"serve", "--config", "a", "extra"}), HasSubstr("extra"));
}

TEST_F(FlagsTest, UnknownOrMissingCommand) {
  EXPECT_THAT(Refusal({"server"}), HasSubstr("unknown command 'server'"));
  EXPECT_THAT(Refusal({}), HasSubstr("a command is needed: serve, validate, check or version"));
  EXPECT_THAT(Refusal({"server"}), HasSubstr("(commands: serve, validate, check, version)"));
}

TEST_F(FlagsTest, MissingValueNamesTheFlag) {
  EXPECT_THAT(Refusal({"serve", "--config"}), HasSubstr("--config needs a value (PATH)"));
  EXPECT_THAT(Refusal({"check", "--config", "a", "--domain"}), HasSubstr("--domain needs a value"));
}

// issue 11: `--config --http ...` served a config named "--http".
TEST_F(FlagsTest, ValueThatLooksLikeAFlagIsRefused) {
  EXPECT_THAT(Refusal({"serve", "--config", "--http", "127.0.0.1:0"}),
              HasSubstr("--config needs a value (PATH) but is followed by '--http'"));
  EXPECT_THAT(Refusal({"check", "--config", "a", "--domain", "d", "--hits", "-1"}),
              HasSubstr("--hits needs a value"));
  // Written with '=', a value may start with '-'; it is then checked like any other.
  CommandLine line = Parse({"serve", "--config=-odd-name.yaml"});
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
  EXPECT_EQ(line.serve.options.config_path, "-odd-name.yaml");
  EXPECT_THAT(Refusal({"check", "--config", "a", "--domain", "d", "--hits=-1"}),
              HasSubstr("--hits must be a whole number from 0 to 1000000000 (got '-1')"));
}

TEST_F(FlagsTest, RepeatedFlagIsRefused) {
  EXPECT_THAT(Refusal({"serve", "--config", "a", "--config=b"}),
              HasSubstr("--config is given twice"));
}

TEST_F(FlagsTest, HelpEverywhereExitsZero) {
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"--help"},
                                             {"-h"},
                                             {"serve", "--help"},
                                             {"serve", "-h"},
                                             {"validate", "--help"},
                                             {"check", "-h"},
                                             {"serve", "--config", "a", "--help"}}) {
    CommandLine line = Parse(args);
    EXPECT_EQ(line.kind, CommandLine::Kind::kExit) << args[0];
    EXPECT_EQ(line.exit_code, 0) << args[0] << " " << line.err;
    EXPECT_THAT(line.out, HasSubstr("Usage: floodgate")) << args[0];
    EXPECT_THAT(line.err, IsEmpty());
  }
  EXPECT_THAT(Parse({"--help"}).out, AllOf(HasSubstr("serve"), HasSubstr("validate"),
                                           HasSubstr("check"), HasSubstr("--version")));
}

// Every serve flag: its name, meaning, default and environment variable.
TEST_F(FlagsTest, ServeHelpListsEveryFlagWithDefaultAndEnvironment) {
  const std::string help = Parse({"serve", "--help"}).out;
  for (const char* flag : {"config",
                           "http",
                           "grpc",
                           "admin-token",
                           "http-threads",
                           "grpc-impl",
                           "grpc-threads",
                           "max-connections",
                           "max-connections-per-client",
                           "max-memory",
                           "config-poll",
                           "drain-timeout",
                           "node-id",
                           "peers",
                           "peer",
                           "cluster-key",
                           "replicas",
                           "insecure-peers",
                           "peer-batch-delay",
                           "tls-cert",
                           "tls-key",
                           "tls-client-ca",
                           "log-format",
                           "log-level"}) {
    EXPECT_THAT(help, HasSubstr(std::string("--") + flag + " ")) << flag;
  }
  for (const char* env : {"FLOODGATE_CONFIG",
                          "FLOODGATE_HTTP",
                          "FLOODGATE_GRPC",
                          "FLOODGATE_ADMIN_TOKEN",
                          "FLOODGATE_HTTP_THREADS",
                          "FLOODGATE_MAX_CONNECTIONS",
                          "FLOODGATE_MAX_CONNECTIONS_PER_CLIENT",
                          "FLOODGATE_MAX_MEMORY",
                          "FLOODGATE_GRPC_IMPL",
                          "FLOODGATE_GRPC_THREADS",
                          "FLOODGATE_NODE_ID",
                          "FLOODGATE_PEERS",
                          "FLOODGATE_PEER",
                          "FLOODGATE_CLUSTER_KEY",
                          "FLOODGATE_REPLICAS",
                          "FLOODGATE_INSECURE_PEERS",
                          "FLOODGATE_PEER_BATCH_DELAY",
                          "FLOODGATE_TLS_CERT",
                          "FLOODGATE_TLS_KEY",
                          "FLOODGATE_TLS_CLIENT_CA"}) {
    EXPECT_THAT(help, HasSubstr(std::string("Env:") + env + ")")) << env;
  }
  EXPECT_THAT(help, HasSubstr("--http HOST:PORT=127.0.0.1:8080"));
  EXPECT_THAT(help, HasSubstr("--http-threads N=2"));
  EXPECT_THAT(help, HasSubstr("--drain-timeout DURATION=5s"));
  EXPECT_THAT(help, HasSubstr("memory budget"));
  const std::string check_help = Parse({"check", "--help"}).out;
  EXPECT_THAT(check_help, AllOf(HasSubstr("Env:FLOODGATE_DOMAIN"), HasSubstr("Env:FLOODGATE_HITS"),
                                HasSubstr("--hits N=1"), HasSubstr("KEY=VALUE")));
}

// --version and `version` print one line: the version CMake's project() gives (passed to this
// test by src/server/CMakeLists.txt, not read from the generated header), the commit and the
// compiler.
TEST_F(FlagsTest, Version) {
  EXPECT_EQ(Version(), FLOODGATE_EXPECTED_VERSION);
  EXPECT_THAT(VersionLine(),
              ::testing::MatchesRegex("floodgate [0-9]+\\.[0-9]+\\.[0-9]+ "
                                      "\\(commit ([0-9a-f]+|unknown), built [a-z]+ [0-9.]+\\)"));
  EXPECT_THAT(VersionLine(),
              ::testing::StartsWith(std::string("floodgate ") + FLOODGATE_EXPECTED_VERSION + " ("));
  for (std::vector<std::string> args : {std::vector<std::string>{"--version"}, {"version"}}) {
    CommandLine line = Parse(args);
    EXPECT_EQ(line.kind, CommandLine::Kind::kExit) << args[0];
    EXPECT_EQ(line.exit_code, 0) << args[0];
    EXPECT_EQ(line.out, VersionLine() + "\n") << args[0];
    EXPECT_THAT(line.err, IsEmpty()) << args[0];
  }
  // The command takes nothing.
  EXPECT_THAT(Refusal({"version", "--short"}),
              HasSubstr("unknown flag --short for floodgate version"));
  EXPECT_THAT(Refusal({"version", "extra"}), HasSubstr("extra"));
}

TEST_F(FlagsTest, ByteSizes) {
  EXPECT_EQ(*ParseByteSize("1048576"), 1048576u);
  EXPECT_EQ(*ParseByteSize("256MiB"), uint64_t{256} << 20);
  EXPECT_EQ(*ParseByteSize("1GiB"), uint64_t{1} << 30);
  EXPECT_EQ(*ParseByteSize("1 gib"), uint64_t{1} << 30);
  EXPECT_EQ(*ParseByteSize("500MB"), 500'000'000u);
  EXPECT_EQ(*ParseByteSize("4KB"), 4000u);
  EXPECT_EQ(*ParseByteSize("2TiB"), uint64_t{2} << 40);
  EXPECT_EQ(*ParseByteSize("12B"), 12u);
  EXPECT_EQ(*ParseByteSize("18446744073709551615"), UINT64_MAX);
  for (const char* bad :
       {"", "MiB", "12XB", "-1", "1.5GiB", "16777216TiB", "99999999999999999999"}) {
    EXPECT_FALSE(ParseByteSize(bad).ok()) << bad;
  }
  EXPECT_EQ(FormatByteSize(uint64_t{64} << 20), "64MiB");
  EXPECT_EQ(FormatByteSize(uint64_t{3} << 30), "3GiB");
  EXPECT_EQ(FormatByteSize(1000), "1000 bytes");
  EXPECT_EQ(FormatByteSize(1), "1 byte");
}

// issue 11: `--max-memory 256MiB` was refused, and `--max-memory 1000` answered
// "StoreOptions.max_memory_bytes is 500".
TEST_F(FlagsTest, MaxMemoryTakesHumanSizesInItsRange) {
  CommandLine line = Parse({"serve", "--config", "a", "--max-memory", "256MiB"});
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
  EXPECT_EQ(line.serve.options.max_memory_bytes, uint64_t{256} << 20);
  line = Parse({"serve", "--config", "a", "--max-memory", "0"});
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
  EXPECT_EQ(line.serve.options.max_memory_bytes, 0u);
  EXPECT_THAT(Refusal({"serve", "--config", "a", "--max-memory", "1000"}),
              HasSubstr("--max-memory must be 0 (no cap) or at least 64MiB (got 1000 bytes)"));
  EXPECT_THAT(Refusal({"serve", "--config", "a", "--max-memory", "1MiB"}),
              HasSubstr("at least 64MiB (got 1MiB)"));
  EXPECT_THAT(Refusal({"serve", "--config", "a", "--max-memory", "lots"}),
              HasSubstr("--max-memory must be a size such as 256MiB, 1GiB, 500MB or a number of "
                        "bytes (got 'lots')"));
}

TEST_F(FlagsTest, NumbersAndDurationsInRange) {
  struct Case {
    std::string flag, value, refusal;
  };
  const Case kRefused[] = {
      {"--http-threads", "0", "--http-threads must be a whole number from 1 to 256 (got '0')"},
      {"--replicas", "two", "--replicas must be a whole number from 1 to 8 (got 'two')"},
      {"--max-connections-per-client", "x", "(0: no cap)"},
      {"--grpc-impl", "fast", "--grpc-impl must be native or grpcpp (got 'fast')"},
      {"--log-format", "text", "--log-format must be plain or json (got 'text')"},
      {"--log-level", "debug", "--log-level must be info, warn or error (got 'debug')"},
      {"--drain-timeout", "5",
       "--drain-timeout must be a duration such as 200ms, 5s or 1m (got '5')"},
      {"--config-poll", "1ms", "--config-poll must be from 10ms to 1h (got 1ms)"},
      {"--peer-batch-delay", "1s", "--peer-batch-delay must be from 0 to 100ms (got 1s)"},
      {"--node-id", "n1", "--node-id and --peer need --peers"},
  };
  for (const Case& c : kRefused) {
    EXPECT_THAT(Refusal({"serve", "--config", "a", c.flag, c.value}), HasSubstr(c.refusal))
        << c.flag << " " << c.value;
  }
  CommandLine line = Parse({"serve", "--config", "a", "--drain-timeout", "1m30s", "--config-poll",
                            "1s", "--peer-batch-delay", "0"});
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
  EXPECT_EQ(line.serve.drain_timeout, absl::Seconds(90));
  EXPECT_EQ(line.serve.options.peer_batch_delay, absl::ZeroDuration());
  EXPECT_EQ(line.serve.options.config_poll, absl::Seconds(1));
}

TEST_F(FlagsTest, EnvironmentFillsFlagsAndTheCommandLineWins) {
  setenv("FLOODGATE_CONFIG", "from-env", 1);
  setenv("FLOODGATE_MAX_MEMORY", "1GiB", 1);
  setenv("FLOODGATE_HTTP_THREADS", "3", 1);
  setenv("FLOODGATE_ADMIN_TOKEN", "", 1);  // empty: as if unset
  CommandLine line = Parse({"serve", "--http-threads", "5"});
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
  EXPECT_EQ(line.serve.options.config_path, "from-env");
  EXPECT_EQ(line.serve.options.max_memory_bytes, uint64_t{1} << 30);
  EXPECT_EQ(line.serve.options.http_threads, 5);
  EXPECT_EQ(line.serve.options.admin_token, "");
  setenv("FLOODGATE_MAX_MEMORY", "1000", 1);
  EXPECT_THAT(Refusal({"serve"}), HasSubstr("--max-memory must be 0 (no cap) or at least 64MiB"));
}

TEST_F(FlagsTest, ClusterModeNeedsAKeyOrInsecurePeers) {
  const std::vector<std::string> cluster = {"serve",
                                            "--config",
                                            "a",
                                            "--node-id",
                                            "n0",
                                            "--peers",
                                            "n0=127.0.0.1:7000,n1=127.0.0.1:7001"};
  EXPECT_THAT(Refusal(cluster), HasSubstr("cluster mode needs --cluster-key"));
  EXPECT_THAT(Refusal(cluster), HasSubstr("or --insecure-peers to run without"));

  std::vector<std::string> keyed = cluster;
  keyed.insert(keyed.end(), {"--cluster-key", "s3cret"});
  CommandLine line = Parse(keyed);
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
  EXPECT_EQ(line.serve.options.cluster_key, "s3cret");
  EXPECT_FALSE(line.serve.options.insecure_peers);

  std::vector<std::string> insecure = cluster;
  insecure.push_back("--insecure-peers");
  line = Parse(insecure);
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
  EXPECT_TRUE(line.serve.options.insecure_peers);

  setenv("FLOODGATE_INSECURE_PEERS", "true", 1);
  line = Parse(cluster);
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
  EXPECT_TRUE(line.serve.options.insecure_peers);
  unsetenv("FLOODGATE_INSECURE_PEERS");
  setenv("FLOODGATE_CLUSTER_KEY", "from-env", 1);
  line = Parse(cluster);
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
  EXPECT_EQ(line.serve.options.cluster_key, "from-env");

  // A single node needs neither.
  line = Parse({"serve", "--config", "a"});
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
}

TEST_F(FlagsTest, ServeNeedsAConfig) {
  EXPECT_THAT(Refusal({"serve"}), HasSubstr("serve needs --config PATH (or FLOODGATE_CONFIG)"));
}

// issue 11: `check` without --config printed "floodgate: : No such file or directory".
TEST_F(FlagsTest, CheckNeedsAConfigAndADomain) {
  EXPECT_THAT(Refusal({"check", "--domain", "d", "k=v"}),
              HasSubstr("check needs --config PATH (or FLOODGATE_CONFIG)"));
  EXPECT_THAT(Refusal({"check", "--config", "a", "k=v"}), HasSubstr("check needs --domain"));
  EXPECT_THAT(Refusal({"check", "--config", "a", "--domain", "d", "novalue"}),
              HasSubstr("KEY=VALUE (got 'novalue')"));
  setenv("FLOODGATE_DOMAIN", "env-domain", 1);
  setenv("FLOODGATE_HITS", "3", 1);
  CommandLine line = Parse({"check", "--config", "a", "user=alice", "path=/x=y"});
  ASSERT_EQ(line.kind, CommandLine::Kind::kCheck) << line.err;
  EXPECT_EQ(line.check.config_path, "a");
  EXPECT_EQ(line.check.domain, "env-domain");
  EXPECT_EQ(line.check.hits, 3u);
  EXPECT_THAT(line.check.entries,
              ::testing::ElementsAre(Pair("user", "alice"), Pair("path", "/x=y")));
}

TEST_F(FlagsTest, ValidateTakesOnePath) {
  CommandLine line = Parse({"validate", "examples/"});
  ASSERT_EQ(line.kind, CommandLine::Kind::kValidate) << line.err;
  EXPECT_EQ(line.validate.path, "examples/");
  EXPECT_THAT(Refusal({"validate"}), HasSubstr("validate needs a PATH"));
  EXPECT_THAT(Refusal({"validate", "a", "b"}), HasSubstr("b"));
}

TEST_F(FlagsTest, TlsFlagsFromTheCommandLineOrTheEnvironment) {
  CommandLine line = Parse({"serve", "--config", "c", "--grpc-impl", "grpcpp", "--tls-cert",
                            "/p/cert.pem", "--tls-key", "/p/key.pem"});
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
  EXPECT_EQ(line.serve.options.tls.cert_file, "/p/cert.pem");
  EXPECT_EQ(line.serve.options.tls.key_file, "/p/key.pem");
  EXPECT_EQ(line.serve.options.tls.client_ca_file, "");

  setenv("FLOODGATE_TLS_CERT", "/e/cert.pem", 1);
  setenv("FLOODGATE_TLS_KEY", "/e/key.pem", 1);
  setenv("FLOODGATE_TLS_CLIENT_CA", "/e/ca.pem", 1);
  setenv("FLOODGATE_GRPC_IMPL", "grpcpp", 1);
  line = Parse({"serve", "--config", "c"});
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
  EXPECT_EQ(line.serve.options.tls.cert_file, "/e/cert.pem");
  EXPECT_EQ(line.serve.options.tls.key_file, "/e/key.pem");
  EXPECT_EQ(line.serve.options.tls.client_ca_file, "/e/ca.pem");

  // Without any: plain.
  SetUp();
  line = Parse({"serve", "--config", "c"});
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
  EXPECT_EQ(line.serve.options.tls.cert_file, "");
}

TEST_F(FlagsTest, TlsFlagsThatDoNotGoTogetherAreRefused) {
  EXPECT_THAT(Refusal({"serve", "--config", "c", "--grpc-impl", "grpcpp", "--tls-cert", "x"}),
              HasSubstr("--tls-cert and --tls-key go together"));
  EXPECT_THAT(Refusal({"serve", "--config", "c", "--grpc-impl", "grpcpp", "--tls-key", "x"}),
              HasSubstr("--tls-cert and --tls-key go together"));
  EXPECT_THAT(Refusal({"serve", "--config", "c", "--tls-client-ca", "x"}),
              HasSubstr("--tls-client-ca needs --tls-cert and --tls-key"));
}

TEST_F(FlagsTest, ClientSanFlagNeedsAClientCa) {
  CommandLine line = Parse({"serve", "--config", "c", "--tls-cert", "c.pem", "--tls-key", "k.pem",
                            "--tls-client-ca", "ca.pem", "--tls-client-san", "envoy.internal"});
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
  EXPECT_EQ(line.serve.options.tls.client_san, "envoy.internal");
  EXPECT_EQ(line.serve.options.grpc_tls.cert_file, "");  // the gRPC port follows --tls-*
  setenv("FLOODGATE_TLS_CLIENT_SAN", "env.internal", 1);
  line = Parse({"serve", "--config", "c", "--tls-cert", "c.pem", "--tls-key", "k.pem",
                "--tls-client-ca", "ca.pem"});
  EXPECT_EQ(line.serve.options.tls.client_san, "env.internal");
  SetUp();
  EXPECT_THAT(Refusal({"serve", "--config", "c", "--tls-cert", "c.pem", "--tls-key", "k.pem",
                       "--tls-client-san", "envoy.internal"}),
              HasSubstr("--tls-client-san needs --tls-client-ca"));
  // grpc++'s server cannot check the name: refused before anything starts.
  EXPECT_THAT(Refusal({"serve", "--config", "c", "--grpc-impl", "grpcpp", "--tls-cert", "c.pem",
                       "--tls-key", "k.pem", "--tls-client-ca", "ca.pem", "--tls-client-san",
                       "envoy.internal"}),
              HasSubstr("--tls-client-san needs the native gRPC server"));
}

TEST_F(FlagsTest, GrpcTlsFlagsReplaceTheSharedOnesOnTheGrpcPort) {
  CommandLine line = Parse({"serve", "--config", "c", "--tls-cert", "h.pem", "--tls-key", "h.key",
                            "--grpc-tls-cert", "g.pem", "--grpc-tls-key", "g.key",
                            "--grpc-tls-client-ca", "ca.pem", "--grpc-tls-client-san", "envoy"});
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
  const ServerOptions& o = line.serve.options;
  EXPECT_EQ(o.tls.cert_file, "h.pem");  // the HTTP port
  EXPECT_EQ(o.tls.client_ca_file, "");
  EXPECT_EQ(o.grpc_tls.cert_file, "g.pem");
  EXPECT_EQ(o.grpc_tls.key_file, "g.key");
  EXPECT_EQ(o.grpc_tls.client_ca_file, "ca.pem");
  EXPECT_EQ(o.grpc_tls.client_san, "envoy");

  // The gRPC port's alone, with the HTTP port plain; from FLOODGATE_* too.
  setenv("FLOODGATE_GRPC_TLS_CERT", "e.pem", 1);
  setenv("FLOODGATE_GRPC_TLS_KEY", "e.key", 1);
  line = Parse({"serve", "--config", "c"});
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
  EXPECT_EQ(line.serve.options.tls.cert_file, "");
  EXPECT_EQ(line.serve.options.grpc_tls.cert_file, "e.pem");
  EXPECT_EQ(line.serve.options.grpc_tls.key_file, "e.key");
  EXPECT_EQ(line.serve.options.grpc_tls.client_ca_file, "");
  SetUp();

  // Half sets are refused, and the set is never mixed with --tls-*.
  EXPECT_THAT(Refusal({"serve", "--config", "c", "--grpc-tls-cert", "g.pem"}),
              HasSubstr("--grpc-tls-cert and --grpc-tls-key go together"));
  EXPECT_THAT(Refusal({"serve", "--config", "c", "--grpc-tls-key", "g.key"}),
              HasSubstr("--grpc-tls-cert and --grpc-tls-key go together"));
  EXPECT_THAT(Refusal({"serve", "--config", "c", "--tls-cert", "h.pem", "--tls-key", "h.key",
                       "--grpc-tls-client-ca", "ca.pem"}),
              HasSubstr("--grpc-tls-client-ca needs --grpc-tls-cert and --grpc-tls-key"));
  EXPECT_THAT(Refusal({"serve", "--config", "c", "--tls-cert", "h.pem", "--tls-key", "h.key",
                       "--tls-client-ca", "ca.pem", "--grpc-tls-cert", "g.pem", "--grpc-tls-key",
                       "g.key", "--grpc-tls-client-san", "envoy"}),
              HasSubstr("--grpc-tls-client-san needs --grpc-tls-client-ca"));
  EXPECT_THAT(
      Refusal({"serve", "--config", "c", "--grpc-impl", "grpcpp", "--grpc-tls-cert", "g.pem",
               "--grpc-tls-key", "g.key", "--grpc-tls-client-ca", "ca.pem", "--grpc-tls-client-san",
               "envoy"}),
      HasSubstr(
          "--grpc-tls-client-san (Envoy's GRPC_CLIENT_TLS_SAN) needs the native gRPC server"));
  // grpc++ with a SAN on the HTTP port alone is fine: its gRPC port checks no name.
  line = Parse({"serve", "--config", "c", "--grpc-impl", "grpcpp", "--tls-cert", "h.pem",
                "--tls-key", "h.key", "--tls-client-ca", "ca.pem", "--tls-client-san", "envoy",
                "--grpc-tls-cert", "g.pem", "--grpc-tls-key", "g.key"});
  EXPECT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
}

TEST_F(FlagsTest, PeerTlsFlagsFromTheCommandLineOrTheEnvironment) {
  const std::vector<std::string> cluster = {
      "serve", "--config", "c", "--node-id", "a", "--peers", "a=h:1", "--cluster-key", "k"};
  std::vector<std::string> args = cluster;
  args.insert(args.end(), {"--peer-tls-cert", "/p/peer.pem", "--peer-tls-key", "/p/peer.key",
                           "--peer-tls-ca", "/p/ca.pem"});
  CommandLine line = Parse(args);
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
  EXPECT_EQ(line.serve.options.peer_tls.cert_file, "/p/peer.pem");
  EXPECT_EQ(line.serve.options.peer_tls.key_file, "/p/peer.key");
  EXPECT_EQ(line.serve.options.peer_tls.client_ca_file, "/p/ca.pem");
  EXPECT_EQ(line.serve.options.tls.cert_file, "") << "the front ends stay plain";

  setenv("FLOODGATE_PEER_TLS_CERT", "/e/peer.pem", 1);
  setenv("FLOODGATE_PEER_TLS_KEY", "/e/peer.key", 1);
  setenv("FLOODGATE_PEER_TLS_CA", "/e/ca.pem", 1);
  line = Parse(cluster);
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
  EXPECT_EQ(line.serve.options.peer_tls.cert_file, "/e/peer.pem");
  EXPECT_EQ(line.serve.options.peer_tls.key_file, "/e/peer.key");
  EXPECT_EQ(line.serve.options.peer_tls.client_ca_file, "/e/ca.pem");

  SetUp();
  line = Parse(cluster);
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
  EXPECT_EQ(line.serve.options.peer_tls.cert_file, "");

  const std::string help = Parse({"serve", "--help"}).out;
  for (const char* text : {"--peer-tls-cert FILE", "--peer-tls-key FILE", "--peer-tls-ca FILE",
                           "Env:FLOODGATE_PEER_TLS_CERT)", "Env:FLOODGATE_PEER_TLS_KEY)",
                           "Env:FLOODGATE_PEER_TLS_CA)"}) {
    EXPECT_THAT(help, HasSubstr(text));
  }
}

TEST_F(FlagsTest, PeerTlsFlagsGoTogetherAndNeedPeers) {
  const std::vector<std::string> cluster = {
      "serve", "--config", "c", "--node-id", "a", "--peers", "a=h:1", "--cluster-key", "k"};
  std::vector<std::string> args = cluster;
  args.insert(args.end(), {"--peer-tls-cert", "x", "--peer-tls-key", "y"});
  EXPECT_THAT(Refusal(args), AllOf(HasSubstr("go together"), HasSubstr("missing: --peer-tls-ca")));
  args = cluster;
  args.insert(args.end(), {"--peer-tls-ca", "z"});
  EXPECT_THAT(Refusal(args), HasSubstr("missing: --peer-tls-cert, --peer-tls-key"));
  EXPECT_THAT(Refusal({"serve", "--config", "c", "--peer-tls-cert", "x", "--peer-tls-key", "y",
                       "--peer-tls-ca", "z"}),
              HasSubstr("--peer-tls-ca need --peers"));
}

// ---- envoyproxy/ratelimit's switches (envoy_env.h) ----

TEST_F(FlagsTest, EnvoySwitchesDefaultToServerOptions) {
  CommandLine line = Parse({"serve", "--config", "c"});
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
  const ServerOptions defaults;
  const ServerOptions& o = line.serve.options;
  EXPECT_EQ(o.http_address, defaults.http_address);
  EXPECT_FALSE(o.envoy.global_shadow_mode);
  EXPECT_FALSE(o.envoy.limit_headers);
  EXPECT_EQ(o.envoy.limit_header, "RateLimit-Limit");
  EXPECT_DOUBLE_EQ(o.near_limit_ratio, 0.8);
  EXPECT_EQ(o.refusal_cache_slots, size_t{1} << 16);
  EXPECT_FALSE(o.healthy_with_config);
  EXPECT_EQ(o.xds_server, "");
  EXPECT_EQ(o.xds_node_id, "default");
  EXPECT_EQ(o.xds_initial_backoff, absl::Seconds(10));
  EXPECT_EQ(o.xds_max_backoff, absl::Seconds(60));
  EXPECT_EQ(o.statsd, "");
  EXPECT_EQ(o.statsd_flush_interval, absl::Seconds(10));
}

// Our flag > FLOODGATE_X > Envoy's variable > default, for a value and for a switch.
TEST_F(FlagsTest, EnvoyVariablesComeBelowOurFlagsAndVariables) {
  const Env envoy = {{"PORT", "9000"}, {"SHADOW_MODE", "true"}, {"NEAR_LIMIT_RATIO", "0.5"}};
  CommandLine line = Parse({"serve", "--config", "c"}, envoy);
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
  EXPECT_EQ(line.serve.options.http_address, "0.0.0.0:9000");
  EXPECT_TRUE(line.serve.options.envoy.global_shadow_mode);
  EXPECT_DOUBLE_EQ(line.serve.options.near_limit_ratio, 0.5);

  setenv("FLOODGATE_HTTP", "127.0.0.1:7000", 1);
  setenv("FLOODGATE_SHADOW_MODE", "false", 1);
  setenv("FLOODGATE_NEAR_LIMIT_RATIO", "0.6", 1);
  line = Parse({"serve", "--config", "c"}, envoy);
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
  EXPECT_EQ(line.serve.options.http_address, "127.0.0.1:7000");
  EXPECT_FALSE(line.serve.options.envoy.global_shadow_mode);
  EXPECT_DOUBLE_EQ(line.serve.options.near_limit_ratio, 0.6);

  line = Parse({"serve", "--config", "c", "--http", "127.0.0.1:6000", "--shadow-mode",
                "--near-limit-ratio", "0.7"},
               envoy);
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
  EXPECT_EQ(line.serve.options.http_address, "127.0.0.1:6000");
  EXPECT_TRUE(line.serve.options.envoy.global_shadow_mode);
  EXPECT_DOUBLE_EQ(line.serve.options.near_limit_ratio, 0.7);

  // A bad Envoy value under a flag that is given is never read.
  line =
      Parse({"serve", "--config", "c", "--near-limit-ratio", "0.7"}, {{"NEAR_LIMIT_RATIO", "abc"}});
  EXPECT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
}

TEST_F(FlagsTest, EnvoyListenAddresses) {
  const auto serve = [](Env envoy) {
    CommandLine line = Parse({"serve", "--config", "c"}, std::move(envoy));
    EXPECT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
    return std::pair{line.serve.options.http_address, line.serve.options.grpc_address};
  };
  EXPECT_EQ(serve({{"HOST", "127.0.0.2"}, {"PORT", "9001"}}).first, "127.0.0.2:9001");
  EXPECT_EQ(serve({{"HOST", "::1"}}).first, "[::1]:8080");
  EXPECT_EQ(serve({{"GRPC_PORT", "9002"}}),
            std::pair(ServerOptions().http_address, std::string("0.0.0.0:9002")));
  EXPECT_EQ(serve({{"GRPC_HOST", "10.0.0.1"}}).second, "10.0.0.1:8081");
  EXPECT_THAT(Refusal({"serve", "--config", "c"}, {{"PORT", "http"}}),
              HasSubstr("floodgate: PORT=http: not a port number (0 to 65535)"));
  EXPECT_THAT(Refusal({"serve", "--config", "c"}, {{"GRPC_PORT", "70000"}}),
              HasSubstr("GRPC_PORT=70000: not a port number"));
  EXPECT_THAT(Refusal({"serve", "--config", "c"}, {{"GRPC_UDS", "/tmp/rl.sock"}}),
              HasSubstr("GRPC_UDS=/tmp/rl.sock: gRPC on a unix socket is not supported"));
}

TEST_F(FlagsTest, EnvoyRuntimeDirectoryIsTheConfig) {
  const auto config = [](Env envoy) {
    CommandLine line = Parse({"serve"}, std::move(envoy));
    EXPECT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
    return line.serve.options.config_path;
  };
  EXPECT_EQ(config({{"RUNTIME_ROOT", "/data/current"},
                    {"RUNTIME_SUBDIRECTORY", "ratelimit"},
                    {"RUNTIME_APPDIRECTORY", "app"}}),
            "/data/current/ratelimit/app");
  EXPECT_EQ(config({{"RUNTIME_ROOT", "/data/current/"}}), "/data/current/config");
  EXPECT_EQ(config({{"RUNTIME_SUBDIRECTORY", "/ratelimit"}}),
            "/srv/runtime_data/current/ratelimit/config");
  EXPECT_EQ(config({{"RUNTIME_ROOT", "/r"},
                    {"RUNTIME_WATCH_ROOT", "false"},
                    {"RUNTIME_IGNOREDOTFILES", "true"}}),
            "/r/config");
  CommandLine line = Parse({"serve", "--config", "mine"}, {{"RUNTIME_ROOT", "/r"}});
  EXPECT_EQ(line.serve.options.config_path, "mine");
  EXPECT_THAT(Refusal({"serve"}, {{"RUNTIME_ROOT", "/r"}, {"RUNTIME_WATCH_ROOT", "maybe"}}),
              HasSubstr("RUNTIME_WATCH_ROOT=maybe: not a boolean"));
  EXPECT_THAT(Refusal({"serve"}), HasSubstr("RUNTIME_ROOT"));
}

TEST_F(FlagsTest, EnvoyAnswerSwitches) {
  CommandLine line =
      Parse({"serve", "--config", "c"}, {{"SHADOW_MODE", "1"},
                                         {"QUOTA_MODE", "True"},
                                         {"RESPONSE_DYNAMIC_METADATA", "t"},
                                         {"LIMIT_RESPONSE_HEADERS_ENABLED", "TRUE"},
                                         {"LIMIT_LIMIT_HEADER", "X-Limit"},
                                         {"LIMIT_REMAINING_HEADER", "X-Remaining"},
                                         {"LIMIT_RESET_HEADER", "X-Reset"},
                                         {"HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED", "true"},
                                         {"FORCE_START_WITHOUT_INITIAL_CONFIG", "true"},
                                         {"MERGE_DOMAIN_CONFIG", "false"}});
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
  const ServerOptions& o = line.serve.options;
  EXPECT_TRUE(o.envoy.global_shadow_mode);
  EXPECT_TRUE(o.envoy.global_quota_mode);
  EXPECT_TRUE(o.envoy.response_dynamic_metadata);
  EXPECT_TRUE(o.envoy.limit_headers);
  EXPECT_EQ(o.envoy.limit_header, "X-Limit");
  EXPECT_EQ(o.envoy.remaining_header, "X-Remaining");
  EXPECT_EQ(o.envoy.reset_header, "X-Reset");
  EXPECT_TRUE(o.healthy_with_config);
  EXPECT_TRUE(o.allow_empty_config);

  line = Parse({"serve", "--config", "c"}, {{"SHADOW_MODE", "F"}, {"QUOTA_MODE", "0"}});
  EXPECT_FALSE(line.serve.options.envoy.global_shadow_mode);
  EXPECT_FALSE(line.serve.options.envoy.global_quota_mode);

  EXPECT_THAT(Refusal({"serve", "--config", "c"}, {{"SHADOW_MODE", "yes"}}),
              HasSubstr("SHADOW_MODE=yes: not a boolean"));
  EXPECT_THAT(Refusal({"serve", "--config", "c"}, {{"MERGE_DOMAIN_CONFIG", "true"}}),
              HasSubstr("MERGE_DOMAIN_CONFIG=true: not supported"));
  EXPECT_THAT(Refusal({"serve", "--config", "c"}, {{"LIMIT_LIMIT_HEADER", "X Limit"}}),
              HasSubstr("--limit-limit-header must be an HTTP header name (got 'X Limit')"));
}

TEST_F(FlagsTest, EnvoyNearLimitRatioAndLocalCache) {
  const auto serve = [](Env envoy) {
    CommandLine line = Parse({"serve", "--config", "c"}, std::move(envoy));
    EXPECT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
    return line.serve.options;
  };
  EXPECT_DOUBLE_EQ(serve({{"NEAR_LIMIT_RATIO", "0.9"}}).near_limit_ratio, 0.9);
  EXPECT_THAT(Refusal({"serve", "--config", "c"}, {{"NEAR_LIMIT_RATIO", "abc"}}),
              HasSubstr("floodgate: NEAR_LIMIT_RATIO=abc: not a number\n"));
  EXPECT_THAT(Refusal({"serve", "--config", "c"}, {{"NEAR_LIMIT_RATIO", "1.5"}}),
              HasSubstr("NEAR_LIMIT_RATIO=1.5: must be from 0 to 1"));
  EXPECT_THAT(Refusal({"serve", "--config", "c", "--near-limit-ratio=-1"}),
              HasSubstr("--near-limit-ratio must be a number from 0 to 1 (got '-1')"));

  // Bytes become 24-byte slots; an explicit 0 turns the fast path off, as in Envoy; unset, ours
  // stays on.
  EXPECT_EQ(serve({}).refusal_cache_slots, size_t{1} << 16);
  EXPECT_EQ(serve({{"LOCAL_CACHE_SIZE_IN_BYTES", "2400"}}).refusal_cache_slots, 100u);
  EXPECT_EQ(serve({{"LOCAL_CACHE_SIZE_IN_BYTES", "10"}}).refusal_cache_slots, 1u);
  EXPECT_EQ(serve({{"LOCAL_CACHE_SIZE_IN_BYTES", "0"}}).refusal_cache_slots, 0u);
  EXPECT_THAT(Refusal({"serve", "--config", "c"}, {{"LOCAL_CACHE_SIZE_IN_BYTES", "-1"}}),
              HasSubstr("LOCAL_CACHE_SIZE_IN_BYTES=-1: not a whole number of bytes"));
  EXPECT_THAT(Refusal({"serve", "--config", "c"}, {{"LOCAL_CACHE_SIZE_IN_BYTES", "1e12"}}),
              HasSubstr("LOCAL_CACHE_SIZE_IN_BYTES=1e12: not a whole number"));
  EXPECT_THAT(Refusal({"serve", "--config", "c"}, {{"LOCAL_CACHE_SIZE_IN_BYTES", "100000000000"}}),
              HasSubstr("LOCAL_CACHE_SIZE_IN_BYTES=100000000000: at most"));
}

TEST_F(FlagsTest, EnvoyXdsSwitches) {
  CommandLine line = Parse({"serve"}, {{"CONFIG_TYPE", "GRPC_XDS_SOTW"},
                                       {"CONFIG_GRPC_XDS_NODE_ID", "rl-1"},
                                       {"CONFIG_GRPC_XDS_NODE_METADATA", "a=1,b:2,c=x=y,=z"},
                                       {"XDS_CLIENT_BACKOFF_INITIAL_INTERVAL", "1m30s"},
                                       {"XDS_CLIENT_BACKOFF_MAX_INTERVAL", "1.5h"}});
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;  // no --config needed
  const ServerOptions& o = line.serve.options;
  EXPECT_EQ(o.xds_server, "localhost:18000");
  EXPECT_EQ(o.xds_node_id, "rl-1");
  // As Envoy: an entry without '=' is skipped; the value is what follows the first '='.
  EXPECT_THAT(o.xds_node_metadata, ::testing::ElementsAre(Pair("a", "1"), Pair("c", "x=y")));
  EXPECT_EQ(o.xds_initial_backoff, absl::Seconds(90));
  EXPECT_EQ(o.xds_max_backoff, absl::Minutes(90));

  line = Parse({"serve"}, {{"CONFIG_TYPE", "GRPC_XDS_SOTW"},
                           {"CONFIG_GRPC_XDS_SERVER_URL", "xds.local:18000"}});
  EXPECT_EQ(line.serve.options.xds_server, "xds.local:18000");
  line = Parse({"serve", "--config", "c"},
               {{"CONFIG_TYPE", "FILE"}, {"CONFIG_GRPC_XDS_SERVER_URL", "xds.local:18000"}});
  EXPECT_EQ(line.serve.options.xds_server, "");

  EXPECT_THAT(Refusal({"serve", "--config", "c"}, {{"CONFIG_TYPE", "REST"}}),
              HasSubstr("CONFIG_TYPE=REST: must be FILE or GRPC_XDS_SOTW"));
  EXPECT_THAT(Refusal({"serve", "--config", "c"}, {{"XDS_CLIENT_BACKOFF_INITIAL_INTERVAL", "10"}}),
              HasSubstr("XDS_CLIENT_BACKOFF_INITIAL_INTERVAL=10: not a duration"));
  EXPECT_THAT(Refusal({"serve", "--config", "c"}, {{"XDS_CLIENT_BACKOFF_MAX_INTERVAL", "5s"}}),
              HasSubstr("--xds-max-backoff must be from 10s"));
  EXPECT_THAT(Refusal({"serve", "--config", "c", "--xds-node-metadata", "a=1,b:2"}),
              HasSubstr("--xds-node-metadata must be KEY=VALUE,... (got the entry 'b:2')"));

  // TLS to the management server and the backoff's jitter, as Envoy Gateway sets them.
  line = Parse({"serve"}, {{"CONFIG_TYPE", "GRPC_XDS_SOTW"},
                           {"CONFIG_GRPC_XDS_SERVER_USE_TLS", "true"},
                           {"CONFIG_GRPC_XDS_SERVER_TLS_CACERT", "/certs/ca.crt"},
                           {"CONFIG_GRPC_XDS_CLIENT_TLS_CERT", "/certs/tls.crt"},
                           {"CONFIG_GRPC_XDS_CLIENT_TLS_KEY", "/certs/tls.key"},
                           {"CONFIG_GRPC_XDS_SERVER_TLS_SAN", "envoy-gateway"},
                           {"XDS_CLIENT_BACKOFF_RANDOM_FACTOR", "0.25"}});
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
  EXPECT_TRUE(line.serve.options.xds_tls);
  EXPECT_EQ(line.serve.options.xds_tls_ca, "/certs/ca.crt");
  EXPECT_EQ(line.serve.options.xds_tls_cert, "/certs/tls.crt");
  EXPECT_EQ(line.serve.options.xds_tls_key, "/certs/tls.key");
  EXPECT_EQ(line.serve.options.xds_tls_server_name, "envoy-gateway");
  EXPECT_EQ(line.serve.options.xds_backoff_jitter, 0.25);
  line = Parse({"serve"}, {{"CONFIG_TYPE", "GRPC_XDS_SOTW"},
                           {"XDS_CLIENT_BACKOFF_JITTER", "false"},
                           {"XDS_CLIENT_BACKOFF_RANDOM_FACTOR", "0.25"}});
  EXPECT_EQ(line.serve.options.xds_backoff_jitter, 0);
  EXPECT_FALSE(line.serve.options.xds_tls);
  EXPECT_THAT(Refusal({"serve", "--config", "c", "--xds-tls-cert", "a.pem"}),
              HasSubstr("--xds-tls-cert and --xds-tls-key go together"));
  EXPECT_THAT(Refusal({"serve", "--config", "c", "--xds-backoff-jitter", "2"}),
              HasSubstr("--xds-backoff-jitter must be a number from 0 to 1"));
}

TEST_F(FlagsTest, EnvoyGrpcServerTls) {
  // As Envoy Gateway sets them: TLS on the gRPC port alone, mTLS, a client SAN.
  const Env mtls = {{"GRPC_SERVER_USE_TLS", "true"},
                    {"GRPC_SERVER_TLS_CERT", "/certs/tls.crt"},
                    {"GRPC_SERVER_TLS_KEY", "/certs/tls.key"},
                    {"GRPC_CLIENT_TLS_CACERT", "/certs/ca.crt"},
                    {"GRPC_CLIENT_TLS_SAN", "envoy-gateway"}};
  CommandLine line = Parse({"serve", "--config", "c"}, mtls);
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
  const ServerOptions& o = line.serve.options;
  EXPECT_EQ(o.tls.cert_file, "");  // the HTTP port stays plain
  EXPECT_EQ(o.grpc_tls.cert_file, "/certs/tls.crt");
  EXPECT_EQ(o.grpc_tls.key_file, "/certs/tls.key");
  EXPECT_EQ(o.grpc_tls.client_ca_file, "/certs/ca.crt");
  EXPECT_EQ(o.grpc_tls.client_san, "envoy-gateway");

  // Our flags and variables come first, one flag at a time.
  setenv("FLOODGATE_GRPC_TLS_CLIENT_SAN", "ours", 1);
  line = Parse({"serve", "--config", "c", "--grpc-tls-cert", "/ours.pem"}, mtls);
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
  EXPECT_EQ(line.serve.options.grpc_tls.cert_file, "/ours.pem");
  EXPECT_EQ(line.serve.options.grpc_tls.key_file, "/certs/tls.key");
  EXPECT_EQ(line.serve.options.grpc_tls.client_san, "ours");
  SetUp();

  // GRPC_SERVER_USE_TLS unset or false: Envoy reads none of the files, nor do we.
  for (const char* use : {"", "false", "0"}) {
    Env off = mtls;
    off["GRPC_SERVER_USE_TLS"] = use;
    line = Parse({"serve", "--config", "c"}, off);
    ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << use << ": " << line.err;
    EXPECT_EQ(line.serve.options.grpc_tls.cert_file, "") << use;
    EXPECT_EQ(line.serve.options.grpc_tls.client_san, "") << use;
  }
  // TLS without client certificates.
  line = Parse({"serve", "--config", "c"}, {{"GRPC_SERVER_USE_TLS", "1"},
                                            {"GRPC_SERVER_TLS_CERT", "/c.pem"},
                                            {"GRPC_SERVER_TLS_KEY", "/k.pem"}});
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
  EXPECT_EQ(line.serve.options.grpc_tls.cert_file, "/c.pem");
  EXPECT_EQ(line.serve.options.grpc_tls.client_ca_file, "");

  // Bad combinations, named by the variable.
  EXPECT_THAT(Refusal({"serve", "--config", "c"}, {{"GRPC_SERVER_USE_TLS", "yes"}}),
              HasSubstr("GRPC_SERVER_USE_TLS=yes: not a boolean"));
  EXPECT_THAT(Refusal({"serve", "--config", "c"},
                      {{"GRPC_SERVER_USE_TLS", "true"}, {"GRPC_SERVER_TLS_KEY", "/k.pem"}}),
              HasSubstr("GRPC_SERVER_USE_TLS=true: needs GRPC_SERVER_TLS_CERT"));
  EXPECT_THAT(Refusal({"serve", "--config", "c"},
                      {{"GRPC_SERVER_USE_TLS", "true"}, {"GRPC_SERVER_TLS_CERT", "/c.pem"}}),
              HasSubstr("GRPC_SERVER_USE_TLS=true: needs GRPC_SERVER_TLS_KEY"));
  Env san_alone = mtls;
  san_alone.erase("GRPC_CLIENT_TLS_CACERT");
  EXPECT_THAT(Refusal({"serve", "--config", "c"}, san_alone),
              HasSubstr("GRPC_CLIENT_TLS_SAN=envoy-gateway: needs GRPC_CLIENT_TLS_CACERT"));
  // ... unless our flag gives the CA.
  line = Parse({"serve", "--config", "c", "--grpc-tls-client-ca", "/ca.pem"}, san_alone);
  ASSERT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
  EXPECT_EQ(line.serve.options.grpc_tls.client_san, "envoy-gateway");
}

TEST_F(FlagsTest, EnvoyStatsdOnlyWhenAsked) {
  const auto statsd = [](Env envoy) {
    CommandLine line = Parse({"serve", "--config", "c"}, std::move(envoy));
    EXPECT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
    return std::pair{line.serve.options.statsd, line.serve.options.statsd_flush_interval};
  };
  EXPECT_EQ(statsd({}).first, "");  // Envoy's default (on, localhost:8125) is not ours
  EXPECT_EQ(statsd({{"USE_STATSD", "true"}}).first, "localhost:8125");
  EXPECT_EQ(statsd({{"STATSD_PORT", "9125"}}).first, "localhost:9125");
  EXPECT_EQ(statsd({{"STATSD_HOST", "stats.local"}}).first, "stats.local:8125");
  EXPECT_EQ(statsd({{"USE_STATSD", "false"}, {"STATSD_HOST", "stats.local"}}).first, "");
  EXPECT_EQ(statsd({{"STATSD_HOST", "stats.local"}, {"STATS_FLUSH_INTERVAL", "500ms"}}),
            std::pair(std::string("stats.local:8125"), absl::Milliseconds(500)));
  EXPECT_THAT(Refusal({"serve", "--config", "c"}, {{"STATSD_PORT", "0"}}),
              HasSubstr("STATSD_PORT=0: not a port number (1 to 65535)"));
  EXPECT_THAT(Refusal({"serve", "--config", "c"}, {{"STATS_FLUSH_INTERVAL", "soon"}}),
              HasSubstr("STATS_FLUSH_INTERVAL=soon: not a duration"));
  EXPECT_THAT(Refusal({"serve", "--config", "c", "--statsd", "nohost"}),
              HasSubstr("--statsd must be HOST:PORT (got 'nohost')"));
}

TEST_F(FlagsTest, StoreIsMemoryOrARedisUrl) {
  const auto store = [](std::vector<std::string> args, Env envoy = {}) {
    CommandLine line = Parse(std::move(args), std::move(envoy));
    EXPECT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
    return line.serve.options;
  };
  EXPECT_EQ(store({"serve", "--config", "c"}).store, "memory");
  const ServerOptions redis = store({"serve", "--config", "c", "--store", "redis://r:6379/2",
                                     "--store-envoy-keys", "--store-envoy-prefix", "rl_"});
  EXPECT_EQ(redis.store, "redis://r:6379/2");
  EXPECT_TRUE(redis.redis_store());
  EXPECT_TRUE(redis.store_envoy_keys);
  EXPECT_EQ(redis.store_envoy_prefix, "rl_");
  EXPECT_EQ(redis.store_key_prefix, "fg:");
  setenv("FLOODGATE_STORE", "redis-cluster://a:1,b:2", 1);
  EXPECT_EQ(store({"serve", "--config", "c"}).store, "redis-cluster://a:1,b:2");
  unsetenv("FLOODGATE_STORE");
  EXPECT_THAT(Refusal({"serve", "--config", "c", "--store", "mysql://x"}),
              HasSubstr("--store must be memory or a Redis URL"));
  EXPECT_THAT(Refusal({"serve", "--config", "c", "--store-envoy-keys"}),
              HasSubstr("--store-envoy-keys and --store-envoy-prefix need a Redis store"));
  EXPECT_THAT(Refusal({"serve", "--config", "c", "--store", "redis://r:1", "--peers",
                       "a=127.0.0.1:1", "--node-id", "a", "--insecure-peers"}),
              HasSubstr("do not go together"));
}

// envoyproxy/ratelimit's Redis variables become a store URL, with its key layout.
TEST_F(FlagsTest, EnvoyRedisVariables) {
  const auto options = [](Env envoy) {
    CommandLine line = Parse({"serve", "--config", "c"}, std::move(envoy));
    EXPECT_EQ(line.kind, CommandLine::Kind::kServe) << line.err;
    return line.serve.options;
  };
  const ServerOptions single = options({{"REDIS_SOCKET_TYPE", "tcp"},
                                        {"REDIS_URL", "redis.local:6379"},
                                        {"REDIS_AUTH", "user:p@ss"},
                                        {"CACHE_KEY_PREFIX", "rl_"}});
  EXPECT_EQ(single.store, "redis://user:p%40ss@redis.local:6379");
  EXPECT_TRUE(single.store_envoy_keys);
  EXPECT_EQ(single.store_envoy_prefix, "rl_");
  EXPECT_EQ(options({{"REDIS_TYPE", "cluster"}, {"REDIS_URL", "a:1,b:2"}}).store,
            "redis-cluster://a:1,b:2");
  EXPECT_EQ(
      options({{"REDIS_TYPE", "SENTINEL"}, {"REDIS_URL", "mymaster,s1:26379,s2:26379"}}).store,
      "redis-sentinel://s1:26379,s2:26379/mymaster");
  EXPECT_EQ(options({}).store, "memory");
  // Our flag wins, and then Envoy's key layout is not implied.
  CommandLine ours =
      Parse({"serve", "--config", "c", "--store", "redis://mine:1"}, {{"REDIS_URL", "theirs:2"}});
  ASSERT_EQ(ours.kind, CommandLine::Kind::kServe) << ours.err;
  EXPECT_EQ(ours.serve.options.store, "redis://mine:1");
  EXPECT_FALSE(ours.serve.options.store_envoy_keys);
  EXPECT_THAT(Refusal({"serve", "--config", "c"}, {{"BACKEND_TYPE", "memcache"}}),
              HasSubstr("BACKEND_TYPE=memcache: only redis is supported"));
  EXPECT_THAT(Refusal({"serve", "--config", "c"}, {{"REDIS_URL", "/var/run/r.sock"}}),
              HasSubstr("a unix socket is not supported"));
  EXPECT_THAT(
      Refusal({"serve", "--config", "c"}, {{"REDIS_SOCKET_TYPE", "unix"}, {"REDIS_URL", "r:1"}}),
      HasSubstr("REDIS_SOCKET_TYPE=unix: only tcp is supported"));
  EXPECT_THAT(Refusal({"serve", "--config", "c"}, {{"REDIS_TYPE", "ring"}, {"REDIS_URL", "r:1"}}),
              HasSubstr("REDIS_TYPE=RING: not one of SINGLE, SENTINEL, CLUSTER"));
  EXPECT_THAT(Refusal({"serve", "--config", "c"}, {{"REDIS_TLS", "true"}, {"REDIS_URL", "r:1"}}),
              HasSubstr("needs REDIS_TLS_CACERT"));
  // REDIS_TLS with its CA makes a URL our parser takes, for every REDIS_TYPE.
  EXPECT_EQ(
      options({{"REDIS_TLS", "true"}, {"REDIS_TLS_CACERT", "/ca.pem"}, {"REDIS_URL", "r:1"}}).store,
      "rediss://r:1?tls=true&tls_ca=/ca.pem");
  EXPECT_EQ(options({{"REDIS_TLS", "true"},
                     {"REDIS_TLS_CACERT", "/ca.pem"},
                     {"REDIS_TYPE", "cluster"},
                     {"REDIS_URL", "a:1,b:2"}})
                .store,
            "redis-cluster://a:1,b:2?tls=true&tls_ca=/ca.pem");
}

TEST_F(FlagsTest, GoDurationsAndBooleans) {
  const std::pair<const char*, absl::Duration> good[] = {{"10s", absl::Seconds(10)},
                                                         {"1m30s", absl::Seconds(90)},
                                                         {"500ms", absl::Milliseconds(500)},
                                                         {"1.5h", absl::Minutes(90)},
                                                         {"300\xC2\xB5s", absl::Microseconds(300)},
                                                         {"2us", absl::Microseconds(2)},
                                                         {"0", absl::ZeroDuration()},
                                                         {"-1s", absl::Seconds(-1)}};
  for (const auto& [text, want] : good) {
    absl::StatusOr<absl::Duration> got = ParseGoDuration(text);
    ASSERT_TRUE(got.ok()) << text;
    EXPECT_EQ(*got, want) << text;
  }
  for (const char* bad : {"", "10", "inf", "1d", "s", "1 s"}) {
    EXPECT_FALSE(ParseGoDuration(bad).ok()) << bad;
  }
  for (const char* yes : {"1", "t", "T", "TRUE", "true", "True"}) {
    absl::StatusOr<bool> b = ParseGoBool(yes);
    EXPECT_TRUE(b.ok() && *b) << yes;
  }
  for (const char* no : {"0", "f", "F", "FALSE", "false", "False"}) {
    absl::StatusOr<bool> b = ParseGoBool(no);
    EXPECT_TRUE(b.ok() && !*b) << no;
  }
  for (const char* bad : {"yes", "on", "tRuE", ""}) {
    EXPECT_FALSE(ParseGoBool(bad).ok()) << bad;
  }
}

// Every flag of the table exists, with its FLOODGATE_* variable.
TEST_F(FlagsTest, EveryEnvoyRowHasAServeFlag) {
  const std::string help = Parse({"serve", "--help"}).out;
  const std::vector<std::string> flags = EnvoyEnvFlags();
  EXPECT_GE(flags.size(), 20u);
  for (const std::string& flag : flags) {
    EXPECT_THAT(help, HasSubstr(flag + " ")) << flag;
    std::string env = absl::StrCat("FLOODGATE_", flag.substr(2));
    absl::StrReplaceAll({{"-", "_"}}, &env);
    absl::AsciiStrToUpper(&env);
    EXPECT_THAT(help, HasSubstr("Env:" + env)) << flag;
  }
}

// ---- end of envoyproxy/ratelimit's switches ----

}  // namespace
}  // namespace floodgate::server
