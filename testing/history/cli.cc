#include "testing/history/cli.h"

#include <map>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "testing/history/checker.h"
#include "testing/history/record.h"

namespace floodgate::history {
namespace {

constexpr char kUsage[] =
    "usage: history_checker --history FILE --limit N --period DURATION\n"
    "                       [--window fixed|sliding] [--tolerance N|failover]\n"
    "                       [--slack DURATION] [--exact] [--key KEY]... [--verbose]\n"
    "  DURATION: 1h, 90s, 250ms, 1.5s. Exit status: 0 pass, 1 violation, 2 usage or input error.\n";

bool ParseDurationNs(const std::string& text, int64_t& ns) {
  absl::Duration d;
  if (!absl::ParseDuration(text, &d) || d < absl::ZeroDuration()) {
    return false;
  }
  ns = absl::ToInt64Nanoseconds(d);
  return true;
}

}  // namespace

int RunHistoryChecker(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  std::map<std::string, std::string> flags;
  std::set<std::string> keys;
  bool exact = false, verbose = false;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string name = args[i];
    if (name.rfind("--", 0) != 0) {
      err << "unexpected argument '" << name << "'\n" << kUsage;
      return kExitUsage;
    }
    name = name.substr(2);
    if (name == "exact" || name == "verbose") {
      (name == "exact" ? exact : verbose) = true;
      continue;
    }
    std::string value;
    const size_t eq = name.find('=');
    if (eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      err << "flag --" << name << " needs a value\n" << kUsage;
      return kExitUsage;
    }
    if (name == "key") {
      keys.insert(value);
    } else if (name == "history" || name == "limit" || name == "period" || name == "window" ||
               name == "tolerance" || name == "slack") {
      flags[name] = value;
    } else {
      err << "unknown flag --" << name << "\n" << kUsage;
      return kExitUsage;
    }
  }
  if (!flags.contains("history") || !flags.contains("limit") || !flags.contains("period")) {
    err << "--history, --limit and --period are required\n" << kUsage;
    return kExitUsage;
  }

  Bound bound;
  if (!absl::SimpleAtoi(flags["limit"], &bound.limit)) {
    err << "--limit must be a non-negative integer\n";
    return kExitUsage;
  }
  if (!ParseDurationNs(flags["period"], bound.period_ns)) {
    err << "--period must be a duration such as 1h or 500ms\n";
    return kExitUsage;
  }
  if (flags.contains("slack") && !ParseDurationNs(flags["slack"], bound.slack_ns)) {
    err << "--slack must be a duration such as 50ms\n";
    return kExitUsage;
  }
  if (flags.contains("tolerance")) {
    if (flags["tolerance"] == "failover") {
      bound.tolerance = FailoverTolerance(bound.limit);
    } else if (!absl::SimpleAtoi(flags["tolerance"], &bound.tolerance)) {
      err << "--tolerance must be a non-negative integer or 'failover'\n";
      return kExitUsage;
    }
  }
  const std::string window = flags.contains("window") ? flags["window"] : "fixed";
  if (window == "sliding") {
    bound.kind = WindowKind::kSliding;
  } else if (window != "fixed") {
    err << "--window must be fixed or sliding\n";
    return kExitUsage;
  }
  if (absl::Status valid = ValidateBound(bound); !valid.ok()) {
    err << valid.message() << "\n";
    return kExitUsage;
  }

  absl::StatusOr<std::vector<Record>> records = ReadJsonLines(flags["history"]);
  if (!records.ok()) {
    err << records.status().message() << "\n";
    return kExitUsage;
  }
  if (!keys.empty()) {
    std::erase_if(*records, [&](const Record& r) { return !keys.contains(r.key); });
  }

  Checker checker(bound);
  absl::StatusOr<Report> report = checker.CheckBound(*records);
  if (!report.ok()) {
    err << report.status().message() << "\n";
    return kExitUsage;
  }
  out << report->Summary(verbose);
  bool pass = report->pass;
  if (exact) {
    absl::StatusOr<Report> exactness = checker.CheckExact(*records);
    if (!exactness.ok()) {
      err << exactness.status().message() << "\n";
      return kExitUsage;
    }
    out << exactness->Summary(verbose);
    pass = pass && exactness->pass;
  }
  return pass ? kExitPass : kExitViolation;
}

}  // namespace floodgate::history
