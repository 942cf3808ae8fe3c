// Strict safetensors header and index parsing. The JSON is read with nlohmann's SAX interface into a small state
// machine that knows the shape of a valid header, so anything unexpected (a nested array where a dimension
// belongs, a 50-million-element shape) is rejected at the first event and nothing is ever built for it: memory
// stays proportional to what a valid header holds, nesting never exceeds 3 levels (nlohmann's SAX parser is
// iterative, so a deeply nested header cannot reach the stack either), and duplicate keys, which nlohmann's DOM
// would silently collapse, are seen one by one.
#include "io/safetensors_header.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <set>
#include <tuple>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/checked_math.h"
#include "core/utf8.h"
#include "nlohmann/json.hpp"

namespace freehold::io {
namespace {

using Kind = SafetensorsErrorKind;
using Json = nlohmann::json;

constexpr uint64_t kMaxInt64 = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
constexpr size_t kMaxShardFileNameBytes = 255;  // NAME_MAX on Linux
constexpr size_t kMaxIndexDepth = 64;           // ignored values inside the index may nest, but not without bound

[[noreturn]] void fail(Kind kind, const std::string& file, std::string tensor, const std::string& detail) {
  throw SafetensorsError(kind, file, std::move(tensor), detail);
}

// A string for an error message: control bytes escaped as \xNN, cut (at a UTF-8 boundary) so that a 4 KB name or
// a 100 MB value cannot flood the log.
std::string printable(std::string_view s, size_t max_bytes = 120) {
  bool cut = false;
  if (s.size() > max_bytes) {
    size_t n = max_bytes;
    while (n > 0 && (static_cast<uint8_t>(s[n]) & 0xC0) == 0x80) --n;  // do not split a UTF-8 sequence
    s = s.substr(0, n);
    cut = true;
  }
  std::string out;
  for (char ch : s) {
    auto c = static_cast<uint8_t>(ch);
    if (c < 0x20 || c == 0x7F) {
      absl::StrAppend(&out, "\\x", absl::Hex(c, absl::kZeroPad2));
    } else {
      out.push_back(ch);
    }
  }
  if (cut) out += "…";
  return out;
}

std::string in_quotes(std::string_view s) { return absl::StrCat("'", printable(s), "'"); }

uint64_t read_le64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

// Offset of the first C0 (including NUL), DEL or C1 control character in valid UTF-8, or npos.
size_t find_control_character(std::string_view s) {
  for (size_t i = 0; i < s.size(); ++i) {
    auto c = static_cast<uint8_t>(s[i]);
    if (c < 0x20 || c == 0x7F) return i;
    // U+0080..U+009F are encoded as C2 80..C2 9F.
    if (c == 0xC2 && i + 1 < s.size() && static_cast<uint8_t>(s[i + 1]) <= 0x9F) return i;
  }
  return std::string_view::npos;
}

// What a JSON value that arrived where it does not belong looked like, for error messages.
struct Found {
  std::string description;  // "the number -1", "a string", "an array", ...
};

Found found_unsigned(uint64_t v) { return {absl::StrCat("the number ", v)}; }
Found found_integer(int64_t v) { return {absl::StrCat("the number ", v)}; }
Found found_float(std::string_view text) { return {absl::StrCat("the number ", printable(text, 40))}; }
Found found_string(std::string_view s) { return {absl::StrCat("the string \"", printable(s, 40), "\"")}; }
Found found_literal(std::string_view literal) { return {std::string(literal)}; }
Found found_object() { return {"an object"}; }
Found found_array() { return {"an array"}; }

// Shared SAX plumbing: every event is forwarded to one virtual `value` hook so that the state machines below only
// deal with "a value arrived" versus "a container opened/closed".
class StrictSax : public nlohmann::json_sax<Json> {
 public:
  explicit StrictSax(const std::string& file, Kind json_error_kind) : file_(file), json_error_kind_(json_error_kind) {}

  bool null() override { return scalar_value(found_literal("null")); }
  bool boolean(bool v) override { return scalar_value(found_literal(v ? "true" : "false")); }
  bool number_integer(number_integer_t v) override { return scalar_value(found_integer(v)); }
  bool number_unsigned(number_unsigned_t v) override { return unsigned_value(v); }
  bool number_float(number_float_t, const string_t& text) override { return scalar_value(found_float(text)); }
  bool string(string_t& v) override { return string_value(v); }
  bool binary(binary_t&) override { return scalar_value(found_literal("binary data")); }

  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& e) override {
    // e.what() quotes the last token, which may be a 100 MB unterminated string: keep the start of it.
    fail(json_error_kind_, file_, "",
         absl::StrCat("not valid JSON (at byte ", position, " of the JSON): ", printable(e.what(), 240)));
  }

