#include "src/redis_store/redis_store.h"

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "src/redis_store/redis_scripts.h"
#include "src/redis_store/script_args.h"

// How a transaction travels (invariants):
//  - A Txn owns copies of its ops (state keys dropped: they are only valid during the call),
//    their plans and decisions. It is split into Parts, one per slot group (single mode: one);
//    each Part is decided by one script call or by failure modes, exactly once, and the last Part
//    to finish runs the Txn's `finish` (on a client io thread, or inline when no part went out).
//  - Per group, `inflight` counts the script calls sent and not yet answered (at most
//    max_inflight_batches); a Part that finds the group full waits in `waiting`, and every answer
//    sends the next batch (up to max_batch waiting Parts in one call) before giving its slot
//    back, so a waiting Part never waits for anything but a reply in flight.
//  - A call keeps its slot through a NOSCRIPT reload and retry (once per call).
//  - `outstanding_` counts calls holding a group slot (from Submit or Next until the Next that
//    gives the slot back, through a reload): the destructor waits for zero, so no callback of
//    ours runs after it.

namespace floodgate::redis_store {
namespace {

constexpr int64_t kClosedRetryAfterNs = 1'000'000'000;  // a hint for failure_mode: closed

struct Txn;

struct Part {
  std::shared_ptr<Txn> txn;
  std::vector<uint32_t> which;  // op indexes
  std::vector<std::string> keys;
  std::vector<std::string> args;
  std::string slot_key;
  int group = 0;
};

struct Txn {
  std::vector<StoreOp> ops;
  std::vector<PlannedOp> plans;
  std::vector<Decision> decisions;
  int64_t now_ns = 0;
  std::atomic<int> parts_left{0};
  std::atomic<bool> committed{true};
  absl::AnyInvocable<void(std::shared_ptr<Txn>) &&> finish;
};

// One script call: its Parts, in the order of their replies.
struct Batch {
  std::vector<std::shared_ptr<Part>> parts;
  int group = 0;
  bool retried = false;
};

class RedisStoreImpl final : public RedisStore {
 public:
  RedisStoreImpl(redis::Client* client, RedisStoreOptions options)
      : client_(client),
        options_(std::move(options)),
        script_options_{.key_prefix = options_.key_prefix,
                        .envoy_key_layout = options_.envoy_key_layout,
                        .envoy_prefix = options_.envoy_prefix} {}

