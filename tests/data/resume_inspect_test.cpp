// The data side of a training run end to end on a tiny random Llama: a checkpoint records the fingerprint of each
// training file and resume refuses changed data (RELIABILITY.md R9) naming the file and both fingerprints; a
// prepared file of another tokenizer is refused at setup; `freehold inspect --json` describes the checkpoint, the
// adapter and both kinds of HDF5 dataset with the values the run and the files hold.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/file.h"
#include "core/sha256.h"
#include "data/data_fingerprint.h"
#include "data/hdf5_file.h"
#include "data/prepare.h"
#include "io/safetensors.h"
#include "launch/commands.h"
#include "nlohmann/json.hpp"
#include "tests/data/data_test_util.h"
#include "tests/model/tiny_checkpoint.h"
#include "trainer/trainer.h"

namespace freehold::data {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

class RunDataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = model::testing::make_temp_dir("data_resume");
    model_dir_ = root_ + "/model";
    fs::create_directories(model_dir_);
    // 128 embedding rows hold the character tokenizer's 101 ids.
    model::testing::write_checkpoint(model_dir_, model::testing::llama_config_json(128, 16, 32, 2, 4, 2, "float32"),
                                     at::kFloat, 7);
    core::write_file_atomic(model_dir_ + "/tokenizer.json",
                            testing::char_tokenizer_document(testing::llama3_specials(), "<|begin_of_text|>").dump());
    std::string body;
    for (int i = 0; i < 40; ++i) body += "{\"text\": \"record " + std::to_string(i) + " of the tiny run\"}\n";
    jsonl_ = root_ + "/train.jsonl";
    core::write_file_atomic(jsonl_, body);
    PrepareOptions prepare;
    prepare.tokenizer_path = model_dir_;
    prepare.inputs = {jsonl_};
    prepare.out = root_ + "/train.h5";
    prepare.threads = 1;
    prepared_ = prepare_dataset(prepare);
    h5_ = prepare.out;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  trainer::TrainerConfig config(int64_t steps) const {
    trainer::TrainerConfig c;
    c.model.path = model_dir_;
    c.adapter.r = 4;
    c.adapter.alpha = 8;
    c.adapter.target_modules = {"q_proj", "v_proj"};
    c.data.train = {{jsonl_, 1.0}, {h5_, 1.0}};
    c.data.seq_len = 16;
    c.train.micro_batch_size = 2;
    c.train.max_steps = steps;
    c.train.lr = 1e-3;
    c.train.precision = core::DType::kF32;
    c.output.dir = root_ + "/run";
    c.output.save_every = 1;
    c.output.tensorboard = false;
    c.resolved_config_yaml = "test: true\n";
    return c;
  }

  void train(int64_t steps) {
    trainer::Trainer t(config(steps));
    t.setup();
    t.train();
    t.finish();
  }

  // `freehold inspect --json PATH`, parsed.
  static json inspect(const std::string& path) {
    ::testing::internal::CaptureStdout();
    int code = -1;
    try {
      code = launch::run_inspect({"--json", path});
    } catch (...) {
      ::testing::internal::GetCapturedStdout();
      throw;
    }
    const std::string out = ::testing::internal::GetCapturedStdout();
    EXPECT_EQ(code, 0);
    return json::parse(out);
  }

  std::string root_, model_dir_, jsonl_, h5_;
  PrepareResult prepared_;
};

TEST_F(RunDataTest, ResumeRefusesChangedDataNamingTheFileAndBothFingerprints) {
  train(2);
  const std::string ck = root_ + "/run/checkpoints/step-000002";
  const json state = json::parse(core::read_file(ck + "/trainer_state.json"));
  ASSERT_EQ(state["data_fingerprints"].size(), 2u);
  EXPECT_EQ(state["data_fingerprints"][0]["path"], jsonl_);
  EXPECT_EQ(state["data_fingerprints"][0]["kind"], "sampled");
  EXPECT_EQ(state["data_fingerprints"][1]["kind"], "prepared");
  const std::string saved = state["data_fingerprints"][0]["digest"];
  {
    trainer::Trainer same(config(3));  // the same data: resumes
    same.setup();
    EXPECT_EQ(same.step(), 2);
  }
  std::ofstream(jsonl_, std::ios::app) << "{\"text\": \"a record added after the checkpoint\"}\n";
  const std::string now = fingerprint_data_file(jsonl_).digest;
  try {
    trainer::Trainer changed(config(3));
    changed.setup();
    FAIL() << "resumed on changed data";
  } catch (const core::UsageError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("data.train[0] " + jsonl_ + " changed since the checkpoint"), std::string::npos) << message;
    EXPECT_NE(message.find(saved.substr(0, 16)), std::string::npos) << message;
    EXPECT_NE(message.find(now.substr(0, 16)), std::string::npos) << message;
  }
  ::setenv(kAllowDataChangeVariable, "1", 1);
  {
    trainer::Trainer allowed(config(3));
    allowed.setup();
    EXPECT_EQ(allowed.step(), 2);
  }
  ::unsetenv(kAllowDataChangeVariable);
}

