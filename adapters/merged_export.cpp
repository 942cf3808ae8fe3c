#include "adapters/merged_export.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/argmax.h>
#include <ATen/ops/exp2.h>
#include <ATen/ops/floor.h>
#include <ATen/ops/log2.h>
#include <ATen/ops/rand.h>
#include <ATen/ops/tensor.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "adapters/adapter_set.h"
#include "adapters/merge.h"
#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "io/safetensors.h"
#include "io/weight_files.h"
#include "kernels/all_finite.h"
#include "model/transformer.h"
#include "nlohmann/json.hpp"

namespace freehold::adapters {
namespace {

namespace fs = std::filesystem;

// The output directory as an absolute, normalised path without a trailing separator; refuses "/" and "".
fs::path normalized_out_dir(const std::string& out_dir) {
  if (out_dir.empty()) throw core::UsageError("export: --out is empty; expected a directory path");
  fs::path out = fs::absolute(out_dir).lexically_normal();
  if (!out.has_filename()) out = out.parent_path();
  if (!out.has_filename() || out.filename() == "." || out.filename() == "..") {
    throw core::UsageError(absl::StrCat("export: --out \"", out_dir, "\" does not name a directory to create"));
  }
  return out;
}

bool is_same_or_inside(const fs::path& inner, const fs::path& outer) {
  auto [mismatch, _] = std::mismatch(outer.begin(), outer.end(), inner.begin(), inner.end());
  return mismatch == outer.end();
}

// Refuses an output that exists (unless overwrite) and one whose replacement would delete an input.
void check_out_dir(const fs::path& out, const MergedExportOptions& options) {
  const fs::path out_canon = fs::weakly_canonical(out);
  for (const auto& [flag, dir] : {std::pair{"--base", options.base_dir}, std::pair{"--adapter", options.adapter_dir}}) {
    if (is_same_or_inside(fs::weakly_canonical(dir), out_canon)) {
      throw core::UsageError(absl::StrCat("export: --out ", out.string(), " is or contains ", flag, " ", dir,
                                          "; writing there would replace the input being read — choose another --out"));
    }
  }
  std::error_code ec;
  const fs::file_status status = fs::symlink_status(out, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    throw core::SystemError(absl::StrCat("export: cannot stat --out ", out.string()), ec.value());
  }
  if (!fs::exists(status)) return;
  if (!options.overwrite) {
    throw core::UsageError(absl::StrCat("export: --out ", out.string(),
                                        " already exists; choose a new directory, or pass --overwrite to replace it"));
  }
  if (!fs::is_directory(status)) {
    throw core::UsageError(absl::StrCat("export: --out ", out.string(),
                                        " exists and is not a directory; --overwrite replaces only a directory"));
  }
}

// A directory beside the output that becomes the output only on commit(); removed with its contents otherwise.
class StagingDirectory {
 public:
  explicit StagingDirectory(const fs::path& out) : out_(out) {
    const fs::path parent = out.parent_path();
    if (!parent.empty()) core::create_directories(parent.string());
    // mkdtemp makes it 0700, which the output keeps: merged weights carry what the adapter learned (core/file.h).
    path_ = make_temp_dir(parent, out.filename().string() + ".freehold-export");
  }
  ~StagingDirectory() {
    if (committed_) return;
    std::error_code ec;
    fs::remove_all(path_, ec);  // best effort: a failure here must not hide the error that got us here
  }
  StagingDirectory(const StagingDirectory&) = delete;
  StagingDirectory& operator=(const StagingDirectory&) = delete;

  const fs::path& path() const { return path_; }

