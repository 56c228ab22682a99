#include "src/discovery/etcd_discovery.h"

#include <algorithm>
#include <map>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "src/discovery/etcd_client.h"
#include "src/discovery/etcd_member.h"

namespace floodgate::discovery {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

// A session is: a live lease with our key on it (when registered), a Range of the members
// folder, and a watch from the revision after it. The session thread (Loop) builds one, renews
// the lease every keepalive_interval, and builds a new one after any failure, with backoff. The
// watch thread applies events to `values_`. Invariants:
//   - `values_` is the folder as of `status_.revision`: the Range's answer plus every event
//     after it, so the list is never rebuilt from a partial view;
//   - after a failure `values_` and `reported_` stay as they were until the next Range
//     succeeds: a down etcd never empties the list;
//   - on_change runs under `notify_mu_` and only while !stopping_; the session thread joins the
//     watch thread before it exits, and Stop joins the session thread.
// Lock order: stop_mu_, then session_mu_, then notify_mu_, then mu_. No lock is held during
// a call to etcd except session_mu_ (which serialises the lease between the session thread and
// Deregister).
class EtcdDiscovery final : public Discovery {
 public:
  EtcdDiscovery(const EtcdDiscoveryOptions& options, std::unique_ptr<EtcdClient> client)
      : options_(options),
        members_prefix_(absl::StrCat(options.prefix, "/members/")),
        self_key_(absl::StrCat(members_prefix_, options.self.id)),
        self_value_(EncodeMemberValue(options.self)),
        keepalive_interval_(options.keepalive_interval.count() > 0
                                ? options.keepalive_interval
                                : milliseconds(options.lease_ttl_seconds * 1000 / 3)),
        client_(std::move(client)) {
    status_.source = "etcd";
  }
  ~EtcdDiscovery() override { Stop(); }

  absl::Status Start(OnChange on_change) override {
    {
      absl::MutexLock lock(&stop_mu_);
      if (started_) {
        return absl::FailedPreconditionError("etcd discovery already started");
      }
      started_ = true;
      on_change_ = std::move(on_change);
      {
        absl::MutexLock state(&mu_);
        want_registered_ = options_.register_self;
      }
      thread_ = std::thread([this] { Loop(); });
    }
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(
                             +[](EtcdDiscovery* d) ABSL_EXCLUSIVE_LOCKS_REQUIRED(d->mu_) {
                               return d->established_ || d->stopping_;
                             },
                             this),
                         absl::FromChrono(options_.start_timeout));
    if (established_) {
      return absl::OkStatus();
    }
    return absl::UnavailableError(
        absl::StrCat("etcd discovery: no answer within ", options_.start_timeout.count(), " ms (",
                     status_.last_error.empty() ? "no error yet" : status_.last_error,
                     "); still trying in the background"));
  }

  absl::Status Deregister() override {
    absl::MutexLock session(&session_mu_);
    int64_t lease = 0;
    {
      absl::MutexLock lock(&mu_);
      want_registered_ = false;
      need_register_ = false;
      lease = lease_id_;
      lease_id_ = 0;
    }
    if (lease == 0) {
      return absl::OkStatus();
    }
    // Revoking the lease deletes our key at once; everyone's watch sees it go.
    absl::Status revoked = client_->Revoke(lease, options_.deregister_timeout);
    if (revoked.ok() || absl::IsNotFound(revoked)) {
      return absl::OkStatus();
    }
    return absl::UnavailableError(absl::StrCat(revoked.message(),
                                               "; the registration expires by itself within ",
                                               options_.lease_ttl_seconds, " s"));
  }

  void Stop() override {
    absl::MutexLock lock(&stop_mu_);
    {
      absl::MutexLock state(&mu_);
      stopping_ = true;
    }
    if (thread_.joinable()) {
      thread_.join();
    }
  }

  DiscoveryStatus status() const override {
    absl::MutexLock lock(&mu_);
    return status_;
  }

