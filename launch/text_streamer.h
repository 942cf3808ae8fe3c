// Streams the text of generated token ids as they arrive (`freehold generate`): after each id, the part of the
// decoded generation not written yet, except a trailing U+FFFD run — an incomplete UTF-8 sequence that the next
// byte-level or byte-fallback tokens complete — which is held back until finish(). Ids the tokenizer does not know
// (embedding rows past its vocabulary) are left out of the text, as the tokenizers library leaves them out.
#pragma once

#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

#include "data/tokenizer.h"

namespace freehold::launch {

class TextStreamer {
 public:
  // `write` receives each new piece of text (default: stdout, flushed).
  explicit TextStreamer(const data::Tokenizer& tokenizer, std::function<void(std::string_view)> write = {});

  void add(int64_t id);
  // Writes what was held back, even an incomplete character (as U+FFFD).
  void finish();
  int64_t unknown_ids() const { return unknown_; }

 private:
  void emit(bool final);

  const data::Tokenizer& tokenizer_;
  std::function<void(std::string_view)> write_;
  std::vector<int32_t> ids_;
  size_t written_ = 0;  // bytes of the decoded text written so far
  int64_t unknown_ = 0;
};

}  // namespace freehold::launch
