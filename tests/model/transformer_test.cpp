#include "model/transformer.h"

#include <ATen/core/grad_mode.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/full.h>
#include <ATen/ops/tensor.h>

#include <gtest/gtest.h>

#include "core/error.h"
#include "tests/model/tiny_checkpoint.h"

namespace freehold::model {
namespace {

using testing::llama_config_json;
using testing::make_temp_dir;
using testing::write_checkpoint;

const std::string kConfig = llama_config_json(97, 48, 80, 2, 6, 2, "float32");

std::string load_error(const std::string& dir) {
  try {
    Transformer::load(dir);
  } catch (const core::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "loaded a broken checkpoint in " << dir;
  return "";
}

TEST(TransformerTest, PackedSegmentsGiveTheLogitsOfSeparateSequences) {
  at::NoGradGuard no_grad;
  std::string dir = make_temp_dir("packed");
  write_checkpoint(dir, kConfig, at::kFloat, 7);
  Transformer model = Transformer::load(dir);
  at::Tensor a = at::tensor(std::vector<int64_t>{5, 17, 3, 88, 41}, at::kLong).unsqueeze(0);
  at::Tensor b = at::tensor(std::vector<int64_t>{9, 2, 60}, at::kLong).unsqueeze(0);
  at::Tensor alone_a = model.forward({a, {}, {}});
  at::Tensor alone_b = model.forward({b, {}, {}});
  at::Tensor packed_ids = at::cat({a, b}, 1);
  at::Tensor positions = at::tensor(std::vector<int64_t>{0, 1, 2, 3, 4, 0, 1, 2}, at::kLong).unsqueeze(0);
  at::Tensor segments = at::tensor(std::vector<int64_t>{0, 0, 0, 0, 0, 1, 1, 1}, at::kLong).unsqueeze(0);
  at::Tensor packed = model.forward({packed_ids, positions, segments});
  EXPECT_LT((packed.narrow(1, 0, 5) - alone_a).abs().max().item<float>(), 1e-5);
  EXPECT_LT((packed.narrow(1, 5, 3) - alone_b).abs().max().item<float>(), 1e-5);
  // Without segment ids the second document would see the first: the logits must differ.
  at::Tensor leaked = model.forward({packed_ids, positions, {}});
  EXPECT_GT((leaked.narrow(1, 5, 3) - alone_b).abs().max().item<float>(), 1e-4);
}

TEST(TransformerTest, S24_WrongShapeNamesTheTensorAndBothShapes) {
  std::string dir = make_temp_dir("shape");
  write_checkpoint(dir, kConfig, at::kFloat, 1, [](const std::string& name, at::Tensor t) {
    return name == "model.layers.1.self_attn.k_proj.weight" ? t.narrow(0, 0, 8).contiguous() : t;
  });
  std::string e = load_error(dir);
  EXPECT_NE(e.find("model.layers.1.self_attn.k_proj.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("[8, 48]"), std::string::npos) << e;
  EXPECT_NE(e.find("[16, 48]"), std::string::npos) << e;
}

TEST(TransformerTest, S24_AStrayDtypeNamesTheTensor) {
  std::string dir = make_temp_dir("dtype");
  write_checkpoint(dir, llama_config_json(97, 48, 80, 2, 6, 2, "bfloat16"), at::kBFloat16, 1,
                   [](const std::string& name, at::Tensor t) {
                     return name == "model.layers.0.mlp.up_proj.weight" ? t.to(at::kHalf) : t;
                   });
  std::string e = load_error(dir);
  EXPECT_NE(e.find("model.layers.0.mlp.up_proj.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("F16"), std::string::npos) << e;
  EXPECT_NE(e.find("BF16"), std::string::npos) << e;
}

TEST(TransformerTest, S21_NonFiniteWeightsAreRefusedByName) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    std::string dir = make_temp_dir("nan");
    write_checkpoint(dir, kConfig, at::kFloat, 1, [bad](const std::string& name, at::Tensor t) {
      if (name == "model.layers.1.mlp.down_proj.weight") t.view({-1})[1234] = bad;
      return t;
    });
    std::string e = load_error(dir);
    EXPECT_NE(e.find("model.layers.1.mlp.down_proj.weight"), std::string::npos) << e;
    EXPECT_NE(e.find("NaN or Inf"), std::string::npos) << e;
  }
}

TEST(TransformerTest, MissingTensorIsNamed) {
  std::string dir = make_temp_dir("missing");
  write_checkpoint(dir, kConfig, at::kFloat, 1, [](const std::string& name, at::Tensor t) {
    return name == "model.norm.weight" ? at::Tensor() : t;
  });
  std::string e = load_error(dir);
  EXPECT_NE(e.find("\"model.norm.weight\""), std::string::npos) << e;
  EXPECT_NE(e.find("missing"), std::string::npos) << e;
}

TEST(TransformerTest, LoadsInTheRequestedDtype) {
  at::NoGradGuard no_grad;
  std::string dir = make_temp_dir("cast");
  write_checkpoint(dir, kConfig, at::kFloat, 3);
  LoadOptions options;
  options.dtype = core::DType::kBF16;
  Transformer bf16 = Transformer::load(dir, options);
  Transformer fp32 = Transformer::load(dir);
  EXPECT_EQ(bf16.dtype(), at::kBFloat16);
  at::Tensor ids = at::tensor(std::vector<int64_t>{1, 2, 3, 4}, at::kLong).unsqueeze(0);
  at::Tensor lb = bf16.forward({ids, {}, {}});
  at::Tensor lf = fp32.forward({ids, {}, {}});
  EXPECT_EQ(lb.scalar_type(), at::kBFloat16);
  EXPECT_LT((lb.to(at::kFloat) - lf).abs().max().item<float>(), 0.05);
}

}  // namespace
}  // namespace freehold::model
