// floodgate: the binary. Thin by design: parse the command line (flags.h: the commands, their
// flags and FLOODGATE_* environment variables, --help, --version), run the command, and for
// `serve` wait for a signal. `floodgate --help` and `floodgate COMMAND --help` list every flag.

#include <sys/resource.h>

#include <csignal>
#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "src/admin/config_source.h"
#include "src/common/log.h"
#include "src/common/protobuf_log.h"
#include "src/common/rate_limited_log.h"
#include "src/core/config.h"
#include "src/limiter/limiter.h"
#include "src/server/flags.h"
#include "src/server/server.h"
#include "src/server/startup_log.h"

namespace {

using floodgate::server::CheckCommand;
using floodgate::server::CommandLine;
using floodgate::server::ServeCommand;
using floodgate::server::ValidateCommand;

// Reports a command that failed (a bad config, a port in use): exit code 1. A bad command line
// is refused by ParseCommandLine with exit code 2.
int Fail(absl::string_view message) {
  std::fprintf(stderr, "floodgate: %.*s\n", static_cast<int>(message.size()), message.data());
  return 1;
}

int Validate(const ValidateCommand& command) {
  auto config = floodgate::admin::LoadConfigSource(command.path);
  if (!config.ok()) {
    return Fail(config.status().message());
  }
  for (const auto& [name, domain] : (*config)->domains) {
    std::printf("%s: domain %s ok\n", domain->file.c_str(), name.c_str());
  }
  return 0;
}

int Check(const CheckCommand& command) {
  auto config = floodgate::admin::LoadConfigSource(command.config_path);
  if (!config.ok()) {
    return Fail(config.status().message());
  }
  auto store = floodgate::NewShardedStore({});
  floodgate::limiter::Limiter limiter(store->get(), floodgate::KeyHasher::Random(), *config);
  floodgate::limiter::CheckRequest request;
  request.domain = command.domain;
  request.hits_addend = command.hits;
  floodgate::limiter::DescriptorRequest desc;
  for (const auto& [key, value] : command.entries) {
    desc.entries.push_back({key, value});
  }
  request.descriptors.push_back(desc);
  auto response = limiter.Check(request);
  if (!response.ok()) {
    return Fail(response.status().message());
  }
  const auto& status = response->descriptors[0];
  std::printf("%s\n", response->overall == floodgate::limiter::Code::kOk ? "OK" : "OVER_LIMIT");
  for (const auto& r : status.limits) {
    std::printf("  %s %s: limit %llu, remaining %llu\n", r.rule->stats_key.c_str(),
                std::string(floodgate::AlgorithmName(r.rule->spec.algorithm)).c_str(),
                static_cast<unsigned long long>(r.decision.limit),
                static_cast<unsigned long long>(r.decision.remaining));
  }
  return response->overall == floodgate::limiter::Code::kOk ? 0 : 1;
}

int Serve(const ServeCommand& command) {
  const floodgate::server::ServerOptions& options = command.options;
  floodgate::common::SetLogFormat(command.log_format);
  floodgate::common::SetLogLevel(command.log_level);

  // Thousands of client connections need thousands of descriptors: raise the soft limit to
  // the hard one (Debian's default soft limit is 1024).
  rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
  }

  // Block the stop signals in every thread; the main thread waits for them below.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  auto server = floodgate::server::Server::Start(options);
  if (!server.ok()) {
    return Fail(absl::StrCat("cannot start: ", server.status().message()));
  }
  // Before the line below: whoever has read that line finds this one written.
  const absl::string_view version = floodgate::server::Version();
  floodgate::server::LogStarted(options, **server,
                                std::string_view(version.data(), version.size()));
  // Tests and scripts read this line to learn the ports (useful with port 0).
  std::printf("floodgate: listening http=%d grpc=%d config=%s\n", (*server)->http_port(),
              (*server)->grpc_port(), options.config_path.c_str());
  std::fflush(stdout);

  int signal = 0;
  sigwait(&signals, &signal);
  floodgate::common::Log(floodgate::common::LogLevel::kInfo, "draining",
                         {{"signal", signal}, {"grace", command.drain_timeout}});
  (*server)->Shutdown(command.drain_timeout);
  floodgate::common::Log(floodgate::common::LogLevel::kInfo, "stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Debian's abseil checks every absl::Mutex acquisition for lock-order cycles, through one
  // global lock: 1.7x the cost of a decision (docs/store.md). Tests keep the check on.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  // protobuf logs some caller input (invalid UTF-8 in a gRPC request): rate-limited like ours.
  floodgate::common::RouteProtobufLog(&floodgate::common::RateLimitedLog::Default());
  const CommandLine line = floodgate::server::ParseCommandLine(argc, argv);
  std::fputs(line.out.c_str(), stdout);
  std::fputs(line.err.c_str(), stderr);
  switch (line.kind) {
    case CommandLine::Kind::kServe:
      return Serve(line.serve);
    case CommandLine::Kind::kValidate:
      return Validate(line.validate);
    case CommandLine::Kind::kCheck:
      return Check(line.check);
    case CommandLine::Kind::kExit:
      break;
  }
  return line.exit_code;
}
