#include "src/admin/xds_yaml.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/util/json_util.h"

namespace floodgate::admin {
namespace {

namespace rls = ::ratelimit::config::ratelimit::v3;

// Returns the length of the UTF-8 sequence starting at text[i] and its code point, or 0 when
// the bytes there are not valid UTF-8 (they are then copied as they are, and the loader reports
// them).
size_t DecodeUtf8(std::string_view text, size_t i, uint32_t* code_point) {
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(text[k]); };
  const uint8_t lead = byte(i);
  size_t length = 0;
  uint32_t value = 0;
  if (lead < 0x80) {
    *code_point = lead;
    return 1;
  } else if ((lead & 0xE0) == 0xC0) {
    length = 2;
    value = lead & 0x1F;
  } else if ((lead & 0xF0) == 0xE0) {
    length = 3;
    value = lead & 0x0F;
  } else if ((lead & 0xF8) == 0xF0) {
    length = 4;
    value = lead & 0x07;
  } else {
    return 0;
  }
  if (i + length > text.size()) {
    return 0;
  }
  for (size_t k = 1; k < length; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) {
      return 0;
    }
    value = (value << 6) | (byte(i + k) & 0x3F);
  }
  *code_point = value;
  return length;
}

std::string_view UnitName(rls::RateLimitUnit unit) {
  switch (unit) {
    case rls::SECOND:
      return "second";
    case rls::MINUTE:
      return "minute";
    case rls::HOUR:
      return "hour";
    case rls::DAY:
      return "day";
    case rls::WEEK:
      return "week";
    case rls::MONTH:
      return "month";
    case rls::YEAR:
      return "year";
    default:
      return "";
  }
}

void AppendPolicy(const rls::RateLimitPolicy& policy, const std::string& indent, std::string* out) {
  absl::StrAppend(out, indent, "rate_limit:\n");
  const std::string in = indent + "  ";
  if (policy.unit() != rls::UNKNOWN) {
    const std::string_view name = UnitName(policy.unit());
    // A value this build does not know is written as its number: the loader names it.
    absl::StrAppend(
        out, in,
        "unit: ", name.empty() ? absl::StrCat(static_cast<int>(policy.unit())) : std::string(name),
        "\n");
  }
  // An unlimited limit takes no count; 0 there only means "not set".
  if (!policy.unlimited() || policy.requests_per_unit() != 0) {
    absl::StrAppend(out, in, "requests_per_unit: ", policy.requests_per_unit(), "\n");
  }
  if (policy.unlimited()) {
    absl::StrAppend(out, in, "unlimited: true\n");
  }
  if (!policy.name().empty()) {
    absl::StrAppend(out, in, "name: ", YamlQuote(policy.name()), "\n");
  }
  if (policy.replaces_size() > 0) {
    absl::StrAppend(out, in, "replaces:\n");
    for (const rls::RateLimitReplace& replace : policy.replaces()) {
      absl::StrAppend(out, in, "  - name: ", YamlQuote(replace.name()), "\n");
    }
  }
}

// Appends `descriptors` as a block list at `indent` (its items' fields at indent + 4).
void AppendDescriptors(const google::protobuf::RepeatedPtrField<rls::RateLimitDescriptor>& list,
                       const std::string& indent, std::string* out) {
  for (const rls::RateLimitDescriptor& d : list) {
    const std::string in = indent + "    ";
    absl::StrAppend(out, indent, "  - key: ", YamlQuote(d.key()), "\n");
    if (!d.value().empty()) {
      absl::StrAppend(out, in, "value: ", YamlQuote(d.value()), "\n");
    }
    if (d.has_rate_limit()) {
      AppendPolicy(d.rate_limit(), in, out);
    }
    if (d.shadow_mode()) {
      absl::StrAppend(out, in, "shadow_mode: true\n");
    }
    if (d.detailed_metric()) {
      absl::StrAppend(out, in, "detailed_metric: true\n");
    }
    if (d.quota_mode()) {
      absl::StrAppend(out, in, "quota_mode: true\n");
    }
    if (d.has_metadata() && d.metadata().fields_size() > 0) {
      // JSON is a YAML flow mapping; the loader refuses the field by name either way.
      std::string json;
      if (!google::protobuf::util::MessageToJsonString(d.metadata(), &json).ok()) {
        json = "{}";
      }
      absl::StrAppend(out, in, "metadata: ", json, "\n");
    }
    if (d.descriptors_size() > 0) {
      absl::StrAppend(out, in, "descriptors:\n");
      AppendDescriptors(d.descriptors(), in, out);
    }
  }
}

}  // namespace

std::string YamlQuote(std::string_view text) {
  std::string out = "\"";
  out.reserve(text.size() + 2);
  size_t i = 0;
  while (i < text.size()) {
    uint32_t cp = 0;
    const size_t length = DecodeUtf8(text, i, &cp);
    if (length == 0) {
      out.push_back(text[i]);
      ++i;
      continue;
    }
    if (cp == '"') {
      out += "\\\"";
    } else if (cp == '\\') {
      out += "\\\\";
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp <= 0x9F)) {
      absl::StrAppendFormat(&out, "\\x%02X", cp);  // control characters (0x85 is YAML's NEL)
    } else if (cp == 0x2028) {
      out += "\\L";
    } else if (cp == 0x2029) {
      out += "\\P";
    } else if ((cp >= 0xD800 && cp <= 0xDFFF) || cp == 0xFEFF || cp == 0xFFFE || cp == 0xFFFF) {
      absl::StrAppendFormat(&out, "\\u%04X", cp);  // not printable for YAML
    } else {
      out.append(text.substr(i, length));
    }
    i += length;
  }
  out.push_back('"');
  return out;
}

std::string RateLimitConfigToYaml(const rls::RateLimitConfig& config) {
  std::string out = absl::StrCat("domain: ", YamlQuote(config.domain()), "\n");
  if (config.descriptors_size() == 0) {
    out += "descriptors: []\n";
    return out;
  }
  out += "descriptors:\n";
  AppendDescriptors(config.descriptors(), "", &out);
  return out;
}

std::string XdsResourceLabel(const rls::RateLimitConfig& config) {
  return absl::StrCat("xds:", config.name().empty() ? config.domain() : config.name());
}

absl::StatusOr<std::vector<ConfigFile>> XdsResponseToConfigFiles(
    const envoy::service::discovery::v3::DiscoveryResponse& response) {
  std::vector<ConfigFile> files;
  files.reserve(response.resources_size());
  for (int i = 0; i < response.resources_size(); ++i) {
    const google::protobuf::Any& any = response.resources(i);
    if (any.type_url() != kRateLimitConfigTypeUrl) {
      return absl::InvalidArgumentError(absl::StrCat(
          "resource ", i, " has type '", any.type_url(), "', expected '",
          absl::string_view(kRateLimitConfigTypeUrl.data(), kRateLimitConfigTypeUrl.size()), "'"));
    }
    rls::RateLimitConfig config;
    if (!any.UnpackTo(&config)) {
      return absl::InvalidArgumentError(
          absl::StrCat("resource ", i, " does not decode as a RateLimitConfig"));
    }
    files.push_back({XdsResourceLabel(config), RateLimitConfigToYaml(config)});
  }
  return files;
}

}  // namespace floodgate::admin
