// overload_load: the HTTP load driver of the overload scenarios (bench/overload/run.sh,
// docs/overload.md). One thread, epoll, GET /v1/check over keep-alive connections.
//
//   overload_load --port P --phase RATE:SECONDS[:NAME[:MAX]] [--phase ...]
//       [--server-pid PID] [--connections 50] [--depth 1] [--deadline-ms 0] [--fail-fast]
//       [--domain overload] [--key user] [--users 100000] [--new-keys PREFIX]
//       [--hot FRACTION] [--hot-key K] [--hot-value V]
//       [--tracked N] [--tracked-key user] [--tracked-rate 20] [--tracked-limit 10]
//       [--tracked-window 1] [--tracked-connections 8]
//       [--tick 0.5] [--series FILE.csv] [--windows FILE.csv] [--metrics] [--drain 5]
//
// Phases run one after the other. RATE is a number (open loop: requests are due on a fixed
// schedule and latency counts from when a request was due, so queueing in the driver is not
// hidden), `closed` (every connection keeps --depth requests in flight) or `idle` (no background
// traffic). MAX ends the phase early after that many background requests.
//
// Background requests go to `--key` with a value drawn at random from [1, users], or a new value
// every time with --new-keys PREFIX (PREFIX0, PREFIX1, ...); a fraction --hot of them goes to
// --hot-key=--hot-value instead. A request may wait for a connection with fewer than --depth in
// flight (HTTP/1.1 pipelining); with --deadline-ms it is dropped ("abandoned") once it has waited
// that long unsent, as a proxy with a timeout would. With --fail-fast a request that finds every
// connection at --depth is failed at once instead ("overflow"): the caller applies its failure
// mode without waiting, as Envoy does when its circuit breaker on outstanding requests to the
// rate limit cluster (max_requests, 1024 by default) is full.
//
// Tracked users (--tracked N) are N keys `--tracked-key=t<i>`, each checked at --tracked-rate per
// second on their own connections, over every phase. Their limit is --tracked-limit per fixed
// window of --tracked-window seconds (as in the config served). Each answer is attributed to its
// window from the body's resetAfterSeconds (window end = decision time + reset), so the driver
// can count admissions per user and window: a window with a refusal must have admitted exactly
// the limit, and no window may admit more.
//
// Every --tick seconds one CSV row: offered and answered rate, p50/p99 of that tick, statuses,
// tracked admissions, the server's RSS and CPU (with --server-pid), the driver's CPU, the CPU
// everything else on the machine used (other_cpu, in cores: a shared machine's noise) and, with
// --metrics, store figures polled from GET /metrics on a connection of its own. Prints one
// `phase ...` line per phase, a `tracked ...` line and a `total ...` line (key=value). Exit
// status 1 on a broken connection or an answer other than 200/429.

#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "bench/overload/overload_client.h"
#include "bench/proc_stats.h"

