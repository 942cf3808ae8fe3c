// `freehold inspect PATH`: describes a safetensors file or a model directory (architecture, parameters, dtypes,
// shards). Adapters, checkpoints and HDF5 datasets are added by the issues that introduce them.
#include <sys/stat.h>

#include <cstdio>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/error.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "io/weight_files.h"
#include "launch/command_line.h"
#include "launch/commands.h"

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

void inspect_safetensors_file(const std::string& path) {
  auto file = io::SafetensorsFile::open(path);
  const io::SafetensorsHeader& header = file->header();
  uint64_t elements = 0;
  for (const io::TensorInfo& t : header.tensors) elements += t.num_elements();
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

void inspect_model_dir(const std::string& dir) {
  io::ModelConfig c = io::load_model_config(dir);
  io::WeightFiles files = io::WeightFiles::open_model_dir(dir);
  std::map<std::string, uint64_t> elements_by_dtype;
  uint64_t elements = 0;
  for (const std::string& name : files.names()) {
    const io::TensorInfo& info = files.info(name);
    elements_by_dtype[std::string(core::dtype_name(info.dtype))] += info.num_elements();
    elements += info.num_elements();
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

}  // namespace

int run_inspect(const std::vector<std::string>& args) {
  static const std::vector<FlagSpec> flags = {{"help", "", "show this help"}};
  ParsedArgs parsed = parse_command_line("inspect", flags, args, 0, 1);
  if (parsed.has("help") || parsed.positionals().empty()) {
    std::printf("usage: freehold inspect PATH\n\nDescribes a safetensors file or a model directory.\n");
    return parsed.has("help") ? 0 : 2;
  }
  const std::string& path = parsed.positionals()[0];
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw core::UsageError(absl::StrCat("inspect: ", path, " does not exist"));
  if (S_ISDIR(st.st_mode)) {
    struct stat config {};
    if (::stat((path + "/config.json").c_str(), &config) == 0) {
      inspect_model_dir(path);
      return 0;
    }
    throw core::UsageError(absl::StrCat("inspect: ", path, " is a directory without config.json; accepted: a model "
                                        "directory or a .safetensors file"));
  }
  if (path.size() >= 12 && path.compare(path.size() - 12, 12, ".safetensors") == 0) {
    inspect_safetensors_file(path);
    return 0;
  }
  throw core::UsageError(absl::StrCat("inspect: don't know what ", path, " is; accepted: a model directory or a "
                                      ".safetensors file"));
}

}  // namespace freehold::launch
