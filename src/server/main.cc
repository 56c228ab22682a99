// floodgate: the command line. Thin by design: parse flags, call the library, wait for a signal.
//
//   floodgate serve --config PATH [--http ADDR] [--grpc ADDR] [--admin-token T]
//                   [--http-threads N] [--max-connections N] [--max-connections-per-client N]
//                   [--max-memory BYTES] [--grpc-impl native|grpcpp] [--grpc-threads N]
//                   [--node-id ID --peers ID=HOST:PORT,... [--peer ADDR] [--cluster-key K]
//                    [--replicas N] [--forward-batch-max N]]
//   floodgate validate PATH
//   floodgate check --config PATH --domain D [--hits N] KEY=VALUE...
//
// Every flag can also come from the environment, as FLOODGATE_ and its name in capitals with
// '_' for '-': FLOODGATE_CONFIG, FLOODGATE_HTTP, FLOODGATE_GRPC, FLOODGATE_ADMIN_TOKEN,
// FLOODGATE_HTTP_THREADS, FLOODGATE_MAX_CONNECTIONS, FLOODGATE_MAX_CONNECTIONS_PER_CLIENT,
// FLOODGATE_MAX_MEMORY, FLOODGATE_GRPC_IMPL, FLOODGATE_GRPC_THREADS, FLOODGATE_NODE_ID,
// FLOODGATE_PEERS, FLOODGATE_PEER, FLOODGATE_CLUSTER_KEY, FLOODGATE_REPLICAS,
// FLOODGATE_FORWARD_BATCH_MAX, and for check FLOODGATE_DOMAIN and FLOODGATE_HITS.
// A flag on the command line wins over the environment.

#include <sys/resource.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "src/admin/config_source.h"
#include "src/core/config.h"
#include "src/limiter/limiter.h"
#include "src/server/server.h"

namespace {

using floodgate::server::ServerOptions;

constexpr char kUsage[] =
    "usage:\n"
    "  floodgate serve --config PATH [--http ADDR] [--grpc ADDR] [--admin-token TOKEN]\n"
    "                  [--http-threads N] [--max-memory BYTES] [--max-connections N]\n"
    "                  [--max-connections-per-client N]\n"
    "                  [--grpc-impl native|grpcpp] [--grpc-threads N]\n"
    "                  [--node-id ID --peers ID=HOST:PORT,... [--peer HOST:PORT]\n"
    "                   [--cluster-key SECRET] [--replicas R] [--forward-batch-max N]]\n"
    "                  (cluster mode: docs/cluster.md)\n"
    "  floodgate validate PATH\n"
    "  floodgate check --config PATH --domain DOMAIN [--hits N] KEY=VALUE...\n";

struct Flags {
  std::map<std::string, std::string> values;
  std::vector<std::string> positional;
};

// Parses "--name value" and "--name=value". Returns false on a flag without a value.
bool ParseFlags(int argc, char** argv, int first, Flags& flags, std::string& error) {
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) {
      flags.positional.push_back(arg);
      continue;
    }
    arg = arg.substr(2);
    const size_t eq = arg.find('=');
    if (eq != std::string::npos) {
      flags.values[arg.substr(0, eq)] = arg.substr(eq + 1);
    } else if (i + 1 < argc) {
      flags.values[arg] = argv[++i];
    } else {
      error = absl::StrCat("flag --", arg, " needs a value");
      return false;
    }
  }
  return true;
}

// Returns the flag, else the environment variable, else `fallback`.
std::string Get(const Flags& flags, const std::string& name, const char* env,
                const std::string& fallback) {
  auto it = flags.values.find(name);
  if (it != flags.values.end()) {
    return it->second;
  }
  const char* from_env = std::getenv(env);
  return from_env != nullptr && *from_env != '\0' ? std::string(from_env) : fallback;
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "floodgate: %s\n", message.c_str());
  return 2;
}

int Validate(const Flags& flags) {
  if (flags.positional.size() != 1) {
    return Fail(absl::StrCat("validate takes one PATH\n", kUsage));
  }
  auto config = floodgate::admin::LoadConfigSource(flags.positional[0]);
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", std::string(config.status().message()).c_str());
    return 1;
  }
  for (const auto& [name, domain] : (*config)->domains) {
    std::printf("%s: domain %s ok\n", domain->file.c_str(), name.c_str());
  }
  return 0;
}

