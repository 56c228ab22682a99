#pragma once

// Decision histories for cluster tests: what each client saw, one record per decision.
//
// A load generator calls Recorder::Record (or RecordCall) from any number of threads, then
// writes the history as JSON Lines; the checker (checker.h, or the `history_checker` CLI)
// reads it back and checks it against the limit's bound. The format is one object per line:
//
//   {"node":"n1","key":"user=alice","time_ns":1700000000123456789,"allowed":true}
//
// `time_ns` is client-observed Unix time in nanoseconds (the caller supplies it: time is
// injected, the recorder reads no clock). Use the midpoint of the call, or its completion time;
// the checker's boundary slack covers the difference from the server's own clock.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace floodgate::history {

// One decision as a client saw it. A plain value.
struct Record {
  std::string node;     // id of the node that answered ("n0", or an address)
  std::string key;      // the limited key (any string; one bound per key)
  int64_t time_ns = 0;  // client-observed Unix time of the decision
  bool allowed = false;

  friend bool operator==(const Record&, const Record&) = default;
};

// Returns `record` as one JSON object, without a trailing newline.
std::string ToJsonLine(const Record& record);
// Parses one JSON object with the four fields above, in any order; unknown fields with scalar
// values are ignored. InvalidArgument on malformed input or a missing field.
absl::StatusOr<Record> ParseJsonLine(std::string_view line);

// Writes `records`, one line each, replacing `path`. Internal error when the file cannot be
// written.
absl::Status WriteJsonLines(const std::string& path, const std::vector<Record>& records);
// Reads a file written by WriteJsonLines (blank lines are skipped). NotFound when the file is
// missing; InvalidArgument naming the line number when a line is malformed.
absl::StatusOr<std::vector<Record>> ReadJsonLines(const std::string& path);

// Collects records from many threads.
//
// Thread-safety: every method may be called concurrently. Records are kept in arrival order;
// the checker does not depend on order.
class Recorder {
 public:
  Recorder() = default;
  Recorder(const Recorder&) = delete;
  Recorder& operator=(const Recorder&) = delete;

  // Records one decision observed at `time_ns`.
  void Record(std::string_view node, std::string_view key, int64_t time_ns, bool allowed);
  // Records one decision of a call that started at `start_ns` and completed at `end_ns`; its
  // time is the midpoint.
  void RecordCall(std::string_view node, std::string_view key, int64_t start_ns, int64_t end_ns,
                  bool allowed);
  // Appends records (for example, another recorder's).
  void Add(const std::vector<history::Record>& records);

  // Returns a copy of everything recorded so far.
  std::vector<history::Record> Snapshot() const;
  size_t size() const;

  // Writes the snapshot to `path` as JSON Lines (see WriteJsonLines).
  absl::Status WriteJsonLines(const std::string& path) const;

 private:
  mutable absl::Mutex mu_;
  std::vector<history::Record> records_ ABSL_GUARDED_BY(mu_);
};

}  // namespace floodgate::history
