// prepare → HDF5 → loader: round trip, schema, packing and labels, determinism, rank shares, seek/resume (C13,
// C14). Bad HDF5 files (R1–R3) are tested torch-free in hdf5_bad_files_test.cpp (also run under ASan).
#include <gtest/gtest.h>

#include <ATen/Functions.h>
#include <hdf5.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/file.h"
#include "data/batch_source.h"
#include "data/document_source.h"
#include "data/hdf5_file.h"
#include "data/prepare.h"
#include "data/sampler.h"
#include "data/tokenizer.h"
#include "tests/data/data_test_util.h"

namespace freehold::data {
namespace {

using testing::char_tokenizer_document;
using testing::llama3_specials;
using testing::TempDir;

class LoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tokenizer_path_ = dir_.write("tokenizer.json", char_tokenizer_document(llama3_specials(), "<|begin_of_text|>").dump());
    tokenizer_ = std::make_unique<Tokenizer>(Tokenizer::load(tokenizer_path_));
  }

  // A text JSONL file of n documents "doc <i> xxx..." of varying lengths.
  std::string text_jsonl(const std::string& name, int n, const std::string& tag = "doc") {
    std::string body;
    for (int i = 0; i < n; ++i) {
      body += "{\"text\": \"" + tag + " " + std::to_string(i) + " " + std::string(i % 7 * 3, 'x') + "\"}\n";
    }
    return dir_.write(name, body);
  }

  std::string prepare(const std::vector<std::string>& inputs, const std::string& out) {
    PrepareOptions options;
    options.tokenizer_path = tokenizer_path_;
    options.inputs = inputs;
    options.out = dir_.file(out);
    options.threads = 2;
    prepare_dataset(options);
    return options.out;
  }

  DataOptions options(std::vector<DataSource> train, int64_t seq_len = 32, bool packing = true) {
    DataOptions o;
    o.train = std::move(train);
    o.seq_len = seq_len;
    o.packing = packing;
    return o;
  }

  std::vector<Batch> read_all(BatchSource& source, int64_t n) {
    std::vector<Batch> out;
    for (int64_t i = 0; i < n; ++i) {
      std::optional<Batch> b = source.next();
      if (!b) break;
      out.push_back(std::move(*b));
    }
    return out;
  }

  TempDir dir_;
  std::string tokenizer_path_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

void expect_same(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(at::equal(a[i].input_ids, b[i].input_ids)) << i;
    EXPECT_TRUE(at::equal(a[i].labels, b[i].labels)) << i;
    EXPECT_TRUE(at::equal(a[i].position_ids, b[i].position_ids)) << i;
  }
}

TEST_F(LoaderTest, PrepareRoundTripAndSchema) {
  std::string h5 = prepare({text_jsonl("a.jsonl", 20)}, "a.h5");
  hdf5::ReadFile file(h5);
  EXPECT_EQ(file.string_attribute("format"), "freehold.tokens");
  EXPECT_EQ(file.int_attribute("version"), 1);
  EXPECT_EQ(file.int_attribute("vocab_size"), tokenizer_->id_limit());
  EXPECT_EQ(file.string_attribute("tokenizer_sha256")->size(), 64u);
  EXPECT_EQ(file.string_attribute("source_fingerprint")->size(), 64u);
  auto source = open_hdf5_source(h5, tokenizer_->id_limit());
  ASSERT_EQ(source->num_docs(), 20);
  std::vector<int32_t> ids;
  std::vector<uint8_t> mask;
  source->read(3, 1000, &ids, &mask);
  std::vector<int32_t> expected = tokenizer_->encode("doc 3 xxxxxxxxx", true);
  expected.push_back(1);  // EOS
  EXPECT_EQ(ids, expected);
  EXPECT_EQ(mask, std::vector<uint8_t>(ids.size(), 1));
  // Unchanged inputs: skipped by fingerprint (the file is not rewritten).
  auto mtime = std::filesystem::last_write_time(h5);
  PrepareOptions again;
  again.tokenizer_path = tokenizer_path_;
  again.inputs = {dir_.file("a.jsonl")};
  again.out = h5;
  EXPECT_TRUE(prepare_dataset(again).skipped);
  EXPECT_EQ(std::filesystem::last_write_time(h5), mtime);
}

TEST_F(LoaderTest, BadRecordsOverThresholdStopWithExitCode3AndNoOutput) {
  std::string in = dir_.write("bad.jsonl", "{\"text\": \"ok\"}\nnot json\n{\"txt\": 1}\n");
  PrepareOptions options;
  options.tokenizer_path = tokenizer_path_;
  options.inputs = {in};
  options.out = dir_.file("bad.h5");
  try {
    prepare_dataset(options);
    FAIL();
  } catch (const core::DataError& e) {
    EXPECT_EQ(e.exit_code(), core::ExitCode::kBadData);
  }
  EXPECT_FALSE(std::filesystem::exists(options.out));
  std::string rejects = core::read_file(options.out + ".rejects.jsonl");
  EXPECT_NE(rejects.find("\"line\":2"), std::string::npos);
  EXPECT_NE(rejects.find("missing_field"), std::string::npos);
  options.max_bad_fraction = 0.7;
  EXPECT_EQ(prepare_dataset(options).documents, 1);
}

