#include "src/redis/redis_topology.h"

#include <algorithm>
#include <charconv>
#include <utility>

#include <boost/asio/post.hpp>

#include "absl/strings/str_cat.h"

namespace floodgate::redis::topology_internal {
namespace {

// Parses a whole decimal number (std::from_chars: this abseil's string_view is not std's).
bool ParseUint(std::string_view text, uint32_t& out) {
  const char* end = text.data() + text.size();
  auto [ptr, error] = std::from_chars(text.data(), end, out);
  return !text.empty() && error == std::errc() && ptr == end;
}

// Splits `text` at single spaces, leaving out empty pieces.
std::vector<std::string_view> SplitSpaces(std::string_view text) {
  std::vector<std::string_view> parts;
  while (!text.empty()) {
    const size_t space = text.find(' ');
    if (space != 0) {
      parts.push_back(text.substr(0, space));
    }
    if (space == std::string_view::npos) {
      break;
    }
    text.remove_prefix(space + 1);
  }
  return parts;
}

bool ConsumePrefix(std::string_view& text, std::string_view prefix) {
  if (!text.starts_with(prefix)) {
    return false;
  }
  text.remove_prefix(prefix.size());
  return true;
}

// Splits "host:port" at its last colon (Redis writes IPv6 addresses without brackets).
bool SplitAddress(std::string_view address, std::string_view fallback_host, Endpoint& out) {
  const size_t colon = address.rfind(':');
  if (colon == std::string_view::npos) {
    return false;
  }
  uint32_t port = 0;
  if (!ParseUint(address.substr(colon + 1), port) || port == 0 || port > 65535) {
    return false;
  }
  std::string_view host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  out.host = std::string(host.empty() ? fallback_host : host);
  out.port = static_cast<uint16_t>(port);
  return true;
}

bool IsText(const Reply& reply) {
  return reply.type == Reply::Type::kString || reply.type == Reply::Type::kStatus;
}

}  // namespace

int64_t RefreshGapMs(const TopologyOptions& topology, int failures) {
  const int64_t cap = std::max(topology.min_refresh_interval_ms, topology.max_refresh_backoff_ms);
  int64_t gap = topology.min_refresh_interval_ms;
  for (int i = 0; i < failures && gap < cap; ++i) {
    gap = std::max<int64_t>(1, gap * 2);
  }
  return std::min(gap, cap);
}

std::string EndpointKey(const Endpoint& endpoint) {
  return absl::StrCat(endpoint.host, ":", endpoint.port);
}

std::optional<Redirect> ParseRedirect(std::string_view error, std::string_view replying_host) {
  ConsumePrefix(error, "-");
  Redirect redirect;
  if (ConsumePrefix(error, "MOVED ")) {
    redirect.kind = Redirect::Kind::kMoved;
  } else if (ConsumePrefix(error, "ASK ")) {
    redirect.kind = Redirect::Kind::kAsk;
  } else {
    return std::nullopt;
  }
  std::vector<std::string_view> parts = SplitSpaces(error);
  uint32_t slot = 0;
  if (parts.size() != 2 || !ParseUint(parts[0], slot) || slot >= kSlots ||
      !SplitAddress(parts[1], replying_host, redirect.endpoint)) {
    return std::nullopt;
  }
  redirect.slot = static_cast<uint16_t>(slot);
  return redirect;
}

absl::StatusOr<std::vector<SlotRange>> ParseClusterSlots(const Reply& reply,
                                                         std::string_view queried_host) {
  if (reply.type != Reply::Type::kArray) {
    return absl::InvalidArgumentError("CLUSTER SLOTS: not an array");
  }
  std::vector<SlotRange> ranges;
  for (const Reply& range : reply.elements) {
    // [first, last, [host, port, id, ...], replicas...]
    if (range.type != Reply::Type::kArray || range.elements.size() < 3 ||
        range.elements[0].type != Reply::Type::kInteger ||
        range.elements[1].type != Reply::Type::kInteger ||
        range.elements[2].type != Reply::Type::kArray || range.elements[2].elements.size() < 2) {
      return absl::InvalidArgumentError("CLUSTER SLOTS: malformed range");
    }
    const int64_t first = range.elements[0].integer;
    const int64_t last = range.elements[1].integer;
    const Reply& host = range.elements[2].elements[0];
    const Reply& port = range.elements[2].elements[1];
    if (first < 0 || last < first || last >= kSlots || port.type != Reply::Type::kInteger ||
        port.integer <= 0 || port.integer > 65535 ||
        !(IsText(host) || host.type == Reply::Type::kNil)) {
      return absl::InvalidArgumentError(
          absl::StrCat("CLUSTER SLOTS: malformed range ", first, "-", last));
    }
    if (host.type != Reply::Type::kNil && host.str == "?") {
      continue;  // the node knows no endpoint for that master: ask another node later
    }
    SlotRange out;
    out.first = static_cast<uint16_t>(first);
    out.last = static_cast<uint16_t>(last);
    out.master.host =
        (host.type == Reply::Type::kNil || host.str.empty()) ? std::string(queried_host) : host.str;
    out.master.port = static_cast<uint16_t>(port.integer);
    ranges.push_back(std::move(out));
  }
  return ranges;
}

absl::StatusOr<Endpoint> ParseMasterAddr(const Reply& reply) {
  if (reply.type == Reply::Type::kNil) {
    return absl::NotFoundError("the sentinel knows no such master");
  }
  if (reply.type == Reply::Type::kError) {
    return absl::InvalidArgumentError(absl::StrCat("sentinel: ", reply.str));
  }
  uint32_t port = 0;
  if (reply.type != Reply::Type::kArray || reply.elements.size() != 2 ||
      !IsText(reply.elements[0]) || reply.elements[0].str.empty() || !IsText(reply.elements[1]) ||
      !ParseUint(reply.elements[1].str, port) || port == 0 || port > 65535) {
    return absl::InvalidArgumentError("sentinel: malformed get-master-addr-by-name reply");
  }
  return Endpoint{reply.elements[0].str, static_cast<uint16_t>(port)};
}

bool IsMasterRole(const Reply& reply) {
  return reply.type == Reply::Type::kArray && !reply.elements.empty() &&
         IsText(reply.elements[0]) && reply.elements[0].str == "master";
}

std::optional<Endpoint> ParseSwitchMaster(const Reply& push, std::string_view master_name) {
  if (push.type != Reply::Type::kArray || push.elements.size() != 3 || !IsText(push.elements[0]) ||
      push.elements[0].str != "message" || !IsText(push.elements[1]) ||
      push.elements[1].str != "+switch-master" || !IsText(push.elements[2])) {
    return std::nullopt;
  }
  std::vector<std::string_view> parts = SplitSpaces(push.elements[2].str);
  uint32_t port = 0;
  if (parts.size() != 5 || parts[0] != master_name || parts[3].empty() ||
      !ParseUint(parts[4], port) || port == 0 || port > 65535) {
    return std::nullopt;
  }
  return Endpoint{std::string(parts[3]), static_cast<uint16_t>(port)};
}

PendingCommand::PendingCommand(absl::Span<const std::string_view> arguments, uint16_t hash_slot,
                               Client::Callback cb, SteadyTime command_deadline)
    : slot(hash_slot), deadline(command_deadline), callback_(std::move(cb)) {
  size_t bytes = 0;
  for (std::string_view arg : arguments) {
    bytes += arg.size();
  }
  storage.reserve(bytes);
  for (std::string_view arg : arguments) {
    storage.append(arg);
  }
  // Views are taken once storage no longer moves.
  args.reserve(arguments.size());
  size_t offset = 0;
  for (std::string_view arg : arguments) {
    args.emplace_back(storage.data() + offset, arg.size());
    offset += arg.size();
  }
}

bool PendingCommand::Complete(absl::StatusOr<Reply> result) {
  if (done_.exchange(true, std::memory_order_acq_rel)) {
    return false;
  }
  std::move(callback_)(std::move(result));
  callback_ = nullptr;
  return true;
}

Parking::Parking(boost::asio::io_context& io, size_t max_parked, WakeFn on_wake)
    : io_(io), max_parked_(max_parked), on_wake_(std::move(on_wake)), timer_(io) {}

bool Parking::Park(std::shared_ptr<PendingCommand> command, std::optional<SteadyTime> wake_at) {
  absl::MutexLock lock(&mu_);
  if (entries_.size() >= max_parked_) {
    return false;
  }
  const SteadyTime at = wake_at ? std::min(*wake_at, command->deadline) : command->deadline;
  entries_.push_back(Entry{std::move(command), at});
  ArmLocked();
  return true;
}

void Parking::WakeAll() {
  std::vector<Entry> woken;
  {
    absl::MutexLock lock(&mu_);
    woken.swap(entries_);
  }
  if (woken.empty()) {
    return;
  }
  boost::asio::post(io_, [this, woken = std::move(woken)]() mutable {
    for (Entry& entry : woken) {
      on_wake_(std::move(entry.command));
    }
  });
}

void Parking::FailAll(const absl::Status& status) {
  std::vector<Entry> failed;
  {
    absl::MutexLock lock(&mu_);
    failed.swap(entries_);
  }
  for (Entry& entry : failed) {
    entry.command->Complete(status);
  }
}

size_t Parking::size() const {
  absl::MutexLock lock(&mu_);
  return entries_.size();
}

// One timer for all entries, armed at the earliest wake time; re-armed only when an earlier one
// arrives, so parking many commands costs no timer each.
void Parking::ArmLocked() {
  if (entries_.empty()) {
    return;
  }
  SteadyTime earliest = entries_.front().wake_at;
  for (const Entry& entry : entries_) {
    earliest = std::min(earliest, entry.wake_at);
  }
  if (armed_at_ && *armed_at_ <= earliest) {
    return;
  }
  armed_at_ = earliest;
  timer_.expires_at(earliest);
  timer_.async_wait([this](const boost::system::error_code& error) {
    if (error != boost::asio::error::operation_aborted) {
      OnTimer();
    }
  });
}

void Parking::OnTimer() {
  const SteadyTime now = std::chrono::steady_clock::now();
  std::vector<Entry> due;
  {
    absl::MutexLock lock(&mu_);
    armed_at_.reset();
    auto keep = std::partition(entries_.begin(), entries_.end(),
                               [now](const Entry& entry) { return entry.wake_at > now; });
    due.assign(std::make_move_iterator(keep), std::make_move_iterator(entries_.end()));
    entries_.erase(keep, entries_.end());
    ArmLocked();
  }
  for (Entry& entry : due) {
    if (entry.command->deadline <= now) {
      entry.command->Complete(absl::DeadlineExceededError("redis: no route before the timeout"));
    } else {
      on_wake_(std::move(entry.command));
    }
  }
}

}  // namespace floodgate::redis::topology_internal
