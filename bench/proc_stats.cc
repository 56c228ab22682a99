#include "bench/proc_stats.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace floodgate::bench {
namespace {

// Returns the fields of /proc/PID/stat after the command name.
std::vector<std::string> StatFields(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> f;
  size_t pos = s.rfind(')');
  if (pos == std::string::npos) {
    return f;
  }
  for (pos += 2; pos < s.size();) {
    size_t next = s.find(' ', pos);
    if (next == std::string::npos) {
      next = s.size();
    }
    f.push_back(s.substr(pos, next - pos));
    pos = next + 1;
  }
  return f;
}

}  // namespace

double CpuSeconds(int pid) {
  // After ')': state is index 0, utime (field 14 overall) index 11, stime index 12.
  const std::vector<std::string> f = StatFields(pid);
  return f.size() < 13 ? 0 : (std::stod(f[11]) + std::stod(f[12])) / sysconf(_SC_CLK_TCK);
}

double MachineBusySeconds() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  double v[10] = {};
  in >> cpu;
  for (double& x : v) {
    in >> x;
  }
  double busy = 0;
  for (int i = 0; i < 8; ++i) {  // user nice system idle iowait irq softirq steal
    busy += (i == 3 || i == 4) ? 0 : v[i];
  }
  return busy / sysconf(_SC_CLK_TCK);
}

long StatusKb(int pid, const char* field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  const size_t n = std::strlen(field);
  while (std::getline(in, line)) {
    if (line.compare(0, n, field) == 0 && line.size() > n && line[n] == ':') {
      return std::atol(line.c_str() + n + 1);
    }
  }
  return 0;
}

}  // namespace floodgate::bench