namespace floodgate::overload {
namespace {

using ::floodgate::bench::CpuSeconds;
using ::floodgate::bench::MachineBusySeconds;
using ::floodgate::bench::StatusKb;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
Clock::duration FromSeconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

double Percentile(std::vector<uint32_t>& v, double p) {
  if (v.empty()) {
    return 0;
  }
  const size_t k = std::min(v.size() - 1, static_cast<size_t>(p * v.size()));
  std::nth_element(v.begin(), v.begin() + k, v.end());
  return v[k] / 1e3;
}

struct Phase {
  enum Kind { kOpen, kClosed, kIdle } kind = kOpen;
  double rate = 0;
  double seconds = 0;
  std::string name;
  uint64_t max_requests = 0;  // 0: none
};

struct Options {
  int port = 0, server_pid = 0, connections = 50, depth = 1, tracked_connections = 8;
  double deadline_ms = 0, hot = 0, tick_s = 0.5, drain_s = 5;
  double tracked_rate = 20, tracked_window_s = 1;
  uint64_t users = 100000, tracked = 0, tracked_limit = 10;
  std::string domain = "overload", key = "user", new_keys, hot_key, hot_value = "hot";
  std::string tracked_key = "user", series_path, windows_path;
  bool metrics = false, fail_fast = false;
  std::vector<Phase> phases;
};

// Parses RATE:SECONDS[:NAME[:MAX]], the `index`th phase. Returns false when it has no SECONDS.
bool ParsePhase(const std::string& v, size_t index, Phase* p) {
  std::vector<std::string> parts;
  for (size_t s = 0;;) {
    const size_t c = v.find(':', s);
    parts.push_back(v.substr(s, c == std::string::npos ? std::string::npos : c - s));
    if (c == std::string::npos) {
      break;
    }
    s = c + 1;
  }
  if (parts.size() < 2) {
    return false;
  }
  if (parts[0] == "closed") {
    p->kind = Phase::kClosed;
  } else if (parts[0] == "idle") {
    p->kind = Phase::kIdle;
  } else {
    p->rate = std::stod(parts[0]);
  }
  p->seconds = std::stod(parts[1]);
  p->name = parts.size() > 2 ? parts[2] : "phase" + std::to_string(index);
  p->max_requests = parts.size() > 3 ? std::stoull(parts[3]) : 0;
  return true;
}

// Sets the flag `flag` (one that takes a value, other than --phase) to `v`. Returns false when
// there is no such flag.
bool SetFlag(const std::string& flag, const std::string& v, Options* o) {
  if (flag == "--port") {
    o->port = std::stoi(v);
  } else if (flag == "--server-pid") {
    o->server_pid = std::stoi(v);
  } else if (flag == "--connections") {
    o->connections = std::stoi(v);
  } else if (flag == "--depth") {
    o->depth = std::max(1, std::stoi(v));
  } else if (flag == "--deadline-ms") {
    o->deadline_ms = std::stod(v);
  } else if (flag == "--domain") {
    o->domain = v;
  } else if (flag == "--key") {
    o->key = v;
  } else if (flag == "--users") {
    o->users = std::stoull(v);
  } else if (flag == "--new-keys") {
    o->new_keys = v;
  } else if (flag == "--hot") {
    o->hot = std::stod(v);
  } else if (flag == "--hot-key") {
    o->hot_key = v;
  } else if (flag == "--hot-value") {
    o->hot_value = v;
  } else if (flag == "--tracked") {
    o->tracked = std::stoull(v);
  } else if (flag == "--tracked-key") {
    o->tracked_key = v;
  } else if (flag == "--tracked-rate") {
    o->tracked_rate = std::stod(v);
  } else if (flag == "--tracked-limit") {
    o->tracked_limit = std::stoull(v);
  } else if (flag == "--tracked-window") {
    o->tracked_window_s = std::stod(v);
  } else if (flag == "--tracked-connections") {
    o->tracked_connections = std::max(1, std::stoi(v));
  } else if (flag == "--tick") {
    o->tick_s = std::stod(v);
  } else if (flag == "--series") {
    o->series_path = v;
  } else if (flag == "--windows") {
    o->windows_path = v;
  } else if (flag == "--drain") {
    o->drain_s = std::stod(v);
  } else {
    return false;
  }
  return true;
}

// Parses the command line into `o`. Returns false, after printing why, on a bad one.
bool ParseFlags(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--metrics") {
      o->metrics = true;
      continue;
    }
    if (flag == "--fail-fast") {
      o->fail_fast = true;
      continue;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "flag %s needs a value\n", flag.c_str());
      return false;
    }
    const std::string v = argv[++i];
    if (flag == "--phase") {
      Phase p;
      if (!ParsePhase(v, o->phases.size(), &p)) {
        std::fprintf(stderr, "--phase RATE:SECONDS[:NAME[:MAX]]\n");
        return false;
      }
      o->phases.push_back(p);
    } else if (!SetFlag(flag, v, o)) {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return false;
    }
  }
  if (o->port == 0 || o->phases.empty()) {
    std::fprintf(stderr, "need --port and at least one --phase\n");
    return false;
  }
  if (o->hot_key.empty()) {
    o->hot_key = o->key;
  }
  return true;
}

