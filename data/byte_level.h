// GPT-2's byte-level alphabet: each of the 256 byte values stands for one printable code point (bytes that are
// printable Latin-1 stand for themselves, the others for U+0100 upwards), so any byte string is a text.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace freehold::data {

// The UTF-8 of the code point that stands for byte `b`.
std::string_view byte_level_char(uint8_t b);

// Appends the byte-level spelling of `bytes` to `out`.
void append_byte_level(std::string_view bytes, std::string& out);

// The byte that code point `cp` stands for, or -1 when cp is not in the alphabet.
int byte_level_byte(uint32_t cp);

}  // namespace freehold::data