 protected:
  virtual bool scalar_value(const Found& found) = 0;
  virtual bool unsigned_value(uint64_t v) { return scalar_value(found_unsigned(v)); }
  virtual bool string_value(const std::string& v) { return scalar_value(found_string(v)); }

  const std::string& file_;

 private:
  Kind json_error_kind_;
};

// ---------------------------------------------------------------------------------------------------------------
// The header state machine. Valid input is exactly:
//   { "__metadata__": { "k": "v", ... },            (optional)
//     "name": { "dtype": "F32", "shape": [d0, ...], "data_offsets": [begin, end] }, ... }

struct ParsedTensor {
  TensorInfo info;
  std::vector<uint64_t> dims;  // as written, before the int64 range check
  bool has_dtype = false;
  bool has_shape = false;
  int num_offsets = -1;  // -1: no data_offsets key yet
};

class HeaderSax final : public StrictSax {
 public:
  explicit HeaderSax(const std::string& file) : StrictSax(file, Kind::kInvalidHeaderJson) {}

  std::vector<ParsedTensor> tensors;
  std::map<std::string, std::string> metadata;

  bool start_object(std::size_t) override {
    switch (where_) {
      case Where::kStart:
        where_ = Where::kTop;
        return true;
      case Where::kTop:
        if (key_is_metadata_) {
          where_ = Where::kMetadata;
        } else {
          where_ = Where::kEntry;
          tensors.emplace_back();
          tensors.back().info.name = key_;
          field_ = Field::kNone;
        }
        return true;
      default:
        return misplaced(found_object());
    }
  }

  bool end_object() override {
    switch (where_) {
      case Where::kTop:
        where_ = Where::kDone;
        return true;
      case Where::kMetadata:
        where_ = Where::kTop;
        return true;
      case Where::kEntry:
        finish_entry();
        where_ = Where::kTop;
        return true;
      default:
        FH_CHECK(false, "unbalanced JSON object end in ", file_);
    }
  }

  bool start_array(std::size_t) override {
    if (where_ == Where::kEntry && field_ == Field::kShape) {
      where_ = Where::kShape;
      return true;
    }
    if (where_ == Where::kEntry && field_ == Field::kOffsets) {
      where_ = Where::kOffsets;
      current().num_offsets = 0;
      return true;
    }
    return misplaced(found_array());
  }

  bool end_array() override {
    if (where_ == Where::kShape) {
      where_ = Where::kEntry;
      return true;
    }
    FH_CHECK(where_ == Where::kOffsets, "unbalanced JSON array end in ", file_);
    if (current().num_offsets != 2) {
      fail(Kind::kInvalidOffset, file_, current().info.name,
           absl::StrCat("data_offsets has ", current().num_offsets, " values; it must be [begin, end]"));
    }
    where_ = Where::kEntry;
    return true;
  }

  bool key(string_t& k) override {
    switch (where_) {
      case Where::kTop:
        key_ = k;
        key_is_metadata_ = (k == "__metadata__");
        if (key_is_metadata_) {
          if (seen_metadata_) fail(Kind::kInvalidMetadata, file_, "", "__metadata__ appears twice");
          seen_metadata_ = true;
        } else {
          validate_tensor_name(k, file_);
          if (!names_.insert(k).second) {
            fail(Kind::kDuplicateName, file_, k, "the name appears twice in the header; names must be unique");
          }
        }
        return true;
      case Where::kMetadata:
        if (k.find('\0') != std::string::npos) {
          fail(Kind::kInvalidMetadata, file_, "", absl::StrCat("__metadata__ key ", in_quotes(k), " contains NUL"));
        }
        if (metadata.count(k) != 0) {
          fail(Kind::kInvalidMetadata, file_, "", absl::StrCat("__metadata__ key ", in_quotes(k), " appears twice"));
        }
        key_ = k;
        return true;
      case Where::kEntry: {
        ParsedTensor& t = current();
        bool duplicate = false;
        if (k == "dtype") {
          field_ = Field::kDType;
          duplicate = t.has_dtype;
        } else if (k == "shape") {
          field_ = Field::kShape;
          duplicate = t.has_shape;
        } else if (k == "data_offsets") {
          field_ = Field::kOffsets;
          duplicate = t.num_offsets >= 0;
        } else {
          fail(Kind::kInvalidTensorEntry, file_, t.info.name,
               absl::StrCat("unknown key ", in_quotes(k), "; a tensor entry has exactly dtype, shape and data_offsets"));
        }
        if (duplicate) fail(Kind::kInvalidTensorEntry, file_, t.info.name, absl::StrCat("key ", in_quotes(k), " appears twice"));
        // Mark the key as present now, so that a missing value can never leave a half-filled entry unnoticed.
        if (field_ == Field::kDType) t.has_dtype = true;
        if (field_ == Field::kShape) t.has_shape = true;
        return true;
      }
      default:
        FH_CHECK(false, "JSON key outside an object in ", file_);
    }
  }

