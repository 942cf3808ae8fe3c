#include "model/generation.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/argmax.h>
#include <ATen/ops/multinomial.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/tensor.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace freehold::model {

at::Tensor apply_temperature(const at::Tensor& logits, double temperature) {
  FH_CHECK(temperature > 0, "temperature must be > 0, got ", temperature);
  return logits / temperature;
}

at::Tensor apply_top_p(const at::Tensor& logits, double top_p) {
  FH_CHECK(top_p > 0 && top_p <= 1, "top_p must be in (0, 1], got ", top_p);
  FH_CHECK(logits.dim() == 2, "apply_top_p takes logits (N, V), got ", logits.dim(), " dims");
  // Ascending order, as the warper sorts: the tokens removed are the unlikely head whose cumulative
  // probability stays at or below 1 - top_p; the most likely token is always kept.
  auto [sorted, indices] = logits.sort(/*dim=*/-1, /*descending=*/false);
  at::Tensor cumulative = sorted.softmax(-1).cumsum(-1);
  at::Tensor remove_sorted = cumulative <= (1 - top_p);
  remove_sorted.narrow(-1, remove_sorted.size(-1) - 1, 1).fill_(false);
  at::Tensor remove = remove_sorted.scatter(1, indices, remove_sorted);
  return logits.masked_fill(remove, -std::numeric_limits<double>::infinity());
}

int64_t choose_token(const at::Tensor& logits, const SamplingOptions& options, at::Generator& generator) {
  FH_CHECK(logits.dim() == 1, "choose_token takes logits (V), got ", logits.dim(), " dims");
  if (options.temperature == 0) return logits.argmax().item<int64_t>();
  at::Tensor scores = apply_temperature(logits.unsqueeze(0), options.temperature);
  if (options.top_p < 1) scores = apply_top_p(scores, options.top_p);
  at::Tensor probs = scores.softmax(-1);
  return at::multinomial(probs, 1, /*replacement=*/false, generator).item<int64_t>();
}

std::vector<int64_t> generate(const Transformer& model, const std::vector<int64_t>& prompt,
                              const GenerationOptions& options, const std::function<void(int64_t)>& on_token) {
  FH_CHECK(!prompt.empty(), "generate needs at least one prompt token");
  at::NoGradGuard no_grad;
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  const int64_t capacity = static_cast<int64_t>(prompt.size()) + std::max<int64_t>(options.max_new_tokens, 0);
  const at::TensorOptions device = model.embed_tokens().options();
  KvCache cache = KvCache::allocate(model.config(), 1, capacity, device.dtype(model.dtype()));

  std::vector<int64_t> out;
  at::Tensor next_input = at::tensor(prompt, at::kLong).to(device.device()).unsqueeze(0);  // (1, T)
  while (static_cast<int64_t>(out.size()) < options.max_new_tokens) {
    at::Tensor hidden = model.hidden_states_cached(next_input, cache);  // (1, T, C)
    // Only the last position picks the next token; transformers takes its logits in float32 too.
    at::Tensor logits = model.lm_head_forward(hidden.select(1, hidden.size(1) - 1)).to(at::kFloat)[0];  // (V)
    const int64_t token = choose_token(logits.cpu(), options.sampling, generator);
    out.push_back(token);
    if (on_token) on_token(token);
    if (std::find(options.eos_token_ids.begin(), options.eos_token_ids.end(), token) != options.eos_token_ids.end()) {
      break;
    }
    next_input = at::tensor(std::vector<int64_t>{token}, at::kLong).to(device.device()).unsqueeze(0);  // (1, 1)
  }
  return out;
}

}  // namespace freehold::model
