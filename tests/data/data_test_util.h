// Helpers for the data tests: a character-level tokenizer with a chosen set of special tokens (every printable
// ASCII character and "\n" is one token), optionally adding BOS through its template, and temp files.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/data/tokenizer_test_util.h"

namespace freehold::data::testing {

// Special tokens get ids 0.. in order; characters follow. With bos, the template is "<bos> $A".
inline json char_tokenizer_document(const std::vector<std::string>& specials, const std::string& bos = "") {
  std::vector<std::string> tokens = specials;
  for (int c = 32; c < 127; ++c) tokens.push_back(std::string(1, static_cast<char>(c)));
  tokens.push_back("\n");
  json doc = bpe_document(tokens, {});
  for (size_t i = 0; i < specials.size(); ++i) doc["added_tokens"].push_back(added_token(specials[i], static_cast<int>(i)));
  if (!bos.empty()) {
    int id = static_cast<int>(std::find(specials.begin(), specials.end(), bos) - specials.begin());
    doc["post_processor"] = {
        {"type", "TemplateProcessing"},
        {"single", json::array({{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}},
                                {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"pair", json::array()},
        {"special_tokens", {{bos, {{"id", bos}, {"ids", {id}}, {"tokens", {bos}}}}}}};
  }
  return doc;
}

inline const std::vector<std::string>& llama3_specials() {
  static const std::vector<std::string> specials = {"<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                                                    "<|end_header_id|>", "<|eot_id|>"};
  return specials;
}

// A fresh directory under the system temp dir, removed at destruction.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() /
            ("freehold_data_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string write(const std::string& name, const std::string& bytes) const {
    std::ofstream out(file(name), std::ios::binary);
    out << bytes;
    return file(name);
  }

 private:
  std::filesystem::path path_;
};

}  // namespace freehold::data::testing
