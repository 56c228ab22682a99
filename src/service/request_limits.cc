#include "src/service/request_limits.h"

#include "absl/strings/str_cat.h"

namespace floodgate::service {

absl::Status ValidateRequest(const limiter::CheckRequest& request, const RequestLimits& limits) {
  if (request.domain.empty()) {
    return absl::InvalidArgumentError("rate limit domain must not be empty");
  }
  if (request.domain.size() > limits.max_domain_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("domain is longer than ", limits.max_domain_bytes, " bytes"));
  }
  if (!common::IsValidUtf8(request.domain)) {
    return absl::InvalidArgumentError("domain is not valid UTF-8");
  }
  if (request.descriptors.empty()) {
    return absl::InvalidArgumentError("rate limit descriptor list must not be empty");
  }
  if (request.descriptors.size() > limits.max_descriptors) {
    return absl::InvalidArgumentError(
        absl::StrCat("too many descriptors: ", request.descriptors.size(), " (at most ",
                     limits.max_descriptors, ")"));
  }
  if (request.hits_addend > limits.max_hits) {
    return absl::InvalidArgumentError(absl::StrCat("hits_addend is above ", limits.max_hits));
  }
  for (size_t i = 0; i < request.descriptors.size(); ++i) {
    const limiter::DescriptorRequest& d = request.descriptors[i];
    if (d.entries.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("descriptor ", i, " has no entries"));
    }
    if (d.entries.size() > limits.max_entries) {
      return absl::InvalidArgumentError(absl::StrCat("descriptor ", i,
                                                     " has too many entries: ", d.entries.size(),
                                                     " (at most ", limits.max_entries, ")"));
    }
    if (d.hits_addend.has_value() && *d.hits_addend > limits.max_hits) {
      return absl::InvalidArgumentError(
          absl::StrCat("descriptor ", i, ": hits_addend is above ", limits.max_hits));
    }
    for (size_t j = 0; j < d.entries.size(); ++j) {
      const core::DescriptorEntry& e = d.entries[j];
      if (e.key.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("descriptor ", i, " entry ", j, ": empty key"));
      }
      if (e.key.size() > limits.max_key_bytes) {
        return absl::InvalidArgumentError(absl::StrCat("descriptor ", i, " entry ", j,
                                                       ": key is longer than ",
                                                       limits.max_key_bytes, " bytes"));
      }
      if (e.value.size() > limits.max_value_bytes) {
        return absl::InvalidArgumentError(absl::StrCat("descriptor ", i, " entry ", j,
                                                       ": value is longer than ",
                                                       limits.max_value_bytes, " bytes"));
      }
      if (!common::IsValidUtf8(e.key) || !common::IsValidUtf8(e.value)) {
        return absl::InvalidArgumentError(
            absl::StrCat("descriptor ", i, " entry ", j, ": not valid UTF-8"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace floodgate::service