 private:
  // The session thread.
  void Loop() {
    std::unique_ptr<EtcdWatch> watch;
    milliseconds backoff = options_.backoff_initial;
    bool in_session = false;
    steady_clock::time_point next_keepalive = steady_clock::now();
    // Records `failure`, waits the backoff (false when stopping meanwhile).
    auto fail = [&](const absl::Status& failure) {
      RecordFailure(failure);
      in_session = false;
      const bool go_on = WaitUnlessStopping(backoff);
      backoff = std::min(backoff * 2, options_.backoff_max);
      return go_on;
    };
    while (!Stopping()) {
      if (!in_session) {
        if (watch != nullptr) {
          watch->Cancel();
          watch.reset();
        }
        absl::Status established = Establish(watch);
        if (!established.ok()) {
          if (!fail(established)) {
            break;
          }
          continue;
        }
        {
          absl::MutexLock lock(&mu_);
          established_ = true;  // Start returns now: the first list went out
        }
        backoff = options_.backoff_initial;
        in_session = true;
        next_keepalive = steady_clock::now() + keepalive_interval_;
      }
      absl::Status watch_end;
      {
        absl::MutexLock lock(&mu_);
        const auto left =
            std::max(next_keepalive - steady_clock::now(), steady_clock::duration::zero());
        mu_.AwaitWithTimeout(absl::Condition(
                                 +[](EtcdDiscovery* d) ABSL_EXCLUSIVE_LOCKS_REQUIRED(d->mu_) {
                                   return d->stopping_ || d->watch_ended_ || d->need_register_;
                                 },
                                 this),
                             absl::FromChrono(left));
        if (stopping_) {
          break;
        }
        if (watch_ended_) {
          watch_end = watch_status_;
        }
      }
      if (!watch_end.ok()) {
        // Rebuild the session at once: after a compaction etcd is fine; if it is down, the
        // next Establish fails and backs off.
        RecordFailure(watch_end);
        in_session = false;
        continue;
      }
      absl::Status renewed = Renew();
      next_keepalive = steady_clock::now() + keepalive_interval_;
      if (!renewed.ok() && !fail(renewed)) {
        break;
      }
    }
    if (watch != nullptr) {
      watch->Cancel();
    }
  }

  // Reads the folder and reports the list, then registers (when wanted) and starts the watch,
  // which brings this node's own entry. In that order, this node knows the members before they
  // learn of it: a check they send it at once is decided with the keys' previous owners in view
  // (a joiner fetches their state; knowing nobody, it would start the keys afresh).
  absl::Status Establish(std::unique_ptr<EtcdWatch>& watch) {
    absl::StatusOr<EtcdRangeResult> range = client_->RangePrefix(members_prefix_);
    if (!range.ok()) {
      return range.status();
    }
    {
      absl::MutexLock lock(&mu_);
      values_.clear();
      for (const EtcdKeyValue& kv : range->kvs) {
        values_[kv.key] = kv.value;
      }
      status_.revision = range->revision;
      watch_ended_ = false;
      watch_status_ = absl::OkStatus();
    }
    // Connected before the list goes out, so on_change's caller sees a status that agrees.
    RecordSuccess();
    {
      absl::MutexLock notify(&notify_mu_);
      NotifyIfChanged();
    }
    {
      absl::MutexLock session(&session_mu_);
      absl::Status registered = EnsureRegistered(/*force_put=*/true);
      if (!registered.ok()) {
        return registered;
      }
    }
    watch = client_->WatchPrefix(
        members_prefix_, range->revision + 1,
        [this](const std::vector<EtcdEvent>& events, int64_t revision) {
          OnEvents(events, revision);
        },
        [this](const absl::Status& end) {
          absl::MutexLock lock(&mu_);
          watch_ended_ = true;
          watch_status_ = end;
        });
    return absl::OkStatus();
  }

  // Renews the lease; registers again when it was lost or our key was deleted.
  absl::Status Renew() {
    absl::MutexLock session(&session_mu_);
    return EnsureRegistered(/*force_put=*/false);
  }

  // Makes sure our key is in etcd on a live lease: renews the lease we have, takes a new one
  // when etcd no longer has it, and writes the key when it is new, asked for or `force_put`.
  absl::Status EnsureRegistered(bool force_put) ABSL_EXCLUSIVE_LOCKS_REQUIRED(session_mu_) {
    int64_t lease = 0;
    bool put = force_put;
    {
      absl::MutexLock lock(&mu_);
      if (!want_registered_) {
        return absl::OkStatus();
      }
      lease = lease_id_;
      put |= need_register_;
    }
    if (lease != 0) {
      absl::StatusOr<int64_t> ttl = client_->KeepAliveOnce(lease);
      if (absl::IsNotFound(ttl.status())) {
        lease = 0;  // expired (a long outage) or lost (etcd's data was reset): take a new one
      } else if (!ttl.ok()) {
        return ttl.status();
      }
    }
    if (lease == 0) {
      absl::StatusOr<int64_t> granted = client_->Grant(options_.lease_ttl_seconds);
      if (!granted.ok()) {
        return granted.status();
      }
      lease = *granted;
      put = true;
      absl::MutexLock lock(&mu_);
      lease_id_ = lease;
    }
    if (!put) {
      return absl::OkStatus();
    }
    absl::StatusOr<int64_t> written = client_->Put(self_key_, self_value_, lease);
    if (!written.ok()) {
      return written.status();
    }
    absl::MutexLock lock(&mu_);
    need_register_ = false;
    return absl::OkStatus();
  }

