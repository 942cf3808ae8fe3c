#include "launch/text_streamer.h"

#include <cstdio>
#include <limits>
#include <string>

namespace freehold::launch {

TextStreamer::TextStreamer(const data::Tokenizer& tokenizer, std::function<void(std::string_view)> write)
    : tokenizer_(tokenizer), write_(std::move(write)) {
  if (!write_) {
    write_ = [](std::string_view text) {
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    };
  }
}

void TextStreamer::add(int64_t id) {
  if (id < 0 || id > std::numeric_limits<int32_t>::max() || !tokenizer_.id_to_token(static_cast<int32_t>(id))) {
    ++unknown_;
    return;
  }
  ids_.push_back(static_cast<int32_t>(id));
  emit(false);
}

void TextStreamer::finish() { emit(true); }

void TextStreamer::emit(bool final) {
  // Decoding all ids again (not just the new one) lets decoders that look at neighbours (Metaspace's first
  // space, byte runs) see them; generations are short enough for that to cost nothing noticeable.
  const std::string text = tokenizer_.decode(ids_, /*skip_special_tokens=*/true);
  static const std::string_view kReplacement = "\xEF\xBF\xBD";
  size_t end = text.size();
  // Byte fallback decodes each byte of an incomplete run to its own U+FFFD: hold back the whole trailing run (a
  // real U+FFFD there is only delayed, to the next piece or finish()).
  while (!final && end > written_ && std::string_view(text).substr(0, end).ends_with(kReplacement)) {
    end -= kReplacement.size();
  }
  if (end > written_) {
    write_(std::string_view(text).substr(written_, end - written_));
    written_ = end;
  }
}

}  // namespace freehold::launch
