#include "core/error.h"

#include <cstring>

namespace freehold::core {

SystemError::SystemError(const std::string& what_failed, int errno_value)
    : Error(absl::StrCat(what_failed, ": ", std::strerror(errno_value)), ExitCode::kFailure),
      errno_value_(errno_value) {}

void fail_check(const char* condition, const char* file, int line, const std::string& message) {
  throw InternalError(absl::StrCat("internal error: check failed: ", condition, " at ", file, ":", line,
                                   message.empty() ? "" : " — ", message,
                                   " (this is a bug in freehold; please report it)"));
}

}  // namespace freehold::core
