// Logging to stderr with the rank as prefix, so interleaved output of several ranks stays readable.
#pragma once

#include <string_view>

#include "absl/strings/str_cat.h"

namespace freehold::core {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Set once at start-up (world rank and size); a single process logs without a prefix.
void set_log_rank(int rank, int world_size);
void set_log_level(LogLevel level);
void log_line(LogLevel level, std::string_view message);

template <typename... Args>
void log_info(const Args&... args) { log_line(LogLevel::kInfo, absl::StrCat(args...)); }
template <typename... Args>
void log_warning(const Args&... args) { log_line(LogLevel::kWarning, absl::StrCat(args...)); }
template <typename... Args>
void log_error(const Args&... args) { log_line(LogLevel::kError, absl::StrCat(args...)); }
template <typename... Args>
void log_debug(const Args&... args) { log_line(LogLevel::kDebug, absl::StrCat(args...)); }

}  // namespace freehold::core