  // On the watch thread.
  void OnEvents(const std::vector<EtcdEvent>& events, int64_t revision) {
    absl::MutexLock notify(&notify_mu_);
    {
      absl::MutexLock lock(&mu_);
      for (const EtcdEvent& event : events) {
        if (event.type == EtcdEvent::Type::kPut) {
          values_[event.kv.key] = event.kv.value;
        } else {
          values_.erase(event.kv.key);
          // Our key went while we still want it (its lease expired during a stall, or someone
          // deleted it): the session thread writes it again.
          if (event.kv.key == self_key_ && want_registered_) {
            need_register_ = true;
          }
        }
      }
      status_.revision = std::max(status_.revision, revision);
    }
    NotifyIfChanged();
  }

  // Reports the member list when it differs from the last one reported (or none was yet).
  void NotifyIfChanged() ABSL_EXCLUSIVE_LOCKS_REQUIRED(notify_mu_) {
    std::vector<Node> members;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) {
        return;
      }
      members = MemberList(values_);
      if (reported_.has_value() && *reported_ == members) {
        return;
      }
      reported_ = members;
      ++status_.updates;
    }
    if (on_change_) {
      on_change_(members);
    }
  }

  void RecordFailure(const absl::Status& failure) {
    absl::MutexLock lock(&mu_);
    status_.connected = false;
    status_.last_error = std::string(failure.message());
    ++status_.errors;
    failed_ = true;
  }

  void RecordSuccess() {
    absl::MutexLock lock(&mu_);
    status_.connected = true;
    if (failed_) {
      ++status_.reconnects;
      failed_ = false;
    }
  }

  bool Stopping() {
    absl::MutexLock lock(&mu_);
    return stopping_;
  }

  // Waits `duration` unless Stop comes first; returns false when stopping.
  bool WaitUnlessStopping(milliseconds duration) {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::FromChrono(duration));
    return !stopping_;
  }

  const EtcdDiscoveryOptions options_;
  const std::string members_prefix_;  // "<prefix>/members/"
  const std::string self_key_;
  const std::string self_value_;
  const milliseconds keepalive_interval_;
  const std::unique_ptr<EtcdClient> client_;

  absl::Mutex stop_mu_;
  bool started_ ABSL_GUARDED_BY(stop_mu_) = false;
  std::thread thread_ ABSL_GUARDED_BY(stop_mu_);

  absl::Mutex session_mu_;
  absl::Mutex notify_mu_;
  OnChange on_change_;  // set by Start before the threads exist, then only read

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool established_ ABSL_GUARDED_BY(mu_) = false;  // a session was built at least once
  bool failed_ ABSL_GUARDED_BY(mu_) = false;       // a failure since the last session
  bool want_registered_ ABSL_GUARDED_BY(mu_) = false;
  bool need_register_ ABSL_GUARDED_BY(mu_) = false;
  int64_t lease_id_ ABSL_GUARDED_BY(mu_) = 0;
  bool watch_ended_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status watch_status_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> values_ ABSL_GUARDED_BY(mu_);  // key -> value
  std::optional<std::vector<Node>> reported_ ABSL_GUARDED_BY(mu_);
  DiscoveryStatus status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::StatusOr<std::unique_ptr<Discovery>> NewEtcdDiscovery(const EtcdDiscoveryOptions& options) {
  if (options.prefix.empty() || options.prefix.back() == '/') {
    return absl::InvalidArgumentError(absl::StrCat(
        "etcd prefix \"", options.prefix, "\" must be non-empty without a trailing slash"));
  }
  if (options.register_self && (options.self.id.empty() || options.self.address.empty() ||
                                absl::StrContains(options.self.id, '/'))) {
    return absl::InvalidArgumentError(
        "etcd discovery needs this node's id (no '/') and peer address to register");
  }
  if (options.lease_ttl_seconds < 1) {
    return absl::InvalidArgumentError("etcd lease TTL must be at least 1 s");
  }
  EtcdClientOptions client_options;
  client_options.endpoints = options.endpoints;
  client_options.call_timeout = options.call_timeout;
  absl::StatusOr<std::unique_ptr<EtcdClient>> client = EtcdClient::Create(client_options);
  if (!client.ok()) {
    return client.status();
  }
  return std::make_unique<EtcdDiscovery>(options, *std::move(client));
}

}  // namespace floodgate::discovery
