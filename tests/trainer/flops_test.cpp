// MFU (trainer/flops.h): N counts exactly the matmul weights a loaded model multiplies by, the formula's terms
// scale as documented, the measured peak is a positive rate (or FREEHOLD_PEAK_TFLOPS, checked), and a training
// run writes "mfu" = tokens_per_s · flops_per_token / peak into metrics.jsonl. Also: model.activation_checkpointing
// in the trainer gives the same losses and adapter as a run without it (dropout on).
#include "trainer/flops.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/randint.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/file.h"
#include "io/safetensors.h"
#include "kernels/cpu_gemm.h"
#include "model/transformer.h"
#include "tests/model/tiny_checkpoint.h"
#include "trainer/token_batches.h"
#include "trainer/trainer.h"

namespace freehold::trainer {
namespace {
namespace fs = std::filesystem;

int64_t matmul_weights_of(const model::Transformer& model) {
  int64_t n = model.lm_head().weight().numel();  // the embedding when tied: still a matmul
  for (const model::Linear* l : model.projections()) n += l->weight().numel();
  return n;
}

TEST(FlopsTest, FrozenMatmulParametersAreTheModelsProjectionsAndHead) {
  const std::string dir = model::testing::make_temp_dir("flops_n");
  model::testing::write_checkpoint(dir, model::testing::llama_config_json(67, 24, 40, 3, 6, 2, "float32"), at::kFloat, 1);
  model::Transformer model = model::Transformer::load(dir);
  EXPECT_EQ(frozen_matmul_parameters(model.config()), matmul_weights_of(model));
}

TEST(FlopsTest, FormulaTerms) {
  io::ModelConfig c;
  c.vocab_size = 1000, c.hidden_size = 64, c.intermediate_size = 176, c.num_hidden_layers = 5;
  c.num_attention_heads = 8, c.num_key_value_heads = 2, c.head_dim = 8;
  const double N = static_cast<double>(frozen_matmul_parameters(c));
  EXPECT_EQ(training_flops_per_token(c, 0, 0), 4 * N);                           // frozen: forward + input grads
  EXPECT_EQ(training_flops_per_token(c, 1000, 0) - training_flops_per_token(c, 0, 0), 6 * 1000);  // adapters
  EXPECT_EQ(training_flops_per_token(c, 0, 300) - training_flops_per_token(c, 0, 100),
            12.0 * 5 * 8 * 8 * 200);  // attention: 12 · L · H · D per token and position
}

TEST(FlopsTest, PeakIsMeasuredOrTakenFromTheEnvironment) {
  unsetenv("FREEHOLD_PEAK_TFLOPS");
  PeakFlops measured = matmul_peak_flops(at::kFloat, c10::Device(c10::kCPU), 0.05);
  EXPECT_GT(measured.flops_per_s, 1e6);
  EXPECT_TRUE(std::isfinite(measured.flops_per_s));
  // fp32 on the CPU names the library the run's GEMMs use (kernels/cpu_gemm.h).
  const std::string library(kernels::cpu_gemm_path_name(kernels::cpu_gemm_path()));
  EXPECT_NE(measured.source.find(library + " GEMM 512x512 Float"), std::string::npos) << measured.source;

  setenv("FREEHOLD_PEAK_TFLOPS", "2.5", 1);
  EXPECT_EQ(matmul_peak_flops(at::kFloat).flops_per_s, 2.5e12);
  for (const char* bad : {"fast", "-1", "0", "inf"}) {
    setenv("FREEHOLD_PEAK_TFLOPS", bad, 1);
    try {
      matmul_peak_flops(at::kFloat);
      ADD_FAILURE() << "accepted FREEHOLD_PEAK_TFLOPS=" << bad;
    } catch (const core::UsageError& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("\"") + bad + "\""), std::string::npos) << e.what();
    }
  }
  unsetenv("FREEHOLD_PEAK_TFLOPS");
}

struct TinyRun {
  std::string root;
  std::vector<nlohmann::json> records;
  std::string adapter_file;
};