  ~RedisStoreImpl() override {
    std::vector<std::shared_ptr<Part>> queued;
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
      for (auto& [id, group] : groups_) {
        queued.insert(queued.end(), group.waiting.begin(), group.waiting.end());
        group.waiting.clear();
      }
    }
    for (const std::shared_ptr<Part>& part : queued) {
      FailPart(*part);
    }
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](int* outstanding) { return *outstanding == 0; }, &outstanding_));
  }

  bool Apply(absl::Span<const StoreOp> ops, int64_t now_ns,
             absl::Span<Decision> decisions) override {
    if (ops.empty()) {
      return true;
    }
    auto done = std::make_shared<absl::Notification>();
    std::shared_ptr<Txn> txn = Start(ops, now_ns);
    txn->finish = [done](std::shared_ptr<Txn>) { done->Notify(); };
    Dispatch(txn);
    if (!done->WaitForNotificationWithTimeout(absl::Milliseconds(options_.sync_timeout_ms))) {
      // The call may still land in Redis; we stop waiting and decide by failure mode here.
      sync_timeouts_.fetch_add(1, std::memory_order_relaxed);
      std::vector<uint32_t> all(ops.size());
      for (uint32_t i = 0; i < all.size(); ++i) {
        all[i] = i;
      }
      Txn copy;
      copy.ops.assign(ops.begin(), ops.end());
      copy.decisions.resize(ops.size());
      copy.now_ns = now_ns;
      const bool committed = DecideByFailureMode(copy, all);
      std::copy(copy.decisions.begin(), copy.decisions.end(), decisions.begin());
      return committed;
    }
    std::copy(txn->decisions.begin(), txn->decisions.end(), decisions.begin());
    return txn->committed.load();
  }

  void ApplyAsync(absl::Span<const StoreOp> ops, int64_t now_ns, absl::Span<Decision> decisions,
                  boost::asio::io_context& loop, ApplyDone done) override {
    if (ops.empty()) {
      std::move(done)(true);
      return;
    }
    std::shared_ptr<Txn> txn = Start(ops, now_ns);
    txn->finish = [decisions, &loop, done = std::move(done)](std::shared_ptr<Txn> t) mutable {
      boost::asio::post(loop, [decisions, t = std::move(t), done = std::move(done)]() mutable {
        std::copy(t->decisions.begin(), t->decisions.end(), decisions.begin());
        std::move(done)(t->committed.load());
      });
    };
    Dispatch(std::move(txn));
  }

  bool MaySuspend() const override { return true; }
  bool WantsStateKeys() const override { return true; }
  StoreStats GetStats() const override { return StoreStats{}; }
  void ReclaimExpired(int64_t /*now_ns*/) override {}

  RedisStoreStats GetRedisStats() const override {
    const auto get = [](const std::atomic<uint64_t>& v) {
      return v.load(std::memory_order_relaxed);
    };
    return RedisStoreStats{.transactions = get(transactions_),
                           .ops = get(ops_),
                           .script_calls = get(script_calls_),
                           .batched_calls = get(batched_calls_),
                           .queued_transactions = get(queued_),
                           .noscript_reloads = get(noscript_reloads_),
                           .call_failures = get(call_failures_),
                           .error_replies = get(error_replies_),
                           .malformed_replies = get(malformed_replies_),
                           .failed_ops_open = get(failed_open_),
                           .failed_ops_closed = get(failed_closed_),
                           .failed_ops_local = get(failed_local_),
                           .sync_timeouts = get(sync_timeouts_),
                           .unsupported_ops = get(unsupported_)};
  }

 private:
  struct Group {
    int inflight = 0;
    std::deque<std::shared_ptr<Part>> waiting;
  };

  // Copies and plans the ops of a new transaction.
  std::shared_ptr<Txn> Start(absl::Span<const StoreOp> ops, int64_t now_ns) {
    auto txn = std::make_shared<Txn>();
    txn->now_ns = now_ns;
    txn->ops.assign(ops.begin(), ops.end());
    txn->plans.reserve(ops.size());
    txn->decisions.resize(ops.size());
    for (StoreOp& op : txn->ops) {
      txn->plans.push_back(PlanOp(op, now_ns, script_options_));
      if (txn->plans.back().code == OpCode::kRefuse) {
        unsupported_.fetch_add(1, std::memory_order_relaxed);
      }
      op.state_key = {};
    }
    transactions_.fetch_add(1, std::memory_order_relaxed);
    ops_.fetch_add(ops.size(), std::memory_order_relaxed);
    return txn;
  }

  // Splits `txn` into its slot groups' Parts and submits them.
  void Dispatch(std::shared_ptr<Txn> txn) {
    std::vector<std::shared_ptr<Part>> parts;
    const bool cluster = options_.mode == redis::ClientOptions::Mode::kCluster;
    absl::flat_hash_map<int, size_t> by_slot;
    std::vector<uint32_t> keyless;
    for (uint32_t i = 0; i < txn->ops.size(); ++i) {
      const PlannedOp& plan = txn->plans[i];
      if (plan.code == OpCode::kRefuse) {
        keyless.push_back(i);  // joins the first part: it touches no key
        continue;
      }
      const int slot = cluster ? redis::HashSlot(plan.key) : 0;
      auto [it, inserted] = by_slot.try_emplace(slot, parts.size());
      if (inserted) {
        auto part = std::make_shared<Part>();
        part->txn = txn;
        part->group = slot;
        part->slot_key = plan.key;
        parts.push_back(std::move(part));
      }
      parts[it->second]->which.push_back(i);
    }
    if (parts.empty()) {
      auto part = std::make_shared<Part>();
      part->txn = txn;
      parts.push_back(std::move(part));
    }
    parts[0]->which.insert(parts[0]->which.end(), keyless.begin(), keyless.end());
    txn->parts_left.store(static_cast<int>(parts.size()));
    for (const std::shared_ptr<Part>& part : parts) {
      EncodeTransaction(txn->ops, txn->plans, part->which, txn->now_ns, part->keys, part->args);
    }
    for (std::shared_ptr<Part>& part : parts) {
      Submit(std::move(part));
    }
  }

  void Submit(std::shared_ptr<Part> part) {
    bool stopping;
    {
      absl::MutexLock lock(&mu_);
      stopping = stopping_;  // only a call racing the destructor
      if (!stopping) {
        Group& group = groups_[part->group];
        if (group.inflight >= options_.max_inflight_batches) {
          queued_.fetch_add(1, std::memory_order_relaxed);
          group.waiting.push_back(std::move(part));
          return;
        }
        ++group.inflight;
        ++outstanding_;
      }
    }
    if (stopping) {
      FailPart(*part);
      return;
    }
    auto batch = std::make_shared<Batch>();
    batch->group = part->group;
    batch->parts.push_back(std::move(part));
    Send(std::move(batch));
  }

  // Sends one script call for `batch` (its group's slot is held, outstanding_ counted).
  void Send(std::shared_ptr<Batch> batch) {
    size_t num_keys = 0;
    size_t num_args = 1;
    for (const std::shared_ptr<Part>& part : batch->parts) {
      num_keys += part->keys.size();
      num_args += part->args.size();
    }
    const std::string num_keys_text = absl::StrCat(num_keys);
    const std::string num_txns_text = absl::StrCat(batch->parts.size());
    std::vector<std::string_view> argv;
    argv.reserve(3 + num_keys + num_args);
    argv.push_back("EVALSHA");
    argv.push_back(TransactionScriptSha());
    argv.push_back(num_keys_text);
    for (const std::shared_ptr<Part>& part : batch->parts) {
      argv.insert(argv.end(), part->keys.begin(), part->keys.end());
    }
    argv.push_back(num_txns_text);
    for (const std::shared_ptr<Part>& part : batch->parts) {
      argv.insert(argv.end(), part->args.begin(), part->args.end());
    }
    script_calls_.fetch_add(1, std::memory_order_relaxed);
    if (batch->parts.size() > 1) {
      batched_calls_.fetch_add(1, std::memory_order_relaxed);
    }
    const std::string slot_key = batch->parts[0]->slot_key;
    client_->Send(argv, slot_key,
                  [this, batch = std::move(batch)](absl::StatusOr<redis::Reply> reply) mutable {
                    OnReply(std::move(batch), std::move(reply));
                  });
  }

  void OnReply(std::shared_ptr<Batch> batch, absl::StatusOr<redis::Reply> reply) {
    if (reply.ok() && reply->type == redis::Reply::Type::kError &&
        absl::StartsWith(reply->str, "NOSCRIPT") && !batch->retried) {
      Reload(std::move(batch));
      return;
    }
    if (!reply.ok()) {
      call_failures_.fetch_add(1, std::memory_order_relaxed);
      FailBatch(*batch);
    } else if (reply->type == redis::Reply::Type::kError) {
      error_replies_.fetch_add(1, std::memory_order_relaxed);
      FailBatch(*batch);
    } else if (reply->type != redis::Reply::Type::kArray ||
               reply->elements.size() != batch->parts.size()) {
      malformed_replies_.fetch_add(1, std::memory_order_relaxed);
      FailBatch(*batch);
    } else {
      for (size_t i = 0; i < batch->parts.size(); ++i) {
        Part& part = *batch->parts[i];
        Txn& txn = *part.txn;
        bool committed = false;
        const absl::Status decoded =
            DecodeTransaction(reply->elements[i], txn.ops, txn.plans, part.which,
                              absl::MakeSpan(txn.decisions), &committed);
        if (decoded.ok()) {
          FinishPart(part, committed);
        } else {
          (reply->elements[i].type == redis::Reply::Type::kError ? error_replies_
                                                                 : malformed_replies_)
              .fetch_add(1, std::memory_order_relaxed);
          FailPart(part);
        }
      }
    }
    Next(batch->group);
  }

  // After NOSCRIPT: loads the script on the node that answered, then retries the call once.
  void Reload(std::shared_ptr<Batch> batch) {
    noscript_reloads_.fetch_add(1, std::memory_order_relaxed);
    batch->retried = true;
    const std::string_view argv[] = {"SCRIPT", "LOAD", TransactionScript()};
    const std::string slot_key = batch->parts[0]->slot_key;
    client_->Send(
        argv, slot_key,
        [this, batch = std::move(batch)](absl::StatusOr<redis::Reply> reply) mutable {
          if (reply.ok() && reply->type == redis::Reply::Type::kString &&
              reply->str == TransactionScriptSha()) {
            Send(std::move(batch));  // still holding its group's slot and outstanding count
            return;
          }
          OnReply(std::move(batch),
                  reply.ok() && reply->type == redis::Reply::Type::kError
                      ? std::move(reply)
                      : absl::StatusOr<redis::Reply>(absl::UnavailableError("SCRIPT LOAD failed")));
        });
  }

  // Gives back the slot of a finished call: first sends the group's waiting Parts (up to
  // max_batch in one call) in its place.
  void Next(int group_id) {
    auto batch = std::make_shared<Batch>();
    batch->group = group_id;
    {
      absl::MutexLock lock(&mu_);
      Group& group = groups_[group_id];
      while (!group.waiting.empty() &&
             batch->parts.size() < static_cast<size_t>(options_.max_batch)) {
        batch->parts.push_back(std::move(group.waiting.front()));
        group.waiting.pop_front();
      }
      if (batch->parts.empty()) {
        --group.inflight;
        if (group.inflight == 0 && group_id != 0) {
          groups_.erase(group_id);  // cluster groups come and go with their slots
        }
        --outstanding_;
        return;
      }
      // The slot and the outstanding count pass to the new call.
    }
    Send(std::move(batch));
  }

  void FailBatch(const Batch& batch) {
    for (const std::shared_ptr<Part>& part : batch.parts) {
      FailPart(*part);
    }
  }

  void FailPart(Part& part) {
    const bool committed = DecideByFailureMode(*part.txn, part.which);
    FinishPart(part, committed);
  }

  static void FinishPart(Part& part, bool committed) {
    std::shared_ptr<Txn> txn = part.txn;
    if (!committed) {
      txn->committed.store(false);
    }
    if (txn->parts_left.fetch_sub(1) == 1) {
      std::move(txn->finish)(txn);
    }
  }

  // Decides the ops `which` of `txn` by their failure modes; returns whether nothing refused.
  bool DecideByFailureMode(Txn& txn, absl::Span<const uint32_t> which) {
    std::vector<StoreOp> local_ops;
    std::vector<uint32_t> local_index;
    bool committed = true;
    for (uint32_t i : which) {
      const StoreOp& op = txn.ops[i];
      Decision& d = txn.decisions[i];
      const FailureMode mode =
          op.failure_mode == FailureMode::kLocal && options_.local_fallback == nullptr
              ? FailureMode::kOpen
              : op.failure_mode;
      if (mode == FailureMode::kLocal) {
        failed_local_.fetch_add(1, std::memory_order_relaxed);
        local_ops.push_back(op);
        local_index.push_back(i);
      } else if (mode == FailureMode::kClosed) {
        failed_closed_.fetch_add(1, std::memory_order_relaxed);
        d = Decision{};
        d.allowed = false;
        d.unavailable = true;
        d.limit = op.spec.requests_per_period;
        d.retry_after_ns = kClosedRetryAfterNs;
        if (!op.shadow && op.kind == StoreOp::Kind::kCheck) {
          committed = false;
        }
      } else {
        (op.failure_mode == FailureMode::kLocal ? failed_local_ : failed_open_)
            .fetch_add(1, std::memory_order_relaxed);
        d = Decision{};
        d.allowed = true;
        d.limit = op.spec.requests_per_period;
        d.remaining = op.spec.requests_per_period;
      }
    }
    if (!local_ops.empty()) {
      std::vector<Decision> out(local_ops.size());
      if (!options_.local_fallback->Apply(local_ops, txn.now_ns, absl::MakeSpan(out))) {
        committed = false;
      }
      for (size_t k = 0; k < local_ops.size(); ++k) {
        txn.decisions[local_index[k]] = out[k];
      }
    }
    return committed;
  }

  redis::Client* const client_;
  const RedisStoreOptions options_;
  const ScriptOptions script_options_;

  mutable absl::Mutex mu_;
  absl::flat_hash_map<int, Group> groups_ ABSL_GUARDED_BY(mu_);
  int outstanding_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  std::atomic<uint64_t> transactions_{0};
  std::atomic<uint64_t> ops_{0};
  std::atomic<uint64_t> script_calls_{0};
  std::atomic<uint64_t> batched_calls_{0};
  std::atomic<uint64_t> queued_{0};
  std::atomic<uint64_t> noscript_reloads_{0};
  std::atomic<uint64_t> call_failures_{0};
  std::atomic<uint64_t> error_replies_{0};
  std::atomic<uint64_t> malformed_replies_{0};
  std::atomic<uint64_t> failed_open_{0};
  std::atomic<uint64_t> failed_closed_{0};
  std::atomic<uint64_t> failed_local_{0};
  std::atomic<uint64_t> sync_timeouts_{0};
  std::atomic<uint64_t> unsupported_{0};
};

}  // namespace

absl::StatusOr<std::unique_ptr<RedisStore>> NewRedisStore(redis::Client* client,
                                                          RedisStoreOptions options) {
  if (client == nullptr) {
    return absl::InvalidArgumentError("redis store: no client");
  }
  if (options.key_prefix.empty()) {
    return absl::InvalidArgumentError("redis store: key_prefix must not be empty");
  }
  if (options.max_batch < 1 || options.max_inflight_batches < 1) {
    return absl::InvalidArgumentError(
        "redis store: max_batch and max_inflight_batches must be at least 1");
  }
  if (options.sync_timeout_ms < 1) {
    return absl::InvalidArgumentError("redis store: sync_timeout_ms must be at least 1");
  }
  return std::make_unique<RedisStoreImpl>(client, std::move(options));
}

}  // namespace floodgate::redis_store