  // Renames the staging directory to the output; an existing output (overwrite, checked by the caller) is moved
  // aside first and deleted only after the new one is in place.
  void commit() {
    core::fsync_directory(path_.string());
    const fs::path parent = out_.parent_path();
    std::optional<fs::path> old;
    if (fs::exists(fs::symlink_status(out_))) {
      old = make_temp_dir(parent, out_.filename().string() + ".freehold-replaced");
      if (::rename(out_.c_str(), old->c_str()) != 0) {
        const int err = errno;
        fs::remove(*old);
        throw core::SystemError(absl::StrCat("export: cannot move the old ", out_.string(), " aside"), err);
      }
    }
    if (::rename(path_.c_str(), out_.c_str()) != 0) {
      const int err = errno;
      if (old) ::rename(old->c_str(), out_.c_str());
      throw core::SystemError(absl::StrCat("export: cannot rename ", path_.string(), " to ", out_.string()), err);
    }
    committed_ = true;
    core::fsync_directory(parent.string());
    if (old) {
      std::error_code ec;
      fs::remove_all(*old, ec);
      if (ec) core::log_warning("export: could not remove the replaced export ", old->string(), ": ", ec.message());
    }
  }

 private:
  static fs::path make_temp_dir(const fs::path& parent, const std::string& tag) {
    std::string pattern = (parent / absl::StrCat(".", tag, ".XXXXXX")).string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      throw core::SystemError(absl::StrCat("export: cannot create a temporary directory in ", parent.string()), errno);
    }
    return pattern;
  }

  fs::path out_;
  fs::path path_;
  bool committed_ = false;
};

// The base's tensors in its own order: shard by shard, each in file offset order.
std::vector<std::string> tensors_in_base_order(const io::WeightFiles& files) {
  std::vector<std::string> names;
  for (const auto& file : files.files()) {
    for (std::string& name : file->names()) names.push_back(std::move(name));
  }
  return names;
}

core::DType stored_floating_dtype(const io::WeightFiles& files) {
  for (const std::string& name : files.names()) {
    if (core::is_floating(files.info(name).dtype)) return files.info(name).dtype;
  }
  throw core::FormatError(absl::StrCat(files.source(), ": the checkpoint has no floating-point tensors"));
}

// Copies config.json (dtype fields rewritten only when they do not already say `dtype`) and the side files.
std::vector<std::string> write_config_and_side_files(const std::string& base_dir, const fs::path& dir,
                                                     core::DType dtype, bool dtype_requested) {
  const std::string config_path = absl::StrCat(base_dir, "/config.json");
  const std::string text = core::read_file(config_path, 64u << 20);
  const nlohmann::ordered_json config = nlohmann::ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!config.is_object()) throw core::FormatError(absl::StrCat(config_path, ": not a JSON object"));
  const std::string want(config_dtype_name(dtype));
  bool already = !dtype_requested || config.contains("dtype");
  for (const char* key : {"dtype", "torch_dtype"}) {
    if (config.contains(key) && config[key] != want) already = false;
  }
  core::write_file_atomic((dir / "config.json").string(),
                          already ? text : config_json_with_dtype(text, dtype, config_path));

  std::vector<std::string> copied;
  for (const char* name : kSideFiles) {
    const std::string from = absl::StrCat(base_dir, "/", name);
    std::error_code ec;
    if (!fs::is_regular_file(from, ec)) continue;  // follows symlinks (Hugging Face cache snapshots)
    core::write_file_atomic((dir / name).string(), core::read_file(from));
    copied.push_back(name);
  }
  return copied;
}

// Deterministic probe token ids (splitmix64), the same on every run and machine.
std::vector<std::vector<int64_t>> probe_batch(int64_t vocab_size, int64_t max_positions) {
  uint64_t state = 0x5eed'f00d'cafe'0001ULL;
  auto next = [&state]() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  };
  std::vector<std::vector<int64_t>> batch;
  for (int64_t length : {5, 17, 64}) {
    length = std::max<int64_t>(1, std::min(length, max_positions));
    std::vector<int64_t> ids;
    for (int64_t i = 0; i < length; ++i) ids.push_back(static_cast<int64_t>(next() % static_cast<uint64_t>(vocab_size)));
    batch.push_back(std::move(ids));
  }
  return batch;
}

