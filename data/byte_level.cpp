#include "data/byte_level.h"

#include <array>

namespace freehold::data {
namespace {

struct Tables {
  std::array<std::string, 256> chars;   // byte → UTF-8 of its code point
  std::array<int16_t, 512> bytes;       // code point (< 512) → byte, -1 when not in the alphabet
  Tables() {
    bytes.fill(-1);
    auto printable = [](int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); };
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      uint32_t cp = printable(b) ? static_cast<uint32_t>(b) : static_cast<uint32_t>(next++);
      std::string utf8;
      if (cp < 0x80) {
        utf8 += static_cast<char>(cp);
      } else {
        utf8 += static_cast<char>(0xC0 | (cp >> 6));
        utf8 += static_cast<char>(0x80 | (cp & 0x3F));
      }
      chars[b] = utf8;
      bytes[cp] = static_cast<int16_t>(b);
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

std::string_view byte_level_char(uint8_t b) { return tables().chars[b]; }

void append_byte_level(std::string_view bytes, std::string& out) {
  const Tables& t = tables();
  for (char c : bytes) out += t.chars[static_cast<uint8_t>(c)];
}

int byte_level_byte(uint32_t cp) { return cp < 512 ? tables().bytes[cp] : -1; }

}  // namespace freehold::data
