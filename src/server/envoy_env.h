#pragma once

// envoyproxy/ratelimit's environment variables, read as the lowest-precedence source of our
// `serve` flags, so that a container environment written for it starts Floodgate unchanged.
//
// Precedence, per flag: the command line, then its FLOODGATE_* variable (both CLI11's, in
// flags.cc), then the Envoy variables of the table in envoy_env.cc, then the flag's default.
// Each table row names one of our flags, the Envoy variables it is made from and a converter;
// a row is read only when its flag was not given either of our ways. A converter checks the
// values in Envoy's terms and refuses a bad one naming the variable
// ("NEAR_LIMIT_RATIO=abc: not a number"); it returns the flag's value as our flag takes it, so
// that flags.cc then checks and applies it like any other. docs/config.md, "Envoy's switches",
// is the table for operators.
//
// The environment is read through an EnvGetter, so tests give a map instead of the process's.
// Stateless; the functions may be called from any thread (ProcessEnv's getter reads getenv).

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace floodgate::server {

// Returns the value of an environment variable, or nullopt when it is unset. An empty value
// counts as unset, as for our FLOODGATE_* variables.
using EnvGetter = std::function<std::optional<std::string>(const std::string& name)>;

// Returns a getter over the process's environment.
EnvGetter ProcessEnv();

// One flag value taken from Envoy's variables.
struct EnvoyValue {
  std::string flag;  // "--near-limit-ratio"
  std::string text;  // as the flag takes it: "0.9"
  std::string from;  // the variables it came from, for messages: "NEAR_LIMIT_RATIO=0.9"
};

// Returns the values of the flags for which `given(flag)` is false and some Envoy variable of
// the flag is set, in table order. InvalidArgument, naming the variable, for a value that does
// not convert, and for the switches we refuse whatever the flags say (MERGE_DOMAIN_CONFIG=true,
// an unknown CONFIG_TYPE).
absl::StatusOr<std::vector<EnvoyValue>> ReadEnvoyEnv(
    const EnvGetter& env, absl::FunctionRef<bool(absl::string_view flag)> given);

// Returns the flags the table can set, in table order (tests and docs check they exist).
std::vector<std::string> EnvoyEnvFlags();

// Returns the duration of a Go duration string, as Envoy's variables hold them: a sequence of
// decimal numbers, each with an optional fraction and a unit (ns, us, µs, ms, s, m, h), with an
// optional sign; "0" alone needs no unit ("10s", "1m30s", "1.5h", "500ms"). InvalidArgument
// otherwise.
absl::StatusOr<absl::Duration> ParseGoDuration(absl::string_view text);

// Returns whether `text` is true or false as Go's strconv.ParseBool reads it (1, t, T, TRUE,
// true, True; 0, f, F, FALSE, false, False). InvalidArgument otherwise.
absl::StatusOr<bool> ParseGoBool(absl::string_view text);

// Returns the map of "k1=v1,k2=v2" ("" gives none); a value is what follows the first '='.
// InvalidArgument naming `flag` for an entry without '=' or with an empty key.
absl::StatusOr<std::map<std::string, std::string>> ParseKeyValues(absl::string_view flag,
                                                                  absl::string_view text);

// Returns OK when `name` is an HTTP header name (an RFC 9110 token), else InvalidArgument naming
// `flag`.
absl::Status CheckHeaderName(absl::string_view flag, absl::string_view name);

// The over-limit fast path's slots for LOCAL_CACHE_SIZE_IN_BYTES: one slot of the refusal cache
// (limiter/refusal_cache.h) holds a key hash, a deadline and two counters, 24 bytes.
inline constexpr size_t kRefusalSlotBytes = 24;

}  // namespace floodgate::server
