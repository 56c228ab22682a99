#include "src/server/flag_helpers.h"

#include <CLI/CLI.hpp>

#include <cctype>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"

namespace floodgate::server {

std::string EnvName(absl::string_view flag) {
  std::string name = absl::StrReplaceAll(absl::StripPrefix(flag, "--"), {{"-", "_"}});
  absl::AsciiStrToUpper(&name);
  return absl::StrCat("FLOODGATE_", name);
}

CLI::Option* AddFlag(CLI::App* app, const std::string& name, std::string* text,
                     const std::string& type, const std::string& meaning) {
  CLI::Option* option = app->add_option(name, *text, meaning)->type_name(type);
  option->envname(EnvName(name));
  if (!text->empty()) {
    option->default_str(*text);
  }
  return option;
}

void AddSwitch(CLI::App* app, const std::string& name, bool* value, const std::string& meaning) {
  app->add_flag(name, *value, meaning)->envname(EnvName(name));
}

absl::StatusOr<uint64_t> WholeNumber(absl::string_view flag, const std::string& text, uint64_t min,
                                     uint64_t max, absl::string_view note) {
  uint64_t value = 0;
  const bool digits = !text.empty() && std::isdigit(static_cast<unsigned char>(text[0]));
  if (!digits || !absl::SimpleAtoi(text, &value) || value < min || value > max) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " must be a whole number from ", min,
                                                   " to ", max, note, " (got '", text, "')"));
  }
  return value;
}

absl::StatusOr<absl::Duration> DurationOf(absl::string_view flag, const std::string& text,
                                          absl::Duration min, absl::Duration max) {
  absl::Duration value;
  if (!absl::ParseDuration(text, &value) || value == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " must be a duration such as 200ms, 5s or 1m (got '", text, "')"));
  }
  if (value < min || value > max) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " must be from ", absl::FormatDuration(min), " to ",
                     absl::FormatDuration(max), " (got ", absl::FormatDuration(value), ")"));
  }
  return value;
}

}  // namespace floodgate::server
