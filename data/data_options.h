// The `data:` section of a run config (DESIGN.md §4) as a plain struct; launch/ fills and validates it.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace freehold::data {

struct DataSource {
  std::string path;     // prepared HDF5 (.h5), users' HDF5 with /input_ids, JSONL or .txt
  double weight = 1.0;  // relative sampling weight when several sources are mixed
};

// A chat template defined in the config: per-role strings around each message's content.
struct ChatTemplateSpec {
  struct Role {
    std::string prefix;
    std::string suffix;
  };
  std::map<std::string, Role> roles;  // "system", "user", "assistant"
};

struct DataOptions {
  std::vector<DataSource> train;
  std::vector<DataSource> eval;
  std::string format = "auto";  // auto | text | alpaca | chat
  std::optional<std::string> template_name;  // llama3 | chatml | mistral; or a custom template below
  std::optional<ChatTemplateSpec> custom_template;
  std::optional<std::string> tokenizer;  // tokenizer.json; default: the model directory's
  int64_t seq_len = 1024;
  bool packing = true;
  bool shuffle = true;
  std::string train_on = "assistant";  // assistant | all | last_assistant
  double max_bad_fraction = 0.01;
};

}  // namespace freehold::data
