// SafetensorsFile (mmap read, zero-copy views, pread copies), the atomic writer, the sharded writer and
// parse_size: round trips, the exact byte layout we write, and RELIABILITY.md S1, S2, S19, S20, S25, S26, S27 on
// real files.
#include "io/safetensors.h"

#include <ATen/ops/_neg_view.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/randn.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "core/file.h"
#include "nlohmann/json.hpp"

namespace freehold::io {
namespace {

using Kind = SafetensorsErrorKind;

std::string make_temp_dir() {
  std::string pattern = ::testing::TempDir() + "freehold_safetensors_test_XXXXXX";
  EXPECT_NE(::mkdtemp(pattern.data()), nullptr);
  return pattern;
}

std::set<std::string> list_dir(const std::string& dir) {
  std::set<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") out.insert(name);
  }
  ::closedir(d);
  return out;
}

std::string le64(uint64_t n) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return out;
}

void write_bytes(const std::string& path, const std::string& bytes) { core::write_file_atomic(path, bytes); }

// The kind of SafetensorsError that `fn` throws; fails the test if it throws nothing or something else.
template <typename Fn>
Kind error_kind(Fn&& fn, std::string* message = nullptr) {
  try {
    fn();
  } catch (const SafetensorsError& e) {
    if (message) *message = e.what();
    return e.kind();
  }
  ADD_FAILURE() << "no SafetensorsError thrown";
  return Kind::kMissingTensor;
}

