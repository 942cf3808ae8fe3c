// The adapters of one model: attached to a model::Transformer from LoraOptions (a fresh init) or from a PEFT
// adapter directory, switched between training and eval, listed as trainable tensors under their PEFT names,
// and saved as a PEFT adapter directory. Which tensors are trainable is decided here, in one place (STYLE.md
// habit 5): lora_A, lora_B and, with DoRA, the magnitude; every base weight stays frozen.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "adapters/lora_linear.h"
#include "adapters/lora_options.h"
#include "io/peft_adapter.h"
#include "io/safetensors.h"
#include "model/transformer.h"

namespace freehold::adapters {

class AdapterSet {
 public:
  struct Entry {
    std::string module;  // "model.layers.0.self_attn.q_proj"
    std::shared_ptr<LoraLinear> adapter;
    at::Tensor residual_base;  // (out, in): the base weight pissa/olora left in the model, else undefined
  };

  // Attaches adapters to the projections `options` targets and initialises them with `options.init`, drawing
  // from a generator seeded with `seed`; pissa and olora also replace the targeted base weights with their
  // residuals. With options.init_from, loads that PEFT adapter instead (its config decides targets and ranks;
  // options.dropout applies). Throws core::UsageError for bad options or targets that do not fit the model.
  static AdapterSet create(model::Transformer& model, const LoraOptions& options, uint64_t seed);

  // Attaches the PEFT adapter in `adapter_dir` (io::load_peft_adapter). Every targeted module must have its
  // tensors with the shapes the base and the config imply, and every tensor must belong to a targeted module:
  // otherwise core::FormatError naming the tensor and the expected and found shapes (RELIABILITY.md S24).
  // `dropout`, when given, replaces the saved lora_dropout (training continues with the run's setting).
  static AdapterSet load(model::Transformer& model, const std::string& adapter_dir,
                         std::optional<double> dropout = std::nullopt);

  // Dropout on (training) or off (eval) in every adapter. Adapters start in eval mode.
  void set_training(bool training);

  // The trainable tensors (leaves with requires_grad), named as in adapter_model.safetensors:
  // base_model.model.<module>.lora_A.weight, .lora_B.weight, .lora_magnitude_vector.
  std::vector<io::NamedTensor> parameters() const;
  int64_t num_parameters() const;
  // "trainable parameters: T of N (P%)" with the base count, through core::log_info.
  void log_parameter_counts(const model::Transformer& model) const;

  // Writes a PEFT adapter directory (io::save_peft_adapter): PEFT's PeftModel.from_pretrained loads it as is.
  // For pissa/olora the adapter belongs on the residual base (residual_base_weights), which PEFT's saved
  // pissa adapters need too.
  void save(const std::string& dir) const;
  // "<module>.weight" → residual (out, in) for every base weight pissa/olora replaced; empty otherwise.
  std::vector<io::NamedTensor> residual_base_weights() const;

  const io::PeftAdapterConfig& config() const { return config_; }
  const std::vector<Entry>& entries() const { return entries_; }

 private:
  io::PeftAdapterConfig config_;
  std::vector<Entry> entries_;
};

}  // namespace freehold::adapters