TinyRun train_tiny(const std::string& tag, bool checkpointing) {
  const std::string root = model::testing::make_temp_dir(tag);
  const std::string model_dir = root + "/model";
  fs::create_directories(model_dir);
  model::testing::write_checkpoint(model_dir, model::testing::llama_config_json(32, 16, 32, 2, 4, 2, "float32"),
                                   at::kFloat, 7);
  at::Generator g = at::detail::createCPUGenerator(11);
  at::Tensor ids = at::randint(0, 32, {8, 12}, g, at::TensorOptions().dtype(at::kLong));
  const std::string batches = root + "/train" + std::string(kTestingBatchesSuffix);
  io::save_safetensors(batches, {{"input_ids", ids}, {"labels", ids.clone()}});

  TrainerConfig c;
  c.model.path = model_dir;
  c.model.activation_checkpointing = checkpointing;
  // The reference kernels: these tests are about MFU and checkpointing, not about which kernel runs.
  c.model.fused_kernels = model::FusedKernels::kOff;
  c.adapter.r = 4;
  c.adapter.alpha = 8;
  c.adapter.dropout = 0.2;
  c.data.train = {{batches, 1.0}};
  c.train.micro_batch_size = 2;
  c.train.grad_accum_steps = 2;
  c.train.max_steps = 3;
  c.train.lr = 1e-2;
  c.train.precision = core::DType::kF32;
  c.output.dir = root + "/run";
  c.output.tensorboard = false;
  c.resolved_config_yaml = "test: true\n";
  Trainer trainer(c);
  trainer.setup();
  trainer.train();
  trainer.finish();
  TinyRun run;
  run.root = root;
  std::ifstream in(c.output.dir + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) run.records.push_back(nlohmann::json::parse(line));
  run.adapter_file = c.output.dir + "/adapter/adapter_model.safetensors";
  return run;
}

TEST(FlopsTest, MetricsCarryMfuFromTheFormulaAndThePeak) {
  setenv("FREEHOLD_PEAK_TFLOPS", "0.001", 1);  // a known peak, so the record can be checked exactly
  TinyRun run = train_tiny("flops_run", false);
  unsetenv("FREEHOLD_PEAK_TFLOPS");
  ASSERT_EQ(run.records.size(), 3u);
  io::ModelConfig c = io::load_model_config(run.root + "/model");
  auto adapter = io::SafetensorsFile::open(run.adapter_file);
  int64_t adapter_parameters = 0;
  for (const std::string& name : adapter->names()) adapter_parameters += adapter->tensor(name).numel();
  for (const nlohmann::json& r : run.records) {
    ASSERT_TRUE(r.contains("mfu")) << r.dump();
    const double expected = r["tokens_per_s"].get<double>() * training_flops_per_token(c, adapter_parameters, 12) / 1e9;
    EXPECT_NEAR(r["mfu"].get<double>(), expected, 1e-12 * expected) << r.dump();
    EXPECT_GT(r["mfu"].get<double>(), 0);
  }
}

TEST(FlopsTest, ActivationCheckpointingInTheTrainerChangesNothing) {
  TinyRun plain = train_tiny("ckpt_off", false);
  TinyRun checkpointed = train_tiny("ckpt_on", true);
  ASSERT_EQ(plain.records.size(), checkpointed.records.size());
  for (size_t i = 0; i < plain.records.size(); ++i) {
    EXPECT_EQ(plain.records[i]["loss"], checkpointed.records[i]["loss"]) << "step " << i + 1;
    EXPECT_EQ(plain.records[i]["grad_norm"], checkpointed.records[i]["grad_norm"]) << "step " << i + 1;
  }
  auto a = io::SafetensorsFile::open(plain.adapter_file), b = io::SafetensorsFile::open(checkpointed.adapter_file);
  ASSERT_EQ(a->names(), b->names());
  for (const std::string& n : a->names()) EXPECT_TRUE(a->tensor(n).equal(b->tensor(n))) << n;
}

}  // namespace
}  // namespace freehold::trainer
