#pragma once

// The `history_checker` command line, as a function so that tests can run it in-process.
//
//   history_checker --history FILE --limit N --period DURATION
//                   [--window fixed|sliding] [--tolerance N|failover] [--slack DURATION]
//                   [--exact] [--key KEY]... [--verbose]
//
// DURATION is abseil's syntax: 1h, 90s, 250ms, 1.5s. Every key in the file gets the same bound
// (--key restricts the check to the keys named). --exact also checks that every fixed window
// admitted exactly min(limit, offered), within the tolerance (that check ignores --slack).

#include <ostream>
#include <string>
#include <vector>

namespace floodgate::history {

// Exit codes of RunHistoryChecker.
inline constexpr int kExitPass = 0;
inline constexpr int kExitViolation = 1;
inline constexpr int kExitUsage = 2;  // bad flags, unreadable or malformed history

// Runs the command line `args` (without the program name). Writes the summary to `out` and
// errors to `err`; returns one of the exit codes above.
int RunHistoryChecker(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace floodgate::history
