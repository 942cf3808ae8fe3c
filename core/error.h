// Errors and checks. Three kinds (STYLE.md habit 7): what a user can cause throws an Error subclass carrying the
// value and a hint; broken invariants are FH_CHECK, always on; only main() catches and maps to an exit code.
#pragma once

#include <stdexcept>
#include <string>

#include "absl/strings/str_cat.h"

namespace freehold::core {

// Process exit codes, DESIGN.md §3.
enum class ExitCode : int {
  kOk = 0,
  kFailure = 1,     // anything else, including internal errors
  kUsage = 2,       // bad command line or config
  kBadData = 3,     // bad input data over its threshold
  kPeerLost = 4,    // a peer rank was lost or a collective timed out
  kRequeue = 75,    // stopped by a signal after a committed checkpoint
};

// Base of every error freehold throws on purpose. what() is the full message shown to the user.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message, ExitCode code = ExitCode::kFailure)
      : std::runtime_error(message), exit_code_(code) {}
  ExitCode exit_code() const { return exit_code_; }

 private:
  ExitCode exit_code_;
};

// A bad command line, config key or option value (exit code 2).
class UsageError : public Error {
 public:
  explicit UsageError(const std::string& message) : Error(message, ExitCode::kUsage) {}
};

// A file whose contents are wrong: a model, an adapter, a dataset (exit code 3 only when over a threshold;
// a malformed model file is a plain failure).
class FormatError : public Error {
 public:
  explicit FormatError(const std::string& message) : Error(message, ExitCode::kFailure) {}
};

// Bad input data: a record of a dataset or an input file that cannot be used (exit code 3).
class DataError : public Error {
 public:
  explicit DataError(const std::string& message) : Error(message, ExitCode::kBadData) {}
};

// An operating-system call that failed: the path, the call and strerror(errno).
class SystemError : public Error {
 public:
  SystemError(const std::string& what_failed, int errno_value);
  int errno_value() const { return errno_value_; }

 private:
  int errno_value_;
};

// Thrown by FH_CHECK: a bug in freehold, never a user mistake.
class InternalError : public Error {
 public:
  explicit InternalError(const std::string& message) : Error(message, ExitCode::kFailure) {}
};

[[noreturn]] void fail_check(const char* condition, const char* file, int line, const std::string& message);

}  // namespace freehold::core

// Always-on invariant check (release builds too). Extra arguments are concatenated into the message.
#define FH_CHECK(condition, ...)                                                                     \
  do {                                                                                               \
    if (!(condition)) [[unlikely]] {                                                                 \
      ::freehold::core::fail_check(#condition, __FILE__, __LINE__, ::absl::StrCat("" __VA_OPT__(, ) __VA_ARGS__)); \
    }                                                                                                \
  } while (false)