struct PhaseStats {
  uint64_t offered = 0, answered = 0, ok = 0, limited = 0, other = 0, abandoned = 0;
  uint64_t overflow = 0;              // failed at once by the caller (--fail-fast)
  std::vector<uint32_t> lat_us;       // from when due
  std::vector<uint32_t> wire_lat_us;  // from when sent
  double seconds = 0;
};

// The figures of one tick (one CSV row).
struct TickStats {
  uint64_t offered = 0, answered = 0, ok = 0, limited = 0, other = 0;
  uint64_t abandoned = 0, tr_ok = 0, tr_limited = 0, overflow = 0;
  std::vector<uint32_t> lat;

  void Reset() {
    offered = answered = ok = limited = other = abandoned = 0;
    overflow = 0;
    tr_ok = tr_limited = 0;
    lat.clear();
  }
};

// One tick's CPU use, in cores.
struct CpuSample {
  double server = 0;  // the server (--server-pid)
  double other = 0;   // anything but the server and this driver (other work on a shared machine)
  double driver = 0;  // this driver
};

// Samples the CPU time of the server, of this driver and of the whole machine once per tick.
class CpuSampler {
 public:
  // Takes the first sample; `server_pid` 0 leaves the server out.
  void Start(int server_pid) {
    server_pid_ = server_pid;
    server_prev_ = server_pid_ ? CpuSeconds(server_pid_) : 0;
    server_start_ = server_prev_;
    self_pid_ = getpid();
    busy_prev_ = MachineBusySeconds();
    self_prev_ = CpuSeconds(self_pid_);
  }

  // Returns the CPU used since the previous sample, `tick_s` seconds ago.
  CpuSample Sample(double tick_s) {
    const double cpu = server_pid_ ? CpuSeconds(server_pid_) : 0;
    const double busy = MachineBusySeconds(), self = CpuSeconds(self_pid_);
    CpuSample s;
    s.other =
        std::max(0.0, (busy - busy_prev_) - (self - self_prev_) - (cpu - server_prev_)) / tick_s;
    s.driver = (self - self_prev_) / tick_s;
    s.server = (cpu - server_prev_) / tick_s;
    busy_prev_ = busy;
    self_prev_ = self;
    server_prev_ = cpu;
    other_sum_ += s.other;
    ++other_ticks_;
    return s;
  }

  // Returns the server's CPU seconds since Start.
  double ServerSecondsSinceStart() const {
    return (server_pid_ ? CpuSeconds(server_pid_) : 0) - server_start_;
  }
  // Returns the mean of the ticks' `other`.
  double MeanOther() const { return other_ticks_ ? other_sum_ / other_ticks_ : 0.0; }

 private:
  int server_pid_ = 0;
  int self_pid_ = 0;
  double server_prev_ = 0, server_start_ = 0, busy_prev_ = 0, self_prev_ = 0;
  double other_sum_ = 0;
  uint64_t other_ticks_ = 0;
};

// Tracked admissions: (user, window end index) -> {admitted, refused}.
using Windows = std::unordered_map<uint64_t, std::pair<uint32_t, uint32_t>>;

// Tracked windows summed up: only windows with a refusal had more demand than the limit, so those
// must admit exactly it (min_admitted is over those); no window may admit more (max_admitted is
// over all).
struct WindowSummary {
  uint64_t checked = 0, exact = 0, over = 0, under = 0, unsaturated = 0;
  uint32_t min_admitted = UINT32_MAX, max_admitted = 0;
};

// Runs the phases one after the other over a LoadClient's connections, counts every answer per
// phase, per tick and per tracked user and window, and prints the results.
class Driver {
 public:
  Driver(const Options& o, LoadClient& client);