TEST_F(RunDataTest, PreparedFileOfAnotherTokenizerIsRefusedAtSetup) {
  const std::string other = root_ + "/other_tokenizer.json";
  core::write_file_atomic(other, testing::char_tokenizer_document(testing::llama3_specials()).dump());
  trainer::TrainerConfig c = config(1);
  c.data.train = {{h5_, 1.0}};
  c.data.tokenizer = other;
  trainer::Trainer t(c);
  try {
    t.setup();
    FAIL() << "trained on a file prepared with another tokenizer";
  } catch (const core::DataError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(h5_), std::string::npos) << message;
    EXPECT_NE(message.find(other), std::string::npos) << message;
    EXPECT_NE(message.find(core::sha256_file_hex(other)), std::string::npos) << message;
    EXPECT_NE(message.find(core::sha256_file_hex(model_dir_ + "/tokenizer.json")), std::string::npos) << message;
  }
}

TEST_F(RunDataTest, InspectDescribesCheckpointAdapterAndDatasets) {
  train(2);
  const std::string ck = root_ + "/run/checkpoints/step-000002";
  const json state = json::parse(core::read_file(ck + "/trainer_state.json"));
  json c = inspect(ck);
  EXPECT_EQ(c["type"], "checkpoint");
  EXPECT_EQ(c["step"], 2);
  EXPECT_EQ(c["manifest_verified"], true);
  EXPECT_EQ(c["resumable"], true);
  EXPECT_EQ(c["world_size"], state["world_size"]);
  EXPECT_EQ(c["data_position"], state["data_position"]);
  ASSERT_EQ(c["data"].size(), 2u);
  EXPECT_EQ(c["data"][0]["now"], "unchanged");
  EXPECT_EQ(c["adapter"]["r"], 4);

  // The final adapter: what adapter_config.json and the tensors hold.
  const std::string adapter = root_ + "/run/adapter";
  json a = inspect(adapter);
  const json config_file = json::parse(core::read_file(adapter + "/adapter_config.json"));
  auto weights = io::SafetensorsFile::open(adapter + "/adapter_model.safetensors");
  EXPECT_EQ(a["type"], "peft_adapter");
  EXPECT_EQ(a["r"], config_file["r"]);
  EXPECT_EQ(a["lora_alpha"], config_file["lora_alpha"]);
  EXPECT_DOUBLE_EQ(a["scaling"].get<double>(), config_file["lora_alpha"].get<double>() / config_file["r"].get<double>());
  EXPECT_EQ(a["tensors"], weights->names().size());
  EXPECT_EQ(a["adapted_modules"], weights->names().size() / 2);  // lora_A and lora_B of each: 2 layers × q, v

  // Both kinds of HDF5 dataset.
  json p = inspect(h5_);
  EXPECT_EQ(p["type"], "prepared_dataset");
  EXPECT_EQ(p["documents"], prepared_.documents);
  EXPECT_EQ(p["tokens"], prepared_.tokens);
  EXPECT_EQ(p["target_tokens"], prepared_.target_tokens);
  EXPECT_EQ(p["attributes"]["format"], "\"freehold.tokens\"");
  const std::string rows = root_ + "/rows.h5";
  {
    auto guard = hdf5::lock();
    hid_t file = H5Fcreate(rows.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t dims[2] = {2, 3};
    hid_t space = H5Screate_simple(2, dims, nullptr);
    hid_t dataset = H5Dcreate2(file, "input_ids", H5T_STD_I32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    const int32_t ids[6] = {5, 6, 7, 8, 9, 10};
    H5Dwrite(dataset, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, ids);
    H5Dclose(dataset);
    H5Sclose(space);
    H5Fclose(file);
  }
  json r = inspect(rows);
  EXPECT_EQ(r["type"], "hdf5_rows");
  EXPECT_EQ(r["documents"], 2);
  EXPECT_EQ(r["tokens"], 6);
  EXPECT_EQ(r["target_tokens"], 4);  // no mask: every token but each row's first
  EXPECT_EQ(r["max_id"], 10);

  // The model directory and a safetensors file, as --json too.
  json m = inspect(model_dir_);
  EXPECT_EQ(m["type"], "model");
  EXPECT_EQ(m["vocab_size"], 128);
  EXPECT_EQ(m["num_hidden_layers"], 2);
  json t = inspect(adapter + "/adapter_model.safetensors");
  EXPECT_EQ(t["type"], "safetensors");
  EXPECT_EQ(t["tensors"].size(), weights->names().size());

  // A changed training file and a damaged checkpoint show.
  std::ofstream(jsonl_, std::ios::app) << "{\"text\": \"more\"}\n";
  std::string bytes = core::read_file(ck + "/adapter_model.safetensors");
  bytes[bytes.size() - 1] ^= 0x01;
  core::write_file_atomic(ck + "/adapter_model.safetensors", bytes);
  c = inspect(ck);
  EXPECT_EQ(c["manifest_verified"], false);
  EXPECT_EQ(c["resumable"], false);
  EXPECT_NE(c["manifest_problem"].get<std::string>().find("adapter_model.safetensors"), std::string::npos) << c.dump();
  EXPECT_EQ(c["data"][0]["now"], "changed");
  EXPECT_EQ(c["data"][1]["now"], "unchanged");

  try {
    inspect(root_);
    FAIL();
  } catch (const core::UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("accepted: a model directory"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace freehold::data