// Significant bits of a floating dtype, the implicit one included: its rounding step at w is
// 2^(floor(log2 |w|) + 1 − bits).
int significant_bits(core::DType dtype) {
  switch (dtype) {
    case core::DType::kF64: return 53;
    case core::DType::kF32: return 24;
    case core::DType::kF16: return 11;
    case core::DType::kBF16: return 8;
    default: break;
  }
  FH_CHECK(false, std::string(core::dtype_name(dtype)), " is not a floating-point dtype");
  return 0;
}

constexpr uint64_t kDitherSeed = 20240613;

// w (float32) += U(−½, ½) · (rounding step of `dtype` at w), in place: what rounding w to `dtype` does, in
// distribution. Zeros stay zero (log2 0 = −inf, so their step is 0).
void dither_(const at::Tensor& w, core::DType dtype, at::Generator& generator) {
  at::Tensor step = at::exp2(at::floor(at::log2(w.abs())) + static_cast<double>(1 - significant_bits(dtype)));
  w.add_((at::rand(w.sizes(), generator, w.options()) - 0.5) * step);
}

std::vector<at::Tensor> probe_logits(const model::Transformer& model, const std::vector<std::vector<int64_t>>& batch) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> out;
  for (const std::vector<int64_t>& ids : batch) {
    out.push_back(model.forward({at::tensor(ids, at::kLong).unsqueeze(0), {}, {}})[0].to(at::kFloat));  // (T, V)
  }
  return out;
}

}  // namespace

std::string_view config_dtype_name(core::DType dtype) {
  switch (dtype) {
    case core::DType::kF32: return "float32";
    case core::DType::kBF16: return "bfloat16";
    case core::DType::kF16: return "float16";
    case core::DType::kF64: return "float64";
    default: break;
  }
  FH_CHECK(false, "config_dtype_name: ", std::string(core::dtype_name(dtype)), " is not a floating-point dtype");
  return "";
}

std::string config_json_with_dtype(std::string_view text, core::DType dtype, const std::string& file) {
  nlohmann::ordered_json config = nlohmann::ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!config.is_object()) throw core::FormatError(absl::StrCat(file, ": not a JSON object"));
  const std::string name(config_dtype_name(dtype));
  if (config.contains("torch_dtype")) config["torch_dtype"] = name;
  if (config.contains("dtype")) {
    config["dtype"] = name;
  } else {
    // transformers writes keys sorted: put "dtype" where it would, or last when the source is not sorted.
    std::vector<std::string> keys;
    for (const auto& item : config.items()) keys.push_back(item.key());
    nlohmann::ordered_json out = nlohmann::ordered_json::object();
    const bool sorted = std::is_sorted(keys.begin(), keys.end());
    bool placed = false;
    for (const auto& item : config.items()) {
      if (sorted && !placed && item.key() > "dtype") out["dtype"] = name, placed = true;
      out[item.key()] = item.value();
    }
    if (!placed) out["dtype"] = name;
    config = std::move(out);
  }
  const bool ascii = std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
  std::string out = config.dump(2, ' ', /*ensure_ascii=*/ascii);
  if (!text.empty() && text.back() == '\n') out += '\n';
  return out;
}