  // Runs every phase, then drains what is in flight (up to --drain seconds).
  void Run();
  // Prints the `phase`, `tracked` and `total` lines (and writes --windows). Returns the exit
  // status: 1 on a broken connection or an answer other than 200/429.
  int Report();

 private:
  static constexpr int kTrackedDepth = 16;

  void Start();
  void AdvancePhase(Clock::time_point now);
  void Schedule(Clock::time_point now);
  void Dispatch(Clock::time_point now);
  void Send(Conn& c, int32_t user, Clock::time_point due, Clock::time_point now);
  void Tick();
  timespec WaitTimeout(Clock::time_point now) const;
  void OnTrackedAnswer(const Pending& p, int status, std::string_view body,
                       Clock::time_point got_at);
  void OnBackgroundAnswer(const Pending& p, int status, Clock::time_point got_at);
  uint64_t PrintPhases(uint64_t* total_other);
  void PrintTracked();
  void WriteWindows();

  const Options& o_;
  LoadClient& client_;
  std::FILE* series_ = nullptr;
  std::mt19937_64 rng_{42};
  std::uniform_real_distribution<double> unit_{0.0, 1.0};
  std::vector<PhaseStats> stats_;
  Windows windows_;
  uint64_t tracked_sent_ = 0, tracked_answered_ = 0, tracked_unattributed_ = 0;
  uint64_t new_key_counter_ = 0;
  uint64_t answer_errors_ = 0;  // tracked answers other than 200/429
  uint64_t lost_ = 0;           // still unanswered or unsent at the end
  long rss_max_kb_ = 0;

  std::string bg_prefix_, hot_request_, tr_prefix_, suffix_;
  std::deque<Clock::time_point> waiting_;     // due background requests not yet sent
  std::deque<Clock::time_point> waiting_tr_;  // due tracked requests not yet sent

  // Wall clock = steady + offset (to attribute answers to the server's epoch-aligned windows).
  double wall_offset_ = 0;
  Clock::time_point t0_;
  size_t phase_ = 0;
  Clock::time_point phase_start_, phase_end_, next_due_, next_tr_due_;
  Clock::duration tr_interval_{}, deadline_{};
  uint64_t tr_next_user_ = 0;
  bool schedule_over_ = false;
  Clock::time_point drain_end_{};

  Clock::time_point next_tick_;
  TickStats tick_;
  CpuSampler cpu_;
  double total_s_ = 0, server_cpu_s_ = 0;
};

Driver::Driver(const Options& o, LoadClient& client)
    : o_(o), client_(client), stats_(o.phases.size()) {
  if (!o_.series_path.empty()) {
    series_ = std::fopen(o_.series_path.c_str(), "w");
    std::fprintf(series_,
                 "t_s,phase,offered_rps,rps,ok,limited,other,abandoned,p50_ms,p99_ms,"
                 "tracked_ok,tracked_limited,rss_kb,server_cpu,store_keys,store_bytes,evicted,"
                 "refused_full,fast_refusals,shed,other_cpu,driver_cpu,overflow\n");
  }
  bg_prefix_ = "GET /v1/check?domain=" + o_.domain + "&" + o_.key + "=";
  hot_request_ = "GET /v1/check?domain=" + o_.domain + "&" + o_.hot_key + "=" + o_.hot_value +
                 " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  tr_prefix_ = "GET /v1/check?domain=" + o_.domain + "&" + o_.tracked_key + "=t";
  suffix_ = " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
}

void Driver::Start() {
  wall_offset_ =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count() -
      Seconds(Clock::now().time_since_epoch());
  t0_ = Clock::now();
  phase_start_ = t0_;
  phase_end_ = t0_ + FromSeconds(o_.phases[0].seconds);
  next_due_ = t0_;
  next_tr_due_ = t0_;
  tr_interval_ =
      o_.tracked > 0 ? FromSeconds(1.0 / (o_.tracked_rate * o_.tracked)) : Clock::duration{};
  deadline_ = FromSeconds(o_.deadline_ms / 1e3);
  next_tick_ = t0_ + FromSeconds(o_.tick_s);
  cpu_.Start(o_.server_pid);
}

