// grpc_load: an async gRPC load generator for ShouldRateLimit.
//
//   grpc_load --target 127.0.0.1:8081 [--concurrency 50] [--seconds 10] [--max-requests N]
//             [--users 100000] [--domain bench] [--key user] [--rate R] [--server-pid PID]
//             [--channels 1] [--hot-share 0]
//
// --target may list several addresses (a,b,c): the calls go round-robin over them (load spread
// over a cluster's nodes), each address with --channels channels of its own. --hot-share F sends
// a fraction F of the calls to one key (user "hot"), the rest to random users.
//
// Closed loop by default: `concurrency` calls always in flight. With --rate R it is open loop:
// calls start on a fixed schedule of R per second (latency then includes any queueing, so it
// is not hidden by coordinated omission), still at most `concurrency` in flight.
// Bounded in time and count. Prints one line of key=value results; with --server-pid also the
// server's CPU time (utime+stime from /proc) per answered call.

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "bench/proc_stats.h"
#include "envoy/service/ratelimit/v3/rls.grpc.pb.h"

namespace {

namespace rls = ::envoy::service::ratelimit::v3;
using Clock = std::chrono::steady_clock;
using ::floodgate::bench::CpuSeconds;

struct Options {
  std::string target = "127.0.0.1:8081";
  int concurrency = 50;
  double seconds = 10;
  uint64_t max_requests = 5'000'000;
  uint64_t users = 100'000;
  std::string domain = "bench";
  std::string key = "user";
  double rate = 0;  // 0: closed loop
  int server_pid = 0;
  int channels = 1;
  double hot_share = 0;  // the fraction of calls on the one hot key
};

struct Call {
  grpc::ClientContext context;
  rls::RateLimitRequest request;
  rls::RateLimitResponse response;
  grpc::Status status;
  std::unique_ptr<grpc::ClientAsyncResponseReader<rls::RateLimitResponse>> reader;
  Clock::time_point start;
};

// Parses the command line into `o`. Returns false, after printing why, on an unknown flag.
bool ParseFlags(int argc, char** argv, Options* o) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--target") {
      o->target = value;
    } else if (flag == "--concurrency") {
      o->concurrency = std::stoi(value);
    } else if (flag == "--seconds") {
      o->seconds = std::stod(value);
    } else if (flag == "--max-requests") {
      o->max_requests = std::stoull(value);
    } else if (flag == "--users") {
      o->users = std::stoull(value);
    } else if (flag == "--domain") {
      o->domain = value;
    } else if (flag == "--key") {
      o->key = value;
    } else if (flag == "--rate") {
      o->rate = std::stod(value);
    } else if (flag == "--server-pid") {
      o->server_pid = std::stoi(value);
    } else if (flag == "--channels") {
      o->channels = std::stoi(value);
    } else if (flag == "--hot-share") {
      o->hot_share = std::stod(value);
    } else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return false;
    }
  }
  return true;
}

// Returns, for each address of --target, one stub per --channels, each on a channel of its own
// (so a connection of its own); interleaved so that round-robin over them spreads over the
// addresses.
std::vector<std::unique_ptr<rls::RateLimitService::Stub>> NewStubs(const Options& o) {
  std::vector<std::string> targets;
  for (size_t start = 0; start <= o.target.size();) {
    const size_t comma = std::min(o.target.find(',', start), o.target.size());
    if (comma > start) {
      targets.push_back(o.target.substr(start, comma - start));
    }
    start = comma + 1;
  }
  std::vector<std::unique_ptr<rls::RateLimitService::Stub>> stubs;
  for (int c = 0; c < o.channels; ++c) {
    for (const std::string& target : targets) {
      grpc::ChannelArguments args;
      args.SetInt("grpc.channel_id", c);  // distinct channels, distinct connections
      stubs.push_back(rls::RateLimitService::NewStub(
          grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args)));
    }
  }
  return stubs;
}

struct Results {
  uint64_t done = 0, ok = 0, over = 0, failed = 0;
  std::vector<uint32_t> latencies_us;
  double seconds = 0;
  double server_cpu_s = 0;  // with --server-pid
};

// One run of the load: calls ShouldRateLimit over the stubs, closed or open loop, until the time
// or the request count is up and every call has finished.
class LoadRun {
 public:
  explicit LoadRun(const Options& o) : o_(o), stubs_(NewStubs(o)) {
    results_.latencies_us.reserve(1 << 20);
  }

  // Runs the load and returns what it measured.
  Results Run();

 private:
  void StartCall(Clock::time_point scheduled);
  // Open loop: starts the calls due by `now`, as far as `concurrency` allows.
  void StartDue(Clock::time_point now);
  void Finish(Call* call);

