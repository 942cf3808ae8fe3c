// One training step (forward, loss, backward, AdamW over the adapter) with model.fused_kernels on or off, on the
// CPU: writes a random-weight Llama-shaped checkpoint of the given size to a temporary directory, loads it in DTYPE,
// attaches LoRA (r 16, all seven projections, DROPOUT) and runs the trainer's loss path (trainer/loss.h) and
// optimizer as the trainer does, with the projection grouping and 16-bit GEMM path the trainer would pick
// (FREEHOLD_HALF_GEMM fixes the latter). Prints one JSON line with the best step's wall and CPU time and the peak
// memory above the loaded model.
//
//   train_step_bench on|off VOCAB HIDDEN INTERMEDIATE LAYERS TOKENS STEPS [fp32|bf16] [DROPOUT]
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <sys/resource.h>
#include <torch/csrc/autograd/autograd.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "adapters/adapter_set.h"
#include "adapters/lora_group.h"
#include "core/file.h"
#include "io/safetensors.h"
#include "kernels/half_gemm.h"
#include "kernels/rms_norm.h"
#include "model/transformer.h"
#include "trainer/adamw.h"
#include "trainer/loss.h"

namespace {

double current_rss_mb() {
  std::ifstream statm("/proc/self/statm");
  long total = 0, resident = 0;
  statm >> total >> resident;
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / (1 << 20);
}

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

void write_model(const std::string& dir, int64_t V, int64_t C, int64_t I, int64_t L) {
  const int64_t H = C / 64, D = 64;
  int64_t Hkv = H;  // grouped-query attention as the families do: H/4 heads when 4 divides H, else H/3, else H/2
  for (const int64_t group : {4, 3, 2}) {
    if (H % group == 0) {
      Hkv = H / group;
      break;
    }
  }
  freehold::core::write_file_atomic(
      dir + "/config.json",
      absl::StrCat(R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": )", V,
                   R"(, "hidden_size": )", C, R"(, "intermediate_size": )", I, R"(, "num_hidden_layers": )", L,
                   R"(, "num_attention_heads": )", H, R"(, "num_key_value_heads": )", Hkv,
                   R"(, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "hidden_act": "silu",
                      "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
                      "tie_word_embeddings": false, "dtype": "float32"})"));
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  std::vector<freehold::io::NamedTensor> tensors;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, bool norm) {
    at::Tensor t = at::randn(shape, gen, at::kFloat) * 0.05;
    tensors.push_back({name, norm ? t + 1.0 : t});
  };
  add("model.embed_tokens.weight", {V, C}, false);
  for (int64_t i = 0; i < L; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    add(p + "input_layernorm.weight", {C}, true);
    add(p + "post_attention_layernorm.weight", {C}, true);
    add(p + "self_attn.q_proj.weight", {H * D, C}, false);
    add(p + "self_attn.k_proj.weight", {Hkv * D, C}, false);
    add(p + "self_attn.v_proj.weight", {Hkv * D, C}, false);
    add(p + "self_attn.o_proj.weight", {C, H * D}, false);
    add(p + "mlp.gate_proj.weight", {I, C}, false);
    add(p + "mlp.up_proj.weight", {I, C}, false);
    add(p + "mlp.down_proj.weight", {C, I}, false);
  }
  add("model.norm.weight", {C}, true);
  add("lm_head.weight", {V, C}, false);
  freehold::io::save_safetensors(dir + "/model.safetensors", tensors);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace freehold;
  const std::string dtype_name = argc > 8 ? argv[8] : "fp32";
  if (argc < 8 || argc > 10 || (std::string(argv[1]) != "on" && std::string(argv[1]) != "off") ||
      (dtype_name != "fp32" && dtype_name != "bf16")) {
    std::fprintf(stderr, "usage: train_step_bench on|off VOCAB HIDDEN INTERMEDIATE LAYERS TOKENS STEPS [fp32|bf16] "
                         "[DROPOUT]\n");
    return 2;
  }
  const double dropout = argc > 9 ? std::atof(argv[9]) : 0.05;
  const bool on = std::string(argv[1]) == "on";
  const int64_t V = std::atoll(argv[2]), C = std::atoll(argv[3]), I = std::atoll(argv[4]), L = std::atoll(argv[5]);
  const int64_t T = std::atoll(argv[6]);
  const int steps = std::atoi(argv[7]);
  std::string dir = (std::filesystem::temp_directory_path() / "freehold_step_bench_XXXXXX").string();
  if (::mkdtemp(dir.data()) == nullptr) return 1;
  write_model(dir, V, C, I, L);
  model::LoadOptions load;
  load.dtype = dtype_name == "bf16" ? core::DType::kBF16 : core::DType::kF32;
  model::Transformer model = model::Transformer::load(dir, load);
  adapters::LoraOptions options;
  options.r = 16;
  options.alpha = 32;
  options.dropout = dropout;
  adapters::AdapterSet set = adapters::AdapterSet::create(model, options, 1);
  set.set_training(true);
  const model::FusedKernels mode = on ? model::FusedKernels::kOn : model::FusedKernels::kOff;
  for (const adapters::AdapterSet::Entry& e : set.entries()) e.adapter->set_fused(on);
  kernels::set_fused_kernels_enabled(on);
  adapters::set_lora_grouping(model, on);
  if (on && dtype_name == "bf16") (void)kernels::half_gemm_path(at::kBFloat16, C);  // measured outside the timing
  trainer::AdamW optimizer(set.parameters(), trainer::AdamWOptions{});

  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(2);
  const at::Tensor ids = at::randint(V, {1, T}, gen, at::TensorOptions().dtype(at::kLong));
  const at::Tensor labels = ids.clone();
  const double baseline_mb = current_rss_mb();
  double best_s = 1e30, best_cpu_s = 1e30, loss = 0;
  for (int i = 0; i < steps; ++i) {
    const auto start = std::chrono::steady_clock::now();
    const std::clock_t cpu_start = std::clock();
    const at::Tensor l = trainer::model_sum_cross_entropy(model, {ids, at::Tensor(), at::Tensor()}, labels, mode) /
                         static_cast<double>(T - 1);
    l.backward();
    optimizer.step(1e-4, 1.0);
    loss = l.item<double>();
    optimizer.zero_grad();
    best_s = std::min(best_s, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    best_cpu_s = std::min(best_cpu_s, static_cast<double>(std::clock() - cpu_start) / CLOCKS_PER_SEC);
  }
  std::filesystem::remove_all(dir);
  std::printf(
      "{\"op\": \"train_step\", \"fused\": \"%s\", \"vocab\": %lld, \"hidden\": %lld, \"intermediate\": %lld, "
      "\"layers\": %lld, \"tokens\": %lld, \"dtype\": \"%s\", \"dropout\": %g, \"steps\": %d, \"best_s\": %.4f, "
      "\"best_cpu_s\": %.4f, \"extra_peak_mb\": %.1f, \"loss\": %.6f}\n",
      on ? "on" : "off", static_cast<long long>(V), static_cast<long long>(C), static_cast<long long>(I),
      static_cast<long long>(L), static_cast<long long>(T), dtype_name.c_str(), dropout, steps, best_s, best_cpu_s,
      peak_rss_mb() - baseline_mb, loss);
  return 0;
}