void Driver::Run() {
  Start();
  const LoadClient::ResponseHandler on_answer =
      [this](const Pending& p, int status, std::string_view body, Clock::time_point got_at) {
        if (p.user >= 0) {
          OnTrackedAnswer(p, status, body, got_at);
        } else {
          OnBackgroundAnswer(p, status, got_at);
        }
      };
  while (true) {
    const Clock::time_point now = Clock::now();
    AdvancePhase(now);
    if (!schedule_over_) {
      Schedule(now);
    }
    Dispatch(now);
    client_.Flush();
    if (now >= next_tick_) {
      Tick();
    }
    if (schedule_over_ && ((waiting_.empty() && waiting_tr_.empty() && client_.in_flight() == 0) ||
                           now >= drain_end_)) {
      lost_ += client_.in_flight() + waiting_.size() + waiting_tr_.size();
      break;
    }
    client_.Wait(WaitTimeout(now), on_answer);
  }
  total_s_ = Seconds(Clock::now() - t0_);
  server_cpu_s_ = cpu_.ServerSecondsSinceStart();
  if (series_ != nullptr) {
    std::fclose(series_);
  }
}

// Moves to the next phase when this one's time or request count is up; after the last one the
// schedule is over and the drain begins (counted to the last phase).
void Driver::AdvancePhase(Clock::time_point now) {
  while (!schedule_over_ &&
         (now >= phase_end_ || (o_.phases[phase_].max_requests > 0 &&
                                stats_[phase_].offered >= o_.phases[phase_].max_requests))) {
    stats_[phase_].seconds = Seconds(std::min(now, phase_end_) - phase_start_);
    if (++phase_ == o_.phases.size()) {
      schedule_over_ = true;
      drain_end_ = now + FromSeconds(o_.drain_s);
      phase_ = o_.phases.size() - 1;
      break;
    }
    phase_start_ = now;
    phase_end_ = now + FromSeconds(o_.phases[phase_].seconds);
    next_due_ = now;
  }
}

// Queues the requests that fell due by `now` (open loop), or fills every background connection
// to --depth (closed loop), and queues the tracked requests due.
void Driver::Schedule(Clock::time_point now) {
  const Phase& ph = o_.phases[phase_];
  PhaseStats& ps = stats_[phase_];
  if (ph.kind == Phase::kOpen && ph.rate > 0) {
    const auto interval = FromSeconds(1.0 / ph.rate);
    while (next_due_ <= now && (ph.max_requests == 0 || ps.offered < ph.max_requests)) {
      waiting_.push_back(next_due_);
      next_due_ += interval;
      ++ps.offered;
      ++tick_.offered;
    }
  } else if (ph.kind == Phase::kClosed) {
    while (ph.max_requests == 0 || ps.offered < ph.max_requests) {
      Conn* c = client_.TakeReady(/*tracked=*/false, o_.depth);
      if (c == nullptr) {
        break;
      }
      Send(*c, -1, now, now);
      ++ps.offered;
      ++tick_.offered;
    }
  }
  if (o_.tracked > 0) {
    while (next_tr_due_ <= now) {
      waiting_tr_.push_back(next_tr_due_);
      next_tr_due_ += tr_interval_;
    }
  }
}

