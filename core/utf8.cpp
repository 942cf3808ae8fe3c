#include "core/utf8.h"

#include <cstdint>

namespace freehold::core {

namespace {

// Length of the well-formed sequence at s[i], or 0 when it is ill-formed; `*valid_prefix` is then the length of
// its maximal subpart (at least 1): the lead byte and the continuation bytes that were still allowed.
size_t sequence_length(const uint8_t* s, size_t n, size_t i, size_t* valid_prefix) {
  uint8_t c = s[i];
  *valid_prefix = 1;
  if (c < 0x80) return 1;
  // Lead byte → sequence length and the allowed range of the first continuation byte (Table 3-7 of Unicode).
  size_t length = 0;
  uint8_t lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    length = 2;
  } else if (c == 0xE0) {
    length = 3, lo = 0xA0;
  } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
    length = 3;
  } else if (c == 0xED) {
    length = 3, hi = 0x9F;  // no UTF-16 surrogates
  } else if (c == 0xF0) {
    length = 4, lo = 0x90;
  } else if (c >= 0xF1 && c <= 0xF3) {
    length = 4;
  } else if (c == 0xF4) {
    length = 4, hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return 0;  // 0x80..0xC1 (continuation or overlong lead) and 0xF5..0xFF
  }
  if (i + 1 >= n || s[i + 1] < lo || s[i + 1] > hi) return 0;
  *valid_prefix = 2;
  for (size_t k = 2; k < length; ++k) {
    if (i + k >= n || s[i + k] < 0x80 || s[i + k] > 0xBF) return 0;
    *valid_prefix = k + 1;
  }
  return length;
}

}  // namespace

size_t find_invalid_utf8(std::string_view bytes) {
  const auto* s = reinterpret_cast<const uint8_t*>(bytes.data());
  const size_t n = bytes.size();
  size_t i = 0;
  while (i < n) {
    if (s[i] < 0x80) {
      ++i;
      continue;
    }
    size_t prefix = 0;
    size_t length = sequence_length(s, n, i, &prefix);
    if (length == 0) return i;
    i += length;
  }
  return std::string_view::npos;
}

std::string replace_invalid_utf8(std::string_view bytes) {
  const auto* s = reinterpret_cast<const uint8_t*>(bytes.data());
  const size_t n = bytes.size();
  std::string out;
  out.reserve(n);
  size_t i = 0;
  while (i < n) {
    size_t prefix = 0;
    size_t length = sequence_length(s, n, i, &prefix);
    if (length == 0) {
      out += "\xEF\xBF\xBD";
      i += prefix;
    } else {
      out.append(bytes.substr(i, length));
      i += length;
    }
  }
  return out;
}

}  // namespace freehold::core
