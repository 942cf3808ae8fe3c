#include "core/log.h"

#include <cstdio>
#include <string>

#include "absl/synchronization/mutex.h"

namespace freehold::core {
namespace {

struct LogState {
  absl::Mutex mutex;
  std::string prefix;
  LogLevel level = LogLevel::kInfo;
};

LogState& state() {
  static LogState* s = new LogState();  // never destroyed: logging must work during static destruction
  return *s;
}

}  // namespace

void set_log_rank(int rank, int world_size) {
  absl::MutexLock lock(&state().mutex);
  state().prefix = world_size > 1 ? absl::StrCat("[rank ", rank, "] ") : "";
}

void set_log_level(LogLevel level) {
  absl::MutexLock lock(&state().mutex);
  state().level = level;
}

void log_line(LogLevel level, std::string_view message) {
  LogState& s = state();
  absl::MutexLock lock(&s.mutex);
  if (level < s.level) return;
  const char* tag = level == LogLevel::kError     ? "error: "
                    : level == LogLevel::kWarning ? "warning: "
                    : level == LogLevel::kDebug   ? "debug: "
                                                  : "";
  std::string line = absl::StrCat(s.prefix, tag, std::string(message), "\n");
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace freehold::core
