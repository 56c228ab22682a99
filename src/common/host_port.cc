#include "src/common/host_port.h"

#include <charconv>

#include "absl/strings/str_cat.h"
#include "src/common/text.h"

namespace floodgate::common {

absl::Status SplitHostPort(std::string_view address, std::string& host, uint16_t& port) {
  const auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad listen address \"", AbslView(address), "\": ", AbslView(why)));
  };
  std::string_view host_part;
  std::string_view port_part;
  if (address.starts_with("[")) {
    const size_t close = address.find(']');
    if (close == std::string_view::npos) {
      return bad("no closing ']'");
    }
    host_part = address.substr(1, close - 1);
    if (close + 1 >= address.size() || address[close + 1] != ':') {
      return bad("expected [address]:port");
    }
    port_part = address.substr(close + 2);
  } else {
    const size_t colon = address.rfind(':');
    if (colon == std::string_view::npos) {
      return bad("expected host:port");
    }
    host_part = address.substr(0, colon);
    if (host_part.find(':') != std::string_view::npos) {
      return bad("an IPv6 address must be in brackets, as [::1]:8080");
    }
    port_part = address.substr(colon + 1);
  }
  uint32_t value = 0;
  auto [end, ec] = std::from_chars(port_part.data(), port_part.data() + port_part.size(), value);
  if (port_part.empty() || ec != std::errc() || end != port_part.data() + port_part.size() ||
      value > 65535) {
    return bad("the port must be a number from 0 to 65535");
  }
  host.assign(host_part.data(), host_part.size());
  port = static_cast<uint16_t>(value);
  return absl::OkStatus();
}

}  // namespace floodgate::common
