#include "src/discovery/dns_discovery.h"

#include <algorithm>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "src/discovery/dns_members.h"

namespace floodgate::discovery {
namespace {

// Life of the source: Start starts `thread_`, which loops {resolve, apply the answer, wait for
// the interval, a Refresh or Stop}; Stop sets `stopping_`, interrupts a lookup in progress and
// joins. on_change and on_lookup run only on `thread_`, so never two at once and never after Stop
// returns.
class DnsDiscovery final : public Discovery {
 public:
  DnsDiscovery(DnsDiscoveryOptions options, std::unique_ptr<DnsResolver> resolver)
      : options_(std::move(options)), resolver_(std::move(resolver)) {
    status_.source = "dns";
  }
  ~DnsDiscovery() override { Stop(); }

  absl::Status Start(OnChange on_change) override {
    {
      absl::MutexLock lifecycle(&lifecycle_mu_);
      {
        absl::MutexLock lock(&mu_);
        if (started_ || stopping_) {
          return absl::FailedPreconditionError("DNS discovery was already started or stopped");
        }
        started_ = true;
      }
      on_change_ = std::move(on_change);
      thread_ = std::thread([this] { Run(); });
    }
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(this, &DnsDiscovery::StartedOrStopping),
                         options_.start_timeout);
    if (first_reported_) {
      return absl::OkStatus();
    }
    if (stopping_) {
      return absl::CancelledError("DNS discovery was stopped while starting");
    }
    return absl::UnavailableError(absl::StrCat(
        "no answer from DNS for ", options_.name, " within ",
        absl::FormatDuration(options_.start_timeout), " (still trying): ",
        status_.last_error.empty() ? "the lookup is still running" : status_.last_error));
  }

  // DNS records belong to the platform (a pod leaving the Service's endpoints).
  absl::Status Deregister() override { return absl::OkStatus(); }

  void Refresh() override {
    absl::MutexLock lock(&mu_);
    refresh_ = true;
  }

  void Stop() override {
    absl::MutexLock lifecycle(&lifecycle_mu_);
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    resolver_->Interrupt();
    if (thread_.joinable()) {
      thread_.join();
    }
  }

  DiscoveryStatus status() const override {
    absl::MutexLock lock(&mu_);
    return status_;
  }

 private:
  bool StartedOrStopping() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return first_reported_ || stopping_;
  }
  bool RefreshOrStopping() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return refresh_ || stopping_;
  }

  void Run() {
    absl::Duration retry = options_.retry_initial;
    while (true) {
      {
        absl::MutexLock lock(&mu_);
        if (stopping_) {
          return;
        }
        refresh_ = false;  // this lookup starts after every Refresh so far
      }
      absl::StatusOr<std::vector<std::string>> answer = resolver_->Resolve(options_.name);
      if (absl::IsCancelled(answer.status())) {
        continue;  // Stop
      }
      const bool answered = answer.ok();
      Apply(std::move(answer));
      const absl::Duration wait = answered ? options_.interval : retry;
      retry = answered ? options_.retry_initial : std::min(retry * 2, options_.interval);
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(this, &DnsDiscovery::RefreshOrStopping), wait);
    }
  }

  // Updates the status from one lookup's outcome and reports a changed list (see the header for
  // what each outcome does).
  void Apply(absl::StatusOr<std::vector<std::string>> answer) {
    std::optional<std::vector<Node>> report;
    {
      absl::MutexLock lock(&mu_);
      if (!answer.ok()) {
        status_.connected = false;
        status_.last_error = std::string(answer.status().message());
        ++status_.errors;
        failing_ = true;
      } else {
        if (failing_) {
          ++status_.reconnects;
          failing_ = false;
        }
        status_.connected = true;
        std::vector<Node> members = MembersFromAddresses(*answer, options_.port);
        if (members.empty() && reported_.has_value()) {
          status_.last_error = absl::StrCat(
              options_.name,
              " has no A or AAAA records (a headless Service with no ready pods?); keeping the "
              "last ",
              reported_->size(), " members");
        } else if (!reported_.has_value() || *reported_ != members) {
          report = std::move(members);
        }
      }
    }
    if (report.has_value()) {
      on_change_(*report);
      reported_ = std::move(report);
      absl::MutexLock lock(&mu_);
      ++status_.updates;
      first_reported_ = true;
    }
    if (options_.on_lookup) {
      options_.on_lookup(status());
    }
  }

  const DnsDiscoveryOptions options_;
  const std::unique_ptr<DnsResolver> resolver_;

  absl::Mutex lifecycle_mu_;  // orders Start and Stop (the thread's start and join)
  std::thread thread_ ABSL_GUARDED_BY(lifecycle_mu_);
  OnChange on_change_;  // set before thread_ starts, then read by it only

  // Used by thread_ only.
  std::optional<std::vector<Node>> reported_;  // the list on_change was last given

  mutable absl::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool refresh_ ABSL_GUARDED_BY(mu_) = false;         // a Refresh not yet taken by a lookup
  bool first_reported_ ABSL_GUARDED_BY(mu_) = false;  // on_change has run once (Start waits)
  bool failing_ ABSL_GUARDED_BY(mu_) = false;         // the last lookup failed
  DiscoveryStatus status_ ABSL_GUARDED_BY(mu_);
};

absl::Status Validate(const DnsDiscoveryOptions& options) {
  if (options.name.empty()) {
    return absl::InvalidArgumentError("DNS discovery needs a name to resolve");
  }
  if (options.port == 0) {
    return absl::InvalidArgumentError("DNS discovery needs the peer port (1 to 65535), not 0");
  }
  for (const absl::Duration d :
       {options.interval, options.query_timeout, options.start_timeout, options.retry_initial}) {
    if (d <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError(
          "DNS discovery's interval, query timeout, start timeout and retry must be above zero");
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Discovery>> NewDnsDiscovery(DnsDiscoveryOptions options) {
  if (absl::Status valid = Validate(options); !valid.ok()) {
    return valid;
  }
  absl::StatusOr<std::unique_ptr<DnsResolver>> resolver = NewAresResolver(
      AresResolverOptions{.servers = options.servers, .query_timeout = options.query_timeout});
  if (!resolver.ok()) {
    return resolver.status();
  }
  return NewDnsDiscovery(std::move(options), *std::move(resolver));
}

absl::StatusOr<std::unique_ptr<Discovery>> NewDnsDiscovery(DnsDiscoveryOptions options,
                                                           std::unique_ptr<DnsResolver> resolver) {
  if (absl::Status valid = Validate(options); !valid.ok()) {
    return valid;
  }
  if (resolver == nullptr) {
    return absl::InvalidArgumentError("DNS discovery needs a resolver");
  }
  return std::make_unique<DnsDiscovery>(std::move(options), std::move(resolver));
}

}  // namespace floodgate::discovery
