// Text generation on a Transformer (`freehold generate`): a prefill of the prompt into a KV cache, then one token
// at a time, chosen greedily (temperature 0) or sampled after transformers' TemperatureLogitsWarper and
// TopPLogitsWarper, in that order, from float32 logits. Stops after max_new_tokens or at an EOS id (which is
// returned, as transformers' generate returns it).
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "model/transformer.h"

namespace freehold::model {

struct SamplingOptions {
  double temperature = 0.0;  // 0: greedy (argmax); > 0: divide the logits by it and sample
  double top_p = 1.0;        // (0, 1]: keep the smallest set of most likely tokens whose probability reaches top_p
};

struct GenerationOptions {
  int64_t max_new_tokens = 128;
  SamplingOptions sampling;
  uint64_t seed = 0;                  // of the sampling generator; the same seed gives the same tokens
  std::vector<int64_t> eos_token_ids;  // generation stops after any of these
};

// TemperatureLogitsWarper: logits / temperature. logits (..., V) float32; temperature > 0.
at::Tensor apply_temperature(const at::Tensor& logits, double temperature);
// TopPLogitsWarper (min_tokens_to_keep 1): tokens outside the nucleus get -inf. logits (N, V) float32.
at::Tensor apply_top_p(const at::Tensor& logits, double top_p);
// The next token from logits (V) float32: argmax at temperature 0, else a draw from
// softmax(top_p(logits / temperature)) with `generator` (torch.multinomial's draw).
int64_t choose_token(const at::Tensor& logits, const SamplingOptions& options, at::Generator& generator);

// Generates after `prompt` (token ids, at least one), calling `on_token` with each new id as soon as it is
// chosen. Runs without autograd. Returns the new ids.
std::vector<int64_t> generate(const Transformer& model, const std::vector<int64_t>& prompt,
                              const GenerationOptions& options, const std::function<void(int64_t)>& on_token = {});

}  // namespace freehold::model