MergedVerifyResult verify_merged_model(const std::string& base_dir, const std::string& adapter_dir,
                                       const std::string& merged_dir, core::DType dtype) {
  at::NoGradGuard no_grad;
  model::LoadOptions f32;
  f32.dtype = core::DType::kF32;
  const core::DType stored = stored_floating_dtype(io::WeightFiles::open_model_dir(base_dir));
  std::vector<std::vector<int64_t>> batch;
  std::vector<at::Tensor> reference, dithered;
  {  // one model in memory at a time
    model::Transformer base = model::Transformer::load(base_dir, f32);
    AdapterSet adapter = AdapterSet::load(base, adapter_dir);
    batch = probe_batch(base.config().vocab_size, base.config().max_position_embeddings);
    reference = probe_logits(base, batch);
    // What rounding to `dtype` does to this model's logits: the weights the export rounds, dithered by ±½ step.
    std::set<std::string> adapted;
    for (const AdapterSet::Entry& e : adapter.entries()) adapted.insert(e.module);
    const bool narrower = significant_bits(dtype) < significant_bits(stored);
    at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(kDitherSeed);
    for (model::Linear* l : base.projections()) {
      if (narrower || adapted.count(l->name())) dither_(l->weight(), dtype, generator);
    }
    if (narrower) {
      dither_(base.embed_tokens(), dtype, generator);
      if (!base.config().tie_word_embeddings) dither_(base.lm_head().weight(), dtype, generator);
      // The layers' norm weights scale whole channels, so their rounding counts too. (The final norm, one (C)
      // vector the model does not expose, is left as is.)
      for (const model::DecoderLayer& layer : base.layers()) {
        dither_(layer.input_layernorm.weight, dtype, generator);
        dither_(layer.post_attention_layernorm.weight, dtype, generator);
        if (layer.self_attn.q_norm) dither_(layer.self_attn.q_norm->weight, dtype, generator);
        if (layer.self_attn.k_norm) dither_(layer.self_attn.k_norm->weight, dtype, generator);
      }
    }
    dithered = probe_logits(base, batch);
  }
  model::Transformer merged = model::Transformer::load(merged_dir, f32);
  std::vector<at::Tensor> got = probe_logits(merged, batch);

  MergedVerifyResult result;
  size_t worst_seq = 0;
  int64_t worst_pos = 0;
  for (size_t k = 0; k < batch.size(); ++k) {
    at::Tensor diff = (got[k] - reference[k]).abs();  // (T, V)
    const double d = diff.max().item<double>();
    if (!std::isnan(result.max_abs_diff) && !(d <= result.max_abs_diff)) {  // a NaN difference sticks
      result.max_abs_diff = d;
      worst_seq = k;
      worst_pos = diff.amax(1).argmax().item<int64_t>();
    }
    result.max_abs_logit = std::max(result.max_abs_logit, reference[k].abs().max().item<double>());
    result.rounding_effect = std::max(result.rounding_effect, (dithered[k] - reference[k]).abs().max().item<double>());
    result.tokens += static_cast<int64_t>(batch[k].size());
  }
  result.sequences = static_cast<int64_t>(batch.size());
  const double floor = kVerifyFloor * std::max(1.0, result.max_abs_logit);
  result.tolerance = std::max(floor, kVerifyRoundingFactor * result.rounding_effect);
  const std::string measured = absl::StrFormat(
      "max |merged - (base + adapter)| = %.3g over the logits of %d probe sequences (%d tokens; max |logit| %.3g); "
      "tolerance %.3g = max(%g x max(1, max |logit|), %g x %.3g, the logit change from dithering the weights by "
      "half a %s rounding step)",
      result.max_abs_diff, result.sequences, result.tokens, result.max_abs_logit, result.tolerance, kVerifyFloor,
      kVerifyRoundingFactor, result.rounding_effect, std::string(core::dtype_name(dtype)));
  if (!(result.max_abs_diff <= result.tolerance)) {
    throw core::Error(absl::StrCat("export --verify failed: the merged model in ", merged_dir,
                                   " disagrees with ", base_dir, " + adapter ", adapter_dir, ": ", measured,
                                   "; worst at probe sequence ", worst_seq, ", position ", worst_pos));
  }
  core::log_info("export --verify: ", measured, ": ok");
  return result;
}

