#pragma once

// The command line of the floodgate binary: `serve`, `validate`, `check` and `version`, their
// flags, the FLOODGATE_* environment variable of each flag, --help and --version. Built on CLI11;
// nothing here throws (CLI11's exceptions are caught inside ParseCommandLine) and nothing here
// runs a command: main.cc does, with what ParseCommandLine returns.
//
// Rules (checked by flags_test.cc and tests/cli_test.sh):
// - An unknown flag or command, a flag without its value, and a value that looks like a flag
//   (`--config --http ...`) are refused with a message naming the flag: exit code 2.
// - Every flag FOO-BAR may come from FLOODGATE_FOO_BAR instead; the command line wins; an empty
//   variable counts as unset. Some `serve` flags may also come from envoyproxy/ratelimit's
//   variables (envoy_env.h), below both.
// - Values are checked here, in the flag's terms ("--max-memory must be 0 (no cap) or at least
//   64MiB (got 1000 bytes)"), before any library sees them.
// - `--help`/`-h`, on the program or a command, print every flag with its meaning, default and
//   environment variable; `--version` and the `version` command print the version line. All
//   exit 0.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "src/common/log.h"
#include "src/server/envoy_env.h"
#include "src/server/server.h"

namespace floodgate::server {

// Returns the version of this build ("0.1.0"), set once in the top CMakeLists.txt.
absl::string_view Version();
// Returns what `floodgate --version` and `floodgate version` print (without the newline):
// "floodgate 0.1.0 (commit 1abd019, built gcc 12.2.0)"; the commit is "unknown" in a build
// configured outside git.
std::string VersionLine();

// `floodgate serve`: run a node until SIGTERM/SIGINT, then drain for `drain_timeout`.
struct ServeCommand {
  ServerOptions options;
  absl::Duration drain_timeout = absl::Seconds(5);
  // The log's line format and lowest level (--log-format, --log-level; src/common/log.h).
  common::LogFormat log_format = common::LogFormat::kPlain;
  common::LogLevel log_level = common::LogLevel::kInfo;
};

// `floodgate validate PATH`.
struct ValidateCommand {
  std::string path;
};

// `floodgate check --config PATH --domain D [--hits N] KEY=VALUE...`.
struct CheckCommand {
  std::string config_path;
  std::string domain;
  uint64_t hits = 1;
  std::vector<std::pair<std::string, std::string>> entries;  // one descriptor, in order
};

// What the command line asks for: a command to run, or to exit at once with `exit_code` after
// printing `out` (help, version) to stdout and `err` (a refusal) to stderr.
struct CommandLine {
  enum class Kind { kExit, kServe, kValidate, kCheck };
  Kind kind = Kind::kExit;
  int exit_code = 0;
  std::string out;
  std::string err;
  ServeCommand serve;
  ValidateCommand validate;
  CheckCommand check;
};

// Exit code of a command line that was refused (unknown flag, missing or bad value).
inline constexpr int kExitUsage = 2;

// Parses argv (argv[0] is the program). Reads the FLOODGATE_* environment variables, then
// envoyproxy/ratelimit's (envoy_env.h) through ProcessEnv().
CommandLine ParseCommandLine(int argc, const char* const* argv);
// As above, with envoyproxy/ratelimit's variables read through `envoy_env` (tests).
CommandLine ParseCommandLine(int argc, const char* const* argv, const EnvGetter& envoy_env);

// Returns the bytes of a size: a whole number of bytes ("1048576"), or a whole number with a
// unit, decimal (B, KB, MB, GB, TB: powers of 1000) or binary (KiB, MiB, GiB, TiB: powers of
// 1024), case-insensitive, with an optional space ("256MiB", "1 GiB", "500MB").
// InvalidArgument for anything else, or a size over 2^64-1 bytes.
absl::StatusOr<uint64_t> ParseByteSize(absl::string_view text);

// Returns `bytes` as a person would write it: "64MiB" when a whole number of KiB/MiB/GiB/TiB,
// else "1000 bytes".
std::string FormatByteSize(uint64_t bytes);

}  // namespace floodgate::server
