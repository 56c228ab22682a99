#include "src/discovery/dns_resolver.h"

#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netdb.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <mutex>

#include "absl/strings/str_cat.h"

namespace floodgate::discovery {
namespace {

// One outstanding query (A or AAAA); filled by OnAnswer, which c-ares calls exactly once per
// query, from inside ares_process_fd or ares_cancel on the resolving thread.
struct Query {
  int type = 0;  // ns_t_a or ns_t_aaaa
  bool done = false;
  int status = ARES_SUCCESS;
  std::vector<std::string> addresses;
};

void OnAnswer(void* arg, int status, int /*timeouts*/, unsigned char* answer, int length) {
  Query& query = *static_cast<Query*>(arg);
  query.done = true;
  query.status = status;
  if (status != ARES_SUCCESS) {
    return;
  }
  hostent* host = nullptr;
  // ENODATA here: an answer with no address of the type (a CNAME alone), which is NODATA.
  query.status = query.type == ns_t_a
                     ? ares_parse_a_reply(answer, length, &host, nullptr, nullptr)
                     : ares_parse_aaaa_reply(answer, length, &host, nullptr, nullptr);
  if (query.status != ARES_SUCCESS || host == nullptr) {
    return;
  }
  for (char** address = host->h_addr_list; *address != nullptr; ++address) {
    char text[INET6_ADDRSTRLEN] = {};
    if (inet_ntop(host->h_addrtype, *address, text, sizeof(text)) != nullptr) {
      query.addresses.push_back(text);
    }
  }
  ares_free_hostent(host);
}

// Whether `status` is the server saying the name has no records of the type (a real answer).
bool IsNoRecords(int status) { return status == ARES_ENOTFOUND || status == ARES_ENODATA; }

// Says what a failed query's status means, for someone reading the log or /v1/cluster.
std::string Explain(int status, absl::Duration timeout) {
  switch (status) {
    case ARES_ETIMEOUT:
    case ARES_ECANCELLED:  // our own deadline (ares_cancel) when search domains used it up
      return absl::StrCat("no answer within ", absl::FormatDuration(timeout));
    case ARES_ECONNREFUSED:
      return "connection refused (is the DNS server running?)";
    case ARES_ESERVFAIL:
      return "the server failed to answer (SERVFAIL)";
    case ARES_EREFUSED:
      return "the server refused the query (REFUSED)";
    default:
      return ares_strerror(status);
  }
}

int ToMilliseconds(absl::Duration d) {
  return static_cast<int>(std::clamp<int64_t>(
      absl::ToInt64Milliseconds(absl::Ceil(d, absl::Milliseconds(1))), 0, INT32_MAX));
}

class AresResolver final : public DnsResolver {
 public:
  AresResolver(ares_channel channel, int wake_fd, std::string servers, absl::Duration timeout)
      : channel_(channel), wake_fd_(wake_fd), servers_(std::move(servers)), timeout_(timeout) {}
  ~AresResolver() override {
    // No query is outstanding: Resolve cancels what it started before it returns.
    ares_destroy(channel_);
    close(wake_fd_);
  }

  absl::StatusOr<std::vector<std::string>> Resolve(const std::string& name) override {
    if (interrupted_.load()) {
      return absl::CancelledError("DNS discovery stopped");
    }
    Query a{.type = ns_t_a};
    Query aaaa{.type = ns_t_aaaa};
    ares_search(channel_, name.c_str(), ns_c_in, ns_t_a, OnAnswer, &a);
    ares_search(channel_, name.c_str(), ns_c_in, ns_t_aaaa, OnAnswer, &aaaa);
    const absl::Time deadline = absl::Now() + timeout_;
    while (!a.done || !aaaa.done) {
      const absl::Duration left = deadline - absl::Now();
      if (interrupted_.load() || left <= absl::ZeroDuration()) {
        ares_cancel(channel_);  // runs the callbacks of both queries now (ARES_ECANCELLED)
        break;
      }
      Wait(left);
    }
    if (interrupted_.load()) {
      return absl::CancelledError("DNS discovery stopped");
    }
    for (const Query* query : {&a, &aaaa}) {
      if (query->status != ARES_SUCCESS && !IsNoRecords(query->status)) {
        return absl::UnavailableError(
            absl::StrCat("DNS lookup of ", name, " (", query->type == ns_t_a ? "A" : "AAAA",
                         ") via ", servers_, " failed: ", Explain(query->status, timeout_)));
      }
    }
    std::vector<std::string> addresses = std::move(a.addresses);
    addresses.insert(addresses.end(), aaaa.addresses.begin(), aaaa.addresses.end());
    return addresses;
  }