// Abandons the requests past --deadline-ms, sends the waiting ones on ready connections, and with
// --fail-fast fails at once those that found none.
void Driver::Dispatch(Clock::time_point now) {
  PhaseStats& ps = stats_[phase_];
  if (o_.deadline_ms > 0) {
    while (!waiting_.empty() && now - waiting_.front() > deadline_) {
      waiting_.pop_front();
      ++ps.abandoned;
      ++tick_.abandoned;
    }
  }
  while (!waiting_.empty()) {
    Conn* c = client_.TakeReady(/*tracked=*/false, o_.depth);
    if (c == nullptr) {
      break;
    }
    Send(*c, -1, waiting_.front(), now);
    waiting_.pop_front();
  }
  if (o_.fail_fast) {
    ps.overflow += waiting_.size();
    tick_.overflow += waiting_.size();
    waiting_.clear();
  }
  while (!waiting_tr_.empty()) {
    Conn* c = client_.TakeReady(/*tracked=*/true, kTrackedDepth);
    if (c == nullptr) {
      break;
    }
    Send(*c, static_cast<int32_t>(tr_next_user_++ % o_.tracked), waiting_tr_.front(), now);
    waiting_tr_.pop_front();
    ++tracked_sent_;
  }
}

// Queues on `c` the request of tracked user `user` (or, for -1, a background one).
void Driver::Send(Conn& c, int32_t user, Clock::time_point due, Clock::time_point now) {
  std::string& out = client_.Enqueue(c, Pending{due, now, user, static_cast<uint32_t>(phase_)});
  if (user >= 0) {
    out += tr_prefix_;
    out += std::to_string(user + 1);
    out += suffix_;
  } else if (o_.hot > 0 && unit_(rng_) < o_.hot) {
    out += hot_request_;
  } else {
    out += bg_prefix_;
    if (!o_.new_keys.empty()) {
      out += o_.new_keys;
      out += std::to_string(new_key_counter_++);
    } else {
      out += std::to_string(rng_() % o_.users + 1);
    }
    out += suffix_;
  }
}

// Writes one CSV row of the tick that ended at next_tick_, and asks for fresh /metrics.
void Driver::Tick() {
  const double t = Seconds(next_tick_ - t0_);
  const long rss = o_.server_pid ? StatusKb(o_.server_pid, "VmRSS") : 0;
  rss_max_kb_ = std::max(rss_max_kb_, rss);
  const CpuSample cpu = cpu_.Sample(o_.tick_s);
  if (series_ != nullptr) {
    const double s = o_.tick_s;
    const ServerMetrics& m = client_.server_metrics();
    std::fprintf(series_,
                 "%.2f,%s,%.0f,%.0f,%llu,%llu,%llu,%llu,%.3f,%.3f,%llu,%llu,%ld,%.2f,%.0f,%.0f,"
                 "%.0f,%.0f,%.0f,%.0f,%.2f,%.2f,%llu\n",
                 t, o_.phases[phase_].name.c_str(), tick_.offered / s, tick_.answered / s,
                 (unsigned long long)tick_.ok, (unsigned long long)tick_.limited,
                 (unsigned long long)tick_.other, (unsigned long long)tick_.abandoned,
                 Percentile(tick_.lat, 0.5), Percentile(tick_.lat, 0.99),
                 (unsigned long long)tick_.tr_ok, (unsigned long long)tick_.tr_limited, rss,
                 cpu.server, m.store_keys, m.store_bytes, m.evicted, m.refused_full,
                 m.fast_refusals, m.shed, cpu.other, cpu.driver,
                 (unsigned long long)tick_.overflow);
    std::fflush(series_);
  }
  tick_.Reset();
  next_tick_ += FromSeconds(o_.tick_s);
  client_.RequestMetrics();
}

// Sleep until the next request is due (or the next tick, at most 1 ms) unless woken by an
// answer: a fixed 1 ms timeout would delay due requests by up to 1 ms.
timespec Driver::WaitTimeout(Clock::time_point now) const {
  const Phase& ph = o_.phases[phase_];
  Clock::time_point wake = std::min(next_tick_, now + std::chrono::milliseconds(1));
  if (!schedule_over_ && ph.kind == Phase::kOpen && ph.rate > 0) {
    wake = std::min(wake, next_due_);
  }
  if (!schedule_over_ && o_.tracked > 0) {
    wake = std::min(wake, next_tr_due_);
  }
  const int64_t wait_ns = std::max<int64_t>(
      0, std::chrono::duration_cast<std::chrono::nanoseconds>(wake - Clock::now()).count());
  return timespec{0, static_cast<long>(wait_ns)};
}

