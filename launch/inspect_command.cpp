// `freehold inspect PATH [--json]`: describes a safetensors file, a model directory (architecture, parameters,
// dtypes, shards), a PEFT adapter directory (rank, alpha, targets, tensors), a checkpoint directory (step, manifest
// verified, world size, data position, whether the data still matches its fingerprints) or an HDF5 dataset
// (prepared or rows: schema, attributes, documents, tokens, target share, lengths; one full read that also
// verifies every chunk's checksum). --json prints one JSON object instead of text.
#include <sys/stat.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/error.h"
#include "core/file.h"
#include "data/data_fingerprint.h"
#include "data/dataset_info.h"
#include "data/document_source.h"
#include "io/hf_config.h"
#include "io/peft_adapter.h"
#include "io/safetensors.h"
#include "io/weight_files.h"
#include "launch/command_line.h"
#include "launch/commands.h"
#include "nlohmann/json.hpp"
#include "trainer/checkpoint.h"

namespace freehold::launch {
namespace {

std::string human_bytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) value /= 1024, ++unit;
  return unit == 0 ? absl::StrCat(bytes, " B") : absl::StrFormat("%.2f %s", value, units[unit]);
}

std::string human_count(uint64_t n) {
  if (n >= 1'000'000'000) return absl::StrFormat("%.2fB", static_cast<double>(n) / 1e9);
  if (n >= 1'000'000) return absl::StrFormat("%.2fM", static_cast<double>(n) / 1e6);
  if (n >= 1'000) return absl::StrFormat("%.1fK", static_cast<double>(n) / 1e3);
  return absl::StrCat(n);
}

std::string shape_text(const std::vector<int64_t>& shape) { return absl::StrCat("[", absl::StrJoin(shape, ", "), "]"); }

using nlohmann::json;

void inspect_safetensors_file(const std::string& path, bool as_json) {
  auto file = io::SafetensorsFile::open(path);
  const io::SafetensorsHeader& header = file->header();
  uint64_t elements = 0;
  for (const io::TensorInfo& t : header.tensors) elements += t.num_elements();
  if (as_json) {
    json out = {{"type", "safetensors"}, {"path", path}, {"elements", elements}, {"data_bytes", header.data_size},
                {"header_bytes", header.header_length}, {"metadata", header.metadata}};
    out["tensors"] = json::array();
    for (const io::TensorInfo& t : header.tensors) {
      out["tensors"].push_back({{"name", t.name}, {"dtype", std::string(core::dtype_name(t.dtype))}, {"shape", t.shape}});
    }
    std::printf("%s\n", out.dump(2).c_str());
    return;
  }
  std::printf("safetensors file %s\n", path.c_str());
  std::printf("  tensors: %zu, elements: %s, data: %s, header: %s\n", header.tensors.size(),
              human_count(elements).c_str(), human_bytes(header.data_size).c_str(),
              human_bytes(header.header_length).c_str());
  for (const auto& [key, value] : header.metadata) std::printf("  metadata %s = %s\n", key.c_str(), value.c_str());
  for (const io::TensorInfo& t : header.tensors) {
    std::printf("  %-60s %-5s %s\n", t.name.c_str(), std::string(core::dtype_name(t.dtype)).c_str(),
                shape_text(t.shape).c_str());
  }
}

void inspect_model_dir(const std::string& dir, bool as_json) {
  io::ModelConfig c = io::load_model_config(dir);
  io::WeightFiles files = io::WeightFiles::open_model_dir(dir);
  std::map<std::string, uint64_t> elements_by_dtype;
  uint64_t elements = 0;
  for (const std::string& name : files.names()) {
    const io::TensorInfo& info = files.info(name);
    elements_by_dtype[std::string(core::dtype_name(info.dtype))] += info.num_elements();
    elements += info.num_elements();
  }
  if (as_json) {
    json out = {{"type", "model"}, {"path", dir}, {"architecture", c.architecture_name}, {"model_type", c.model_type},
                {"parameters", elements}, {"config_parameters", c.num_parameters()}, {"dtypes", elements_by_dtype},
                {"num_hidden_layers", c.num_hidden_layers}, {"hidden_size", c.hidden_size},
                {"intermediate_size", c.intermediate_size}, {"num_attention_heads", c.num_attention_heads},
                {"num_key_value_heads", c.num_key_value_heads}, {"head_dim", c.head_dim}, {"vocab_size", c.vocab_size},
                {"tie_word_embeddings", c.tie_word_embeddings}, {"shards", files.shard_paths()},
                {"bytes", files.total_bytes()}};
    std::printf("%s\n", out.dump(2).c_str());
    return;
  }
  std::printf("model %s\n", dir.c_str());
  std::printf("  architecture: %s (model_type %s)\n", c.architecture_name.c_str(), c.model_type.c_str());
  std::printf("  parameters: %s (%llu)\n", human_count(elements).c_str(), static_cast<unsigned long long>(elements));
  std::printf("  dtypes: %s\n", absl::StrJoin(elements_by_dtype, ", ", [](std::string* out, const auto& entry) {
                                  absl::StrAppend(out, entry.first, " ", human_count(entry.second));
                                }).c_str());
  std::printf("  layers %lld, hidden %lld, intermediate %lld, heads %lld, kv heads %lld, head_dim %lld, vocab %lld\n",
              static_cast<long long>(c.num_hidden_layers), static_cast<long long>(c.hidden_size),
              static_cast<long long>(c.intermediate_size), static_cast<long long>(c.num_attention_heads),
              static_cast<long long>(c.num_key_value_heads), static_cast<long long>(c.head_dim),
              static_cast<long long>(c.vocab_size));
  std::printf("  rope: %s, theta %g%s; max positions %lld; rms_norm_eps %g\n",
              std::string(io::rope_type_name(c.rope.type)).c_str(), c.rope.theta,
              c.rope.type == io::RopeType::kDefault ? "" : absl::StrFormat(", factor %g", c.rope.factor).c_str(),
              static_cast<long long>(c.max_position_embeddings), c.rms_norm_eps);
  std::printf("  tied embeddings: %s, q/k/v bias: %s, o bias: %s, mlp bias: %s, q/k norm: %s\n",
              c.tie_word_embeddings ? "yes" : "no", c.qkv_bias ? "yes" : "no", c.o_bias ? "yes" : "no",
              c.mlp_bias ? "yes" : "no", c.qk_norm ? "yes" : "no");
  std::printf("  shards: %zu, %s on disk\n", files.shard_paths().size(), human_bytes(files.total_bytes()).c_str());
  for (const std::string& shard : files.shard_paths()) {
    struct stat st {};
    ::stat(shard.c_str(), &st);
    std::printf("    %s (%s)\n", shard.c_str(), human_bytes(static_cast<uint64_t>(st.st_size)).c_str());
  }
  if (elements != static_cast<uint64_t>(c.num_parameters())) {
    std::printf("  note: config.json implies %lld parameters; the checkpoint holds %llu\n",
                static_cast<long long>(c.num_parameters()), static_cast<unsigned long long>(elements));
  }
}

// Rank, alpha and targets from adapter_config.json; tensors from the safetensors header (no tensor is read).
json adapter_summary(const std::string& dir) {
  const std::string config_path = (std::filesystem::path(dir) / io::kAdapterConfigFile).string();
  const io::PeftAdapterConfig config = io::parse_peft_adapter_config(core::read_file(config_path, 16 << 20), config_path);
  auto file = io::SafetensorsFile::open((std::filesystem::path(dir) / io::kAdapterWeightsFile).string());
  std::set<std::string> modules;
  std::map<std::string, uint64_t> elements_by_dtype;
  uint64_t elements = 0;
  for (const io::TensorInfo& t : file->header().tensors) {
    if (auto key = io::parse_peft_tensor_key(t.name)) modules.insert(key->module);
    elements_by_dtype[std::string(core::dtype_name(t.dtype))] += t.num_elements();
    elements += t.num_elements();
  }
  json targets;
  switch (config.target_modules.kind) {
    case io::ModuleSelector::Kind::kNames: targets = config.target_modules.names; break;
    case io::ModuleSelector::Kind::kRegex: targets = config.target_modules.regex; break;
    case io::ModuleSelector::Kind::kNone: targets = nullptr; break;
  }
  const double scaling = config.use_rslora ? config.lora_alpha / std::sqrt(static_cast<double>(config.r))
                                           : config.lora_alpha / static_cast<double>(config.r);
  return {{"type", "peft_adapter"}, {"path", dir}, {"r", config.r}, {"lora_alpha", config.lora_alpha},
          {"scaling", scaling}, {"use_rslora", config.use_rslora}, {"use_dora", config.use_dora},
          {"lora_dropout", config.lora_dropout}, {"target_modules", targets},
          {"base_model_name_or_path", config.base_model_name_or_path ? json(*config.base_model_name_or_path) : json()},
          {"adapted_modules", modules.size()}, {"tensors", file->header().tensors.size()}, {"parameters", elements},
          {"dtypes", elements_by_dtype}};
}

void print_adapter_lines(const json& a) {
  std::printf("  LoRA r %lld, alpha %g (scaling %g%s)%s, dropout %g\n", static_cast<long long>(a["r"].get<int64_t>()),
              a["lora_alpha"].get<double>(), a["scaling"].get<double>(), a["use_rslora"].get<bool>() ? ", rsLoRA" : "",
              a["use_dora"].get<bool>() ? ", DoRA" : "", a["lora_dropout"].get<double>());
  std::printf("  target modules: %s\n", a["target_modules"].dump().c_str());
  if (!a["base_model_name_or_path"].is_null()) {
    std::printf("  base model: %s\n", a["base_model_name_or_path"].get<std::string>().c_str());
  }
  std::printf("  %zu adapted modules, %zu tensors, %s parameters (%s)\n", a["adapted_modules"].get<size_t>(),
              a["tensors"].get<size_t>(), human_count(a["parameters"].get<uint64_t>()).c_str(),
              a["dtypes"].dump().c_str());
}

void inspect_adapter_dir(const std::string& dir, bool as_json) {
  const json a = adapter_summary(dir);
  if (as_json) {
    std::printf("%s\n", a.dump(2).c_str());
    return;
  }
  std::printf("PEFT adapter %s\n", dir.c_str());
  print_adapter_lines(a);
}

void inspect_checkpoint_dir(const std::string& dir, bool as_json) {
  // The manifest check reads every file and compares its size and SHA-256 (what resume trusts).
  const std::string damage = trainer::check_checkpoint(dir);
  const std::string state_path = (std::filesystem::path(dir) / trainer::kTrainerStateFile).string();
  json out = {{"type", "checkpoint"}, {"path", dir}, {"manifest_verified", damage.empty()}};
  if (!damage.empty()) out["manifest_problem"] = damage;
  const std::string missing = trainer::missing_for_resume(dir);
  out["resumable"] = missing.empty() && damage.empty();
  if (!missing.empty()) out["not_resumable_because"] = missing;
  json state;
  if (std::filesystem::exists(state_path)) {
    try {
      state = json::parse(core::read_file(state_path, 64 << 20));
      for (const char* key : {"step", "total_steps", "world_size", "tokens_seen", "skipped_steps", "elapsed_s",
                              "data_position", "config_sha256", "base_model"}) {
        if (state.contains(key)) out[key] = state[key];
      }
    } catch (const json::exception& e) {
      throw core::FormatError(absl::StrCat(state_path, ": not JSON (", e.what(), ")"));
    }
  }
  // Whether the training files are still the data the checkpoint was trained on (what resume will check).
  if (state.contains("data_fingerprints") && state["data_fingerprints"].is_array()) {
    json data = json::array();
    for (const json& record : state["data_fingerprints"]) {
      const data::DataFingerprint saved = data::DataFingerprint::from_json(record, state_path);
      std::string now = "unchanged";
      try {
        if (data::fingerprint_data_file(saved.path).digest != saved.digest) now = "changed";
      } catch (const core::Error&) {
        now = "unreadable";
      }
      json entry = saved.to_json();
      entry["now"] = now;
      data.push_back(entry);
    }
    out["data"] = data;
  }
  if (std::filesystem::exists(std::filesystem::path(dir) / io::kAdapterConfigFile)) out["adapter"] = adapter_summary(dir);
  if (as_json) {
    std::printf("%s\n", out.dump(2).c_str());
    return;
  }
  std::printf("checkpoint %s\n", dir.c_str());
  std::printf("  manifest: %s\n", damage.empty() ? "verified (every file's size and SHA-256 match)" : damage.c_str());
  std::printf("  resumable: %s\n", out["resumable"].get<bool>() ? "yes" : missing.empty() ? "no" : missing.c_str());
  if (out.contains("step")) {
    std::printf("  step %s of %s, world size %s, tokens seen %s, skipped steps %s\n", out["step"].dump().c_str(),
                out.value("total_steps", json()).dump().c_str(), out.value("world_size", json()).dump().c_str(),
                out.value("tokens_seen", json()).dump().c_str(), out.value("skipped_steps", json()).dump().c_str());
  }
  if (out.contains("data_position")) {
    std::printf("  data position: epoch %s, sample %s\n", out["data_position"].value("epoch", json()).dump().c_str(),
                out["data_position"].value("sample_index", json()).dump().c_str());
  }
  if (out.contains("base_model")) std::printf("  base model: %s\n", out["base_model"].dump().c_str());
  if (out.contains("data")) {
    for (const json& d : out["data"]) {
      std::printf("  data %s: %s %s, %s now\n", d["path"].get<std::string>().c_str(), d["kind"].get<std::string>().c_str(),
                  d["digest"].get<std::string>().substr(0, 16).c_str(), d["now"].get<std::string>().c_str());
    }
  }
  if (out.contains("adapter")) print_adapter_lines(out["adapter"]);
}

void inspect_hdf5(const std::string& path, bool as_json) {
  const data::Hdf5DatasetInfo info = data::describe_hdf5_dataset(path);
  if (as_json) {
    std::printf("%s\n", info.to_json().dump(2).c_str());
    return;
  }
  std::printf("%s %s\n", info.kind == "prepared" ? "prepared dataset" : "HDF5 rows dataset", path.c_str());
  for (const auto& [name, layout] : info.datasets) {
    std::vector<int64_t> shape(layout.shape.begin(), layout.shape.end());
    std::vector<int64_t> chunk(layout.chunk.begin(), layout.chunk.end());
    std::printf("  %-13s %-7s %s%s%s\n", name.c_str(), layout.type.c_str(), shape_text(shape).c_str(),
                chunk.empty() ? "" : absl::StrCat(", chunks ", shape_text(chunk)).c_str(),
                layout.filters.empty() ? "" : absl::StrCat(", ", absl::StrJoin(layout.filters, " + ")).c_str());
  }
  for (const auto& [name, text] : info.attributes) std::printf("  attribute %s = %s\n", name.c_str(), text.c_str());
  std::printf("  %s: %lld, tokens: %lld (%s), targets: %lld (%.1f%%), ids %lld..%lld\n",
              info.kind == "prepared" ? "documents" : "rows", static_cast<long long>(info.documents),
              static_cast<long long>(info.tokens), human_count(static_cast<uint64_t>(info.tokens)).c_str(),
              static_cast<long long>(info.target_tokens), 100 * info.target_share(), static_cast<long long>(info.min_id),
              static_cast<long long>(info.max_id));
  std::printf("  length: min %lld, mean %.1f, p50 %lld, p90 %lld, p99 %lld, max %lld\n",
              static_cast<long long>(info.min_length), info.mean_length, static_cast<long long>(info.p50_length),
              static_cast<long long>(info.p90_length), static_cast<long long>(info.p99_length),
              static_cast<long long>(info.max_length));
  for (const auto& [lower, count] : info.length_histogram) {
    std::printf("    %11s  %lld\n", lower == 0 ? "0" : absl::StrCat(lower, "-", 2 * lower - 1).c_str(),
                static_cast<long long>(count));
  }
  std::printf("  every chunk read and its checksum verified\n");
}

bool path_exists(const std::filesystem::path& p) {
  std::error_code ec;
  return std::filesystem::exists(p, ec);
}

}  // namespace

int run_inspect(const std::vector<std::string>& args) {
  static const std::vector<FlagSpec> flags = {{"json", "", "print one JSON object instead of text"},
                                              {"help", "", "show this help"}};
  ParsedArgs parsed = parse_command_line("inspect", flags, args, 0, 1);
  if (parsed.has("help") || parsed.positionals().empty()) {
    std::printf("usage: freehold inspect PATH [--json]\n\nDescribes a safetensors file, a model directory, a PEFT "
                "adapter directory, a checkpoint directory or an HDF5 dataset (.h5, .hdf5).\n");
    return parsed.has("help") ? 0 : 2;
  }
  const bool as_json = parsed.has("json");
  const std::string& path = parsed.positionals()[0];
  const char* accepted = "accepted: a model directory (config.json), a PEFT adapter directory (adapter_config.json), "
                         "a checkpoint directory (manifest.json or trainer_state.json), a .safetensors file or an "
                         "HDF5 dataset (.h5, .hdf5)";
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw core::UsageError(absl::StrCat("inspect: ", path, " does not exist"));
  if (S_ISDIR(st.st_mode)) {
    const std::filesystem::path dir(path);
    if (path_exists(dir / trainer::kManifestFile) || path_exists(dir / trainer::kTrainerStateFile)) {
      inspect_checkpoint_dir(path, as_json);
    } else if (path_exists(dir / io::kAdapterConfigFile)) {
      inspect_adapter_dir(path, as_json);
    } else if (path_exists(dir / "config.json")) {
      inspect_model_dir(path, as_json);
    } else {
      throw core::UsageError(absl::StrCat("inspect: ", path, " is a directory of none of the kinds inspect knows; ",
                                          accepted));
    }
    return 0;
  }
  if (path.size() >= 12 && path.compare(path.size() - 12, 12, ".safetensors") == 0) {
    inspect_safetensors_file(path, as_json);
    return 0;
  }
  if (data::is_hdf5_path(path)) {
    inspect_hdf5(path, as_json);
    return 0;
  }
  throw core::UsageError(absl::StrCat("inspect: don't know what ", path, " is; ", accepted));
}

}  // namespace freehold::launch