TEST_F(LoaderTest, PackedRowsRestartPositionsAndIgnoreFirstTokenOfEachDocument) {
  std::string h5 = prepare({text_jsonl("a.jsonl", 40)}, "a.h5");
  DataOptions o = options({{h5, 1.0}}, 48);
  o.shuffle = false;
  auto source = open_batch_source(o, *tokenizer_, 2, 7, 0, 1, false);
  std::optional<Batch> batch = source->next();
  ASSERT_TRUE(batch);
  EXPECT_EQ(batch->input_ids.sizes(), (c10::IntArrayRef{2, 48}));
  ASSERT_TRUE(batch->segment_ids.defined());
  auto ids = batch->input_ids.accessor<int64_t, 2>();
  auto labels = batch->labels.accessor<int64_t, 2>();
  auto pos = batch->position_ids.accessor<int64_t, 2>();
  auto seg = batch->segment_ids.accessor<int64_t, 2>();
  // Row 0 holds "doc 0" (8 tokens with BOS/EOS) then "doc 1 xxx" (11): documents in order, unshuffled.
  EXPECT_EQ(ids[0][0], 0);
  EXPECT_EQ(labels[0][0], kIgnoreIndex);
  EXPECT_EQ(labels[0][1], ids[0][1]);
  EXPECT_EQ(pos[0][7], 7);
  EXPECT_EQ(pos[0][8], 0);  // second document starts
  EXPECT_EQ(seg[0][8], 1);
  EXPECT_EQ(ids[0][8], 0);  // its BOS
  EXPECT_EQ(labels[0][8], kIgnoreIndex);
  int64_t targets = at::ne(batch->labels, kIgnoreIndex).sum().item().toLong();
  EXPECT_EQ(batch->num_target_tokens, targets);
  EXPECT_GT(targets, 0);
}

TEST_F(LoaderTest, PaddingWithoutPacking) {
  std::string h5 = prepare({text_jsonl("a.jsonl", 10)}, "a.h5");
  DataOptions o = options({{h5, 1.0}}, 32, /*packing=*/false);
  auto source = open_batch_source(o, *tokenizer_, 2, 1, 0, 1, false);
  EXPECT_EQ(source->batches_per_epoch(), 5);
  std::optional<Batch> batch = source->next();
  EXPECT_FALSE(batch->segment_ids.defined());
  for (int b = 0; b < 2; ++b) {
    auto row_labels = batch->labels[b];
    EXPECT_EQ(row_labels[31].item<int64_t>(), kIgnoreIndex);  // padding
  }
}

TEST_F(LoaderTest, DeterministicAndSeedDependent) {
  std::string h5 = prepare({text_jsonl("a.jsonl", 60)}, "a.h5");
  auto a = open_batch_source(options({{h5, 1.0}}), *tokenizer_, 2, 11, 0, 1, false);
  auto b = open_batch_source(options({{h5, 1.0}}), *tokenizer_, 2, 11, 0, 1, false);
  auto c = open_batch_source(options({{h5, 1.0}}), *tokenizer_, 2, 12, 0, 1, false);
  std::vector<Batch> ba = read_all(*a, 100), bb = read_all(*b, 100), bc = read_all(*c, 100);
  expect_same(ba, bb);
  bool differs = false;
  for (size_t i = 0; i < std::min(ba.size(), bc.size()); ++i) differs |= !at::equal(ba[i].input_ids, bc[i].input_ids);
  EXPECT_TRUE(differs);
  // The next epoch is a different order.
  std::vector<Batch> second = read_all(*a, 100);
  ASSERT_EQ(second.size(), ba.size());
  EXPECT_FALSE(at::equal(second[0].input_ids, ba[0].input_ids) && at::equal(second[1].input_ids, ba[1].input_ids));
}

