// grpc_load: an async gRPC load generator for ShouldRateLimit.
//
//   grpc_load --target 127.0.0.1:8081 [--concurrency 50] [--seconds 10] [--max-requests N]
//             [--users 100000] [--domain bench] [--key user] [--rate R] [--server-pid PID]
//             [--channels 1]
//
// Closed loop by default: `concurrency` calls always in flight. With --rate R it is open loop:
// calls start on a fixed schedule of R per second (latency then includes any queueing, so it
// is not hidden by coordinated omission), still at most `concurrency` in flight.
// Bounded in time and count. Prints one line of key=value results; with --server-pid also the
// server's CPU time (utime+stime from /proc) per answered call.

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "envoy/service/ratelimit/v3/rls.grpc.pb.h"

namespace {

namespace rls = ::envoy::service::ratelimit::v3;
using Clock = std::chrono::steady_clock;

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
};

double CpuSeconds(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close = s.rfind(')');
  if (close == std::string::npos) return 0;
  std::vector<std::string> fields;
  size_t pos = close + 2;
  while (pos < s.size()) {
    size_t next = s.find(' ', pos);
    if (next == std::string::npos) next = s.size();
    fields.push_back(s.substr(pos, next - pos));
    pos = next + 1;
  }
  // After ')': state(0) ... utime is field 14 overall -> index 11 here, stime index 12.
  if (fields.size() < 13) return 0;
  return (std::stod(fields[11]) + std::stod(fields[12])) / sysconf(_SC_CLK_TCK);
}

struct Call {
  grpc::ClientContext context;
  rls::RateLimitRequest request;
  rls::RateLimitResponse response;
  grpc::Status status;
  std::unique_ptr<grpc::ClientAsyncResponseReader<rls::RateLimitResponse>> reader;
  Clock::time_point start;
};

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--target")
      o.target = value;
    else if (flag == "--concurrency")
      o.concurrency = std::stoi(value);
    else if (flag == "--seconds")
      o.seconds = std::stod(value);
    else if (flag == "--max-requests")
      o.max_requests = std::stoull(value);
    else if (flag == "--users")
      o.users = std::stoull(value);
    else if (flag == "--domain")
      o.domain = value;
    else if (flag == "--key")
      o.key = value;
    else if (flag == "--rate")
      o.rate = std::stod(value);
    else if (flag == "--server-pid")
      o.server_pid = std::stoi(value);
    else if (flag == "--channels")
      o.channels = std::stoi(value);
    else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  std::vector<std::unique_ptr<rls::RateLimitService::Stub>> stubs;
  for (int c = 0; c < o.channels; ++c) {
    grpc::ChannelArguments args;
    args.SetInt("grpc.channel_id", c);  // distinct channels, distinct connections
    stubs.push_back(rls::RateLimitService::NewStub(
        grpc::CreateCustomChannel(o.target, grpc::InsecureChannelCredentials(), args)));
  }
  grpc::CompletionQueue cq;
  std::mt19937_64 rng(42);
  std::uniform_int_distribution<uint64_t> user(1, std::max<uint64_t>(1, o.users));
  std::vector<uint32_t> latencies_us;
  latencies_us.reserve(1 << 20);
  uint64_t started = 0, done = 0, ok = 0, over = 0, failed = 0;
  int in_flight = 0;

  const double cpu0 = o.server_pid ? CpuSeconds(o.server_pid) : 0;
  const Clock::time_point t0 = Clock::now();
  const Clock::time_point end =
      t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.seconds));
  const double interval_s = o.rate > 0 ? 1.0 / o.rate : 0;

  auto start_call = [&](Clock::time_point scheduled) {
    Call* call = new Call();
    call->request.set_domain(o.domain);
    auto* e = call->request.add_descriptors()->add_entries();
    e->set_key(o.key);
    e->set_value(std::to_string(user(rng)));
    call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    call->start = scheduled;
    call->reader =
        stubs[started % stubs.size()]->AsyncShouldRateLimit(&call->context, call->request, &cq);
    call->reader->Finish(&call->response, &call->status, call);
    ++started;
    ++in_flight;
  };

  if (o.rate <= 0) {
    for (int i = 0; i < o.concurrency && started < o.max_requests; ++i) start_call(Clock::now());
  }
  Clock::time_point next_due = t0;
  while (true) {
    const Clock::time_point now = Clock::now();
    const bool time_left = now < end && started < o.max_requests;
    if (o.rate > 0 && time_left) {
      while (next_due <= now && in_flight < o.concurrency && started < o.max_requests) {
        start_call(next_due);  // latency counts from when the call was due
        next_due +=
            std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(interval_s));
      }
    }
    if (in_flight == 0 && !time_left) break;
    void* tag;
    bool got;
    const auto wait_until = o.rate > 0 ? std::min(next_due, now + std::chrono::milliseconds(5))
                                       : now + std::chrono::milliseconds(100);
    auto status = cq.AsyncNext(&tag, &got, std::chrono::system_clock::now() + (wait_until - now));
    if (status != grpc::CompletionQueue::GOT_EVENT) continue;
    Call* call = static_cast<Call*>(tag);
    --in_flight;
    ++done;
    latencies_us.push_back(static_cast<uint32_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - call->start).count()));
    if (!call->status.ok()) {
      ++failed;
    } else if (call->response.overall_code() == rls::RateLimitResponse::OK) {
      ++ok;
    } else {
      ++over;
    }
    delete call;
    if (o.rate <= 0 && Clock::now() < end && started < o.max_requests) start_call(Clock::now());
  }
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  const double cpu1 = o.server_pid ? CpuSeconds(o.server_pid) : 0;
  std::sort(latencies_us.begin(), latencies_us.end());
  auto pct = [&](double p) -> double {
    if (latencies_us.empty()) return 0;
    return latencies_us[std::min(latencies_us.size() - 1,
                                 static_cast<size_t>(p * latencies_us.size()))] /
           1000.0;
  };
  std::printf(
      "requests=%llu seconds=%.2f rps=%.0f ok=%llu over_limit=%llu failed=%llu "
      "p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f",
      static_cast<unsigned long long>(done), secs, done / secs, static_cast<unsigned long long>(ok),
      static_cast<unsigned long long>(over), static_cast<unsigned long long>(failed), pct(0.5),
      pct(0.9), pct(0.99), latencies_us.empty() ? 0.0 : latencies_us.back() / 1000.0);
  if (o.server_pid) {
    std::printf(" server_cpu_us_per_req=%.2f", done ? (cpu1 - cpu0) * 1e6 / done : 0.0);
  }
  std::printf("\n");
  cq.Shutdown();
  return failed == 0 ? 0 : 1;
}