int Check(const Flags& flags) {
  const std::string path = Get(flags, "config", "FLOODGATE_CONFIG", "");
  auto config = floodgate::admin::LoadConfigSource(path);
  if (!config.ok()) {
    return Fail(std::string(config.status().message()));
  }
  auto store = floodgate::NewShardedStore({});
  floodgate::limiter::Limiter limiter(store->get(), floodgate::KeyHasher::Random(), *config);
  floodgate::limiter::CheckRequest request;
  request.domain = Get(flags, "domain", "FLOODGATE_DOMAIN", "");
  uint64_t hits = 1;
  if (!absl::SimpleAtoi(Get(flags, "hits", "FLOODGATE_HITS", "1"), &hits)) {
    return Fail("--hits must be a number");
  }
  request.hits_addend = hits;
  floodgate::limiter::DescriptorRequest desc;
  for (const std::string& kv : flags.positional) {
    const size_t eq = kv.find('=');
    if (eq == std::string::npos) {
      return Fail(absl::StrCat("expected KEY=VALUE, got '", kv, "'"));
    }
    desc.entries.push_back({kv.substr(0, eq), kv.substr(eq + 1)});
  }
  request.descriptors.push_back(desc);
  auto response = limiter.Check(request);
  if (!response.ok()) {
    return Fail(std::string(response.status().message()));
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

// Fills `options` from the serve flags; returns the exit code of a refusal (0 when they are good).
int ParseServeFlags(const Flags& flags, ServerOptions& options) {
  options.config_path = Get(flags, "config", "FLOODGATE_CONFIG", "");
  if (options.config_path.empty()) {
    return Fail(absl::StrCat("serve needs --config PATH\n", kUsage));
  }
  options.http_address = Get(flags, "http", "FLOODGATE_HTTP", options.http_address);
  options.grpc_address = Get(flags, "grpc", "FLOODGATE_GRPC", options.grpc_address);
  options.admin_token = Get(flags, "admin-token", "FLOODGATE_ADMIN_TOKEN", "");
  if (!absl::SimpleAtoi(Get(flags, "http-threads", "FLOODGATE_HTTP_THREADS", "2"),
                        &options.http_threads) ||
      options.http_threads < 1 || options.http_threads > 256) {
    return Fail("--http-threads must be a number from 1 to 256");
  }
  if (!absl::SimpleAtoi(Get(flags, "max-connections", "FLOODGATE_MAX_CONNECTIONS", "20000"),
                        &options.max_connections) ||
      options.max_connections < 1) {
    return Fail("--max-connections must be a positive number");
  }
  if (!absl::SimpleAtoi(
          Get(flags, "max-connections-per-client", "FLOODGATE_MAX_CONNECTIONS_PER_CLIENT", "0"),
          &options.max_connections_per_client)) {
    return Fail("--max-connections-per-client must be a number (0: no cap)");
  }
  options.grpc_impl = Get(flags, "grpc-impl", "FLOODGATE_GRPC_IMPL", "");
  if (!options.grpc_impl.empty() && options.grpc_impl != "native" &&
      options.grpc_impl != "grpcpp") {
    return Fail("--grpc-impl must be native or grpcpp");
  }
  if (!absl::SimpleAtoi(Get(flags, "grpc-threads", "FLOODGATE_GRPC_THREADS", "2"),
                        &options.grpc_threads) ||
      options.grpc_threads < 1 || options.grpc_threads > 256) {
    return Fail("--grpc-threads must be a number from 1 to 256");
  }
  if (!absl::SimpleAtoi(Get(flags, "max-memory", "FLOODGATE_MAX_MEMORY", "0"),
                        &options.max_memory_bytes)) {
    return Fail("--max-memory must be a number of bytes");
  }

  options.node_id = Get(flags, "node-id", "FLOODGATE_NODE_ID", "");
  options.peers = Get(flags, "peers", "FLOODGATE_PEERS", "");
  options.peer_address = Get(flags, "peer", "FLOODGATE_PEER", "");
  options.cluster_key = Get(flags, "cluster-key", "FLOODGATE_CLUSTER_KEY", "");
  if (!absl::SimpleAtoi(Get(flags, "replicas", "FLOODGATE_REPLICAS", "2"), &options.replicas) ||
      options.replicas < 1 || options.replicas > 8) {
    return Fail("--replicas must be a number from 1 to 8");
  }
  if (!absl::SimpleAtoi(Get(flags, "forward-batch-max", "FLOODGATE_FORWARD_BATCH_MAX", "128"),
                        &options.forward_batch_max) ||
      options.forward_batch_max < 1 || options.forward_batch_max > 4096) {
    return Fail("--forward-batch-max must be a number from 1 to 4096");
  }
  if (options.peers.empty() && (!options.node_id.empty() || !options.peer_address.empty())) {
    return Fail("--node-id and --peer need --peers (the cluster's members)");
  }
  return 0;
}

int Serve(const Flags& flags) {
  ServerOptions options;
  if (int refused = ParseServeFlags(flags, options); refused != 0) {
    return refused;
  }

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
    return Fail(std::string(server.status().message()));
  }
  // Tests and scripts read this line to learn the ports (useful with port 0).
  std::printf("floodgate: listening http=%d grpc=%d config=%s\n", (*server)->http_port(),
              (*server)->grpc_port(), options.config_path.c_str());
  std::fflush(stdout);

  int signal = 0;
  sigwait(&signals, &signal);
  std::fprintf(stderr, "floodgate: signal %d, draining\n", signal);
  (*server)->Shutdown(absl::Seconds(5));
  std::fprintf(stderr, "floodgate: stopped\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Debian's abseil checks every absl::Mutex acquisition for lock-order cycles, through one
  // global lock: 1.7x the cost of a decision (docs/store.md). Tests keep the check on.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  if (argc < 2) {
    std::fprintf(stderr, "%s", kUsage);
    return 2;
  }
  const std::string command = argv[1];
  Flags flags;
  std::string error;
  if (!ParseFlags(argc, argv, 2, flags, error)) {
    return Fail(error);
  }
  if (command == "serve") return Serve(flags);
  if (command == "validate") return Validate(flags);
  if (command == "check") return Check(flags);
  std::fprintf(stderr, "%s", kUsage);
  return 2;
}
