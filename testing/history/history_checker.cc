// history_checker: checks a JSON Lines decision history against a limit. See cli.h.

#include <iostream>
#include <string>
#include <vector>

#include "testing/history/cli.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return floodgate::history::RunHistoryChecker(args, std::cout, std::cerr);
}