void set_mtime_to_the_past(const std::string& path) {
  struct timespec times[2] = {{1'000'000'000, 0}, {1'000'000'000, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0);
}

const std::vector<at::ScalarType> kAllTypes = {at::kDouble, at::kFloat, at::kHalf, at::kBFloat16, at::kLong,
                                               at::kInt,    at::kShort, at::kChar, at::kByte,     at::kBool};

at::Tensor sample(at::ScalarType type, std::vector<int64_t> shape) {
  at::Tensor t = at::randn(shape, at::kFloat).mul(50);
  if (type == at::kBool) return t.gt(0);
  return t.to(type);
}

// ---------------------------------------------------------------------------------------------------------------
// dtypes

TEST(SafetensorsDTypeTest, EveryDTypeMapsToATenAndBack) {
  for (at::ScalarType type : kAllTypes) {
    core::DType d = from_scalar_type(type);
    EXPECT_EQ(to_scalar_type(d), type);
    EXPECT_EQ(core::dtype_size(d), static_cast<int>(c10::elementSize(type)));
  }
  EXPECT_THROW(from_scalar_type(at::kComplexFloat), core::Error);
  EXPECT_THROW(from_scalar_type(at::kFloat8_e4m3fn), core::Error);
}

// ---------------------------------------------------------------------------------------------------------------
// Round trips and layout

TEST(SafetensorsFileTest, SaveThenOpenRoundTripsEveryDTypeWithMetadata) {
  std::string path = make_temp_dir() + "/all.safetensors";
  std::vector<NamedTensor> tensors;
  for (size_t i = 0; i < kAllTypes.size(); ++i) {
    tensors.push_back({absl::StrCat("t", i, ".", c10::toString(kAllTypes[i])), sample(kAllTypes[i], {3, 5})});
  }
  tensors.push_back({"scalar", at::ones({}, at::kFloat)});
  std::map<std::string, std::string> metadata = {{"format", "pt"}, {"k", "v"}};
  save_safetensors(path, tensors, metadata);

  auto file = SafetensorsFile::open(path);
  EXPECT_EQ(file->metadata(), metadata);
  EXPECT_EQ(file->names().size(), tensors.size());
  for (const NamedTensor& nt : tensors) {
    ASSERT_TRUE(file->contains(nt.name));
    at::Tensor view = file->tensor(nt.name);
    at::Tensor copy = file->read_copy(nt.name);
    EXPECT_EQ(view.scalar_type(), nt.tensor.scalar_type()) << nt.name;
    EXPECT_EQ(view.sizes(), nt.tensor.sizes()) << nt.name;
    EXPECT_TRUE(at::equal(view, nt.tensor)) << nt.name;
    EXPECT_TRUE(at::equal(copy, nt.tensor)) << nt.name;
    EXPECT_TRUE(view.device().is_cpu());
  }
}

TEST(SafetensorsFileTest, WrittenBytesFollowTheFormatExactly) {
  std::string path = make_temp_dir() + "/layout.safetensors";
  at::Tensor ints = at::arange(1, 4, at::kInt);            // 01 00 00 00 02 00 00 00 03 00 00 00
  at::Tensor half = at::ones({2}, at::kHalf);               // 1.0 in IEEE half is 0x3C00 → 00 3C
  at::Tensor bytes = at::arange(250, 256, at::kInt).to(at::kByte);  // fa fb fc fd fe ff
  save_safetensors(path, {{"ints", ints}, {"half", half}, {"bytes", bytes}});

  std::string raw = core::read_file(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(raw[i]);
  EXPECT_EQ(n % 8, 0u) << "the data section must start 8-byte aligned";
  EXPECT_EQ(raw.size(), 8 + n + 12 + 4 + 6);
  std::string json = raw.substr(8, n);
  EXPECT_EQ(json.front(), '{');
  EXPECT_EQ(json.find_first_not_of(' ', json.find_last_of('}') + 1), std::string::npos) << "padding is spaces";
  auto header = nlohmann::json::parse(json);
  EXPECT_FALSE(header.contains("__metadata__"));
  EXPECT_EQ(header["ints"]["dtype"], "I32");
  EXPECT_EQ(header["ints"]["shape"], nlohmann::json::array({3}));
  EXPECT_EQ(header["ints"]["data_offsets"], nlohmann::json::array({0, 12}));
  EXPECT_EQ(header["half"]["dtype"], "F16");
  EXPECT_EQ(header["half"]["data_offsets"], nlohmann::json::array({12, 16}));
  EXPECT_EQ(header["bytes"]["dtype"], "U8");
  EXPECT_EQ(header["bytes"]["data_offsets"], nlohmann::json::array({16, 22}));
  const std::string data = raw.substr(8 + n);
  EXPECT_EQ(data, std::string("\x01\0\0\0\x02\0\0\0\x03\0\0\0"
                              "\x00\x3c\x00\x3c"
                              "\xfa\xfb\xfc\xfd\xfe\xff",
                              22));
}

TEST(SafetensorsFileTest, NonContiguousAndOffsetViewsAreWrittenAsTheirValues) {
  std::string path = make_temp_dir() + "/views.safetensors";
  at::Tensor base = at::arange(0, 24, at::kFloat).reshape({4, 6});
  at::Tensor transposed = base.t();                        // (6, 4), strides (1, 6)
  at::Tensor sliced = base.narrow(0, 1, 2).narrow(1, 3, 3);  // storage offset, non-contiguous
  at::Tensor negated = at::_neg_view(base);                   // lazily negated: its bytes are not its values
  save_safetensors(path, {{"t", transposed}, {"s", sliced}, {"n", negated}});
  auto file = SafetensorsFile::open(path);
  EXPECT_TRUE(at::equal(file->tensor("t"), transposed.contiguous()));
  EXPECT_TRUE(at::equal(file->tensor("s"), sliced.contiguous()));
  EXPECT_TRUE(at::equal(file->tensor("n"), -base));
  EXPECT_EQ(file->info("s").num_bytes(), 6u * 4u);
}

TEST(SafetensorsFileTest, ViewsAreZeroCopyAndOutliveTheFileObject) {
  std::string path = make_temp_dir() + "/zc.safetensors";
  at::Tensor w = at::randn({64, 32});
  save_safetensors(path, {{"w", w}});
  auto file = SafetensorsFile::open(path);
  at::Tensor a = file->tensor("w");
  at::Tensor b = file->tensor("w");
  EXPECT_EQ(a.data_ptr(), b.data_ptr()) << "two views of one mapping";
  EXPECT_NE(file->read_copy("w").data_ptr(), a.data_ptr());
  file.reset();  // the mapping must stay while `a` lives
  EXPECT_TRUE(at::equal(a, w));
}

TEST(SafetensorsFileTest, WritesThroughAViewNeverReachTheFile) {
  std::string path = make_temp_dir() + "/cow.safetensors";
  at::Tensor w = at::randn({16});
  save_safetensors(path, {{"w", w}});
  const std::string before = core::read_file(path);
  {
    auto file = SafetensorsFile::open(path);
    file->tensor("w").fill_(7.0);
  }
  EXPECT_EQ(core::read_file(path), before);
  EXPECT_TRUE(at::equal(SafetensorsFile::open(path)->tensor("w"), w));
}

TEST(SafetensorsFileTest, MisalignedDataIsCopiedAndAlignedDataIsNot) {
  // A foreign writer that does not pad: header length 61 puts the data at offset 69.
  std::string dir = make_temp_dir();
  std::string json = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  json.append(61 - json.size(), ' ');
  float values[2] = {1.5f, -2.25f};
  std::string data(reinterpret_cast<const char*>(values), 8);
  write_bytes(dir + "/odd.safetensors", le64(json.size()) + json + data);
  auto file = SafetensorsFile::open(dir + "/odd.safetensors");
  at::Tensor t = file->tensor("w");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data_ptr()) % alignof(float), 0u);
  EXPECT_FLOAT_EQ(t[0].item<float>(), 1.5f);
  EXPECT_FLOAT_EQ(t[1].item<float>(), -2.25f);
  EXPECT_NE(t.data_ptr(), file->tensor("w").data_ptr()) << "each call copies";
}

