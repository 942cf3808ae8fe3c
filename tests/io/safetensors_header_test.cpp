// The torch-free safetensors header and index parser against RELIABILITY.md S1–S20, S22, S23: every bad file is
// built byte by byte here and must fail with its specific SafetensorsErrorKind.
#include "io/safetensors_header.h"

#include <sys/mman.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "nlohmann/json.hpp"

namespace freehold::io {
namespace {

using Kind = SafetensorsErrorKind;
constexpr char kFile[] = "test.safetensors";

std::string le64(uint64_t n) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return out;
}

// A file assembled byte by byte: the little-endian length of `json`, `json`, then `data_size` bytes of `fill`.
std::string make_file(std::string_view json, uint64_t data_size, char fill = '\x01') {
  return le64(json.size()) + std::string(json) + std::string(data_size, fill);
}

SafetensorsHeader parse(const std::string& bytes) { return parse_safetensors_header(bytes, bytes.size(), kFile); }

// Passes when parsing `bytes` (as a file of `file_size` bytes, default its own size) throws kind `expected`.
::testing::AssertionResult rejected_as(Kind expected, const std::string& bytes, uint64_t file_size = UINT64_MAX) {
  if (file_size == UINT64_MAX) file_size = bytes.size();
  try {
    SafetensorsHeader header = parse_safetensors_header(bytes, file_size, kFile);
    return ::testing::AssertionFailure() << "accepted (" << header.tensors.size() << " tensors), expected "
                                         << safetensors_error_kind_name(expected);
  } catch (const SafetensorsError& e) {
    if (e.kind() != expected) {
      return ::testing::AssertionFailure() << "rejected as " << safetensors_error_kind_name(e.kind()) << ", expected "
                                           << safetensors_error_kind_name(expected) << ": " << e.what();
    }
    if (std::string(e.what()).find(kFile) == std::string::npos) {
      return ::testing::AssertionFailure() << "the message does not name the file: " << e.what();
    }
    return ::testing::AssertionSuccess() << e.what();
  }
}

// The same, for JSON with a given data size.
::testing::AssertionResult json_rejected_as(Kind expected, std::string_view json, uint64_t data_size) {
  return rejected_as(expected, make_file(json, data_size));
}

// One F32 entry.
std::string f32(std::string_view name, std::string_view shape, uint64_t begin, uint64_t end) {
  return absl::StrCat("\"", std::string(name), "\":{\"dtype\":\"F32\",\"shape\":", std::string(shape),
                      ",\"data_offsets\":[", begin, ",", end, "]}");
}

std::string error_tensor(const std::string& bytes) {
  try {
    parse(bytes);
  } catch (const SafetensorsError& e) {
    return e.tensor();
  }
  return "<accepted>";
}

// Bytes placed right before an inaccessible page: any read past their end faults.
class GuardedBytes {
 public:
  explicit GuardedBytes(const std::string& bytes) {
    page_ = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
    size_ = ((bytes.size() + page_ - 1) / page_ + 1) * page_;
    base_ = static_cast<char*>(::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    EXPECT_NE(base_, MAP_FAILED);
    EXPECT_EQ(::mprotect(base_ + size_ - page_, page_, PROT_NONE), 0);
    data_ = base_ + size_ - page_ - bytes.size();
    std::memcpy(data_, bytes.data(), bytes.size());
    view_ = std::string_view(data_, bytes.size());
  }
  ~GuardedBytes() { ::munmap(base_, size_); }
  std::string_view view() const { return view_; }

 private:
  size_t page_ = 0, size_ = 0;
  char* base_ = nullptr;
  char* data_ = nullptr;
  std::string_view view_;
};

// ---------------------------------------------------------------------------------------------------------------
// Valid files

TEST(SafetensorsHeaderTest, ValidHeaderGivesTensorsInFileOrderWithMetadata) {
  std::string json = absl::StrCat("{\"__metadata__\":{\"format\":\"pt\"},", f32("b", "[2,3]", 8, 32), ",",
                                  "\"a\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]}}");
  SafetensorsHeader h = parse(make_file(json, 32));
  ASSERT_EQ(h.tensors.size(), 2u);
  EXPECT_EQ(h.tensors[0].name, "a");  // sorted by offset, not by JSON order
  EXPECT_EQ(h.tensors[0].dtype, core::DType::kBF16);
  EXPECT_EQ(h.tensors[1].name, "b");
  EXPECT_EQ(h.tensors[1].shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(h.tensors[1].begin, 8u);
  EXPECT_EQ(h.tensors[1].end, 32u);
  EXPECT_EQ(h.tensors[1].num_elements(), 6u);
  EXPECT_EQ(h.tensors[1].num_bytes(), 24u);
  EXPECT_EQ(h.metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
  EXPECT_EQ(h.header_length, json.size());
  EXPECT_EQ(h.data_offset(), 8 + json.size());
  EXPECT_EQ(h.data_size, 32u);
  EXPECT_EQ(h.find("b"), 1);
  EXPECT_EQ(h.find("c"), -1);
}

TEST(SafetensorsHeaderTest, TrailingSpacePaddingAndScalarsAndEmptyHeaderAreAccepted) {
  SafetensorsHeader h = parse(make_file(absl::StrCat("{", f32("s", "[]", 0, 4), "}     "), 4));
  ASSERT_EQ(h.tensors.size(), 1u);
  EXPECT_TRUE(h.tensors[0].shape.empty());
  EXPECT_EQ(h.tensors[0].num_elements(), 1u);
  EXPECT_TRUE(parse(make_file("{}", 0)).tensors.empty());
  EXPECT_TRUE(parse(make_file("{\"__metadata__\":{}}", 0)).metadata.empty());
}

// ---------------------------------------------------------------------------------------------------------------
// S1–S4: the length prefix

TEST(SafetensorsHeaderTest, S1_EmptyAndSevenByteFilesAreHeaderTooSmallWithoutReadingPastTheEnd) {
  EXPECT_TRUE(rejected_as(Kind::kHeaderTooSmall, ""));
  EXPECT_TRUE(rejected_as(Kind::kHeaderTooSmall, std::string(7, '\x02')));
  GuardedBytes seven(std::string(7, '\x02'));
  try {
    parse_safetensors_header(seven.view(), 7, kFile);
    FAIL() << "accepted";
  } catch (const SafetensorsError& e) {
    EXPECT_EQ(e.kind(), Kind::kHeaderTooSmall);
  }
  // A length below the smallest header, "{}".
  EXPECT_TRUE(rejected_as(Kind::kHeaderTooSmall, le64(0)));
  EXPECT_TRUE(rejected_as(Kind::kHeaderTooSmall, le64(1) + "{"));
}

TEST(SafetensorsHeaderTest, S2_HeaderLengthAbove2To63IsRejectedBeforeAllocating) {
  // The claimed file size is as large as the length, so only the cap can refuse it; an allocation of N bytes
  // would throw std::bad_alloc or std::length_error instead of SafetensorsError.
  for (uint64_t n : {UINT64_MAX, uint64_t{1} << 63, uint64_t{0xFFFFFF0000000000}}) {
    EXPECT_TRUE(rejected_as(Kind::kHeaderTooLarge, le64(n), UINT64_MAX - 1)) << n;
    EXPECT_TRUE(rejected_as(Kind::kHeaderTooLarge, le64(n) + "{}")) << n;
  }
}

TEST(SafetensorsHeaderTest, S3_HeaderLengthCapIsInclusive) {
  const uint64_t cap = kMaxSafetensorsHeaderBytes;
  ASSERT_EQ(cap, 100'000'000u);
  EXPECT_EQ(parse_safetensors_header_length(le64(cap), 8 + cap, kFile), cap);
  EXPECT_TRUE(rejected_as(Kind::kHeaderTooLarge, le64(cap + 1), 8 + cap + 1));
  // And a whole header of exactly the cap parses: "{}" and 99,999,998 spaces.
  std::string json = "{}" + std::string(cap - 2, ' ');
  SafetensorsHeader h = parse(make_file(json, 0));
  EXPECT_EQ(h.header_length, cap);
  EXPECT_TRUE(h.tensors.empty());
}

TEST(SafetensorsHeaderTest, S4_HeaderLengthBeyondTheFileIsInvalidHeaderLength) {
  std::string json = "{}";
  EXPECT_TRUE(rejected_as(Kind::kInvalidHeaderLength, le64(3) + json));
  EXPECT_TRUE(rejected_as(Kind::kInvalidHeaderLength, le64(kMaxSafetensorsHeaderBytes) + json));
  GuardedBytes truncated(le64(100) + "{\"a\"");
  try {
    parse_safetensors_header(truncated.view(), truncated.view().size(), kFile);
    FAIL() << "accepted";
  } catch (const SafetensorsError& e) {
    EXPECT_EQ(e.kind(), Kind::kInvalidHeaderLength);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// S5, S6: the data section must end exactly at the end of the file

TEST(SafetensorsHeaderTest, S5_DataTruncatedByOneOrTwoBytesIsRejected) {
  std::string json = absl::StrCat("{", f32("w", "[4]", 0, 16), "}");
  EXPECT_NO_THROW(parse(make_file(json, 16)));
  EXPECT_TRUE(json_rejected_as(Kind::kMetadataIncompleteBuffer, json, 15));
  EXPECT_TRUE(json_rejected_as(Kind::kMetadataIncompleteBuffer, json, 14));
  EXPECT_TRUE(json_rejected_as(Kind::kMetadataIncompleteBuffer, json, 0));
}

TEST(SafetensorsHeaderTest, S6_TrailingBytesAfterTheLastTensorAreRejected) {
  std::string json = absl::StrCat("{", f32("w", "[4]", 0, 16), "}");
  EXPECT_TRUE(json_rejected_as(Kind::kMetadataIncompleteBuffer, json, 17));
  // A polyglot: a valid file with a zip archive appended.
  EXPECT_TRUE(rejected_as(Kind::kMetadataIncompleteBuffer, make_file(json, 16) + "PK\x03\x04 hidden payload"));
  EXPECT_TRUE(json_rejected_as(Kind::kMetadataIncompleteBuffer, "{}", 1));
}

// ---------------------------------------------------------------------------------------------------------------
// S7, S8: encoding and JSON

TEST(SafetensorsHeaderTest, S7_HeaderThatIsNotUtf8OrHoldsNulIsRejected) {
  auto with_name = [](std::string_view name) { return absl::StrCat("{", f32(name, "[1]", 0, 4), "}"); };
  EXPECT_TRUE(json_rejected_as(Kind::kInvalidHeaderUtf8, with_name("\xff"), 4));
  EXPECT_TRUE(json_rejected_as(Kind::kInvalidHeaderUtf8, with_name("\xc0\xaf"), 4));      // overlong '/'
  EXPECT_TRUE(json_rejected_as(Kind::kInvalidHeaderUtf8, with_name("\xe0\x80\xaf"), 4));  // overlong, 3 bytes
  EXPECT_TRUE(json_rejected_as(Kind::kInvalidHeaderUtf8, with_name("\xed\xa0\x80"), 4));  // UTF-16 surrogate
  EXPECT_TRUE(json_rejected_as(Kind::kInvalidHeaderUtf8, with_name(std::string("a\0b", 3)), 4));
  EXPECT_TRUE(json_rejected_as(Kind::kInvalidHeaderUtf8, std::string("{}\0", 3), 0));  // NUL as padding
  EXPECT_TRUE(json_rejected_as(Kind::kInvalidHeaderUtf8, "{\xff}", 0));
  // Valid multi-byte names are fine.
  EXPECT_NO_THROW(parse(make_file(with_name("層.重み"), 4)));
}

TEST(SafetensorsHeaderTest, S8_HeaderThatIsNotAJsonObjectIsRejected) {
  for (std::string_view json : {"not json", "[1, 2]", "42", "\"a string\"", "null", "{ ", "{\"a\":", "{}{}", "{} x",
                                "{\"a\" 1}", "{'a': 1}", "{\"a\":{\"dtype\":\"F32\",}}", "  ", "{\"\\ud800\":1}",
                                " {}", "\n{}", "\xef\xbb\xbf{}"}) {
    EXPECT_TRUE(json_rejected_as(Kind::kInvalidHeaderJson, json, 0)) << json;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// S9: dtype

TEST(SafetensorsHeaderTest, S9_UnknownMissingOrUnsupportedDTypeIsRejectedNamingTheTensor) {
  for (std::string_view dtype : {"\"F31\"", "\"f32\"", "7", "null", "\"F8_E8M0\"", "\"U32\"", "[\"F32\"]", "\"\""}) {
    std::string json = absl::StrCat("{\"w\":{\"dtype\":", std::string(dtype), ",\"shape\":[1],\"data_offsets\":[0,1]}}");
    EXPECT_TRUE(json_rejected_as(Kind::kInvalidDType, json, 1)) << dtype;
    EXPECT_EQ(error_tensor(make_file(json, 1)), "w");
  }
  EXPECT_TRUE(json_rejected_as(Kind::kInvalidDType, "{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4));
  EXPECT_EQ(error_tensor(make_file("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4)), "w");
}

// ---------------------------------------------------------------------------------------------------------------
// S10–S13: offsets

TEST(SafetensorsHeaderTest, S10_OverlappingTensorsAreInvalidOffset) {
  EXPECT_TRUE(json_rejected_as(Kind::kInvalidOffset, absl::StrCat("{", f32("a", "[4]", 0, 16), ",", f32("b", "[4]", 0, 16), "}"), 16));
  EXPECT_TRUE(json_rejected_as(Kind::kInvalidOffset, absl::StrCat("{", f32("a", "[4]", 0, 16), ",", f32("b", "[4]", 0, 16), "}"), 32));
  EXPECT_TRUE(json_rejected_as(Kind::kInvalidOffset, absl::StrCat("{", f32("a", "[4]", 0, 16), ",", f32("b", "[4]", 8, 24), "}"), 24));
  // A zero-size tensor inside another one is an overlap too.
  EXPECT_TRUE(json_rejected_as(Kind::kInvalidOffset, absl::StrCat("{", f32("a", "[4]", 0, 16), ",", f32("e", "[0]", 8, 8), "}"), 16));
}

TEST(SafetensorsHeaderTest, S11_GapBetweenTensorsOrFirstTensorNotAtZeroIsInvalidOffset) {
  EXPECT_TRUE(json_rejected_as(Kind::kInvalidOffset, absl::StrCat("{", f32("a", "[4]", 0, 16), ",", f32("b", "[4]", 20, 36), "}"), 36));
  EXPECT_TRUE(json_rejected_as(Kind::kInvalidOffset, absl::StrCat("{", f32("a", "[4]", 4, 20), "}"), 20));
  // A zero-size tensor past the end of the data is a gap, not an out-of-bounds view.
  EXPECT_TRUE(json_rejected_as(Kind::kInvalidOffset, absl::StrCat("{", f32("a", "[4]", 0, 16), ",", f32("e", "[0]", 99, 99), "}"), 16));
}

TEST(SafetensorsHeaderTest, S12_BeginAfterEndIsInvalidOffset) {
  EXPECT_TRUE(json_rejected_as(Kind::kInvalidOffset, absl::StrCat("{", f32("a", "[4]", 16, 0), "}"), 16));
}

TEST(SafetensorsHeaderTest, S13_OffsetsThatAreNotUnsignedIntegersAreRejectedWithoutDoubleConversion) {
  for (std::string_view offsets : {"[-1,15]", "[0,-0]", "[1.5,16]", "[0,16.0]", "[0,1e30]", "[0,1E1]", "[\"0\",\"16\"]",
                                   "[0,18446744073709551616]", "[null,16]", "[0]", "[]", "[0,16,32]", "16", "{}",
                                   "[[0],16]"}) {
    std::string json = absl::StrCat("{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":", std::string(offsets), "}}");
    EXPECT_TRUE(json_rejected_as(Kind::kInvalidOffset, json, 16)) << offsets;
  }
  // 2^53+1 rounds to 2^53 through a double. Claim a data section of 2^53 bytes (the parser never reads data):
  // through doubles both of these would pass; exact integers reject them.
  const uint64_t two53 = uint64_t{1} << 53;
  std::string off_by_one = absl::StrCat("{\"w\":{\"dtype\":\"U8\",\"shape\":[", two53, "],\"data_offsets\":[0,",
                                        two53 + 1, "]}}");
  std::string bytes = le64(off_by_one.size()) + off_by_one;
  EXPECT_TRUE(rejected_as(Kind::kTensorInvalidInfo, bytes, bytes.size() + two53 + 1));
  std::string past_end = absl::StrCat("{\"w\":{\"dtype\":\"U8\",\"shape\":[", two53 + 1, "],\"data_offsets\":[0,",
                                      two53 + 1, "]}}");
  bytes = le64(past_end.size()) + past_end;
  EXPECT_TRUE(rejected_as(Kind::kMetadataIncompleteBuffer, bytes, bytes.size() + two53));
  // The exact value is accepted when everything agrees.
  SafetensorsHeader h = parse_safetensors_header(bytes, bytes.size() + two53 + 1, kFile);
  EXPECT_EQ(h.tensors[0].end, two53 + 1);
}

// ---------------------------------------------------------------------------------------------------------------
// S14–S16: shapes and sizes

TEST(SafetensorsHeaderTest, S14_ShapeProductOverflowIsValidationOverflow) {
  for (std::string_view shape : {"[2,18446744073709551614]", "[2,9223372036854775807]",
                                 "[4194305,4194305,211106198978564]", "[4611686018427387904]",
                                 "[9223372036854775807]", "[18446744073709551615]"}) {
    for (std::string_view dtype : {"F32", "U8"}) {
      if (dtype == "U8" && (shape == "[4611686018427387904]" || shape == "[9223372036854775807]")) continue;
      std::string json = absl::StrCat("{\"w\":{\"dtype\":\"", std::string(dtype), "\",\"shape\":", std::string(shape),
                                      ",\"data_offsets\":[0,16]}}");
      EXPECT_TRUE(json_rejected_as(Kind::kValidationOverflow, json, 16)) << shape << " " << dtype;
    }
  }
  // Bytes overflow while the element count does not: 2^62 F32 elements are 2^64 bytes.
  EXPECT_TRUE(json_rejected_as(Kind::kValidationOverflow,
                               "{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,16]}}", 16));
}

TEST(SafetensorsHeaderTest, S15_ShapeTimesDTypeSizeNotMatchingTheOffsetsIsTensorInvalidInfo) {
  EXPECT_TRUE(json_rejected_as(Kind::kTensorInvalidInfo,
                               "{\"w\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,4]}}", 4));
  EXPECT_TRUE(json_rejected_as(Kind::kTensorInvalidInfo,
                               "{\"w\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8));
  EXPECT_TRUE(json_rejected_as(Kind::kTensorInvalidInfo,
                               "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,4]}}", 4));
}

TEST(SafetensorsHeaderTest, S16_NegativeFractionalOrTooManyDimensionsAreInvalidShape) {
  for (std::string_view shape : {"[-1]", "[1.5]", "[2.0]", "[1e2]", "[\"4\"]", "[null]", "[[4]]", "[{}]", "4", "\"[4]\"",
                                 "null", "{}", "[1,1,1,1,1,1,1,1,1]", "[0,18446744073709551615]"}) {
    std::string json = absl::StrCat("{\"w\":{\"dtype\":\"U8\",\"shape\":", std::string(shape), ",\"data_offsets\":[0,0]}}");
    EXPECT_TRUE(json_rejected_as(Kind::kInvalidShape, json, 0)) << shape;
  }
  EXPECT_TRUE(json_rejected_as(Kind::kInvalidShape, "{\"w\":{\"dtype\":\"U8\",\"data_offsets\":[0,0]}}", 0));
  // Rank 8 is the maximum and is accepted.
  EXPECT_NO_THROW(parse(make_file("{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,2],\"data_offsets\":[0,2]}}", 2)));
}

TEST(SafetensorsHeaderTest, TensorEntryThatIsNotExactlyDTypeShapeOffsetsIsInvalidTensorEntry) {
  EXPECT_TRUE(json_rejected_as(Kind::kInvalidTensorEntry, "{\"w\":[1,2]}", 0));
  EXPECT_TRUE(json_rejected_as(Kind::kInvalidTensorEntry, "{\"w\":\"F32\"}", 0));
  EXPECT_TRUE(json_rejected_as(Kind::kInvalidTensorEntry, "{\"w\":null}", 0));
  EXPECT_TRUE(json_rejected_as(
      Kind::kInvalidTensorEntry, "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"extra\":1}}", 1));
  EXPECT_TRUE(json_rejected_as(
      Kind::kInvalidTensorEntry, "{\"w\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1));
  EXPECT_TRUE(json_rejected_as(
      Kind::kInvalidTensorEntry, "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"shape\":[1],\"data_offsets\":[0,1]}}", 1));
  EXPECT_TRUE(json_rejected_as(
      Kind::kInvalidTensorEntry, "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"data_offsets\":[0,1]}}", 1));
}

// ---------------------------------------------------------------------------------------------------------------
// S17–S20: names and metadata

TEST(SafetensorsHeaderTest, S17_DuplicateTensorNameIsRejectedExplicitly) {
  // nlohmann's DOM would keep the second entry silently; both are valid alone.
  std::string json = absl::StrCat("{", f32("w", "[4]", 0, 16), ",", f32("w", "[4]", 16, 32), "}");
  EXPECT_TRUE(json_rejected_as(Kind::kDuplicateName, json, 32));
  EXPECT_EQ(error_tensor(make_file(json, 32)), "w");
  // The same name spelled with an escape is the same name.
  std::string escaped = absl::StrCat("{", f32("w", "[4]", 0, 16), ",", f32("\\u0077", "[4]", 16, 32), "}");
  EXPECT_TRUE(json_rejected_as(Kind::kDuplicateName, escaped, 32));
}

TEST(SafetensorsHeaderTest, S18_MetadataMustBeAnObjectOfStrings) {
  for (std::string_view meta : {"{\"a\":1}", "{\"a\":{\"b\":\"c\"}}", "{\"a\":[\"b\"]}", "{\"a\":null}", "{\"a\":true}",
                                "\"pt\"", "[]", "null", "{\"a\":\"b\",\"a\":\"c\"}", "{\"a\":\"b\\u0000\"}"}) {
    EXPECT_TRUE(json_rejected_as(Kind::kInvalidMetadata, absl::StrCat("{\"__metadata__\":", std::string(meta), "}"), 0))
        << meta;
  }
  // A "tensor" named __metadata__ is metadata with non-string values.
  EXPECT_TRUE(json_rejected_as(Kind::kInvalidMetadata,
                               "{\"__metadata__\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4));
  EXPECT_TRUE(json_rejected_as(Kind::kInvalidMetadata, "{\"__metadata__\":{},\"__metadata__\":{}}", 0));
}

TEST(SafetensorsHeaderTest, S19_NamesAreKeptAsBytesAndControlCharactersOrHugeNamesAreRejected) {
  // Names are never paths, so these are just names.
  for (std::string_view name : {"../../etc/passwd", "/abs", "a/b", "..", "C:\\x"}) {
    std::string json_name = absl::StrReplaceAll(std::string(name), {{"\\", "\\\\"}});
    SafetensorsHeader h = parse(make_file(absl::StrCat("{", f32(json_name, "[1]", 0, 4), "}"), 4));
    EXPECT_EQ(h.tensors[0].name, name);
  }
  for (std::string_view name : {"", "a\\u0000b", "a\\u0001", "tab\\t", "new\\nline", "del\\u007f", "c1\\u0085"}) {
    EXPECT_TRUE(json_rejected_as(Kind::kInvalidName, absl::StrCat("{", f32(name, "[1]", 0, 4), "}"), 4)) << name;
  }
  EXPECT_NO_THROW(parse(make_file(absl::StrCat("{", f32(std::string(4096, 'n'), "[1]", 0, 4), "}"), 4)));
  EXPECT_TRUE(json_rejected_as(Kind::kInvalidName, absl::StrCat("{", f32(std::string(4097, 'n'), "[1]", 0, 4), "}"), 4));
}

TEST(SafetensorsHeaderTest, S20_ZeroSizeTensorSharingItsOffsetWithTheNextIsAccepted) {
  SafetensorsHeader h = parse(make_file(absl::StrCat("{", f32("w", "[4]", 0, 16), ",", f32("e", "[0]", 0, 0), ",",
                                                     f32("z", "[2,0]", 16, 16), "}"), 16));
  ASSERT_EQ(h.tensors.size(), 3u);
  EXPECT_EQ(h.tensors[0].name, "e");
  EXPECT_EQ(h.tensors[0].num_bytes(), 0u);
  EXPECT_EQ(h.tensors[1].name, "w");
  EXPECT_EQ(h.tensors[2].name, "z");
  EXPECT_EQ(h.tensors[2].shape, (std::vector<int64_t>{2, 0}));
  // A file of only empty tensors and no data.
  EXPECT_EQ(parse(make_file(absl::StrCat("{", f32("a", "[0]", 0, 0), ",", f32("b", "[0,3]", 0, 0), "}"), 0))
                .tensors.size(),
            2u);
}

// ---------------------------------------------------------------------------------------------------------------
// S22: bounded time, memory and stack

TEST(SafetensorsHeaderTest, S22_HugeWhitespaceOrDeeplyNestedHeadersFailWithoutRecursion) {
  const size_t n = kMaxSafetensorsHeaderBytes;
  EXPECT_TRUE(json_rejected_as(Kind::kInvalidHeaderJson, std::string(n, ' '), 0));
  EXPECT_TRUE(json_rejected_as(Kind::kInvalidHeaderJson, std::string(n, '['), 0));
  EXPECT_TRUE(json_rejected_as(Kind::kInvalidHeaderJson, std::string(n, '{'), 0));
  // Deep nesting where the format has a shape, an entry or metadata: rejected at the first extra level.
  std::string prefix = "{\"w\":{\"dtype\":\"U8\",\"shape\":";
  EXPECT_TRUE(json_rejected_as(Kind::kInvalidShape, prefix + std::string(n - prefix.size(), '['), 0));
  prefix = "{\"w\":";
  EXPECT_TRUE(json_rejected_as(Kind::kInvalidTensorEntry, prefix + std::string(n - prefix.size(), '['), 0));
  prefix = "{\"__metadata__\":{\"k\":";
  EXPECT_TRUE(json_rejected_as(Kind::kInvalidMetadata, prefix + std::string(n - prefix.size(), '{'), 0));
  // A shape with millions of dimensions is refused at the ninth, not stored.
  std::string dims = "{\"w\":{\"dtype\":\"U8\",\"shape\":[1";
  while (dims.size() + 4 <= n) dims += ",1";
  EXPECT_TRUE(json_rejected_as(Kind::kInvalidShape, dims + "]}", 0));
  // An unterminated 10 MB string (the lexer takes seconds for 100 MB, linearly): the error message stays short.
  try {
    parse(make_file("{\"" + std::string(n / 10, 'a'), 0));
    FAIL() << "accepted";
  } catch (const SafetensorsError& e) {
    EXPECT_EQ(e.kind(), Kind::kInvalidHeaderJson);
    EXPECT_LT(std::string(e.what()).size(), 1000u);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Serialization (the writer's half)

TEST(SafetensorsHeaderTest, SerializedHeaderIsPaddedTo8AndParsesBackIdentically) {
  std::vector<TensorInfo> tensors = {
      {"b.weight", core::DType::kBF16, {3, 5}, 0, 30},
      {"a.bias", core::DType::kF32, {5}, 30, 50},
      {"empty", core::DType::kI64, {0, 7}, 50, 50},
      {"層", core::DType::kBool, {}, 50, 51},
  };
  std::map<std::string, std::string> metadata = {{"format", "pt"}, {"note", "line\nbreak \"quoted\""}};
  std::string header = serialize_safetensors_header(tensors, metadata, kFile);
  const uint64_t n = header.size() - 8;
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(header.substr(0, 8), le64(n));
  EXPECT_EQ(header[8], '{');
  // Only spaces after the closing brace.
  size_t close = header.find_last_of('}');
  EXPECT_EQ(header.find_first_not_of(' ', close + 1), std::string::npos);
  EXPECT_LT(header.size() - close - 1, 8u);

  std::string file = header + std::string(51, '\0');
  SafetensorsHeader h = parse(file);
  EXPECT_EQ(h.metadata, metadata);
  ASSERT_EQ(h.tensors.size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    EXPECT_EQ(h.tensors[h.find(tensors[i].name)].shape, tensors[i].shape);
    EXPECT_EQ(h.tensors[h.find(tensors[i].name)].begin, tensors[i].begin);
    EXPECT_EQ(h.tensors[h.find(tensors[i].name)].dtype, tensors[i].dtype);
  }
  // The JSON itself, as another reader sees it.
  auto json = nlohmann::json::parse(header.substr(8));
  EXPECT_EQ(json["b.weight"]["data_offsets"], nlohmann::json::array({0, 30}));
  EXPECT_EQ(json["a.bias"]["dtype"], "F32");
  EXPECT_EQ(json["__metadata__"]["format"], "pt");

  // No tensors and no metadata: "{}" padded to 8.
  std::string empty = serialize_safetensors_header({}, {}, kFile);
  EXPECT_EQ(empty, le64(8) + "{}      ");
}

TEST(SafetensorsHeaderTest, SerializingRejectsNamesAndMetadataTheReaderWouldReject) {
  auto kind_of = [](const std::vector<TensorInfo>& tensors, const std::map<std::string, std::string>& metadata) {
    try {
      serialize_safetensors_header(tensors, metadata, kFile);
    } catch (const SafetensorsError& e) {
      return e.kind();
    }
    return Kind::kMissingTensor;  // "not rejected"
  };
  TensorInfo a{"a", core::DType::kU8, {1}, 0, 1};
  TensorInfo a2{"a", core::DType::kU8, {1}, 1, 2};
  EXPECT_EQ(kind_of({a, a2}, {}), Kind::kDuplicateName);
  for (std::string bad : {std::string(""), std::string("x\ny"), std::string("__metadata__"), std::string("\xff"),
                          std::string(4097, 'x'), std::string("a\0b", 3)}) {
    EXPECT_EQ(kind_of({{bad, core::DType::kU8, {1}, 0, 1}}, {}), Kind::kInvalidName) << bad;
  }
  EXPECT_EQ(kind_of({a}, {{"k", std::string("v\0", 2)}}), Kind::kInvalidMetadata);
  EXPECT_EQ(kind_of({a}, {{"\xff", "v"}}), Kind::kInvalidMetadata);
}

// ---------------------------------------------------------------------------------------------------------------
// S23 (parser half): model.safetensors.index.json

::testing::AssertionResult index_rejected(std::string_view json) {
  try {
    parse_safetensors_index(json, "model.safetensors.index.json");
    return ::testing::AssertionFailure() << "accepted";
  } catch (const SafetensorsError& e) {
    if (e.kind() != Kind::kInvalidIndex) {
      return ::testing::AssertionFailure() << "rejected as " << safetensors_error_kind_name(e.kind()) << ": " << e.what();
    }
    return ::testing::AssertionSuccess();
  }
}

TEST(SafetensorsIndexTest, ValidIndexGivesTheWeightMapAndTotalSize) {
  SafetensorsIndex index = parse_safetensors_index(
      R"({"metadata": {"total_size": 123, "format": "pt", "nested": {"x": [1, {"y": null}]}},
          "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors",
                         "c": "model-00001-of-00002.safetensors"},
          "extra": [[1], {"z": 2}]})",
      "index.json");
  EXPECT_TRUE(index.has_total_size);
  EXPECT_EQ(index.total_size, 123u);
  EXPECT_EQ(index.weight_map.size(), 3u);
  EXPECT_EQ(index.weight_map.at("b"), "model-00002-of-00002.safetensors");
  EXPECT_EQ(index.shard_names(),
            (std::vector<std::string>{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}));
  EXPECT_FALSE(parse_safetensors_index(R"({"weight_map": {"a": "x.safetensors"}})", "i").has_total_size);
}

TEST(SafetensorsIndexTest, S23_WeightMapValuesMustBePlainFileNamesInTheDirectory) {
  for (std::string_view shard : {"../../x.safetensors", "../x", "/etc/passwd", "sub/x.safetensors", "", ".", "..",
                                 "a\\\\b", "a\\u0000b", "a\\nb"}) {
    EXPECT_TRUE(index_rejected(absl::StrCat(R"({"weight_map": {"w": ")", std::string(shard), "\"}}"))) << shard;
  }
  EXPECT_TRUE(index_rejected(absl::StrCat(R"({"weight_map": {"w": ")", std::string(256, 'x'), "\"}}")));
}

TEST(SafetensorsIndexTest, S23_DuplicateTensorsAndMalformedIndexesAreInvalidIndex) {
  EXPECT_TRUE(index_rejected(R"({"weight_map": {"w": "a.safetensors", "w": "b.safetensors"}})"));
  EXPECT_TRUE(index_rejected(R"({"weight_map": {"w": "a.safetensors"}, "weight_map": {"v": "a.safetensors"}})"));
  EXPECT_TRUE(index_rejected(R"({"metadata": {"total_size": 1}})"));
  EXPECT_TRUE(index_rejected(R"({"weight_map": {}})"));
  EXPECT_TRUE(index_rejected(R"({"weight_map": []})"));
  EXPECT_TRUE(index_rejected(R"({"weight_map": {"w": 1}})"));
  EXPECT_TRUE(index_rejected(R"({"weight_map": {"w": ["a.safetensors"]}})"));
  EXPECT_TRUE(index_rejected(R"({"metadata": [], "weight_map": {"w": "a.safetensors"}})"));
  EXPECT_TRUE(index_rejected(R"({"metadata": {"total_size": -1}, "weight_map": {"w": "a.safetensors"}})"));
  EXPECT_TRUE(index_rejected(R"({"metadata": {"total_size": 1.5}, "weight_map": {"w": "a.safetensors"}})"));
  EXPECT_TRUE(index_rejected(R"([{"weight_map": {"w": "a.safetensors"}}])"));
  EXPECT_TRUE(index_rejected("{\"weight_map\": {\"w\": \"a.safetensors\"}"));
  EXPECT_TRUE(index_rejected("{\"weight_map\": {\"\xff\": \"a.safetensors\"}}"));
  EXPECT_TRUE(index_rejected(std::string("{\"weight_map\": {\"w\": \"a.safetensors\"}}") + std::string(1, '\0')));
  // Deep nesting inside an ignored key is bounded.
  EXPECT_TRUE(index_rejected("{\"extra\":" + std::string(10'000'000, '[')));
}

}  // namespace
}  // namespace freehold::io
