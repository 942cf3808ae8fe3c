#include "data/post_processor.h"

#include "absl/strings/str_cat.h"

namespace freehold::data {
namespace {
constexpr int kMaxDepth = 16;
}

std::unique_ptr<PostProcessor> PostProcessor::from_json(const Json& value, const JsonPath& at) {
  if (value.is_null()) return nullptr;
  auto processor = std::unique_ptr<PostProcessor>(new PostProcessor());
  processor->add_steps(value, at, 0);
  return processor;
}

void PostProcessor::add_steps(const Json& value, const JsonPath& at, int depth) {
  if (depth > kMaxDepth) fail_at(at, absl::StrCat("nests Sequences deeper than ", kMaxDepth));
  std::string type = read_type(value, at, {"TemplateProcessing", "ByteLevel", "Sequence"});
  if (type == "ByteLevel") return;  // offsets only
  if (type == "Sequence") {
    const Json& list = require_field(value, at, "processors");
    require_array(list, at.child("processors"));
    for (size_t i = 0; i < list.size(); ++i) add_steps(list[i], at.child("processors").index(i), depth + 1);
    return;
  }
  const JsonPath specials_at = at.child("special_tokens");
  const Json& specials = require_field(value, at, "special_tokens");
  require_object(specials, specials_at);
  const JsonPath single_at = at.child("single");
  const Json& single = require_field(value, at, "single");
  require_array(single, single_at);
  std::vector<Item> items;
  for (size_t i = 0; i < single.size(); ++i) {
    const Json& piece = single[i];
    JsonPath piece_at = single_at.index(i);
    require_object(piece, piece_at);
    if (const Json* sequence = find_field(piece, piece_at, "Sequence")) {
      JsonPath sequence_at = piece_at.child("Sequence");
      std::string id = read_string(*sequence, sequence_at, "id");
      if (id != "A") fail_at(sequence_at.child("id"), absl::StrCat("is \"", id, "\"; a single-sequence template uses A"));
      items.push_back({true, {}});
    } else if (const Json* special = find_field(piece, piece_at, "SpecialToken")) {
      JsonPath special_at = piece_at.child("SpecialToken");
      std::string name = read_string(*special, special_at, "id");
      auto it = specials.find(name);
      if (it == specials.end()) {
        fail_at(special_at.child("id"), absl::StrCat("is \"", name, "\", which special_tokens does not define"));
      }
      JsonPath entry_at = specials_at.child(name);
      const Json& ids = require_field(*it, entry_at, "ids");
      require_array(ids, entry_at.child("ids"));
      Item item;
      for (size_t k = 0; k < ids.size(); ++k) {
        JsonPath id_at = entry_at.child("ids").index(k);
        auto id = static_cast<int32_t>(read_int(ids[k], id_at, 0, (int64_t{1} << 31) - 2));
        item.special_ids.push_back(id);
        stated_ids_.push_back({id, id_at.describe()});
      }
      items.push_back(std::move(item));
    } else {
      fail_at(piece_at, absl::StrCat("is ", show_value(piece), "; expected {\"Sequence\": ...} or "
                                     "{\"SpecialToken\": ...}"));
    }
  }
  templates_.push_back(std::move(items));
}

std::vector<int32_t> PostProcessor::apply(const std::vector<int32_t>& ids) const {
  std::vector<int32_t> current = ids;
  for (const std::vector<Item>& items : templates_) {
    std::vector<int32_t> next;
    next.reserve(current.size() + 4);
    for (const Item& item : items) {
      if (item.is_sequence) {
        next.insert(next.end(), current.begin(), current.end());
      } else {
        next.insert(next.end(), item.special_ids.begin(), item.special_ids.end());
      }
    }
    current.swap(next);
  }
  return current;
}

}  // namespace freehold::data