TEST(SafetensorsFileTest, MissingTensorNamesTheFileTheTensorAndSomeThatExist) {
  std::string path = make_temp_dir() + "/m.safetensors";
  save_safetensors(path, {{"model.embed_tokens.weight", at::ones({2})}});
  auto file = SafetensorsFile::open(path);
  EXPECT_FALSE(file->contains("lm_head.weight"));
  std::string message;
  EXPECT_EQ(error_kind([&] { file->tensor("lm_head.weight"); }, &message), Kind::kMissingTensor);
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find("lm_head.weight"), std::string::npos) << message;
  EXPECT_NE(message.find("model.embed_tokens.weight"), std::string::npos) << message;
  EXPECT_EQ(error_kind([&] { file->read_copy("lm_head.weight"); }), Kind::kMissingTensor);
}

// ---------------------------------------------------------------------------------------------------------------
// Bad files on disk

TEST(SafetensorsFileTest, S1_EmptyAndSevenByteFilesAreHeaderTooSmall) {
  std::string dir = make_temp_dir();
  write_bytes(dir + "/empty.safetensors", "");
  write_bytes(dir + "/seven.safetensors", std::string(7, '\x10'));
  EXPECT_EQ(error_kind([&] { SafetensorsFile::open(dir + "/empty.safetensors"); }), Kind::kHeaderTooSmall);
  EXPECT_EQ(error_kind([&] { SafetensorsFile::open(dir + "/seven.safetensors"); }), Kind::kHeaderTooSmall);
}

TEST(SafetensorsFileTest, S2_HugeHeaderLengthIsRejectedBeforeAllocating) {
  // std::string(8 + N) for these would throw std::length_error or std::bad_alloc, not SafetensorsError.
  std::string dir = make_temp_dir();
  for (uint64_t n : {UINT64_MAX, uint64_t{1} << 63, uint64_t{0xFFFFFF0000000000}}) {
    write_bytes(dir + "/huge.safetensors", le64(n) + "{}");
    EXPECT_EQ(error_kind([&] { SafetensorsFile::open(dir + "/huge.safetensors"); }), Kind::kHeaderTooLarge) << n;
  }
}

TEST(SafetensorsFileTest, S5_TruncatedFileOnDiskIsRejected) {
  std::string dir = make_temp_dir();
  save_safetensors(dir + "/w.safetensors", {{"w", at::randn({8})}});
  std::string bytes = core::read_file(dir + "/w.safetensors");
  write_bytes(dir + "/cut.safetensors", bytes.substr(0, bytes.size() - 1));
  EXPECT_EQ(error_kind([&] { SafetensorsFile::open(dir + "/cut.safetensors"); }), Kind::kMetadataIncompleteBuffer);
}