  void Interrupt() override {
    interrupted_.store(true);
    const uint64_t one = 1;
    (void)!write(wake_fd_, &one, sizeof(one));
  }

 private:
  // Waits, at most `left`, for c-ares's sockets, its next retransmission time or Interrupt, and
  // lets c-ares handle what happened.
  void Wait(absl::Duration left) {
    ares_socket_t sockets[ARES_GETSOCK_MAXNUM];
    const int mask = ares_getsock(channel_, sockets, ARES_GETSOCK_MAXNUM);
    pollfd fds[ARES_GETSOCK_MAXNUM + 1];
    int n = 0;
    for (int i = 0; i < ARES_GETSOCK_MAXNUM; ++i) {
      const short events = static_cast<short>((ARES_GETSOCK_READABLE(mask, i) ? POLLIN : 0) |
                                              (ARES_GETSOCK_WRITABLE(mask, i) ? POLLOUT : 0));
      if (events != 0) {
        fds[n++] = pollfd{sockets[i], events, 0};
      }
    }
    fds[n] = pollfd{wake_fd_, POLLIN, 0};
    timeval max = absl::ToTimeval(left);
    timeval next;
    const timeval* wait = ares_timeout(channel_, &max, &next);
    const int ready =
        poll(fds, static_cast<nfds_t>(n + 1), ToMilliseconds(absl::DurationFromTimeval(*wait)));
    if (ready <= 0) {
      ares_process_fd(channel_, ARES_SOCKET_BAD, ARES_SOCKET_BAD);  // timeouts only
      return;
    }
    for (int i = 0; i < n; ++i) {
      if (fds[i].revents == 0) {
        continue;
      }
      // An error or hang-up is read so that c-ares sees it (a refused UDP port, a closed TCP).
      const bool readable = (fds[i].revents & (POLLIN | POLLERR | POLLHUP)) != 0;
      const bool writable = (fds[i].revents & POLLOUT) != 0;
      ares_process_fd(channel_, readable ? fds[i].fd : ARES_SOCKET_BAD,
                      writable ? fds[i].fd : ARES_SOCKET_BAD);
    }
  }

  const ares_channel channel_;
  const int wake_fd_;          // an eventfd, written by Interrupt, never drained
  const std::string servers_;  // for messages
  const absl::Duration timeout_;
  std::atomic<bool> interrupted_{false};
};

}  // namespace

absl::StatusOr<std::unique_ptr<DnsResolver>> NewAresResolver(const AresResolverOptions& options) {
  if (options.query_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("the DNS query timeout must be above zero");
  }
  static std::once_flag library_once;
  static int library_status = ARES_SUCCESS;
  std::call_once(library_once, [] { library_status = ares_library_init(ARES_LIB_INIT_ALL); });
  if (library_status != ARES_SUCCESS) {
    return absl::InternalError(
        absl::StrCat("cannot initialise c-ares: ", ares_strerror(library_status)));
  }
  ares_options ares{};
  ares.timeout = ToMilliseconds(options.query_timeout);
  ares.tries = 1;
  ares_channel channel = nullptr;
  int status = ares_init_options(&channel, &ares, ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
  if (status != ARES_SUCCESS) {
    return absl::InternalError(absl::StrCat("cannot start c-ares: ", ares_strerror(status)));
  }
  if (!options.servers.empty() &&
      (status = ares_set_servers_ports_csv(channel, options.servers.c_str())) != ARES_SUCCESS) {
    ares_destroy(channel);
    return absl::InvalidArgumentError(
        absl::StrCat("bad DNS servers \"", options.servers,
                     "\" (expected IP[:PORT],...): ", ares_strerror(status)));
  }
  const int wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd < 0) {
    ares_destroy(channel);
    return absl::InternalError("cannot make an eventfd for the DNS resolver");
  }
  return std::make_unique<AresResolver>(
      channel, wake_fd,
      options.servers.empty() ? std::string("the system's DNS servers (/etc/resolv.conf)")
                              : options.servers,
      options.query_timeout);
}

}  // namespace floodgate::discovery
