// libFuzzer target: the input is a tokenizer.json, optionally followed by a NUL byte and a text to encode. Loading
// must succeed or throw FormatError; encoding may also throw DataError (a text the tokenizer cannot encode). What
// loads must encode fixed and fuzzed texts to ids below id_limit(), and decode them back to valid UTF-8. Anything
// else (a crash, a sanitizer report, an InternalError from FH_CHECK, another exception) is a bug.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "core/utf8.h"
#include "data/tokenizer.h"

namespace {

[[noreturn]] void violated(const char* what) {
  std::fprintf(stderr, "invariant violated: %s\n", what);
  std::abort();
}

void check_text(const freehold::data::Tokenizer& tokenizer, std::string_view text) {
  for (bool special : {true, false}) {
    std::vector<int32_t> ids;
    try {
      ids = tokenizer.encode(text, special);
    } catch (const freehold::core::DataError&) {
      continue;
    }
    for (int32_t id : ids) {
      if (id < 0 || id >= tokenizer.id_limit()) violated("ids in [0, id_limit)");
    }
    for (bool skip : {false, true}) {
      std::string decoded;
      try {
        decoded = tokenizer.decode(ids, skip);
      } catch (const freehold::core::DataError&) {
        // A template id that is in neither the vocabulary nor the added tokens.
        continue;
      }
      if (!freehold::core::is_valid_utf8(decoded)) violated("decoded text is valid UTF-8");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  size_t nul = input.find('\0');
  std::string_view json = input.substr(0, nul);
  std::string_view text = nul == std::string_view::npos ? std::string_view() : input.substr(nul + 1);
  try {
    freehold::data::Tokenizer tokenizer = freehold::data::Tokenizer::from_json_text(json, "fuzz.json");
    check_text(tokenizer, "Hello, world! It's 12345 — ça va? 你好 🇫🇷 <s></s><|im_start|>\t\n  end ");
    check_text(tokenizer, "");
    if (freehold::core::is_valid_utf8(text)) {
      check_text(tokenizer, text);
    } else {
      check_text(tokenizer, freehold::core::replace_invalid_utf8(text));
    }
  } catch (const freehold::core::FormatError&) {
  }
  return 0;
}