TEST(SafetensorsFileTest, S20_ZeroSizeTensorsNeverTouchTheMapping) {
  std::string dir = make_temp_dir();
  // Built by hand so the empty tensor shares its offset with the next one, as in the PoC.
  std::string json = R"({"e":{"dtype":"F32","shape":[0,4],"data_offsets":[0,0]},)"
                     R"("w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  float one = 1.0f;
  write_bytes(dir + "/z.safetensors", le64(json.size()) + json + std::string(reinterpret_cast<char*>(&one), 4));
  auto file = SafetensorsFile::open(dir + "/z.safetensors");
  at::Tensor e = file->tensor("e");
  EXPECT_EQ(e.sizes(), at::IntArrayRef({0, 4}));
  EXPECT_EQ(e.numel(), 0);
  EXPECT_EQ(file->read_copy("e").numel(), 0);
  EXPECT_EQ(file->tensor("w").item<float>(), 1.0f);
  // Written by us: empty tensors round-trip, also in a file with no data at all.
  save_safetensors(dir + "/only_empty.safetensors", {{"a", at::ones({0}, at::kBFloat16)}, {"b", at::ones({3, 0})}});
  auto empty = SafetensorsFile::open(dir + "/only_empty.safetensors");
  EXPECT_EQ(empty->header().data_size, 0u);
  EXPECT_EQ(empty->tensor("b").sizes(), at::IntArrayRef({3, 0}));
}

TEST(SafetensorsFileTest, S25_PickleAndZipFilesAreRefusedWithAConversionHint) {
  std::string dir = make_temp_dir();
  // A pickle (protocol 2) as legacy torch.save writes it, and a zip as torch.save has written since 1.6.
  const char pickle[] = "\x80\x02\x8a\x0al\xfc\x9c" "F\xf9 j\xa8P\x19.\x80\x02M\xe9\x03.";
  const char zip[] = "PK\x03\x04\x14\x00\x00\x00\x00\x00" "archive/data.pkl";
  write_bytes(dir + "/pytorch_model.bin", std::string(pickle, sizeof(pickle) - 1));
  write_bytes(dir + "/weights.safetensors", std::string(zip, sizeof(zip) - 1));
  for (const char* name : {"/pytorch_model.bin", "/weights.safetensors"}) {
    std::string message;
    EXPECT_EQ(error_kind([&] { SafetensorsFile::open(dir + name); }, &message), Kind::kNotSafetensors) << name;
    EXPECT_NE(message.find("never unpickles"), std::string::npos) << message;
    EXPECT_NE(message.find("save_file"), std::string::npos) << message;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// S26, S27: sources that change while open

TEST(SafetensorsFileTest, S26_ReadCopyRefusesASourceTruncatedAfterOpen) {
  std::string path = make_temp_dir() + "/src.safetensors";
  save_safetensors(path, {{"a", at::randn({64})}, {"b", at::randn({64})}});
  auto file = SafetensorsFile::open(path);
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(file->file_size() - 100)), 0);
  // The view would fault (SIGBUS) on the lost page; the copy path sees the change and refuses.
  EXPECT_EQ(error_kind([&] { file->read_copy("b"); }), Kind::kMetadataIncompleteBuffer);
  EXPECT_EQ(error_kind([&] { file->read_copy("a"); }), Kind::kMetadataIncompleteBuffer);
}

TEST(SafetensorsFileTest, S26_ReadCopyRefusesASourceRewrittenInPlaceAfterOpen) {
  std::string path = make_temp_dir() + "/src.safetensors";
  at::Tensor a = at::randn({64});
  save_safetensors(path, {{"a", a}});
  set_mtime_to_the_past(path);  // so that the rewrite below surely changes the modification time
  auto file = SafetensorsFile::open(path);
  EXPECT_TRUE(at::equal(file->read_copy("a"), a));
  int fd = ::open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  const char junk[16] = "overwritten....";
  ASSERT_EQ(::pwrite(fd, junk, sizeof(junk), static_cast<off_t>(file->header().data_offset())), 16);
  ::close(fd);
  std::string message;
  EXPECT_EQ(error_kind([&] { file->read_copy("a"); }, &message), Kind::kMetadataIncompleteBuffer);
  EXPECT_NE(message.find("changed since it was opened"), std::string::npos) << message;
}

