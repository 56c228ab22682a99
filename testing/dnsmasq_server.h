#pragma once

// A real dnsmasq for tests of DNS discovery, on 127.0.0.1 and a free port, answering from a hosts
// file the test writes (SetRecords). It answers every name itself: a name with records of one
// family gets NODATA for the other, an unknown name NXDOMAIN (--local=/#/), never REFUSED.
//
// Readiness is checked by asking it (a DNS query, bounded), and a record change is complete when
// dnsmasq logs that it read the new file, so no test sleeps.
//
// Thread-safety: one thread uses an instance.

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace floodgate::testing {

class DnsmasqServer {
 public:
  // Name -> its addresses ("127.0.0.2", "::1").
  using Records = std::map<std::string, std::vector<std::string>>;

  // Starts /usr/sbin/dnsmasq serving `records`; fails when it does not answer within 10 s.
  static absl::StatusOr<std::unique_ptr<DnsmasqServer>> Start(const Records& records = {});
  ~DnsmasqServer();

  int port() const { return port_; }
  // Returns "127.0.0.1:PORT", as DnsDiscoveryOptions::servers takes it.
  std::string address() const;

  // Replaces every record, makes dnsmasq read them (SIGHUP) and waits, at most 10 s, until it has.
  absl::Status SetRecords(const Records& records);
  // Stops it (SIGTERM) and waits; the port stays this server's for Restart.
  void Stop();
  // Kills it (SIGKILL) and waits.
  void Kill();
  // Starts it again on the same port with the last records.
  absl::Status Restart();
  // Returns what dnsmasq logged so far (for failure messages).
  std::string Log() const { return log_; }

 private:
  DnsmasqServer() = default;
  absl::Status Launch();
  absl::Status WriteRecords(const Records& records);
  // Reads the log until it says the hosts file was read `reads` times in all, or `timeout_ms`.
  absl::Status AwaitReads(int reads, int timeout_ms);
  absl::Status AwaitAnswer(int timeout_ms);
  void Signal(int signal);

  std::string dir_;
  std::string hosts_path_;
  int port_ = 0;
  pid_t pid_ = -1;
  int log_fd_ = -1;  // the read end of dnsmasq's stderr
  std::string log_;
};

}  // namespace floodgate::testing