 protected:
  bool scalar_value(const Found& found) override { return misplaced(found); }

  bool unsigned_value(uint64_t v) override {
    if (where_ == Where::kShape) {
      ParsedTensor& t = current();
      if (t.dims.size() >= static_cast<size_t>(kMaxTensorRank)) {
        fail(Kind::kInvalidShape, file_, t.info.name,
             absl::StrCat("shape has more than ", kMaxTensorRank, " dimensions, the most freehold accepts"));
      }
      t.dims.push_back(v);
      return true;
    }
    if (where_ == Where::kOffsets) {
      ParsedTensor& t = current();
      if (t.num_offsets >= 2) {
        fail(Kind::kInvalidOffset, file_, t.info.name, "data_offsets has more than 2 values; it must be [begin, end]");
      }
      (t.num_offsets == 0 ? t.info.begin : t.info.end) = v;
      ++t.num_offsets;
      return true;
    }
    return misplaced(found_unsigned(v));
  }

  bool string_value(const std::string& v) override {
    if (where_ == Where::kMetadata) {
      if (v.find('\0') != std::string::npos) {
        fail(Kind::kInvalidMetadata, file_, "", absl::StrCat("__metadata__ value of ", in_quotes(key_), " contains NUL"));
      }
      metadata.emplace(key_, v);
      return true;
    }
    if (where_ == Where::kEntry && field_ == Field::kDType) {
      ParsedTensor& t = current();
      if (auto dtype = core::parse_dtype(v)) {
        t.info.dtype = *dtype;
        return true;
      }
      if (core::is_known_unsupported_safetensors_dtype(v)) {
        fail(Kind::kInvalidDType, file_, t.info.name,
             absl::StrCat("dtype ", in_quotes(v), " is valid safetensors but freehold cannot compute with it; supported: ",
                          core::supported_dtype_names()));
      }
      fail(Kind::kInvalidDType, file_, t.info.name,
           absl::StrCat("unknown dtype ", in_quotes(v), " (names are case-sensitive); supported: ",
                        core::supported_dtype_names()));
    }
    return misplaced(found_string(v));
  }

 private:
  enum class Where { kStart, kTop, kMetadata, kEntry, kShape, kOffsets, kDone };
  enum class Field { kNone, kDType, kShape, kOffsets };

  ParsedTensor& current() {
    FH_CHECK(!tensors.empty());
    return tensors.back();
  }

  // A value (or a container) that arrived where the format has something else: one error kind per place.
  [[noreturn]] bool misplaced(const Found& found) {
    switch (where_) {
      case Where::kStart:
        fail(Kind::kInvalidHeaderJson, file_, "",
             absl::StrCat("the header must be a JSON object, found ", found.description));
      case Where::kTop:
        if (key_is_metadata_) {
          fail(Kind::kInvalidMetadata, file_, "",
               absl::StrCat("__metadata__ must be an object of strings, found ", found.description));
        }
        fail(Kind::kInvalidTensorEntry, file_, key_,
             absl::StrCat("a tensor entry must be an object {dtype, shape, data_offsets}, found ", found.description));
      case Where::kMetadata:
        fail(Kind::kInvalidMetadata, file_, "",
             absl::StrCat("__metadata__ values must be strings; ", in_quotes(key_), " is ", found.description));
      case Where::kEntry:
        switch (field_) {
          case Field::kDType:
            fail(Kind::kInvalidDType, file_, current().info.name,
                 absl::StrCat("dtype must be a string such as \"BF16\", found ", found.description));
          case Field::kShape:
            fail(Kind::kInvalidShape, file_, current().info.name,
                 absl::StrCat("shape must be an array of non-negative integers, found ", found.description));
          case Field::kOffsets:
            fail(Kind::kInvalidOffset, file_, current().info.name,
                 absl::StrCat("data_offsets must be [begin, end], found ", found.description));
          case Field::kNone:
            break;
        }
        break;
      case Where::kShape:
        fail(Kind::kInvalidShape, file_, current().info.name,
             absl::StrCat("dimension ", current().dims.size(), " is ", found.description,
                          "; dimensions are non-negative integers"));
      case Where::kOffsets:
        fail(Kind::kInvalidOffset, file_, current().info.name,
             absl::StrCat("data_offsets must hold non-negative integers, found ", found.description));
      case Where::kDone:
        break;
    }
    FH_CHECK(false, "JSON value in an impossible parser state in ", file_);
  }