// Attributes a tracked answer to its window from the body's resetAfterSeconds (window end =
// decision time + reset, the decision taken halfway between sending and the answer).
void Driver::OnTrackedAnswer(const Pending& p, int status, std::string_view body,
                             Clock::time_point got_at) {
  ++tracked_answered_;
  const bool ok = status == 200;
  (ok ? tick_.tr_ok : tick_.tr_limited)++;
  if (status != 200 && status != 429) {
    ++answer_errors_;
  }
  const size_t r = body.find("\"resetAfterSeconds\":");
  if (r == std::string_view::npos) {
    ++tracked_unattributed_;
    return;
  }
  const double reset = std::atof(body.data() + r + 20);
  const double mid =
      wall_offset_ + Seconds(p.sent.time_since_epoch()) + Seconds(got_at - p.sent) / 2;
  const int64_t window = std::llround((mid + reset) / o_.tracked_window_s);
  auto& w = windows_[(static_cast<uint64_t>(p.user) << 40) | (window & ((1LL << 40) - 1))];
  (ok ? w.first : w.second)++;
}

void Driver::OnBackgroundAnswer(const Pending& p, int status, Clock::time_point got_at) {
  PhaseStats& cur = stats_[p.phase];
  ++cur.answered;
  ++tick_.answered;
  const uint32_t lat = static_cast<uint32_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(got_at - p.due).count());
  const uint32_t wire = static_cast<uint32_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(got_at - p.sent).count());
  cur.lat_us.push_back(lat);
  cur.wire_lat_us.push_back(wire);
  tick_.lat.push_back(lat);
  if (status == 200) {
    ++cur.ok;
    ++tick_.ok;
  } else if (status == 429) {
    ++cur.limited;
    ++tick_.limited;
  } else {
    ++cur.other;
    ++tick_.other;
  }
}

int Driver::Report() {
  uint64_t total_other = 0;
  const uint64_t total_answered = PrintPhases(&total_other);
  if (o_.tracked > 0) {
    PrintTracked();
  }
  const uint64_t errors = client_.broken() + answer_errors_;
  std::printf(
      "total seconds=%.2f answered=%llu other=%llu lost=%llu conn_errors=%llu rss_max_kb=%ld "
      "hwm_kb=%ld server_cpu_us_per_req=%.2f other_cpu=%.2f\n",
      total_s_, (unsigned long long)total_answered, (unsigned long long)total_other,
      (unsigned long long)(client_.lost() + lost_), (unsigned long long)errors, rss_max_kb_,
      o_.server_pid ? StatusKb(o_.server_pid, "VmHWM") : 0,
      total_answered ? server_cpu_s_ * 1e6 / total_answered : 0.0, cpu_.MeanOther());
  return errors == 0 && total_other == 0 ? 0 : 1;
}

// Prints one `phase` line per phase. Returns the answers of all phases and sets `total_other` to
// those other than 200/429.
uint64_t Driver::PrintPhases(uint64_t* total_other) {
  uint64_t total_answered = 0;
  for (size_t i = 0; i < o_.phases.size(); ++i) {
    PhaseStats& s = stats_[i];
    if (s.seconds == 0) {
      s.seconds = o_.phases[i].seconds;
    }
    total_answered += s.answered;
    *total_other += s.other;
    std::printf(
        "phase=%s seconds=%.2f offered_rps=%.0f rps=%.0f requests=%llu status200=%llu "
        "status429=%llu other=%llu abandoned=%llu overflow=%llu p50_ms=%.3f p90_ms=%.3f "
        "p99_ms=%.3f "
        "p999_ms=%.3f max_ms=%.3f wire_p50_ms=%.3f wire_p99_ms=%.3f\n",
        o_.phases[i].name.c_str(), s.seconds, s.offered / s.seconds, s.answered / s.seconds,
        (unsigned long long)s.answered, (unsigned long long)s.ok, (unsigned long long)s.limited,
        (unsigned long long)s.other, (unsigned long long)s.abandoned,
        (unsigned long long)s.overflow, Percentile(s.lat_us, 0.5), Percentile(s.lat_us, 0.9),
        Percentile(s.lat_us, 0.99), Percentile(s.lat_us, 0.999), Percentile(s.lat_us, 1.0),
        Percentile(s.wire_lat_us, 0.5), Percentile(s.wire_lat_us, 0.99));
  }
  return total_answered;
}

