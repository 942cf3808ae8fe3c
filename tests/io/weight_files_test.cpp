// WeightFiles: which files of a model directory are read, the index cross-checks (RELIABILITY.md S23) and the
// refusal of pickles (S25).
#include "io/weight_files.h"

#include <ATen/ops/equal.h>
#include <ATen/ops/randn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "core/file.h"
#include "nlohmann/json.hpp"

namespace freehold::io {
namespace {

using Kind = SafetensorsErrorKind;

std::string make_temp_dir() {
  std::string pattern = ::testing::TempDir() + "freehold_weight_files_test_XXXXXX";
  EXPECT_NE(::mkdtemp(pattern.data()), nullptr);
  return pattern;
}

template <typename Fn>
Kind error_kind(Fn&& fn, std::string* message = nullptr) {
  try {
    fn();
  } catch (const SafetensorsError& e) {
    if (message) *message = e.what();
    return e.kind();
  }
  ADD_FAILURE() << "no SafetensorsError thrown";
  return Kind::kHeaderTooSmall;
}

std::vector<NamedTensor> model_tensors() {
  return {{"model.embed_tokens.weight", at::randn({8, 4})},
          {"model.layers.0.self_attn.q_proj.weight", at::randn({4, 4})},
          {"model.layers.0.mlp.up_proj.weight", at::randn({6, 4})},
          {"model.norm.weight", at::randn({4})},
          {"lm_head.weight", at::randn({8, 4})}};
}

// Two hand-made shards and an index that places "a" and "b" in shard 1 and "c" in shard 2, then lets a test edit
// the index before writing it.
std::string make_sharded_dir(const std::function<void(nlohmann::json&)>& edit_index = nullptr) {
  std::string dir = make_temp_dir();
  save_safetensors(dir + "/s1.safetensors", {{"a", at::randn({2})}, {"b", at::randn({3})}});
  save_safetensors(dir + "/s2.safetensors", {{"c", at::randn({4})}});
  nlohmann::json index = {{"metadata", {{"total_size", 36}}},
                          {"weight_map", {{"a", "s1.safetensors"}, {"b", "s1.safetensors"}, {"c", "s2.safetensors"}}}};
  if (edit_index) edit_index(index);
  core::write_file_atomic(dir + "/model.safetensors.index.json", index.dump());
  return dir;
}

TEST(WeightFilesTest, ReadsASingleModelFile) {
  std::string dir = make_temp_dir();
  std::vector<NamedTensor> tensors = model_tensors();
  save_safetensors(dir + "/model.safetensors", tensors, {{"format", "pt"}});
  WeightFiles files = WeightFiles::open_model_dir(dir);
  EXPECT_EQ(files.size(), tensors.size());
  EXPECT_EQ(files.names().front(), "lm_head.weight");  // sorted
  EXPECT_EQ(files.shard_paths(), (std::vector<std::string>{dir + "/model.safetensors"}));
  EXPECT_EQ(files.metadata().at("format"), "pt");
  uint64_t bytes = 0;
  for (const NamedTensor& nt : tensors) {
    EXPECT_TRUE(at::equal(files.tensor(nt.name), nt.tensor)) << nt.name;
    EXPECT_TRUE(at::equal(files.read_copy(nt.name), nt.tensor)) << nt.name;
    EXPECT_EQ(files.info(nt.name).shape, nt.tensor.sizes().vec());
    bytes += nt.tensor.nbytes();
  }
  EXPECT_EQ(files.total_bytes(), bytes);
}

TEST(WeightFilesTest, ReadsAShardedModelThroughItsIndex) {
  std::string dir = make_temp_dir();
  std::vector<NamedTensor> tensors = model_tensors();
  save_sharded_safetensors(dir, tensors, 150);
  WeightFiles files = WeightFiles::open_model_dir(dir);
  EXPECT_GT(files.shard_paths().size(), 1u);
  EXPECT_EQ(files.size(), tensors.size());
  for (const NamedTensor& nt : tensors) {
    EXPECT_TRUE(at::equal(files.tensor(nt.name), nt.tensor)) << nt.name;
    EXPECT_TRUE(at::equal(files.read_copy(nt.name), nt.tensor)) << nt.name;
  }
  EXPECT_EQ(files.file_of("model.embed_tokens.weight"), dir + "/model-00001-of-00004.safetensors");
  EXPECT_EQ(files.file_of("lm_head.weight"), dir + "/model-00004-of-00004.safetensors");
  EXPECT_EQ(files.metadata().at("format"), "pt");
  auto index = nlohmann::json::parse(core::read_file(dir + "/model.safetensors.index.json"));
  EXPECT_EQ(files.total_bytes(), index["metadata"]["total_size"].get<uint64_t>());
}

TEST(WeightFilesTest, PrefersTheSingleFileOverAnIndexAsTransformersDoes) {
  std::string dir = make_sharded_dir();
  save_safetensors(dir + "/model.safetensors", {{"only", at::randn({1})}});
  WeightFiles files = WeightFiles::open_model_dir(dir);
  EXPECT_EQ(files.names(), (std::vector<std::string>{"only"}));
}

TEST(WeightFilesTest, FallsBackToTheOnlySafetensorsFileAndRefusesToGuessAmongSeveral) {
  std::string dir = make_temp_dir();
  save_safetensors(dir + "/weights.safetensors", {{"w", at::randn({1})}});
  core::write_file_atomic(dir + "/config.json", "{}");
  EXPECT_EQ(WeightFiles::open_model_dir(dir).names(), (std::vector<std::string>{"w"}));
  save_safetensors(dir + "/other.safetensors", {{"v", at::randn({1})}});
  EXPECT_EQ(error_kind([&] { WeightFiles::open_model_dir(dir); }), Kind::kInvalidIndex);
  std::string empty = make_temp_dir();
  EXPECT_THROW(WeightFiles::open_model_dir(empty), core::FormatError);
  EXPECT_THROW(WeightFiles::open_model_dir(empty + "/missing"), core::SystemError);
  EXPECT_THROW(WeightFiles::open_model_dir(dir + "/weights.safetensors"), core::FormatError);
}

TEST(WeightFilesTest, MissingTensorSuggestsNamesThatDifferByAPrefix) {
  std::string dir = make_temp_dir();
  save_safetensors(dir + "/model.safetensors", model_tensors());
  WeightFiles files = WeightFiles::open_model_dir(dir);
  std::string message;
  EXPECT_EQ(error_kind([&] { files.tensor("layers.0.mlp.up_proj.weight"); }, &message), Kind::kMissingTensor);
  EXPECT_NE(message.find("did you mean model.layers.0.mlp.up_proj.weight"), std::string::npos) << message;
  EXPECT_NE(message.find(dir), std::string::npos) << message;
  EXPECT_EQ(error_kind([&] { files.info("nothing.like.it"); }, &message), Kind::kMissingTensor);
  EXPECT_NE(message.find("lm_head.weight"), std::string::npos) << message;
  EXPECT_FALSE(files.contains("nothing.like.it"));
}

// ---------------------------------------------------------------------------------------------------------------
// S23

TEST(WeightFilesTest, S23_IndexNamingAMissingShardIsRejected) {
  std::string dir = make_sharded_dir([](nlohmann::json& index) { index["weight_map"]["c"] = "s3.safetensors"; });
  std::string message;
  EXPECT_EQ(error_kind([&] { WeightFiles::open_model_dir(dir); }, &message), Kind::kInvalidIndex);
  EXPECT_NE(message.find("s3.safetensors"), std::string::npos) << message;
}

TEST(WeightFilesTest, S23_WeightMapPathsOutsideTheDirectoryAreRejectedEvenWhenTheFileExists) {
  std::string parent = make_temp_dir();
  std::string dir = parent + "/model";
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  save_safetensors(parent + "/x.safetensors", {{"a", at::randn({1})}});
  for (std::string shard : {std::string("../x.safetensors"), parent + "/x.safetensors", std::string("./x.safetensors"),
                            std::string("sub/../../x.safetensors")}) {
    nlohmann::json index = {{"weight_map", {{"a", shard}}}};
    core::write_file_atomic(dir + "/model.safetensors.index.json", index.dump());
    EXPECT_EQ(error_kind([&] { WeightFiles::open_model_dir(dir); }), Kind::kInvalidIndex) << shard;
  }
}

TEST(WeightFilesTest, S23_TheSameTensorInTwoShardsIsRejected) {
  std::string dir = make_sharded_dir();
  // s2 also holds "a", which the index places in s1.
  save_safetensors(dir + "/s2.safetensors", {{"c", at::randn({4})}, {"a", at::randn({2})}});
  std::string message;
  EXPECT_EQ(error_kind([&] { WeightFiles::open_model_dir(dir); }, &message), Kind::kInvalidIndex);
  EXPECT_NE(message.find("'a'"), std::string::npos) << message;
  // The same name twice inside the index's JSON is caught too (nlohmann alone would keep the last).
  core::write_file_atomic(dir + "/model.safetensors.index.json",
                          R"({"weight_map": {"a": "s1.safetensors", "a": "s2.safetensors"}})");
  EXPECT_EQ(error_kind([&] { WeightFiles::open_model_dir(dir); }), Kind::kInvalidIndex);
}

TEST(WeightFilesTest, S23_IndexAndShardsMustListTheSameTensors) {
  std::string extra = make_sharded_dir([](nlohmann::json& index) { index["weight_map"]["d"] = "s2.safetensors"; });
  EXPECT_EQ(error_kind([&] { WeightFiles::open_model_dir(extra); }), Kind::kInvalidIndex);
  std::string missing = make_sharded_dir([](nlohmann::json& index) { index["weight_map"].erase("b"); });
  EXPECT_EQ(error_kind([&] { WeightFiles::open_model_dir(missing); }), Kind::kInvalidIndex);
  std::string moved = make_sharded_dir([](nlohmann::json& index) { index["weight_map"]["c"] = "s1.safetensors"; });
  EXPECT_EQ(error_kind([&] { WeightFiles::open_model_dir(moved); }), Kind::kInvalidIndex);
  EXPECT_NO_THROW(WeightFiles::open_model_dir(make_sharded_dir()));
}

TEST(WeightFilesTest, S23_BadShardContentsAreReportedAsTheShardsOwnError) {
  std::string dir = make_sharded_dir();
  core::write_file_atomic(dir + "/s2.safetensors", "short");
  EXPECT_EQ(error_kind([&] { WeightFiles::open_model_dir(dir); }), Kind::kHeaderTooSmall);
}

// ---------------------------------------------------------------------------------------------------------------
// S25

TEST(WeightFilesTest, S25_ADirectoryWithOnlyPickleWeightsIsRefusedWithAConversionHint) {
  for (const char* name : {"pytorch_model.bin", "model.pt", "consolidated.00.pth"}) {
    std::string dir = make_temp_dir();
    core::write_file_atomic(dir + "/" + name, "\x80\x02}q\x00.");
    core::write_file_atomic(dir + "/config.json", "{}");
    std::string message;
    EXPECT_EQ(error_kind([&] { WeightFiles::open_model_dir(dir); }, &message), Kind::kNotSafetensors) << name;
    EXPECT_NE(message.find("never unpickles"), std::string::npos) << message;
    EXPECT_NE(message.find("save_pretrained"), std::string::npos) << message;
    EXPECT_NE(message.find(name), std::string::npos) << message;
  }
}

}  // namespace
}  // namespace freehold::io