MergedExportSummary export_merged_model(const MergedExportOptions& options) {
  at::NoGradGuard no_grad;
  if (options.dtype && *options.dtype != core::DType::kF32 && *options.dtype != core::DType::kBF16 &&
      *options.dtype != core::DType::kF16) {
    throw core::UsageError(absl::StrCat("export: dtype ", std::string(core::dtype_name(*options.dtype)),
                                        " is not an export dtype; expected fp32, bf16 or fp16"));
  }
  const fs::path out = normalized_out_dir(options.out_dir);
  check_out_dir(out, options);

  // The base as a model only for its structure and the S24 checks (config.json against the tensors, the adapter
  // against the model): loaded in its stored dtype and unchecked, its weights stay untouched mmap views, so this
  // costs no memory. Values are read below with pread.
  io::WeightFiles files = io::WeightFiles::open_model_dir(options.base_dir);
  const core::DType stored = stored_floating_dtype(files);
  model::LoadOptions structure;
  structure.dtype = stored;
  structure.check_finite = false;  // every tensor is checked as it is written
  model::Transformer base = model::Transformer::load(options.base_dir, structure);
  AdapterSet adapter = AdapterSet::load(base, options.adapter_dir);

  std::map<std::string, const AdapterSet::Entry*> by_weight;  // "<module>.weight" → its adapter
  for (const AdapterSet::Entry& e : adapter.entries()) by_weight.emplace(e.module + ".weight", &e);
  std::set<std::string> skip;
  for (const std::string& module : options.skip_merge_for_testing) {
    if (!by_weight.count(module + ".weight")) {
      throw core::UsageError(absl::StrCat("export: --test-skip-merge ", module, " is not a module the adapter targets"));
    }
    skip.insert(module + ".weight");
    core::log_warning("export: TESTING ONLY: writing ", module, " without its adapter");
  }

  MergedExportSummary summary;
  summary.dtype = options.dtype.value_or(stored);
  const bool tied = base.config().tie_word_embeddings;
  std::vector<io::TensorPlan> plan;
  for (const std::string& name : tensors_in_base_order(files)) {
    if (tied && name == "lm_head.weight") {
      core::log_info("export: leaving out lm_head.weight: tie_word_embeddings is true, so transformers ties it to "
                     "model.embed_tokens.weight");
      continue;
    }
    const io::TensorInfo& info = files.info(name);
    plan.push_back({name, core::is_floating(info.dtype) ? summary.dtype : info.dtype, info.shape});
  }
  for (const auto& [weight, entry] : by_weight) {  // AdapterSet::load found each module in the model
    FH_CHECK(files.contains(weight), weight, " is targeted but missing from ", options.base_dir);
  }

  StagingDirectory staging(out);
  io::ShardedSafetensorsWriter writer(staging.path().string(), plan, options.max_shard_bytes);
  const at::ScalarType out_type = io::to_scalar_type(summary.dtype);
  for (const io::TensorPlan& p : plan) {
    at::Tensor tensor = files.read_copy(p.name);
    if (!kernels::all_finite(tensor)) {
      throw core::FormatError(absl::StrCat(files.file_of(p.name), ": tensor \"", p.name,
                                           "\" of the base contains NaN or Inf; refusing to export non-finite weights"));
    }
    auto adapted = by_weight.find(p.name);
    const bool merge = adapted != by_weight.end() && !skip.count(p.name);
    if (merge) {
      tensor = merged_weight(adapted->second->module, *adapted->second->adapter, tensor);  // float32
      ++summary.merged;
    }
    if (core::is_floating(p.dtype) && tensor.scalar_type() != out_type) tensor = tensor.to(out_type);
    if (!kernels::all_finite(tensor)) {
      throw core::FormatError(absl::StrCat(
          "export: tensor \"", p.name, "\"", merge ? " (merged)" : "", " overflows ", std::string(core::dtype_name(p.dtype)),
          " (values beyond its range become Inf); export in a wider dtype, e.g. --dtype ",
          p.dtype == core::DType::kF16 ? "bf16 or fp32" : "fp32"));
    }
    writer.add(p.name, tensor);
    ++summary.tensors;
  }
  writer.finish();
  summary.shards = writer.num_shards();
  summary.bytes = writer.total_bytes();
  summary.side_files = write_config_and_side_files(options.base_dir, staging.path(), summary.dtype,
                                                   options.dtype.has_value());

  if (options.verify) {
    summary.verify = verify_merged_model(options.base_dir, options.adapter_dir, staging.path().string(), summary.dtype);
  }
  staging.commit();
  return summary;
}

}  // namespace freehold::adapters
