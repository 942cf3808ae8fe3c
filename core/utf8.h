// Strict UTF-8 validation (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace freehold::core {

// Returns the byte offset of the first invalid sequence, or npos when the whole input is valid UTF-8.
size_t find_invalid_utf8(std::string_view bytes);
inline bool is_valid_utf8(std::string_view bytes) { return find_invalid_utf8(bytes) == std::string_view::npos; }

// `bytes` with every ill-formed sequence replaced by U+FFFD, one per maximal subpart (Unicode §3.9 "U+FFFD
// substitution of maximal subparts", what Python's errors="replace" and Rust's from_utf8_lossy both do).
std::string replace_invalid_utf8(std::string_view bytes);

}  // namespace freehold::core