  void finish_entry() {
    ParsedTensor& t = current();
    if (!t.has_dtype) fail(Kind::kInvalidDType, file_, t.info.name, "the entry has no dtype");
    if (!t.has_shape) fail(Kind::kInvalidShape, file_, t.info.name, "the entry has no shape");
    if (t.num_offsets < 0) fail(Kind::kInvalidOffset, file_, t.info.name, "the entry has no data_offsets");
  }

  Where where_ = Where::kStart;
  Field field_ = Field::kNone;
  std::string key_;
  bool key_is_metadata_ = false;
  bool seen_metadata_ = false;
  std::unordered_set<std::string> names_;
};

// Sizes (S14, S15) and the offset layout (S10, S11, S12, S20, S5, S6) of the parsed entries.
void validate_layout(std::vector<ParsedTensor>& parsed, uint64_t data_size, const std::string& file,
                     std::vector<TensorInfo>& out) {
  out.reserve(parsed.size());
  for (ParsedTensor& t : parsed) {
    TensorInfo& info = t.info;
    if (info.begin > info.end) {
      fail(Kind::kInvalidOffset, file, info.name,
           absl::StrCat("data_offsets [", info.begin, ", ", info.end, "] end before they begin"));
    }
    // The element count must fit in int64_t (LibTorch's numel); checked at every step, never wrapped (S14).
    uint64_t count = 1;
    for (uint64_t d : t.dims) {
      std::optional<uint64_t> next = core::checked_mul(count, d);
      if (!next || *next > kMaxInt64) {
        fail(Kind::kValidationOverflow, file, info.name,
             absl::StrCat("shape [", absl::StrJoin(t.dims, ", "), "] has more elements than fit in 63 bits"));
      }
      count = *next;
    }
    for (uint64_t d : t.dims) {
      // Only reachable when another dimension is 0, so that the product stayed small.
      if (d > kMaxInt64) {
        fail(Kind::kInvalidShape, file, info.name,
             absl::StrCat("dimension ", d, " does not fit in 63 bits"));
      }
    }
    const int element_size = core::dtype_size(info.dtype);
    std::optional<uint64_t> bytes = core::checked_mul(count, static_cast<uint64_t>(element_size));
    if (!bytes || *bytes > kMaxInt64) {
      fail(Kind::kValidationOverflow, file, info.name,
           absl::StrCat("shape [", absl::StrJoin(t.dims, ", "), "] of ", std::string(core::dtype_name(info.dtype)),
                        " is more bytes than fit in 63 bits"));
    }
    if (*bytes != info.end - info.begin) {
      fail(Kind::kTensorInvalidInfo, file, info.name,
           absl::StrCat("shape [", absl::StrJoin(t.dims, ", "), "] of ", std::string(core::dtype_name(info.dtype)), " is ",
                        *bytes, " bytes but data_offsets [", info.begin, ", ", info.end, "] hold ",
                        info.end - info.begin));
    }
    info.shape.assign(t.dims.begin(), t.dims.end());
    out.push_back(std::move(info));
  }

  std::sort(out.begin(), out.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  // Contiguous from 0 with no gap and no overlap. Sorted by (begin, end), zero-size tensors sharing an offset with
  // their neighbour pass (S20), while two tensors with the same non-empty range fail (S10).
  uint64_t expected = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& info : out) {
    if (info.begin != expected) {
      std::string where = previous == nullptr
                              ? std::string("the first tensor must start at offset 0")
                              : absl::StrCat("the previous tensor ", in_quotes(previous->name), " ends at ", expected);
      fail(Kind::kInvalidOffset, file, info.name,
           absl::StrCat("data_offsets [", info.begin, ", ", info.end, "] ",
                        info.begin < expected ? "overlap another tensor" : "leave a gap", ": ", where,
                        " (tensors must be contiguous and must not overlap)"));
    }
    expected = info.end;
    previous = &info;
  }
  if (expected != data_size) {
    fail(Kind::kMetadataIncompleteBuffer, file, "",
         absl::StrCat("the tensors end at byte ", expected, " of the data section but the data section is ",
                      data_size, " bytes (",
                      expected > data_size ? "the file is truncated" : "there are bytes after the last tensor",
                      "); the last tensor must end exactly at the end of the file"));
  }
}

void validate_metadata_string(std::string_view s, const char* what, const std::string& file) {
  if (!core::is_valid_utf8(s)) {
    fail(Kind::kInvalidMetadata, file, "", absl::StrCat("__metadata__ ", what, " ", in_quotes(s), " is not valid UTF-8"));
  }
  if (s.find('\0') != std::string_view::npos) {
    fail(Kind::kInvalidMetadata, file, "", absl::StrCat("__metadata__ ", what, " ", in_quotes(s), " contains NUL"));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The index state machine: {"metadata": {"total_size": N, ...}, "weight_map": {"name": "file", ...}, ...}.
// Keys other than these are skipped (they may nest, up to kMaxIndexDepth).

class IndexSax final : public StrictSax {
 public:
  explicit IndexSax(const std::string& file) : StrictSax(file, Kind::kInvalidIndex) {}

  SafetensorsIndex index;
  bool seen_weight_map = false;

  bool start_object(std::size_t) override { return open(found_object(), /*is_object=*/true); }
  bool start_array(std::size_t) override { return open(found_array(), /*is_object=*/false); }

  bool end_object() override { return close(); }
  bool end_array() override { return close(); }

  bool key(string_t& k) override {
    FH_CHECK(!stack_.empty());
    key_ = k;
    switch (stack_.back()) {
      case Frame::kTop:
        if (k == "metadata" || k == "weight_map") {
          if (!top_keys_.insert(k).second) fail(Kind::kInvalidIndex, file_, "", absl::StrCat(in_quotes(k), " appears twice"));
          pending_ = k == "metadata" ? Pending::kMetadata : Pending::kWeightMap;
        } else {
          pending_ = Pending::kIgnored;
        }
        return true;
      case Frame::kMetadata:
        if (k == "total_size") {
          if (index.has_total_size) fail(Kind::kInvalidIndex, file_, "", "metadata.total_size appears twice");
          pending_ = Pending::kTotalSize;
        } else {
          pending_ = Pending::kIgnored;
        }
        return true;
      case Frame::kWeightMap:
        if (index.weight_map.count(k) != 0) {
          fail(Kind::kInvalidIndex, file_, k,
               "weight_map lists the tensor twice; each tensor must be in exactly one shard");
        }
        pending_ = Pending::kShardName;
        return true;
      case Frame::kIgnored:
        pending_ = Pending::kIgnored;
        return true;
    }
    return true;
  }

 protected:
  bool scalar_value(const Found& found) override {
    switch (pending_) {
      case Pending::kIgnored:
        break;
      case Pending::kTop:
        fail(Kind::kInvalidIndex, file_, "", absl::StrCat("the index must be a JSON object, found ", found.description));
      case Pending::kMetadata:
        fail(Kind::kInvalidIndex, file_, "", absl::StrCat("\"metadata\" must be an object, found ", found.description));
      case Pending::kWeightMap:
        fail(Kind::kInvalidIndex, file_, "", absl::StrCat("\"weight_map\" must be an object, found ", found.description));
      case Pending::kTotalSize:
        fail(Kind::kInvalidIndex, file_, "",
             absl::StrCat("metadata.total_size must be a non-negative integer, found ", found.description));
      case Pending::kShardName:
        fail(Kind::kInvalidIndex, file_, key_,
             absl::StrCat("weight_map values must be shard file names, found ", found.description));
    }
    after_value();
    return true;
  }

  bool unsigned_value(uint64_t v) override {
    if (pending_ == Pending::kTotalSize) {
      index.has_total_size = true;
      index.total_size = v;
      after_value();
      return true;
    }
    return scalar_value(found_unsigned(v));
  }

  bool string_value(const std::string& v) override {
    if (pending_ == Pending::kShardName) {
      validate_shard_file_name(v, file_);
      index.weight_map.emplace(key_, v);
      after_value();
      return true;
    }
    return scalar_value(found_string(v));
  }

 private:
  enum class Frame { kTop, kMetadata, kWeightMap, kIgnored };
  enum class Pending { kTop, kMetadata, kWeightMap, kTotalSize, kShardName, kIgnored };

  bool open(const Found& found, bool is_object) {
    if (stack_.size() >= kMaxIndexDepth) {
      fail(Kind::kInvalidIndex, file_, "", absl::StrCat("JSON nested deeper than ", kMaxIndexDepth, " levels"));
    }
    Frame frame = Frame::kIgnored;
    switch (pending_) {
      case Pending::kTop:
        if (!is_object) scalar_value(found);
        frame = Frame::kTop;
        break;
      case Pending::kMetadata:
        if (!is_object) scalar_value(found);
        frame = Frame::kMetadata;
        break;
      case Pending::kWeightMap:
        if (!is_object) scalar_value(found);
        frame = Frame::kWeightMap;
        seen_weight_map = true;
        break;
      case Pending::kIgnored:
        break;
      case Pending::kTotalSize:
      case Pending::kShardName:
        scalar_value(found);  // throws
        break;
    }
    stack_.push_back(frame);
    // Inside an ignored array the values have no key: they are ignored as well.
    pending_ = Pending::kIgnored;
    return true;
  }

  bool close() {
    FH_CHECK(!stack_.empty());
    stack_.pop_back();
    after_value();
    return true;
  }

  // After a value, the next one is again a value of the enclosing container.
  void after_value() { pending_ = Pending::kIgnored; }

  std::vector<Frame> stack_;
  Pending pending_ = Pending::kTop;
  std::string key_;
  std::set<std::string> top_keys_;
};

}  // namespace

std::string_view safetensors_error_kind_name(SafetensorsErrorKind kind) {
  switch (kind) {
    case Kind::kHeaderTooSmall: return "HeaderTooSmall";
    case Kind::kHeaderTooLarge: return "HeaderTooLarge";
    case Kind::kInvalidHeaderLength: return "InvalidHeaderLength";
    case Kind::kInvalidHeaderUtf8: return "InvalidHeaderUtf8";
    case Kind::kInvalidHeaderJson: return "InvalidHeaderJson";
    case Kind::kInvalidTensorEntry: return "InvalidTensorEntry";
    case Kind::kInvalidDType: return "InvalidDType";
    case Kind::kInvalidShape: return "InvalidShape";
    case Kind::kInvalidOffset: return "InvalidOffset";
    case Kind::kValidationOverflow: return "ValidationOverflow";
    case Kind::kTensorInvalidInfo: return "TensorInvalidInfo";
    case Kind::kMetadataIncompleteBuffer: return "MetadataIncompleteBuffer";
    case Kind::kDuplicateName: return "DuplicateName";
    case Kind::kInvalidMetadata: return "InvalidMetadata";
    case Kind::kInvalidName: return "InvalidName";
    case Kind::kMissingTensor: return "MissingTensor";
    case Kind::kInvalidIndex: return "InvalidIndex";
    case Kind::kNotSafetensors: return "NotSafetensors";
  }
  return "Unknown";
}

SafetensorsError::SafetensorsError(SafetensorsErrorKind kind, std::string file, std::string tensor,
                                   const std::string& detail)
    : core::FormatError(absl::StrCat(file, tensor.empty() ? "" : ": tensor ", tensor.empty() ? "" : in_quotes(tensor),
                                     ": ", detail)),
      kind_(kind),
      file_(std::move(file)),
      tensor_(std::move(tensor)) {}

uint64_t TensorInfo::num_elements() const {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

int64_t SafetensorsHeader::find(std::string_view name) const {
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (tensors[i].name == name) return static_cast<int64_t>(i);
  }
  return -1;
}

std::vector<std::string> SafetensorsIndex::shard_names() const {
  std::set<std::string> names;
  for (const auto& [tensor, shard] : weight_map) names.insert(shard);
  return {names.begin(), names.end()};
}

uint64_t parse_safetensors_header_length(std::string_view prefix, uint64_t file_size, const std::string& file) {
  if (file_size < 8) {
    fail(Kind::kHeaderTooSmall, file, "",
         absl::StrCat("the file is ", file_size, " bytes; a safetensors file starts with an 8-byte header length"));
  }
  FH_CHECK(prefix.size() >= 8, "need the first 8 bytes of ", file, ", got ", prefix.size());
  const uint64_t n = read_le64(prefix.data());
  if (n > kMaxSafetensorsHeaderBytes) {
    fail(Kind::kHeaderTooLarge, file, "",
         absl::StrCat("the header length is ", n, " bytes; at most ", kMaxSafetensorsHeaderBytes,
                      " are accepted (is this a safetensors file?)"));
  }
  if (n < 2) {
    fail(Kind::kHeaderTooSmall, file, "",
         absl::StrCat("the header length is ", n, " bytes; the smallest header, {}, is 2"));
  }
  if (n > file_size - 8) {
    fail(Kind::kInvalidHeaderLength, file, "",
         absl::StrCat("the header length is ", n, " bytes but only ", file_size - 8,
                      " bytes follow the length prefix (truncated file?)"));
  }
  return n;
}

SafetensorsHeader parse_safetensors_header(std::string_view file_bytes, uint64_t file_size, const std::string& file) {
  const uint64_t n = parse_safetensors_header_length(file_bytes, file_size, file);
  FH_CHECK(file_bytes.size() >= 8 + n, "need the first ", 8 + n, " bytes of ", file, ", got ", file_bytes.size());
  const std::string_view json = file_bytes.substr(8, n);

  if (size_t nul = json.find('\0'); nul != std::string_view::npos) {
    fail(Kind::kInvalidHeaderUtf8, file, "", absl::StrCat("the header contains a NUL byte at offset ", 8 + nul));
  }
  if (size_t bad = core::find_invalid_utf8(json); bad != std::string_view::npos) {
    fail(Kind::kInvalidHeaderUtf8, file, "",
         absl::StrCat("the header is not valid UTF-8 (byte 0x", absl::Hex(static_cast<uint8_t>(json[bad])),
                      " at offset ", 8 + bad, ")"));
  }

  // As the reference reader requires: this also rules out a byte-order mark, which nlohmann would skip silently.
  if (json.front() != '{') {
    fail(Kind::kInvalidHeaderJson, file, "",
         absl::StrCat("the header must start with '{', found byte 0x", absl::Hex(static_cast<uint8_t>(json.front()))));
  }
  // Trailing whitespace is the format's padding; dropping it here (a fast scan) rather than in the JSON lexer (one
  // byte at a time) keeps a 100 MB header of spaces cheap (S22).
  size_t end = json.size();
  while (end > 0 && (json[end - 1] == ' ' || json[end - 1] == '\n' || json[end - 1] == '\r' || json[end - 1] == '\t')) {
    --end;
  }
  if (end == 0) fail(Kind::kInvalidHeaderJson, file, "", "the header is only whitespace");
  const std::string_view trimmed = json.substr(0, end);

  HeaderSax sax(file);
  const bool ok = Json::sax_parse(trimmed.begin(), trimmed.end(), &sax, nlohmann::json::input_format_t::json,
                                  /*strict=*/true, /*ignore_comments=*/false);
  // Every rejection throws from inside the handler; a false return would be an unreported one.
  FH_CHECK(ok, "JSON parser stopped without an error in ", file);

  SafetensorsHeader header;
  header.header_length = n;
  header.data_size = file_size - 8 - n;
  header.metadata = std::move(sax.metadata);
  validate_layout(sax.tensors, header.data_size, file, header.tensors);
  return header;
}

void validate_tensor_name(std::string_view name, const std::string& file) {
  std::string shown(name);
  if (name.empty()) fail(Kind::kInvalidName, file, "", "a tensor name is empty");
  if (name.size() > kMaxTensorNameBytes) {
    fail(Kind::kInvalidName, file, shown,
         absl::StrCat("the name is ", name.size(), " bytes; at most ", kMaxTensorNameBytes, " are accepted"));
  }
  if (size_t bad = core::find_invalid_utf8(name); bad != std::string_view::npos) {
    fail(Kind::kInvalidName, file, shown, absl::StrCat("the name is not valid UTF-8 at byte ", bad));
  }
  if (size_t bad = find_control_character(name); bad != std::string_view::npos) {
    fail(Kind::kInvalidName, file, shown, absl::StrCat("the name contains a control character at byte ", bad));
  }
  if (name == "__metadata__") {
    fail(Kind::kInvalidName, file, shown, "\"__metadata__\" is reserved for the file's metadata");
  }
}

std::string serialize_safetensors_header(const std::vector<TensorInfo>& tensors,
                                         const std::map<std::string, std::string>& metadata, const std::string& file) {
  nlohmann::ordered_json json = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [key, value] : metadata) {
      validate_metadata_string(key, "key", file);
      validate_metadata_string(value, "value", file);
      meta[key] = value;
    }
    json["__metadata__"] = std::move(meta);
  }
  std::unordered_set<std::string_view> names;
  uint64_t expected = 0;
  for (const TensorInfo& t : tensors) {
    validate_tensor_name(t.name, file);
    if (!names.insert(t.name).second) {
      fail(Kind::kDuplicateName, file, t.name, "two tensors have this name; names must be unique");
    }
    FH_CHECK(t.shape.size() <= static_cast<size_t>(kMaxTensorRank), t.name, " has rank ", t.shape.size());
    FH_CHECK(t.begin == expected && t.end >= t.begin, t.name, ": offsets [", t.begin, ", ", t.end,
             "] are not contiguous after ", expected);
    uint64_t bytes = static_cast<uint64_t>(core::dtype_size(t.dtype));
    for (int64_t d : t.shape) {
      FH_CHECK(d >= 0, t.name, " has a negative dimension");
      std::optional<uint64_t> next = core::checked_mul(bytes, static_cast<uint64_t>(d));
      FH_CHECK(next.has_value(), t.name, " overflows");
      bytes = *next;
    }
    FH_CHECK(bytes == t.num_bytes(), t.name, ": shape is ", bytes, " bytes but offsets hold ", t.num_bytes());
    expected = t.end;
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = std::string(core::dtype_name(t.dtype));
    entry["shape"] = t.shape;
    entry["data_offsets"] = nlohmann::ordered_json::array({t.begin, t.end});
    json[t.name] = std::move(entry);
  }
  std::string text = json.dump(-1, ' ', /*ensure_ascii=*/false, nlohmann::ordered_json::error_handler_t::strict);
  // Pad with spaces (allowed JSON whitespace, as the reference writer does) so the data starts 8-byte aligned.
  const uint64_t n = (static_cast<uint64_t>(text.size()) + 7) / 8 * 8;
  if (n > kMaxSafetensorsHeaderBytes) {
    fail(Kind::kHeaderTooLarge, file, "",
         absl::StrCat("the header would be ", n, " bytes; readers accept at most ", kMaxSafetensorsHeaderBytes));
  }
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  out += text;
  out.append(n - text.size(), ' ');
  return out;
}

