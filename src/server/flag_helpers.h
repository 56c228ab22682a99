#pragma once

// The small pieces every group of `serve` flags is built with (flags.cc, envoy_flags.cc): a flag
// and its FLOODGATE_* variable, and the checks that turn a flag's text into a value in the
// flag's own terms. Stateless; call them while the command line is defined or converted.

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace CLI {
class App;
class Option;
}  // namespace CLI

namespace floodgate::server {

// Returns the environment variable of a flag: "--max-connections-per-client" ->
// "FLOODGATE_MAX_CONNECTIONS_PER_CLIENT".
std::string EnvName(absl::string_view flag);

// Adds `name` (taking one value, collected into `text`) with its environment variable; the
// current `text`, if any, is shown as the default.
CLI::Option* AddFlag(CLI::App* app, const std::string& name, std::string* text,
                     const std::string& type, const std::string& meaning);

// Adds the switch `name` (no value: present is true) with its environment variable.
void AddSwitch(CLI::App* app, const std::string& name, bool* value, const std::string& meaning);

// Returns the whole number `text`, from `min` to `max`; InvalidArgument naming `flag` (and
// `note`, after the range) otherwise.
absl::StatusOr<uint64_t> WholeNumber(absl::string_view flag, const std::string& text, uint64_t min,
                                     uint64_t max, absl::string_view note = "");

// Returns the duration `text` ("200ms", "5s", "1m"), from `min` to `max`; InvalidArgument naming
// `flag` otherwise.
absl::StatusOr<absl::Duration> DurationOf(absl::string_view flag, const std::string& text,
                                          absl::Duration min, absl::Duration max);

}  // namespace floodgate::server
