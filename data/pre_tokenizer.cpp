#include "data/pre_tokenizer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "data/byte_level.h"

namespace freehold::data {
namespace {

constexpr int kMaxDepth = 16;

struct Segment {
  size_t start;
  size_t end;
  bool is_match;
};

// All occurrences of a non-empty literal, left to right, without overlap.
void find_literal(std::string_view text, std::string_view literal, std::vector<ByteSpan>& out) {
  if (literal.empty()) return;
  size_t pos = 0;
  while ((pos = text.find(literal, pos)) != std::string_view::npos) {
    out.push_back({pos, pos + literal.size()});
    pos += literal.size();
  }
}

}  // namespace

std::unique_ptr<PreTokenizer> PreTokenizer::from_json(const Json& value, const JsonPath& at) {
  if (value.is_null()) return nullptr;
  auto pre_tokenizer = std::unique_ptr<PreTokenizer>(new PreTokenizer());
  pre_tokenizer->add_steps(value, at, 0);
  return pre_tokenizer;
}

void PreTokenizer::add_steps(const Json& value, const JsonPath& at, int depth) {
  if (depth > kMaxDepth) fail_at(at, absl::StrCat("nests Sequences deeper than ", kMaxDepth));
  std::string type = read_type(value, at, {"Sequence", "ByteLevel", "Split", "Metaspace"});
  Step step;
  if (type == "Sequence") {
    const Json& list = require_field(value, at, "pretokenizers");
    require_array(list, at.child("pretokenizers"));
    for (size_t i = 0; i < list.size(); ++i) add_steps(list[i], at.child("pretokenizers").index(i), depth + 1);
    return;
  }
  if (type == "ByteLevel") {
    step.kind = Kind::kByteLevel;
    step.add_prefix_space = read_bool_or(value, at, "add_prefix_space", true);
    if (read_bool_or(value, at, "use_regex", true)) {
      step.regex = std::make_shared<UnicodeRegex>(kGpt2Pattern, at.describe() + " (GPT-2 split pattern)");
    }
  } else if (type == "Split") {
    step.kind = Kind::kSplit;
    PatternSpec pattern = read_pattern(value, at, "pattern");
    if (pattern.is_regex) {
      step.regex = std::make_shared<UnicodeRegex>(pattern.text, at.child("pattern").child("Regex").describe());
    } else {
      step.literal = pattern.text;
    }
    std::string behavior = read_string(value, at, "behavior");
    if (behavior == "Removed") step.behavior = Behavior::kRemoved;
    else if (behavior == "Isolated") step.behavior = Behavior::kIsolated;
    else if (behavior == "MergedWithPrevious") step.behavior = Behavior::kMergedWithPrevious;
    else if (behavior == "MergedWithNext") step.behavior = Behavior::kMergedWithNext;
    else if (behavior == "Contiguous") step.behavior = Behavior::kContiguous;
    else {
      fail_at(at.child("behavior"), absl::StrCat("is \"", behavior, "\"; expected Removed, Isolated, "
                                                 "MergedWithPrevious, MergedWithNext or Contiguous"));
    }
    step.invert = read_bool_or(value, at, "invert", false);
  } else {  // Metaspace
    step.kind = Kind::kMetaspace;
    step.replacement = read_char(value, at, "replacement");
    step.split = read_bool_or(value, at, "split", true);
    if (find_field(value, at, "prepend_scheme") != nullptr) {
      std::string scheme = read_string(value, at, "prepend_scheme");
      if (scheme == "always") step.prepend_scheme = PrependScheme::kAlways;
      else if (scheme == "first") step.prepend_scheme = PrependScheme::kFirst;
      else if (scheme == "never") step.prepend_scheme = PrependScheme::kNever;
      else fail_at(at.child("prepend_scheme"), absl::StrCat("is \"", scheme, "\"; expected always, first or never"));
    } else {
      // Files written before prepend_scheme existed say add_prefix_space instead.
      step.prepend_scheme = read_bool_or(value, at, "add_prefix_space", true) ? PrependScheme::kAlways
                                                                               : PrependScheme::kNever;
    }
  }
  steps_.push_back(std::move(step));
}

void PreTokenizer::split_pieces(const Step& step, const PreToken& token, std::vector<PreToken>& out) {
  const std::string_view text = token.text;
  thread_local std::vector<ByteSpan> matches;
  thread_local std::vector<Segment> segments;
  thread_local std::vector<Segment> merged;
  matches.clear();
  segments.clear();
  merged.clear();
  if (step.regex) {
    step.regex->find_all(text, matches);
  } else {
    find_literal(text, step.literal, matches);
  }
  // Matches and the gaps between them cover the text; empty matches stay as empty segments, as in the library.
  size_t previous = 0;
  for (const ByteSpan& m : matches) {
    if (previous != m.start) segments.push_back({previous, m.start, false});
    segments.push_back({m.start, m.end, true});
    previous = m.end;
  }
  if (previous != text.size()) segments.push_back({previous, text.size(), false});
  if (step.invert) {
    for (Segment& s : segments) s.is_match = !s.is_match;
  }

  switch (step.behavior) {
    case Behavior::kRemoved:
      for (const Segment& s : segments) {
        if (!s.is_match) merged.push_back(s);
      }
      break;
    case Behavior::kIsolated:
      merged = segments;
      break;
    case Behavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (const Segment& s : segments) {
        if (s.is_match && !previous_match && !merged.empty()) {
          merged.back().end = s.end;
        } else {
          merged.push_back(s);
        }
        previous_match = s.is_match;
      }
      break;
    }
    case Behavior::kMergedWithNext: {
      bool next_match = false;  // whether the segment to the right was a match
      for (size_t i = segments.size(); i-- > 0;) {
        const Segment& s = segments[i];
        if (s.is_match && !next_match && !merged.empty()) {
          merged.back().start = s.start;
        } else {
          merged.push_back(s);
        }
        next_match = s.is_match;
      }
      std::reverse(merged.begin(), merged.end());
      break;
    }
    case Behavior::kContiguous: {
      bool previous_match = false;
      for (const Segment& s : segments) {
        if (s.is_match == previous_match && !merged.empty()) {
          merged.back().end = s.end;
        } else {
          merged.push_back(s);
        }
        previous_match = s.is_match;
      }
      break;
    }
  }
  for (const Segment& s : merged) {
    if (s.end == s.start) continue;
    out.push_back({std::string(text.substr(s.start, s.end - s.start)), token.at_text_start && s.start == 0});
  }
}