  const Options& o_;
  std::vector<std::unique_ptr<rls::RateLimitService::Stub>> stubs_;
  grpc::CompletionQueue cq_;
  std::mt19937_64 rng_{42};
  std::uniform_int_distribution<uint64_t> user_{1, std::max<uint64_t>(1, o_.users)};
  std::uniform_real_distribution<double> unit_{0, 1};
  uint64_t started_ = 0;
  int in_flight_ = 0;
  Clock::time_point end_, next_due_;
  Results results_;
};

void LoadRun::StartCall(Clock::time_point scheduled) {
  Call* call = new Call();
  call->request.set_domain(o_.domain);
  auto* e = call->request.add_descriptors()->add_entries();
  e->set_key(o_.key);
  if (o_.hot_share > 0 && unit_(rng_) < o_.hot_share) {
    e->set_value("hot");
  } else {
    e->set_value(std::to_string(user_(rng_)));
  }
  call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  call->start = scheduled;
  call->reader =
      stubs_[started_ % stubs_.size()]->AsyncShouldRateLimit(&call->context, call->request, &cq_);
  call->reader->Finish(&call->response, &call->status, call);
  ++started_;
  ++in_flight_;
}

void LoadRun::StartDue(Clock::time_point now) {
  const double interval_s = 1.0 / o_.rate;
  while (next_due_ <= now && in_flight_ < o_.concurrency && started_ < o_.max_requests) {
    StartCall(next_due_);  // latency counts from when the call was due
    next_due_ +=
        std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(interval_s));
  }
}

void LoadRun::Finish(Call* call) {
  --in_flight_;
  ++results_.done;
  results_.latencies_us.push_back(static_cast<uint32_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - call->start).count()));
  if (!call->status.ok()) {
    ++results_.failed;
  } else if (call->response.overall_code() == rls::RateLimitResponse::OK) {
    ++results_.ok;
  } else {
    ++results_.over;
  }
  delete call;
}

Results LoadRun::Run() {
  const double cpu0 = o_.server_pid ? CpuSeconds(o_.server_pid) : 0;
  const Clock::time_point t0 = Clock::now();
  end_ =
      t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o_.seconds));
  if (o_.rate <= 0) {
    for (int i = 0; i < o_.concurrency && started_ < o_.max_requests; ++i) {
      StartCall(Clock::now());
    }
  }
  next_due_ = t0;
  while (true) {
    const Clock::time_point now = Clock::now();
    const bool time_left = now < end_ && started_ < o_.max_requests;
    if (o_.rate > 0 && time_left) {
      StartDue(now);
    }
    if (in_flight_ == 0 && !time_left) {
      break;
    }
    void* tag;
    bool got;
    const auto wait_until = o_.rate > 0 ? std::min(next_due_, now + std::chrono::milliseconds(5))
                                        : now + std::chrono::milliseconds(100);
    auto status = cq_.AsyncNext(&tag, &got, std::chrono::system_clock::now() + (wait_until - now));
    if (status != grpc::CompletionQueue::GOT_EVENT) {
      continue;
    }
    Finish(static_cast<Call*>(tag));
    if (o_.rate <= 0 && Clock::now() < end_ && started_ < o_.max_requests) {
      StartCall(Clock::now());
    }
  }
  results_.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  const double cpu1 = o_.server_pid ? CpuSeconds(o_.server_pid) : 0;
  results_.server_cpu_s = cpu1 - cpu0;
  cq_.Shutdown();
  return std::move(results_);
}

// Prints the key=value line.
void PrintResults(const Options& o, Results& r) {
  std::vector<uint32_t>& latencies_us = r.latencies_us;
  const uint64_t done = r.done;
  std::sort(latencies_us.begin(), latencies_us.end());
  auto pct = [&](double p) -> double {
    if (latencies_us.empty()) {
      return 0;
    }
    return latencies_us[std::min(latencies_us.size() - 1,
                                 static_cast<size_t>(p * latencies_us.size()))] /
           1000.0;
  };
  std::printf(
      "requests=%llu seconds=%.2f rps=%.0f ok=%llu over_limit=%llu failed=%llu "
      "p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f",
      static_cast<unsigned long long>(done), r.seconds, done / r.seconds,
      static_cast<unsigned long long>(r.ok), static_cast<unsigned long long>(r.over),
      static_cast<unsigned long long>(r.failed), pct(0.5), pct(0.9), pct(0.99),
      latencies_us.empty() ? 0.0 : latencies_us.back() / 1000.0);
  if (o.server_pid) {
    std::printf(" server_cpu_us_per_req=%.2f", done ? r.server_cpu_s * 1e6 / done : 0.0);
  }
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!ParseFlags(argc, argv, &o)) {
    return 2;
  }
  LoadRun run(o);
  Results results = run.Run();
  PrintResults(o, results);
  return results.failed == 0 ? 0 : 1;
}