TEST(SafetensorsFileTest, S27_SavingOverAnOpenSourceIsAtomicAndTheOldMappingKeepsTheOldBytes) {
  std::string dir = make_temp_dir();
  std::string path = dir + "/model.safetensors";
  at::Tensor old_w = at::randn({128, 8});
  at::Tensor new_w = at::randn({128, 8});
  save_safetensors(path, {{"w", old_w}});
  auto source = SafetensorsFile::open(path);
  at::Tensor view = source->tensor("w");

  // Export from the source onto its own path.
  save_safetensors(path, {{"w", new_w}, {"extra", source->read_copy("w")}});
  EXPECT_TRUE(at::equal(view, old_w)) << "the old mapping keeps the old bytes";
  EXPECT_TRUE(at::equal(source->read_copy("w"), old_w)) << "the open descriptor still reads the old file";
  auto reloaded = SafetensorsFile::open(path);
  EXPECT_TRUE(at::equal(reloaded->tensor("w"), new_w));
  EXPECT_TRUE(at::equal(reloaded->tensor("extra"), old_w));
  EXPECT_EQ(list_dir(dir), (std::set<std::string>{"model.safetensors"})) << "no temp file left";
}

// ---------------------------------------------------------------------------------------------------------------
// Writer validation

TEST(SafetensorsWriterTest, DuplicateInvalidNamesAndUnsupportedDTypesAreRejectedBeforeTouchingTheDisk) {
  std::string dir = make_temp_dir();
  std::string path = dir + "/bad.safetensors";
  at::Tensor t = at::ones({2});
  EXPECT_EQ(error_kind([&] { save_safetensors(path, {{"a", t}, {"a", t}}); }), Kind::kDuplicateName);
  for (std::string name : {std::string(""), std::string("a\nb"), std::string("a\0b", 3), std::string("__metadata__"),
                           std::string(4097, 'x'), std::string("\xff")}) {
    EXPECT_EQ(error_kind([&] { save_safetensors(path, {{name, t}}); }), Kind::kInvalidName) << name;
  }
  EXPECT_EQ(error_kind([&] { save_safetensors(path, {{"c", at::ones({2}, at::kComplexFloat)}}); }), Kind::kInvalidDType);
  EXPECT_EQ(error_kind([&] { save_safetensors(path, {{"u", at::Tensor()}}); }), Kind::kInvalidDType);
  EXPECT_EQ(error_kind([&] { save_safetensors(path, {{"a", t}}, {{"k", std::string("\0", 1)}}); }),
            Kind::kInvalidMetadata);
  EXPECT_TRUE(list_dir(dir).empty());
}

TEST(SafetensorsWriterTest, S19_NamesThatLookLikePathsAreStoredAsNamesAndCreateNoFiles) {
  std::string dir = make_temp_dir();
  std::string sub = dir + "/out";
  ASSERT_EQ(::mkdir(sub.c_str(), 0755), 0);
  const std::string evil = "../../evil/../x";
  save_safetensors(sub + "/m.safetensors", {{evil, at::ones({1})}, {"/etc/passwd", at::ones({1})}});
  EXPECT_EQ(list_dir(dir), (std::set<std::string>{"out"}));
  EXPECT_EQ(list_dir(sub), (std::set<std::string>{"m.safetensors"}));
  auto file = SafetensorsFile::open(sub + "/m.safetensors");
  EXPECT_TRUE(file->contains(evil));
  EXPECT_TRUE(file->contains("/etc/passwd"));
}

// ---------------------------------------------------------------------------------------------------------------
// Sharded writer

std::vector<NamedTensor> four_tensors() {
  return {{"a", at::randn({10})},      // 40 bytes
          {"b", at::randn({10})},      // 40
          {"c", at::randn({30})},      // 120: larger than the limit below, a shard of its own
          {"d", at::randn({5}).to(at::kBFloat16)}};  // 10
}

