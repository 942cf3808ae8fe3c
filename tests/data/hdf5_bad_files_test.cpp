// Bad HDF5 files (RELIABILITY.md R1–R3) and the tokenizer identity of prepared files, torch-free so that
// scripts/run_fuzz.sh runs this same file under ASan + UBSan: truncated files, random bytes, byte flips, the wrong
// schema, external links, unknown filters, Fletcher32 mismatches, variable-length string attributes, token ids
// beyond the tokenizer's or the model's vocabulary, and a prepared file of another tokenizer.json are errors
// naming the file, never crashes. Also the data fingerprints a checkpoint keeps (R9) and `inspect`'s statistics.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>

#include "core/error.h"
#include "absl/strings/str_cat.h"
#include "core/file.h"
#include "core/sha256.h"
#include "data/data_fingerprint.h"
#include "data/dataset_info.h"
#include "data/document_source.h"
#include "data/hdf5_file.h"
#include "data/prepare.h"
#include "data/tokenizer.h"
#include "tests/data/data_test_util.h"

namespace freehold::data {
namespace {

using testing::char_tokenizer_document;
using testing::llama3_specials;
using testing::TempDir;

// splitmix64 of (a, b): the test's own deterministic bytes.
uint64_t scramble(uint64_t a, uint64_t b) {
  uint64_t z = a * 0x9E3779B97F4A7C15ull + b + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// A new file at `path` holding one 1-D dataset of n elements (unwritten); returns the open file (caller closes).
hid_t create_with_dataset(const std::string& path, const char* name, hid_t type, hsize_t n) {
  hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  hid_t space = H5Screate_simple(1, &n, nullptr);
  H5Dclose(H5Dcreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  H5Sclose(space);
  return file;
}

class Hdf5FilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tokenizer_path_ = dir_.write("tokenizer.json", char_tokenizer_document(llama3_specials(), "<|begin_of_text|>").dump());
    tokenizer_ = std::make_unique<Tokenizer>(Tokenizer::load(tokenizer_path_));
  }

  std::string text_jsonl(const std::string& name, int n) {
    std::string body;
    for (int i = 0; i < n; ++i) body += "{\"text\": \"doc " + std::to_string(i) + " " + std::string(i % 7 * 3, 'x') + "\"}\n";
    return dir_.write(name, body);
  }

  std::string prepare(const std::vector<std::string>& inputs, const std::string& out,
                      const std::string& tokenizer_path = "") {
    PrepareOptions options;
    options.tokenizer_path = tokenizer_path.empty() ? tokenizer_path_ : tokenizer_path;
    options.inputs = inputs;
    options.out = dir_.file(out);
    options.threads = 2;
    prepare_dataset(options);
    return options.out;
  }

  // Users' rows: /input_ids [S, T] int64, optional /loss_mask [S, T] uint8.
  std::string write_rows(const std::string& name, hsize_t S, hsize_t T, const std::vector<int64_t>& ids,
                         const std::vector<uint8_t>& mask = {}) {
    const std::string path = dir_.file(name);
    auto guard = hdf5::lock();
    hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t dims[2] = {S, T};
    hid_t space = H5Screate_simple(2, dims, nullptr);
    hid_t dataset = H5Dcreate2(file, "input_ids", H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(dataset, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, ids.data());
    H5Dclose(dataset);
    if (!mask.empty()) {
      dataset = H5Dcreate2(file, "loss_mask", H5T_STD_U8LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
      H5Dwrite(dataset, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, mask.data());
      H5Dclose(dataset);
    }
    H5Sclose(space);
    H5Fclose(file);
    return path;
  }

  TempDir dir_;
  std::string tokenizer_path_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

std::string error_of(const std::string& path, const VocabularyCheck& check) {
  try {
    auto source = open_hdf5_source(path, check);
    std::vector<int32_t> ids;
    std::vector<uint8_t> mask;
    for (int64_t d = 0; d < source->num_docs(); ++d) source->read(d, 1 << 30, &ids, &mask);
  } catch (const core::Error& e) {
    return e.what();
  }
  return "";
}

std::string error_of(const std::string& path, int64_t vocab_limit) {
  VocabularyCheck check;
  check.id_limit = vocab_limit;
  return error_of(path, check);
}

TEST_F(Hdf5FilesTest, TruncatedRandomAndWrongSchemaFilesAreErrors) {
  std::string h5 = prepare({text_jsonl("a.jsonl", 200)}, "a.h5");
  std::string bytes = core::read_file(h5);
  for (size_t cut : {size_t{0}, size_t{7}, bytes.size() / 3, bytes.size() / 2, bytes.size() - 1}) {
    std::string truncated = dir_.write("cut.h5", bytes.substr(0, cut));
    std::string error = error_of(truncated, tokenizer_->id_limit());
    EXPECT_NE(error, "") << cut;
    EXPECT_NE(error.find("cut.h5"), std::string::npos) << error;
  }
  std::string random;
  uint64_t x = 1;
  for (int i = 0; i < 5000; ++i) random += static_cast<char>((x = scramble(x, i)) & 0xFF);
  EXPECT_NE(error_of(dir_.write("random.h5", random), 100), "");
  EXPECT_NE(error_of(dir_.write("super.h5", std::string("\x89HDF\r\n\x1a\n", 8) + random), 100), "");

  // An HDF5 file with neither schema.
  std::string other = dir_.file("other.h5");
  {
    auto guard = hdf5::lock();
    H5Fclose(create_with_dataset(other, "weights", H5T_NATIVE_FLOAT, 4));
  }
  EXPECT_NE(error_of(other, 100).find("neither a prepared dataset"), std::string::npos);
}

TEST_F(Hdf5FilesTest, ByteFlippedFilesAreErrorsNotCrashes) {
  // Metadata-heavy flips (most in the first 4 KiB): with checksummed 1.10-format metadata and no global heap reads,
  // each file either reads (the flip hit unused bytes) or gives a freehold error.
  std::string h5 = prepare({text_jsonl("a.jsonl", 300)}, "a.h5");
  const std::string bytes = core::read_file(h5);
  uint64_t x = 42;
  int errors = 0;
  for (int i = 0; i < 150; ++i) {
    std::string mutated = bytes;
    const int flips = 1 + static_cast<int>((x = scramble(x, i)) % 3);
    for (int f = 0; f < flips; ++f) {
      x = scramble(x, f);
      const size_t at = (x & 1) ? (x >> 8) % std::min<size_t>(4096, mutated.size()) : (x >> 8) % mutated.size();
      mutated[at] = static_cast<char>(scramble(x, 7) & 0xFF);
    }
    if (!error_of(dir_.write("flipped.h5", mutated), tokenizer_->id_limit()).empty()) ++errors;
  }
  EXPECT_GT(errors, 100);
}

TEST_F(Hdf5FilesTest, TokenIdsBeyondTheVocabularyAreErrors) {
  std::string h5 = prepare({text_jsonl("a.jsonl", 5)}, "a.h5");
  std::string error = error_of(h5, 10);
  EXPECT_NE(error.find("vocabulary"), std::string::npos) << error;  // the vocab_size attribute is checked first
  // Users' rows with an id out of range.
  std::string rows = dir_.file("rows.h5");
  {
    auto guard = hdf5::lock();
    hid_t file = H5Fcreate(rows.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t dims[2] = {2, 4};
    hid_t space = H5Screate_simple(2, dims, nullptr);
    hid_t dataset = H5Dcreate2(file, "input_ids", H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int64_t values[8] = {1, 2, 3, 4, 5, 6, 7, 99999};
    H5Dwrite(dataset, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, values);
    H5Dclose(dataset);
    H5Sclose(space);
    H5Fclose(file);
  }
  auto source = open_hdf5_source(rows, 100);
  EXPECT_EQ(source->num_docs(), 2);
  std::vector<int32_t> ids;
  std::vector<uint8_t> mask;
  source->read(0, 100, &ids, &mask);
  EXPECT_EQ(ids, (std::vector<int32_t>{1, 2, 3, 4}));
  error = error_of(rows, 100);
  EXPECT_NE(error.find("/input_ids element 7 is token id 99999"), std::string::npos) << error;
}

TEST_F(Hdf5FilesTest, ExternalLinksAndUnknownFiltersAreRefused) {
  std::string target = prepare({text_jsonl("a.jsonl", 5)}, "target.h5");
  std::string linked = dir_.file("linked.h5");
  std::string filtered = dir_.file("filtered.h5");
  {
    auto guard = hdf5::lock();
    hid_t file = H5Fcreate(linked.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Lcreate_external(target.c_str(), "/tokens", file, "input_ids", H5P_DEFAULT, H5P_DEFAULT);
    H5Fclose(file);

    file = H5Fcreate(filtered.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t dims[2] = {2, 4}, chunk[2] = {1, 4};
    hid_t space = H5Screate_simple(2, dims, nullptr);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 2, chunk);
    H5Pset_filter(dcpl, 307, H5Z_FLAG_OPTIONAL, 0, nullptr);  // bzip2's id; not built in
    hid_t dataset = H5Dcreate2(file, "input_ids", H5T_STD_I32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    int32_t values[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    H5Dwrite(dataset, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, values);
    H5Dclose(dataset);
    H5Pclose(dcpl);
    H5Sclose(space);
    H5Fclose(file);
    H5Eclear2(H5E_DEFAULT);
  }
  EXPECT_NE(error_of(linked, 100).find("external link"), std::string::npos) << error_of(linked, 100);
  EXPECT_NE(error_of(filtered, 100).find("filter 307"), std::string::npos) << error_of(filtered, 100);
}

TEST_F(Hdf5FilesTest, Fletcher32MismatchIsAnErrorNamingTheDataset) {
  // Enough incompressible tokens that the middle of the file is chunk data.
  std::string body;
  uint64_t x = 3;
  for (int i = 0; i < 3000; ++i) {
    std::string text;
    for (int j = 0; j < 60; ++j) text += static_cast<char>('a' + ((x = scramble(x, j)) % 26));
    body += "{\"text\": \"" + text + "\"}\n";
  }
  std::string h5 = prepare({dir_.write("big.jsonl", body)}, "big.h5");
  std::string bytes = core::read_file(h5);
  bytes[bytes.size() / 2] ^= 0x5A;
  std::string corrupt = dir_.write("corrupt.h5", bytes);
  std::string error = error_of(corrupt, tokenizer_->id_limit());
  EXPECT_NE(error.find("/tokens"), std::string::npos) << error;
  EXPECT_NE(error.find("corrupt.h5"), std::string::npos) << error;
}


TEST_F(Hdf5FilesTest, PreparedWithAnotherTokenizerIsRefusedNamingBothHashesAndPaths) {
  const std::string h5 = prepare({text_jsonl("a.jsonl", 5)}, "a.h5");
  EXPECT_EQ(error_of(h5, vocabulary_check(*tokenizer_)), "");  // the tokenizer it was prepared with
  // Same vocabulary size, other bytes (no BOS template): another tokenizer.json.
  const std::string other_path = dir_.write("other.json", char_tokenizer_document(llama3_specials()).dump());
  const Tokenizer other = Tokenizer::load(other_path);
  ASSERT_EQ(other.id_limit(), tokenizer_->id_limit());
  ASSERT_NE(other.sha256(), tokenizer_->sha256());
  const std::string error = error_of(h5, vocabulary_check(other));
  EXPECT_NE(error.find(h5), std::string::npos) << error;
  EXPECT_NE(error.find(other_path), std::string::npos) << error;
  EXPECT_NE(error.find(tokenizer_->sha256()), std::string::npos) << error;  // the file's
  EXPECT_NE(error.find(other.sha256()), std::string::npos) << error;        // the run's
  EXPECT_EQ(tokenizer_->sha256(), core::sha256_file_hex(tokenizer_path_));
}

TEST_F(Hdf5FilesTest, VocabularyLargerThanTheModelsIsRefused) {
  const std::string h5 = prepare({text_jsonl("a.jsonl", 5)}, "a.h5");
  VocabularyCheck check = vocabulary_check(*tokenizer_, tokenizer_->id_limit());
  EXPECT_EQ(error_of(h5, check), "");
  check.model_vocab_size = tokenizer_->id_limit() - 1;
  std::string error = error_of(h5, check);
  EXPECT_NE(error.find(absl::StrCat("vocabulary of ", tokenizer_->id_limit(), " ids")), std::string::npos) << error;
  EXPECT_NE(error.find(absl::StrCat("vocab_size ", tokenizer_->id_limit() - 1)), std::string::npos) << error;
  // Rows carry no vocab_size: each id is checked against the smaller of the two limits.
  const std::string rows = write_rows("rows.h5", 1, 3, {1, 2, 40});
  check = VocabularyCheck{100, "", "", 0};
  EXPECT_EQ(error_of(rows, check), "");
  check.model_vocab_size = 40;
  error = error_of(rows, check);
  EXPECT_NE(error.find("/input_ids element 2 is token id 40, outside [0, 40)"), std::string::npos) << error;
}

TEST_F(Hdf5FilesTest, VariableLengthStringAttributesAreRefused) {
  // The global heap that holds them has no checksum; libhdf5 1.10 crashes on some corrupt ones.
  const std::string path = dir_.file("vlen.h5");
  {
    auto guard = hdf5::lock();
    hid_t file = create_with_dataset(path, "tokens", H5T_STD_I32LE, 2);
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, H5T_VARIABLE);
    hid_t scalar = H5Screate(H5S_SCALAR);
    hid_t attribute = H5Acreate2(file, "format", type, scalar, H5P_DEFAULT, H5P_DEFAULT);
    const char* value = "freehold.tokens";
    H5Awrite(attribute, type, &value);
    H5Aclose(attribute);
    H5Sclose(scalar);
    H5Tclose(type);
    H5Fclose(file);
  }
  const std::string error = error_of(path, 100);
  EXPECT_NE(error.find("attribute format is a variable-length string"), std::string::npos) << error;
}

// ---- data fingerprints (R9) --------------------------------------------------------------------------------------

TEST_F(Hdf5FilesTest, PreparedFingerprintFollowsTheAttributesNotTheBytesOrPath) {
  const std::string h5 = prepare({text_jsonl("a.jsonl", 5)}, "a.h5");
  const DataFingerprint f = fingerprint_data_file(h5);
  EXPECT_EQ(f.kind, "prepared");
  EXPECT_EQ(f.digest.size(), 64u);
  std::filesystem::copy_file(h5, dir_.file("copy.h5"));
  EXPECT_EQ(fingerprint_data_file(dir_.file("copy.h5")).digest, f.digest);
  // Another tokenizer: another tokenizer_sha256 attribute, another fingerprint.
  const std::string other = dir_.write("other.json", char_tokenizer_document(llama3_specials()).dump());
  EXPECT_NE(fingerprint_data_file(prepare({dir_.file("a.jsonl")}, "b.h5", other)).digest, f.digest);
  // Other inputs: another source_fingerprint.
  EXPECT_NE(fingerprint_data_file(prepare({text_jsonl("c.jsonl", 6)}, "c.h5")).digest, f.digest);
}

TEST_F(Hdf5FilesTest, SampledFingerprintSeesEditsInEverySampledRegionAndIgnoresMtime) {
  // 5 MiB: above the whole-file limit, so head, tail and 16 middle blocks are sampled.
  std::string bytes(5 << 20, 'a');
  for (size_t i = 0; i < bytes.size(); i += 97) bytes[i] = static_cast<char>('a' + scramble(i, 1) % 26);
  const std::string path = dir_.write("big.txt", bytes);
  const DataFingerprint f = fingerprint_data_file(path);
  EXPECT_EQ(f.kind, "sampled");
  EXPECT_EQ(f.size, static_cast<int64_t>(bytes.size()));
  // The head, the tail, and the centres of the first and last middle blocks.
  const int64_t middle = static_cast<int64_t>(bytes.size()) - 2 * (1 << 20);
  for (size_t at : {size_t{10}, bytes.size() - 10, static_cast<size_t>((1 << 20) + middle / 32),
                    static_cast<size_t>((1 << 20) + middle * 31 / 32)}) {
    std::string edited = bytes;
    edited[at] = edited[at] == 'Z' ? 'Y' : 'Z';
    EXPECT_NE(fingerprint_data_file(dir_.write("edited.txt", edited)).digest, f.digest) << at;
  }
  EXPECT_NE(fingerprint_data_file(dir_.write("longer.txt", bytes + "\n")).digest, f.digest);
  // A small file is hashed whole: any edit shows.
  const std::string small = text_jsonl("small.jsonl", 50);
  std::string small_bytes = core::read_file(small);
  const std::string before = fingerprint_data_file(small).digest;
  small_bytes[small_bytes.size() / 2] ^= 1;
  EXPECT_NE(fingerprint_data_file(dir_.write("small.jsonl", small_bytes)).digest, before);
  // mtime alone: the same digest.
  const struct timespec times[2] = {{1000, 0}, {1000, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0);
  const DataFingerprint touched = fingerprint_data_file(path);
  EXPECT_EQ(touched.digest, f.digest);
  EXPECT_NE(touched.mtime_ns, f.mtime_ns);
}

TEST_F(Hdf5FilesTest, ResumeCheckRefusesChangedDataNamingTheFileAndBothFingerprints) {
  const std::string a = text_jsonl("a.jsonl", 20);
  const std::string h5 = prepare({text_jsonl("b.jsonl", 20)}, "b.h5");
  const std::vector<DataSource> sources = {{a, 1.0}, {h5, 2.0}};
  nlohmann::json state;
  state["data_fingerprints"] = fingerprint_sources(sources);
  const std::string saved_a = state["data_fingerprints"][0]["digest"];
  EXPECT_NO_THROW(check_resume_data(state, sources, "ck/trainer_state.json"));
  EXPECT_TRUE(compare_data_fingerprints(state["data_fingerprints"], sources, "ck").changed.empty());

  // One record more in a.jsonl.
  std::ofstream(a, std::ios::app) << "{\"text\": \"one more\"}\n";
  const std::string now_a = fingerprint_data_file(a).digest;
  try {
    check_resume_data(state, sources, "ck/trainer_state.json");
    FAIL() << "resumed on changed data";
  } catch (const core::UsageError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("data.train[0] " + a + " changed"), std::string::npos) << message;
    EXPECT_NE(message.find(saved_a.substr(0, 16)), std::string::npos) << message;
    EXPECT_NE(message.find(now_a.substr(0, 16)), std::string::npos) << message;
    EXPECT_NE(message.find("ck/trainer_state.json"), std::string::npos) << message;
    EXPECT_NE(message.find(kAllowDataChangeVariable), std::string::npos) << message;
    EXPECT_EQ(message.find("data.train[1]"), std::string::npos) << message;  // b.h5 is unchanged
  }
  // The override turns the refusal into a warning.
  ::setenv(kAllowDataChangeVariable, "1", 1);
  EXPECT_NO_THROW(check_resume_data(state, sources, "ck/trainer_state.json"));
  ::unsetenv(kAllowDataChangeVariable);

  // Another number of sources, and a missing file, are changes too.
  FingerprintComparison c = compare_data_fingerprints(state["data_fingerprints"], {{a, 1.0}}, "ck");
  ASSERT_EQ(c.changed.size(), 1u);
  EXPECT_NE(c.changed[0].find("2 source(s)"), std::string::npos) << c.changed[0];
  std::filesystem::remove(h5);
  c = compare_data_fingerprints(state["data_fingerprints"], sources, "ck");
  ASSERT_EQ(c.changed.size(), 2u);
  EXPECT_NE(c.changed[1].find("cannot be fingerprinted"), std::string::npos) << c.changed[1];

  // The same bytes under another path: a note, not a change.
  const std::string c_path = dir_.write("c.jsonl", core::read_file(a));
  const nlohmann::json saved = fingerprint_sources({{a, 1.0}});
  c = compare_data_fingerprints(saved, {{c_path, 1.0}}, "ck");
  EXPECT_TRUE(c.changed.empty());
  ASSERT_EQ(c.notes.size(), 1u);
  EXPECT_NE(c.notes[0].find("is now read from " + c_path), std::string::npos) << c.notes[0];
  // A record that is not a fingerprint.
  EXPECT_THROW(compare_data_fingerprints(nlohmann::json::array({{{"path", a}}}), {{a, 1.0}}, "ck"), core::FormatError);
}

// ---- inspect's statistics ---------------------------------------------------------------------------------------

TEST_F(Hdf5FilesTest, DescribePreparedDatasetCountsWhatTheLoaderReads) {
  const std::string h5 = prepare({text_jsonl("a.jsonl", 40)}, "a.h5");
  const Hdf5DatasetInfo info = describe_hdf5_dataset(h5);
  // Expected values from reading every document through the loader's source.
  auto source = open_hdf5_source(h5, vocabulary_check(*tokenizer_));
  int64_t tokens = 0, targets = 0, max_id = 0, max_length = 0;
  std::vector<int32_t> ids;
  std::vector<uint8_t> mask;
  for (int64_t d = 0; d < source->num_docs(); ++d) {
    source->read(d, 1 << 30, &ids, &mask);
    tokens += static_cast<int64_t>(ids.size());
    if (!mask.empty()) targets += std::accumulate(mask.begin() + 1, mask.end(), int64_t{0});  // first: never a target
    for (int32_t id : ids) max_id = std::max<int64_t>(max_id, id);
    max_length = std::max<int64_t>(max_length, static_cast<int64_t>(ids.size()));
  }
  EXPECT_EQ(info.kind, "prepared");
  EXPECT_EQ(info.documents, 40);
  EXPECT_EQ(info.tokens, tokens);
  EXPECT_EQ(info.target_tokens, targets);
  EXPECT_EQ(info.max_id, max_id);
  EXPECT_EQ(info.max_length, max_length);
  int64_t histogram_docs = 0;
  for (const auto& [lower, count] : info.length_histogram) histogram_docs += count;
  EXPECT_EQ(histogram_docs, 40);
  EXPECT_NEAR(info.mean_length * 40, static_cast<double>(tokens), 1e-6);
  bool has_fingerprint = false;
  for (const auto& [name, text] : info.attributes) has_fingerprint |= name == "source_fingerprint";
  EXPECT_TRUE(has_fingerprint);
  ASSERT_EQ(info.datasets.size(), 3u);
  EXPECT_EQ(info.datasets[0].first, "/tokens");
  EXPECT_EQ(info.datasets[0].second.type, "int32");
  EXPECT_EQ(info.datasets[0].second.filters, (std::vector<std::string>{"shuffle", "deflate", "fletcher32"}));
  const nlohmann::json j = info.to_json();
  EXPECT_EQ(j["type"], "prepared_dataset");
  EXPECT_EQ(j["tokens"], tokens);
}

TEST_F(Hdf5FilesTest, DescribeRowsUsesTheMaskAndRefusesWhatTheLoaderRefuses) {
  const std::string rows = write_rows("rows.h5", 3, 4, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12},
                                      {0, 0, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1});
  const Hdf5DatasetInfo info = describe_hdf5_dataset(rows);
  EXPECT_EQ(info.kind, "rows");
  EXPECT_EQ(info.documents, 3);
  EXPECT_EQ(info.tokens, 12);
  EXPECT_EQ(info.target_tokens, 8);  // the mask's 9 ones less row 2's first token (no row's first is a target)
  EXPECT_EQ(info.min_id, 1);
  EXPECT_EQ(info.max_id, 12);
  EXPECT_DOUBLE_EQ(info.target_share(), 8.0 / 12.0);
  EXPECT_EQ(info.p50_length, 4);
  const std::string bytes = core::read_file(rows);
  EXPECT_THROW(describe_hdf5_dataset(dir_.write("cut.h5", bytes.substr(0, bytes.size() / 2))), core::Error);
}

}  // namespace
}  // namespace freehold::data