void validate_shard_file_name(std::string_view name, const std::string& index_file) {
  auto bad = [&](const std::string& why) {
    fail(Kind::kInvalidIndex, index_file, "",
         absl::StrCat("weight_map names the shard ", in_quotes(name), ", which ", why,
                      "; shards must be plain file names in the model directory"));
  };
  if (name.empty()) bad("is empty");
  if (name == "." || name == "..") bad("is not a file");
  if (name.find('/') != std::string_view::npos || name.find('\\') != std::string_view::npos) {
    bad("is a path, not a file name");
  }
  if (name.size() > kMaxShardFileNameBytes) bad(absl::StrCat("is longer than ", kMaxShardFileNameBytes, " bytes"));
  if (!core::is_valid_utf8(name)) bad("is not valid UTF-8");
  if (find_control_character(name) != std::string_view::npos) bad("contains a control character");
}

SafetensorsIndex parse_safetensors_index(std::string_view json, const std::string& file) {
  if (!core::is_valid_utf8(json)) fail(Kind::kInvalidIndex, file, "", "the index is not valid UTF-8");
  if (json.find('\0') != std::string_view::npos) fail(Kind::kInvalidIndex, file, "", "the index contains a NUL byte");
  IndexSax sax(file);
  const bool ok = Json::sax_parse(json.begin(), json.end(), &sax, nlohmann::json::input_format_t::json,
                                  /*strict=*/true, /*ignore_comments=*/false);
  FH_CHECK(ok, "JSON parser stopped without an error in ", file);
  if (!sax.seen_weight_map) fail(Kind::kInvalidIndex, file, "", "the index has no \"weight_map\" object");
  if (sax.index.weight_map.empty()) fail(Kind::kInvalidIndex, file, "", "the index's weight_map is empty");
  return std::move(sax.index);
}

}  // namespace freehold::io