TEST(ShardedSafetensorsWriterTest, AssignsShardsGreedilyAndWritesATransformersIndex) {
  std::string dir = make_temp_dir() + "/out";
  std::vector<NamedTensor> tensors = four_tensors();
  save_sharded_safetensors(dir, tensors, 100);
  EXPECT_EQ(list_dir(dir), (std::set<std::string>{"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                                                   "model-00003-of-00003.safetensors", "model.safetensors.index.json"}));
  auto index = nlohmann::json::parse(core::read_file(dir + "/model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"], 210);
  EXPECT_EQ(index["weight_map"], nlohmann::json({{"a", "model-00001-of-00003.safetensors"},
                                                 {"b", "model-00001-of-00003.safetensors"},
                                                 {"c", "model-00002-of-00003.safetensors"},
                                                 {"d", "model-00003-of-00003.safetensors"}}));
  auto first = SafetensorsFile::open(dir + "/model-00001-of-00003.safetensors");
  EXPECT_EQ(first->names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(first->metadata().at("format"), "pt");
  EXPECT_TRUE(at::equal(first->tensor("b"), tensors[1].tensor));
  EXPECT_TRUE(at::equal(SafetensorsFile::open(dir + "/model-00003-of-00003.safetensors")->tensor("d"),
                        tensors[3].tensor));
}

TEST(ShardedSafetensorsWriterTest, EverythingInOneShardIsASingleModelFileWithoutIndex) {
  std::string dir = make_temp_dir();
  std::vector<NamedTensor> tensors = four_tensors();
  save_sharded_safetensors(dir, tensors, 210, {{"note", "x"}});
  EXPECT_EQ(list_dir(dir), (std::set<std::string>{"model.safetensors"}));
  auto file = SafetensorsFile::open(dir + "/model.safetensors");
  EXPECT_EQ(file->metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"note", "x"}}));
  EXPECT_EQ(file->names(), (std::vector<std::string>{"a", "b", "c", "d"}));
}

TEST(ShardedSafetensorsWriterTest, ASaveRemovesTheWeightFilesOfAnEarlierSaveThatItDoesNotReplace) {
  std::string dir = make_temp_dir();
  write_bytes(dir + "/config.json", "{}");
  write_bytes(dir + "/model-00001-of-00009.safetensors.bak", "keep me");
  save_sharded_safetensors(dir, four_tensors(), 100);
  EXPECT_EQ(list_dir(dir).size(), 6u);
  save_sharded_safetensors(dir, four_tensors(), 1000);
  EXPECT_EQ(list_dir(dir), (std::set<std::string>{"config.json", "model-00001-of-00009.safetensors.bak",
                                                  "model.safetensors"}));
  save_sharded_safetensors(dir, four_tensors(), 150);
  EXPECT_EQ(list_dir(dir), (std::set<std::string>{"config.json", "model-00001-of-00009.safetensors.bak",
                                                  "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                                                  "model.safetensors.index.json"}));
}

TEST(ShardedSafetensorsWriterTest, StreamsEachTensorIntoItsTemporaryShardAndCommitsOnlyAtFinish) {
  std::string dir = make_temp_dir();
  std::vector<NamedTensor> tensors = four_tensors();
  std::vector<TensorPlan> plan;
  for (const NamedTensor& nt : tensors) plan.push_back({nt.name, from_scalar_type(nt.tensor.scalar_type()), nt.tensor.sizes().vec()});
  {
    ShardedSafetensorsWriter writer(dir, plan, 100);
    EXPECT_EQ(writer.num_shards(), 3u);
    EXPECT_EQ(writer.total_bytes(), 210u);
    writer.add("a", tensors[0].tensor);
    // The shard's temp file already holds its header and the first tensor: nothing is buffered in memory.
    std::set<std::string> files = list_dir(dir);
    ASSERT_EQ(files.size(), 1u);
    const std::string temp = *files.begin();
    EXPECT_EQ(temp.rfind("model-00001-of-00003.safetensors.tmp", 0), 0u) << temp;
    struct stat st {};
    ASSERT_EQ(::stat((dir + "/" + temp).c_str(), &st), 0);
    std::string prefix = core::read_file(dir + "/" + temp);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(prefix[i]);
    EXPECT_EQ(static_cast<uint64_t>(st.st_size), 8 + n + 40);
    writer.add("b", tensors[1].tensor);
    // Abandoned before finish(): the temporary files go away and nothing appears.
  }
  EXPECT_TRUE(list_dir(dir).empty());
}

TEST(ShardedSafetensorsWriterTest, TensorsMustMatchThePlanAndComeInItsOrder) {
  std::string dir = make_temp_dir();
  ShardedSafetensorsWriter writer(dir, {{"a", core::DType::kF32, {2}}, {"b", core::DType::kBF16, {3}}}, 1000);
  EXPECT_THROW(writer.add("b", at::ones({3}, at::kBFloat16)), core::InternalError);
  EXPECT_EQ(error_kind([&] { writer.add("a", at::ones({3})); }), Kind::kTensorInvalidInfo);
  EXPECT_EQ(error_kind([&] { writer.add("a", at::ones({2}, at::kHalf)); }), Kind::kTensorInvalidInfo);
  at::Tensor strided = at::arange(0, 4, at::kFloat).reshape({2, 2}).select(1, 1);  // a non-contiguous [1, 3]
  writer.add("a", strided);
  writer.add("b", at::ones({3}, at::kBFloat16));
  writer.finish();
  EXPECT_TRUE(at::equal(SafetensorsFile::open(dir + "/model.safetensors")->tensor("a"), strided));
}

TEST(ShardedSafetensorsWriterTest, PlanErrorsAreReportedUpFront) {
  std::string dir = make_temp_dir();
  EXPECT_EQ(error_kind([&] {
              ShardedSafetensorsWriter w(dir, {{"a", core::DType::kF32, {2}}, {"a", core::DType::kF32, {2}}}, 10);
            }),
            Kind::kDuplicateName);
  EXPECT_EQ(error_kind([&] { ShardedSafetensorsWriter w(dir, {{"", core::DType::kF32, {2}}}, 10); }), Kind::kInvalidName);
  EXPECT_EQ(error_kind([&] {
              ShardedSafetensorsWriter w(dir, {{"a", core::DType::kF32, {int64_t{1} << 62, 4}}}, 10);
            }),
            Kind::kValidationOverflow);
  EXPECT_THROW(ShardedSafetensorsWriter(dir, {{"a", core::DType::kF32, {2}}}, 0), core::UsageError);
  EXPECT_TRUE(list_dir(dir).empty());
}

// ---------------------------------------------------------------------------------------------------------------
// --max-shard-size

TEST(ParseSizeTest, AcceptsTransformersUnitsAndRejectsEverythingElse) {
  EXPECT_EQ(parse_size("5GB"), 5'000'000'000u);
  EXPECT_EQ(parse_size("500MB"), 500'000'000u);
  EXPECT_EQ(parse_size("10KB"), 10'000u);
  EXPECT_EQ(parse_size("7B"), 7u);
  EXPECT_EQ(parse_size("123"), 123u);
  EXPECT_EQ(parse_size("1KiB"), 1024u);
  EXPECT_EQ(parse_size("3MiB"), 3u << 20);
  EXPECT_EQ(parse_size("2GiB"), uint64_t{2} << 30);
  EXPECT_EQ(parse_size("2gB"), 2'000'000'000u);
  EXPECT_EQ(parse_size("2gib"), uint64_t{2} << 30);
  EXPECT_EQ(parse_size("2Gib"), uint64_t{2} << 30);
  // transformers reads these as bits: refused, never read as bytes.
  for (std::string_view bits : {"5Gb", "5gb", "500mb", "10kb", "7b"}) {
    EXPECT_THROW(parse_size(bits), core::UsageError) << bits;
  }
  for (std::string_view bad : {"", "GB", "5TB", "5 GB", " 5GB", "-5GB", "1.5GB", "0", "0GB", "5G", "5GBs", "0x10",
                               "99999999999999999999", "18446744073709551615GB"}) {
    EXPECT_THROW(parse_size(bad), core::UsageError) << bad;
  }
}

}  // namespace
}  // namespace freehold::io
