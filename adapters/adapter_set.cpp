#include "adapters/adapter_set.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>

#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "adapters/lora_init.h"
#include "adapters/targeting.h"
#include "core/error.h"
#include "core/log.h"

namespace freehold::adapters {
namespace {

std::string shape_text(at::IntArrayRef shape) { return absl::StrCat("[", absl::StrJoin(shape, ", "), "]"); }

std::map<std::string, model::Linear*> projections_by_name(model::Transformer& model) {
  std::map<std::string, model::Linear*> out;
  for (model::Linear* l : model.projections()) out.emplace(l->name(), l);
  return out;
}

std::vector<std::string> linear_module_names(const std::vector<ModuleInfo>& modules) {
  std::vector<std::string> out;
  for (const ModuleInfo& m : modules) {
    if (m.is_linear && m.name != kLmHeadName) out.push_back(m.name);
  }
  return out;
}

LoraLinearOptions layer_options(const io::PeftAdapterConfig& c, const TargetedModule& t) {
  return LoraLinearOptions{t.r, t.alpha, c.lora_dropout, c.use_rslora, c.use_dora};
}

}  // namespace

AdapterSet AdapterSet::create(model::Transformer& model, const LoraOptions& options, uint64_t seed) {
  if (options.init_from) {
    core::log_info("adapter: starting from the PEFT adapter in ", *options.init_from,
                   " (its targets, ranks and alphas; adapter.dropout ", options.dropout, ")");
    return load(model, *options.init_from, options.dropout);
  }
  const std::vector<ModuleInfo> modules = transformer_modules(model);
  AdapterSet set;
  set.config_ = to_peft_config(options, linear_module_names(modules), model.model_dir());
  const std::vector<TargetedModule> targets = match_targets(set.config_, modules, Strictness::kConfig);
  const LoraInit init = *parse_lora_init(options.init);  // validated by to_peft_config
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::map<std::string, model::Linear*> by_name = projections_by_name(model);
  at::NoGradGuard no_grad;
  for (const TargetedModule& t : targets) {
    model::Linear* base = by_name.at(t.name);
    LoraLinearOptions layer = layer_options(set.config_, t);
    LoraInitResult w = init_lora_weights(init, base->weight(), t.r, layer.scale(), generator);
    // The residual goes in before the adapter exists: DoRA's magnitude is then ‖W_res + scale·BA‖ = ‖W‖, as in
    // PEFT, which runs the variant's init after pissa/olora.
    if (w.residual_base.defined()) base->set_weight(w.residual_base);
    auto adapter = std::make_shared<LoraLinear>(*base, layer, w.lora_A, w.lora_B);
    base->set_adapter(adapter);
    set.entries_.push_back({t.name, adapter, w.residual_base});
  }
  core::log_info("adapter: ", options.use_dora ? "DoRA" : "LoRA", " on ", set.entries_.size(), " modules, r ",
                 options.r, ", alpha ", options.alpha, options.use_rslora ? " (rsLoRA)" : "", ", init ", options.init,
                 ", seed ", seed);
  set.log_parameter_counts(model);
  return set;
}

AdapterSet AdapterSet::load(model::Transformer& model, const std::string& adapter_dir, std::optional<double> dropout) {
  io::PeftAdapter saved = io::load_peft_adapter(adapter_dir);
  const std::string config_file = absl::StrCat(adapter_dir, "/", io::kAdapterConfigFile);
  const std::string weights_file = absl::StrCat(adapter_dir, "/", io::kAdapterWeightsFile);
  AdapterSet set;
  set.config_ = saved.config;
  if (dropout) set.config_.lora_dropout = *dropout;
  const std::vector<ModuleInfo> modules = transformer_modules(model);
  std::vector<TargetedModule> targets;
  try {
    targets = match_targets(set.config_, modules, Strictness::kSavedAdapter);
  } catch (const core::Error& e) {
    throw core::FormatError(absl::StrCat(config_file, ": ", e.what()));
  }
  std::map<std::string, model::Linear*> by_name = projections_by_name(model);
  const at::Device device = model.embed_tokens().device();

  std::set<std::string> used;
  // Checks and takes one tensor of a targeted module (S24: the tensor's name, expected and found shapes).
  auto take = [&](const TargetedModule& t, io::PeftTensorKind kind, std::vector<int64_t> expected,
                  const char* why) -> at::Tensor {
    const std::string key = io::peft_tensor_key(t.name, kind);
    auto it = saved.tensors.find(key);
    if (it == saved.tensors.end()) {
      throw core::FormatError(absl::StrCat(weights_file, ": missing tensor \"", key, "\" (expected shape ",
                                           shape_text(expected), ") for module ", t.name, ", which ", config_file,
                                           " targets"));
    }
    if (it->second.sizes() != at::IntArrayRef(expected)) {
      throw core::FormatError(absl::StrCat(weights_file, ": tensor \"", key, "\" has shape ", shape_text(it->second.sizes()),
                                           "; expected ", shape_text(expected), " (", why, ")"));
    }
    used.insert(key);
    return it->second.to(device, at::kFloat, /*non_blocking=*/false, /*copy=*/true).contiguous();
  };

  at::NoGradGuard no_grad;
  for (const TargetedModule& t : targets) {
    model::Linear* base = by_name.at(t.name);
    const int64_t in = base->in_features(), out = base->out_features();
    const std::string rank_source = absl::StrCat("r ", t.r, " from ", config_file, " r/rank_pattern, in_features ", in,
                                                 " of the base model's ", t.name);
    at::Tensor A = take(t, io::PeftTensorKind::kLoraA, {t.r, in}, rank_source.c_str());
    at::Tensor B = take(t, io::PeftTensorKind::kLoraB, {out, t.r},
                        absl::StrCat("out_features ", out, " of the base model's ", t.name, ", r ", t.r).c_str());
    at::Tensor magnitude;
    if (set.config_.use_dora) {
      magnitude = take(t, io::PeftTensorKind::kMagnitude, {out},
                       absl::StrCat("DoRA magnitude: out_features ", out, " of ", t.name).c_str());
    }
    auto adapter = std::make_shared<LoraLinear>(*base, layer_options(set.config_, t), A, B, magnitude);
    base->set_adapter(adapter);
    set.entries_.push_back({t.name, adapter, {}});
  }
  for (const auto& [key, tensor] : saved.tensors) {
    if (used.count(key)) continue;
    io::PeftTensorKey parsed = *io::parse_peft_tensor_key(key);
    std::string why;
    if (parsed.kind == io::PeftTensorKind::kMagnitude && !set.config_.use_dora) {
      why = absl::StrCat("a DoRA magnitude, but ", config_file, " has use_dora false");
    } else if (!by_name.count(parsed.module)) {
      why = absl::StrCat("module ", parsed.module, " does not exist in the base model ", model.model_dir(), " (",
                         describe_modules(modules), ")");
    } else {
      why = absl::StrCat("module ", parsed.module, " is not targeted by ", config_file, " target_modules");
    }
    throw core::FormatError(absl::StrCat(weights_file, ": tensor \"", key, "\" (shape ", shape_text(tensor.sizes()),
                                         ") does not fit: ", why));
  }
  core::log_info("adapter: ", set.config_.use_dora ? "DoRA" : "LoRA", " from ", adapter_dir, " on ",
                 set.entries_.size(), " modules");
  set.log_parameter_counts(model);
  return set;
}

void AdapterSet::set_training(bool training) {
  for (Entry& e : entries_) e.adapter->set_training(training);
}

std::vector<io::NamedTensor> AdapterSet::parameters() const {
  std::vector<io::NamedTensor> out;
  for (const Entry& e : entries_) {
    out.push_back({io::peft_tensor_key(e.module, io::PeftTensorKind::kLoraA), e.adapter->lora_A()});
    out.push_back({io::peft_tensor_key(e.module, io::PeftTensorKind::kLoraB), e.adapter->lora_B()});
    if (e.adapter->magnitude().defined()) {
      out.push_back({io::peft_tensor_key(e.module, io::PeftTensorKind::kMagnitude), e.adapter->magnitude()});
    }
  }
  return out;
}

int64_t AdapterSet::num_parameters() const {
  int64_t n = 0;
  for (const io::NamedTensor& t : parameters()) n += t.tensor.numel();
  return n;
}

void AdapterSet::log_parameter_counts(const model::Transformer& model) const {
  const int64_t trainable = num_parameters();
  const int64_t total = model.num_parameters() + trainable;
  core::log_info(absl::StrFormat("parameters: %d total (base %d + adapter %d), trainable %d (%.4f%%)", total,
                                 model.num_parameters(), trainable, trainable,
                                 total > 0 ? 100.0 * static_cast<double>(trainable) / static_cast<double>(total) : 0.0));
}

void AdapterSet::save(const std::string& dir) const { io::save_peft_adapter(dir, config_, parameters()); }

std::vector<io::NamedTensor> AdapterSet::residual_base_weights() const {
  std::vector<io::NamedTensor> out;
  for (const Entry& e : entries_) {
    if (e.residual_base.defined()) out.push_back({e.module + ".weight", e.residual_base});
  }
  return out;
}

}  // namespace freehold::adapters