TEST_F(LoaderTest, RankSharesAreDisjointInterleavedRowsOfTheSameGlobalOrder) {
  std::string h5 = prepare({text_jsonl("a.jsonl", 90)}, "a.h5");
  auto whole = open_batch_source(options({{h5, 1.0}}), *tokenizer_, 1, 5, 0, 1, false);
  std::vector<Batch> rows = read_all(*whole, 1000);
  const int world = 3;
  std::vector<std::vector<Batch>> shares;
  for (int r = 0; r < world; ++r) {
    auto source = open_batch_source(options({{h5, 1.0}}), *tokenizer_, 1, 5, r, world, false);
    EXPECT_EQ(source->batches_per_epoch(), static_cast<int64_t>(rows.size()) / world);
    shares.push_back(read_all(*source, 1000));
  }
  for (int r = 0; r < world; ++r) {
    ASSERT_EQ(shares[r].size(), rows.size() / world);
    for (size_t k = 0; k < shares[r].size(); ++k) {
      EXPECT_TRUE(at::equal(shares[r][k].input_ids, rows[k * world + r].input_ids)) << r << " " << k;
    }
  }
}

TEST_F(LoaderTest, SeekResumesMidEpochAndAtTheEpochBoundary) {
  std::string h5 = prepare({text_jsonl("a.jsonl", 50)}, "a.h5");
  auto run = open_batch_source(options({{h5, 1.0}}), *tokenizer_, 2, 3, 1, 2, false);
  read_all(*run, 2);
  DataPosition middle = run->position();
  EXPECT_EQ(middle.epoch, 0);
  EXPECT_EQ(middle.sample_index, 8);  // 2 batches × 2 rows × 2 ranks
  std::vector<Batch> rest = read_all(*run, 1000);
  DataPosition boundary = run->position();
  EXPECT_EQ(boundary.epoch, 1);
  EXPECT_EQ(boundary.sample_index, 0);
  std::vector<Batch> next_epoch = read_all(*run, 3);

  auto resumed = open_batch_source(options({{h5, 1.0}}), *tokenizer_, 2, 3, 1, 2, false);
  resumed->seek(middle);
  expect_same(read_all(*resumed, 1000), rest);
  auto at_boundary = open_batch_source(options({{h5, 1.0}}), *tokenizer_, 2, 3, 1, 2, false);
  at_boundary->seek(boundary);
  expect_same(read_all(*at_boundary, 3), next_epoch);
  EXPECT_THROW(at_boundary->seek(DataPosition{0, 3}), core::UsageError);
}

TEST_F(LoaderTest, WeightedMixingTakesDocumentsByWeight) {
  std::string a = prepare({text_jsonl("a.jsonl", 30, "aaa")}, "a.h5");
  std::string b = prepare({text_jsonl("b.jsonl", 30, "bbb")}, "b.h5");
  auto source_a = open_hdf5_source(a, tokenizer_->id_limit());
  auto source_b = open_hdf5_source(b, tokenizer_->id_limit());
  EpochPlan plan({source_a.get(), source_b.get()}, {3.0, 1.0}, 9, 0, true, false, 64);
  int64_t from_a = 0, from_b = 0;
  for (int64_t r = 0; r < plan.num_rows(); ++r) {
    auto [begin, end] = plan.row(r);
    for (auto* d = begin; d != end; ++d) (d->source == 0 ? from_a : from_b)++;
  }
  EXPECT_EQ(from_a, 45);  // 3/4 of 60: source a is repeated
  EXPECT_EQ(from_b, 15);
}

TEST_F(LoaderTest, EveryEpochHasTheSameBatchCountWhateverItsPacking) {
  std::string a = prepare({text_jsonl("a.jsonl", 37, "aaa")}, "a.h5");
  std::string b = prepare({text_jsonl("b.jsonl", 23, "bbbbbbbb")}, "b.h5");
  auto source = open_batch_source(options({{a, 2.0}, {b, 1.0}}, 40), *tokenizer_, 2, 17, 1, 2, false);
  for (int epoch = 0; epoch < 6; ++epoch) {
    EXPECT_EQ(static_cast<int64_t>(read_all(*source, 1000).size()), source->batches_per_epoch()) << epoch;
    EXPECT_EQ(source->position().epoch, epoch + 1);
  }
}

TEST_F(LoaderTest, JsonlSourceTokenizedOnTheFlyEqualsPrepared) {
  std::string jsonl = text_jsonl("a.jsonl", 30);
  std::string h5 = prepare({jsonl}, "a.h5");
  auto from_h5 = open_batch_source(options({{h5, 1.0}}), *tokenizer_, 2, 4, 0, 1, false);
  DataOptions o = options({{jsonl, 1.0}});
  o.tokenizer = tokenizer_path_;
  auto from_jsonl = open_batch_source(o, *tokenizer_, 2, 4, 0, 1, false);
  expect_same(read_all(*from_h5, 100), read_all(*from_jsonl, 100));
}

TEST_F(LoaderTest, TooLittleDataForOneStepIsAClearError) {
  std::string h5 = prepare({text_jsonl("a.jsonl", 3)}, "a.h5");
  EXPECT_THROW(open_batch_source(options({{h5, 1.0}}, 16, false), *tokenizer_, 2, 1, 0, 2, false), core::DataError);
}

}  // namespace
}  // namespace freehold::data
