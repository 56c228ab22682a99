#include "src/service/request_limits.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace floodgate::service {
namespace {

// Returns the name of the request's hits field (`i` < 0) or descriptor i's, as the caller
// wrote it.
std::string HitsField(FieldNames names, int i) {
  const absl::string_view hits = names == FieldNames::kEnvoy ? "hits_addend" : "hits";
  if (names == FieldNames::kQuery) {
    return "query parameter `hits`";
  }
  return i < 0 ? absl::StrCat("`", hits, "`") : absl::StrCat("`descriptors[", i, "].", hits, "`");
}

// Returns the name of entry j of descriptor i (`part`: "key", "value" or "" for the whole
// entry), as the caller wrote it. A query names the parameter by its key when it is short
// enough to show.
std::string EntryField(FieldNames names, size_t i, size_t j, const core::DescriptorEntry& entry,
                       absl::string_view part) {
  if (names == FieldNames::kQuery) {
    constexpr size_t kMaxShownKey = 64;
    std::string name =
        !entry.key.empty() && entry.key.size() <= kMaxShownKey && common::IsValidUtf8(entry.key)
            ? absl::StrCat("query parameter `", entry.key, "`")
            : absl::StrCat("query parameter ", j + 1);
    return part.empty() ? name : absl::StrCat(name, ": its ", part);
  }
  return absl::StrCat("`descriptors[", i, "].entries[", j, "]", part.empty() ? "" : ".", part, "`");
}

}  // namespace

absl::Status ValidateRequest(const limiter::CheckRequest& request, const RequestLimits& limits,
                             FieldNames names) {
  const absl::string_view domain =
      names == FieldNames::kQuery ? "query parameter `domain`" : "`domain`";
  if (request.domain.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(domain, " must not be empty"));
  }
  if (request.domain.size() > limits.max_domain_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(domain, " is ", request.domain.size(),
                                                   " bytes long; at most ", limits.max_domain_bytes,
                                                   " are allowed"));
  }
  if (!common::IsValidUtf8(request.domain)) {
    return absl::InvalidArgumentError(absl::StrCat(domain, " is not valid UTF-8"));
  }
  if (request.descriptors.empty()) {
    return absl::InvalidArgumentError(
        "`descriptors` must not be empty: give at least one descriptor");
  }
  if (request.descriptors.size() > limits.max_descriptors) {
    return absl::InvalidArgumentError(absl::StrCat("too many descriptors: `descriptors` has ",
                                                   request.descriptors.size(), "; at most ",
                                                   limits.max_descriptors, " are allowed"));
  }
  if (request.hits_addend > limits.max_hits) {
    return absl::InvalidArgumentError(absl::StrCat(HitsField(names, -1),
                                                   " must be a whole number from 0 to ",
                                                   limits.max_hits, ", got ", request.hits_addend));
  }
  for (size_t i = 0; i < request.descriptors.size(); ++i) {
    const limiter::DescriptorRequest& d = request.descriptors[i];
    if (d.entries.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("`descriptors[", i, "].entries` must not be empty"));
    }
    if (d.entries.size() > limits.max_entries) {
      return absl::InvalidArgumentError(absl::StrCat("`descriptors[", i, "].entries` has ",
                                                     d.entries.size(), " entries; at most ",
                                                     limits.max_entries, " are allowed"));
    }
    if (d.hits_addend.has_value() && *d.hits_addend > limits.max_hits) {
      return absl::InvalidArgumentError(absl::StrCat(HitsField(names, static_cast<int>(i)),
                                                     " must be a whole number from 0 to ",
                                                     limits.max_hits, ", got ", *d.hits_addend));
    }
    for (size_t j = 0; j < d.entries.size(); ++j) {
      const core::DescriptorEntry& e = d.entries[j];
      if (e.key.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(EntryField(names, i, j, e, "key"), " must not be empty"));
      }
      if (e.key.size() > limits.max_key_bytes) {
        return absl::InvalidArgumentError(absl::StrCat(EntryField(names, i, j, e, "key"), " is ",
                                                       e.key.size(), " bytes long; at most ",
                                                       limits.max_key_bytes, " are allowed"));
      }
      if (e.value.size() > limits.max_value_bytes) {
        return absl::InvalidArgumentError(absl::StrCat(EntryField(names, i, j, e, "value"), " is ",
                                                       e.value.size(), " bytes long; at most ",
                                                       limits.max_value_bytes, " are allowed"));
      }
      if (!common::IsValidUtf8(e.key) || !common::IsValidUtf8(e.value)) {
        return absl::InvalidArgumentError(
            absl::StrCat(EntryField(names, i, j, e, ""), " is not valid UTF-8"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace floodgate::service