void Driver::PrintTracked() {
  WindowSummary w;
  for (const auto& [k, v] : windows_) {
    w.max_admitted = std::max(w.max_admitted, v.first);
    if (v.first > o_.tracked_limit) {
      ++w.over;
    }
    if (v.second == 0) {
      ++w.unsaturated;
      continue;
    }
    ++w.checked;
    w.min_admitted = std::min(w.min_admitted, v.first);
    if (v.first == o_.tracked_limit) {
      ++w.exact;
    } else if (v.first < o_.tracked_limit) {
      ++w.under;
    }
  }
  if (!o_.windows_path.empty()) {
    WriteWindows();
  }
  std::printf(
      "tracked users=%llu limit=%llu window_s=%g sent=%llu answered=%llu unattributed=%llu "
      "windows_checked=%llu exact=%llu over=%llu under=%llu unsaturated=%llu "
      "min_admitted=%u max_admitted=%u\n",
      (unsigned long long)o_.tracked, (unsigned long long)o_.tracked_limit, o_.tracked_window_s,
      (unsigned long long)tracked_sent_, (unsigned long long)tracked_answered_,
      (unsigned long long)tracked_unattributed_, (unsigned long long)w.checked,
      (unsigned long long)w.exact, (unsigned long long)w.over, (unsigned long long)w.under,
      (unsigned long long)w.unsaturated, w.checked ? w.min_admitted : 0, w.max_admitted);
}

// Writes --windows: one row per tracked user and window, in window order.
void Driver::WriteWindows() {
  std::map<std::pair<int64_t, uint64_t>, std::pair<uint32_t, uint32_t>> sorted;
  for (const auto& [k, v] : windows_) {
    sorted[{static_cast<int64_t>(k & ((1ULL << 40) - 1)), k >> 40}] = v;
  }
  std::FILE* f = std::fopen(o_.windows_path.c_str(), "w");
  // window_end_s: wall clock; t_s: the same since the driver started (the series' t_s).
  const double t0_wall = wall_offset_ + Seconds(t0_.time_since_epoch());
  std::fprintf(f, "window_end_s,t_s,user,admitted,refused\n");
  for (const auto& [k, v] : sorted) {
    std::fprintf(f, "%.3f,%.3f,t%llu,%u,%u\n", k.first * o_.tracked_window_s,
                 k.first * o_.tracked_window_s - t0_wall, (unsigned long long)k.second + 1, v.first,
                 v.second);
  }
  std::fclose(f);
}

}  // namespace
}  // namespace floodgate::overload

int main(int argc, char** argv) {
  using floodgate::overload::Driver;
  floodgate::overload::Options o;
  if (!floodgate::overload::ParseFlags(argc, argv, &o)) {
    return 2;
  }
  prctl(PR_SET_TIMERSLACK, 1UL);  // wake when a request is due, not up to 50 us later
  floodgate::overload::LoadClient client;
  if (!client.Open(o.port, o.connections, o.tracked > 0 ? o.tracked_connections : 0, o.metrics)) {
    return 1;
  }
  Driver driver(o, client);
  driver.Run();
  return driver.Report();
}
