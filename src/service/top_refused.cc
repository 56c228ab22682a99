#include "src/service/top_refused.h"

#include <algorithm>
#include <charconv>

#include "absl/strings/str_cat.h"

namespace floodgate::service {
namespace {

// Refused by a limit itself (not in shadow mode, not a counter that could not be asked).
bool RefusedByLimit(const limiter::DescriptorStatus& d) {
  for (const limiter::LimitResult& r : d.limits) {
    if (!r.decision.allowed && !r.shadow && !r.decision.unavailable) {
      return true;
    }
  }
  return false;
}

}  // namespace

std::string RefusalKey(std::string_view domain, absl::Span<const core::DescriptorEntry> entries) {
  std::string key = absl::StrCat(domain.size(), ":");
  key.append(domain);
  bool first = true;
  for (const core::DescriptorEntry& entry : entries) {
    if (key.size() >= core::WindowedTopKeys::kMaxKeyBytes) {
      break;
    }
    if (!first) {
      key.push_back(',');
    }
    first = false;
    key.append(entry.key);
    key.push_back('=');
    key.append(entry.value);
  }
  key.resize(core::TruncateKey(key, core::WindowedTopKeys::kMaxKeyBytes).size());
  return key;
}

RefusedKey RefusedKeyOf(const core::TopKey& key) {
  RefusedKey out;
  out.refused = key.count;
  out.error = key.error;
  const std::string_view text = key.key;
  const size_t colon = text.find(':');
  size_t length = 0;
  if (colon != std::string_view::npos &&
      std::from_chars(text.data(), text.data() + colon, length).ec == std::errc() &&
      length <= text.size() - colon - 1) {
    out.domain = std::string(text.substr(colon + 1, length));
    out.descriptor = std::string(text.substr(colon + 1 + length));
  } else {
    out.descriptor = std::string(text);
  }
  return out;
}

void TopRefused::RecordRefusals(const limiter::CheckRequest& request,
                                const limiter::CheckResponse& response) {
  if (response.overall != limiter::Code::kOverLimit) {
    return;
  }
  const size_t n = std::min(request.descriptors.size(), response.descriptors.size());
  for (size_t i = 0; i < n; ++i) {
    const limiter::DescriptorStatus& status = response.descriptors[i];
    if (status.code == limiter::Code::kOverLimit && RefusedByLimit(status)) {
      Record(RefusalKey(request.domain, request.descriptors[i].entries));
    }
  }
}

void TopRefused::Record(std::string_view key) {
  const int64_t now_ns = clock_->NowNs();
  absl::MutexLock lock(&mu_);
  window_.Add(key, now_ns);
}

core::TopSnapshot TopRefused::Snapshot() const {
  const int64_t now_ns = clock_->NowNs();
  absl::MutexLock lock(&mu_);
  return window_.Snapshot(now_ns);
}

}  // namespace floodgate::service
