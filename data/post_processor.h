// The post_processor of a tokenizer.json, for single sequences: TemplateProcessing adds its special tokens
// (BOS / EOS) around the ids when special tokens are requested; ByteLevel changes only offsets, never ids;
// Sequence applies each in turn. Pair templates are not used by freehold and are not read.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/tokenizer_json.h"

namespace freehold::data {

class PostProcessor {
 public:
  static std::unique_ptr<PostProcessor> from_json(const Json& value, const JsonPath& at);

  // The ids with the template's special tokens added.
  std::vector<int32_t> apply(const std::vector<int32_t>& ids) const;

  // Every id the templates add, with where the file states it (for checking them against the vocabulary).
  struct StatedId {
    int32_t id;
    std::string where;
  };
  const std::vector<StatedId>& stated_ids() const { return stated_ids_; }

 private:
  // One template item: the sequence itself (special_ids empty) or the ids of a special token.
  struct Item {
    bool is_sequence = false;
    std::vector<int32_t> special_ids;
  };
  void add_steps(const Json& value, const JsonPath& at, int depth);

  std::vector<std::vector<Item>> templates_;  // TemplateProcessing steps, in order
  std::vector<StatedId> stated_ids_;
};

}  // namespace freehold::data
