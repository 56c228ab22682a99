#include "src/cluster/gossip.h"

#include <algorithm>
#include <cstdio>
#include <memory>

#include "absl/strings/str_cat.h"
#include "src/common/rate_limited_log.h"

namespace floodgate::cluster {
namespace pb = ::floodgate::peer::v1;

bool IsNewerConfig(const pb::DomainVersion& a, const pb::DomainVersion& b) {
  if (a.version() != b.version()) {
    return a.version() > b.version();
  }
  return a.origin() > b.origin();
}

Gossip::Gossip(GossipOptions options, Membership* membership, PeerTransport* transport)
    : options_(std::move(options)), membership_(membership), transport_(transport) {}

Gossip::~Gossip() { Stop(); }

void Gossip::Start() {
  heartbeat_ = std::thread([this] { HeartbeatLoop(); });
}

void Gossip::Stop() {
  {
    absl::MutexLock lock(&stop_mu_);
    stopping_ = true;
  }
  if (heartbeat_.joinable()) {
    heartbeat_.join();
  }
}

bool Gossip::WaitForQuorum(absl::Duration timeout) {
  return quorum_seen_.WaitForNotificationWithTimeout(timeout);
}

void Gossip::HeartbeatLoop() {
  absl::MutexLock lock(&stop_mu_);
  while (!stopping_) {
    stop_mu_.Unlock();
    RunRound();
    stop_mu_.Lock();
    stop_mu_.AwaitWithTimeout(absl::Condition(&stopping_), options_.heartbeat);
  }
}

void Gossip::RunRound() {
  PingInfo ours;
  ours.started_at_ns = options_.started_at_ns;
  ConfigSync* sync = config_sync_.load();
  if (sync != nullptr) {
    ours.config = sync->Versions();
  }
  const Answers answers = PingAll(ours);
  NoteRound(answers);
  if (sync != nullptr) {
    PullNewerConfig(sync, answers, std::move(ours.config));
  }
  const uint64_t deaths = membership_->deaths();
  membership_->Tick();
  if (membership_->deaths() != deaths_seen_ || membership_->deaths() != deaths) {
    deaths_seen_ = membership_->deaths();
    if (options_.on_death) {
      options_.on_death();
    }
  }
}

Gossip::Answers Gossip::PingAll(const PingInfo& ours) {
  struct Round {
    absl::Mutex mu;
    int pending = 0;
    Answers answers;
  };
  auto round = std::make_shared<Round>();
  const uint64_t members = membership_->member_mask();
  for (int i = 0; i < membership_->slots(); ++i) {
    if (i == membership_->self() || ((members >> i) & 1) == 0) {
      continue;
    }
    {
      absl::MutexLock lock(&round->mu);
      ++round->pending;
    }
    transport_->Ping(i, ours, [this, round, i](absl::StatusOr<PingInfo> answer) {
      if (answer.ok()) {
        membership_->RecordContact(i);
      }
      absl::MutexLock lock(&round->mu);
      if (answer.ok()) {
        round->answers.emplace_back(i, *std::move(answer));
      }
      --round->pending;
    });
  }
  absl::MutexLock lock(&round->mu);
  round->mu.AwaitWithTimeout(absl::Condition(
                                 +[](int* pending) { return *pending == 0; }, &round->pending),
                             options_.heartbeat * 2 + absl::Milliseconds(100));
  return round->answers;
}

uint64_t Gossip::config_fingerprint() const {
  ConfigSync* sync = config_sync_.load();
  return sync == nullptr ? 0 : sync->Fingerprint();
}

void Gossip::NoteRound(const Answers& answers) {
  // Config fingerprints: a member that serves other limits for several rounds is flagged (a
  // change in flight differs for a round or two).
  const uint64_t ours = config_fingerprint();
  for (const auto& [peer, answer] : answers) {
    if (peer < 0 || peer >= kMaxMembers) {
      continue;
    }
    std::atomic<int>& rounds = mismatch_rounds_[peer];
    if (ours == 0 || answer.config_fingerprint == 0 || answer.config_fingerprint == ours) {
      if (rounds.exchange(0) >= kConfigMismatchRounds) {
        common::Log(common::LogLevel::kInfo, "config_match", {{"peer", answer.node_id}});
      }
    } else if (rounds.fetch_add(1) + 1 == kConfigMismatchRounds) {
      common::Log(common::LogLevel::kWarn, "config_mismatch",
                  {{"peer", answer.node_id},
                   {"theirs", absl::StrCat(absl::Hex(answer.config_fingerprint))},
                   {"ours", absl::StrCat(absl::Hex(ours))},
                   {"note",
                    "it serves a different config than this node: the two enforce different "
                    "limits for the same keys, which lets callers past them; give every node the "
                    "same config files"}});
    }
  }
  if (!quorum_seen_.HasBeenNotified() && membership_->HasQuorum()) {
    quorum_seen_.Notify();
  }
  // Warm-up is for a node that (re)joins a running cluster: it is on until the first round of
  // pings that some peer answers shows whether a peer holds key states (then there is state this
  // node may lack), however recently that peer started. Nodes of a fresh or idle cluster do not
  // warm up: there is nothing to fetch, and two nodes that fetch from each other on the threads
  // that answer fetches wait on each other until the forward timeout.
  if (!answers.empty() && !first_round_done_.exchange(true)) {
    bool joined_running = false;
    for (const auto& [peer, answer] : answers) {
      joined_running |= answer.keys_held > 0;
    }
    warming_up_.store(joined_running, std::memory_order_relaxed);
  }
}

void Gossip::PullNewerConfig(ConfigSync* sync, const Answers& answers,
                             std::vector<pb::DomainVersion> ours) {
  for (const auto& [peer, answer] : answers) {
    std::vector<std::string> domains;
    for (const pb::DomainVersion& theirs : answer.config) {
      if (theirs.version() == 0) {
        continue;  // read from that node's files, never changed over the API: not spread
      }
      auto it = std::find_if(ours.begin(), ours.end(), [&](const pb::DomainVersion& v) {
        return v.domain() == theirs.domain();
      });
      if (it == ours.end() || IsNewerConfig(theirs, *it)) {
        domains.push_back(theirs.domain());
      }
    }
    if (domains.empty()) {
      continue;
    }
    absl::StatusOr<std::vector<pb::ConfigChange>> changes = transport_->GetConfig(peer, domains);
    if (changes.ok()) {
      config_pushes_.fetch_add(sync->Apply(*changes), std::memory_order_relaxed);
      ours = sync->Versions();
    }
  }
}

void Gossip::BroadcastConfig(const std::vector<pb::ConfigChange>& changes) {
  const uint64_t mask = membership_->alive_mask();
  std::vector<std::thread> pushes;
  for (int i = 0; i < membership_->slots(); ++i) {
    if (i != membership_->self() && ((mask >> i) & 1)) {
      pushes.emplace_back([this, i, &changes] {
        const absl::Status status = transport_->PushConfig(i, changes);
        if (!status.ok()) {
          common::RateLimitedLog::Default().Log(common::LogLevel::kWarn, "config_push_failed",
                                                {{"peer", membership_->member(i).id},
                                                 {"error", status.message()},
                                                 {"note", "it catches up through heartbeats"}});
        }
      });
    }
  }
  for (auto& t : pushes) {
    t.join();
  }
}

PingInfo Gossip::OurPing() const {
  PingInfo ours;
  ours.node_id = options_.self_id;
  ours.started_at_ns = options_.started_at_ns;
  if (ConfigSync* sync = config_sync_.load(); sync != nullptr) {
    ours.config = sync->Versions();
    ours.config_fingerprint = sync->Fingerprint();
  }
  return ours;
}

void Gossip::ApplyPushed(const std::vector<pb::ConfigChange>& changes) {
  if (ConfigSync* sync = config_sync_.load(); sync != nullptr) {
    config_pushes_.fetch_add(sync->Apply(changes), std::memory_order_relaxed);
  }
}

std::vector<pb::ConfigChange> Gossip::GetConfig(const std::vector<std::string>& domains) {
  if (ConfigSync* sync = config_sync_.load(); sync != nullptr) {
    return sync->Get(domains);
  }
  return {};
}

}  // namespace floodgate::cluster
