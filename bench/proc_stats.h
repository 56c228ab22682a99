// Readers of /proc for the load tools: a process's CPU time and memory, and the machine's busy
// CPU time. Each reads the file afresh and returns 0 when it cannot be read. Thread-compatible.

#pragma once

namespace floodgate::bench {

// Returns the CPU seconds (user + system) process `pid` has used.
double CpuSeconds(int pid);

// Returns the seconds every CPU of the machine spent busy (not idle or waiting for I/O).
double MachineBusySeconds();

// Returns the value in kB of a /proc/PID/status line such as VmRSS or VmHWM (0 if absent).
long StatusKb(int pid, const char* field);

}  // namespace floodgate::bench
