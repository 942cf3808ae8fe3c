// Nesting depth of JSON text, counted before parsing: nlohmann's parser and destructor recurse, so every reader of
// untrusted JSON (tokenizer.json, JSONL records) bounds the depth first. Torch-free.
#pragma once

#include <string_view>

namespace freehold::core {

// The deepest nesting of arrays and objects in `text`, counted outside strings.
int json_depth(std::string_view text);

}  // namespace freehold::core
