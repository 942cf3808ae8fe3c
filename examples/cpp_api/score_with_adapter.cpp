// A small program on freehold's C++ API: load a Hugging Face model, score a text, attach a PEFT adapter, score it
// again. Built against an installed freehold through find_package(freehold) (CMakeLists.txt beside this file).
//
//   score_with_adapter MODEL_DIR ADAPTER_DIR "some text"
//
// prints one JSON line {"tokens": N, "base_nll": x, "adapter_nll": y}: the mean negative log-likelihood of the
// text's tokens (each predicted from the ones before it) under the base model and under base + adapter.
#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/log_softmax.h>
#include <ATen/ops/tensor.h>

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "adapters/adapter_set.h"
#include "data/tokenizer.h"
#include "model/transformer.h"

namespace {

// Mean of -log p(ids[i+1] | ids[0..i]) over the sequence.
double mean_nll(const freehold::model::Transformer& model, const std::vector<int32_t>& ids) {
  std::vector<int64_t> ids64(ids.begin(), ids.end());
  const int64_t N = static_cast<int64_t>(ids64.size());
  at::Tensor input_ids = at::tensor(ids64, at::kLong).unsqueeze(0);        // (1, N)
  at::Tensor logits = model.forward({input_ids, {}, {}})[0].to(at::kFloat);  // (N, V)
  at::Tensor logprobs = at::log_softmax(logits, -1).narrow(0, 0, N - 1);     // (N-1, V)
  at::Tensor targets = input_ids[0].narrow(0, 1, N - 1).unsqueeze(1);        // (N-1, 1)
  return -logprobs.gather(1, targets).mean().item<double>();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s MODEL_DIR ADAPTER_DIR TEXT\n", argv[0]);
    return 2;
  }
  const std::string model_dir = argv[1], adapter_dir = argv[2], text = argv[3];
  try {
    at::NoGradGuard no_grad;
    // fp32 so that the numbers match a float32 reference; LoadOptions::dtype = bf16 halves the memory.
    freehold::model::LoadOptions options;
    options.dtype = freehold::core::DType::kF32;
    freehold::model::Transformer model = freehold::model::Transformer::load(model_dir, options);
    const freehold::data::Tokenizer tokenizer = freehold::data::Tokenizer::load(model_dir + "/tokenizer.json");
    const std::vector<int32_t> ids = tokenizer.encode(text);
    if (ids.size() < 2) {
      std::fprintf(stderr, "the text has %zu token(s); at least 2 are needed to score\n", ids.size());
      return 2;
    }
    const double base_nll = mean_nll(model, ids);
    // The adapter wraps the targeted projections of `model` in place (eval mode: no dropout).
    freehold::adapters::AdapterSet adapter = freehold::adapters::AdapterSet::load(model, adapter_dir);
    const double adapter_nll = mean_nll(model, ids);
    std::printf("{\"tokens\": %zu, \"base_nll\": %.9g, \"adapter_nll\": %.9g}\n", ids.size(), base_nll, adapter_nll);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