void PreTokenizer::apply(const Step& step, std::vector<PreToken>& in, std::vector<PreToken>& out) const {
  out.clear();
  for (PreToken& token : in) {
    switch (step.kind) {
      case Kind::kByteLevel: {
        if (step.add_prefix_space && (token.text.empty() || token.text[0] != ' ')) token.text.insert(token.text.begin(), ' ');
        size_t first = out.size();
        if (step.regex) {
          split_pieces(step, token, out);
        } else if (!token.text.empty()) {
          out.push_back(std::move(token));
        }
        std::string mapped;
        for (size_t i = first; i < out.size(); ++i) {
          mapped.clear();
          append_byte_level(out[i].text, mapped);
          out[i].text.swap(mapped);
        }
        break;
      }
      case Kind::kSplit:
        split_pieces(step, token, out);
        break;
      case Kind::kMetaspace: {
        std::string text;
        text.reserve(token.text.size() + step.replacement.size());
        bool prepend = false;
        if (step.prepend_scheme != PrependScheme::kNever) {
          bool starts_with_replacement = token.text.rfind(step.replacement, 0) == 0 ||
                                         (token.text.size() > 0 && token.text[0] == ' ');
          prepend = !starts_with_replacement &&
                    (step.prepend_scheme == PrependScheme::kAlways || token.at_text_start);
        }
        if (prepend) text += step.replacement;
        for (char c : token.text) {
          if (c == ' ') {
            text += step.replacement;
          } else {
            text += c;
          }
        }
        PreToken replaced{std::move(text), token.at_text_start};
        if (step.split) {
          Step by_replacement;
          by_replacement.literal = step.replacement;
          by_replacement.behavior = Behavior::kMergedWithNext;
          split_pieces(by_replacement, replaced, out);
        } else if (!replaced.text.empty()) {
          out.push_back(std::move(replaced));
        }
        break;
      }
    }
  }
}

void PreTokenizer::pre_tokenize(std::vector<PreToken>& tokens) const {
  std::vector<PreToken> next;
  for (const Step& step : steps_) {
    apply(step, tokens, next);
    tokens.swap(next);
  }
}

}  // namespace freehold::data
