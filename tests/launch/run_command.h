// Runs a shell command for the tests that drive the freehold binary as users do: its exit code and its stdout and
// stderr together.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace freehold::testing {

struct RunResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

inline RunResult run_command(const std::string& command) {
  RunResult result;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof buffer, pipe)) > 0) result.output.append(buffer, n);
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

// The binary of this build tree.
inline std::string freehold_binary() { return std::string(FREEHOLD_BINARY_DIR) + "/bin/freehold"; }

}  // namespace freehold::testing
