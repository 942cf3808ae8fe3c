// The run config: one YAML file plus `section.key=value` overrides, read into the options structs of each module
// (DESIGN.md §4). This is the only YAML reader in freehold. Every problem — unknown or misspelt keys, wrong types,
// out-of-range values, conflicting settings — is collected and reported in one ConfigError (exit code 2), each
// with its file:line, key path, the value, and what is accepted.
#pragma once

#include <string>
#include <vector>

#include "adapters/lora_options.h"
#include "core/error.h"
#include "data/data_options.h"
#include "dist/dist_options.h"
#include "model/model_options.h"
#include "trainer/train_options.h"

namespace freehold::launch {

struct ResumeOptions {
  enum class Mode { kAuto, kNever, kPath };
  Mode mode = Mode::kAuto;
  std::string path;  // for kPath: a checkpoint directory
};

struct RunConfig {
  std::string config_path;  // the YAML file it came from
  std::string name;         // the file name without .yaml; names the default output directory
  model::ModelOptions model;
  adapters::LoraOptions adapter;
  data::DataOptions data;
  trainer::TrainOptions train;
  trainer::OutputOptions output;
  ResumeOptions resume;
  dist::DistOptions dist;
};

// All problems of one config, one per line.
class ConfigError : public core::UsageError {
 public:
  explicit ConfigError(const std::vector<std::string>& problems);
  const std::vector<std::string>& problems() const { return problems_; }

 private:
  std::vector<std::string> problems_;
};

// Reads `path`, applies `overrides` ("train.lr=1e-4", "adapter.target_modules=[q_proj,v_proj]"), validates.
RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides = {});
// The same from YAML text (`source` names it in messages).
RunConfig parse_run_config(const std::string& yaml_text, const std::string& source,
                           const std::vector<std::string>& overrides = {});

// The resolved config as YAML, every key with its value: written to runs/NAME/config.yaml, and read back by
// parse_run_config to the same RunConfig.
std::string run_config_to_yaml(const RunConfig& config);

}  // namespace freehold::launch
