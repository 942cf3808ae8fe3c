// configs/README.md against the config parser, both ways: every key the parser reads is documented, every
// documented key is one the parser reads, and every documented default that is a literal (`value`) is the default
// the parser resolves. The parser's keys come from the parser itself: an unknown key's error lists the keys its
// section knows.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "launch/run_config.h"

namespace {

using freehold::launch::ConfigError;
using freehold::launch::parse_run_config;

const char* kBogus = "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzz";
const std::vector<std::string> kSections = {"model", "adapter", "data", "train", "output", "dist"};

// "section.key" → the default cell, from the tables under each "## heading".
std::map<std::string, std::string> documented_keys(std::set<std::string>* top_level) {
  std::ifstream in(std::string(FREEHOLD_SOURCE_DIR) + "/configs/README.md");
  EXPECT_TRUE(in) << "configs/README.md is missing";
  std::map<std::string, std::string> keys;
  std::string heading;
  static const std::regex row(R"(^\|\s*`([a-z_.]+)`\s*\|\s*([^|]*?)\s*\|.*$)");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("## ", 0) == 0) {
      heading = line.substr(3);
      continue;
    }
    std::smatch m;
    if (heading.empty() || !std::regex_match(line, m, row)) continue;
    std::string key = m[1];
    // A dotted key names its section itself ("dist.backend"); a heading of one section name prefixes its keys;
    // anything else in a table of several sections is a top-level key ("resume").
    std::string path;
    if (key.find('.') != std::string::npos) {
      path = key;
    } else if (std::find(kSections.begin(), kSections.end(), heading) != kSections.end()) {
      path = heading + "." + key;
    } else {
      path = key;
    }
    EXPECT_FALSE(keys.count(path)) << "configs/README.md documents " << path << " twice";
    keys[path] = m[2];
  }
  for (const auto& [path, unused] : keys) top_level->insert(path.substr(0, path.find('.')));
  return keys;
}

// The keys the parser knows, from its unknown-key errors ("...: unknown key; known keys here: a, b, c").
std::set<std::string> parser_keys(std::set<std::string>* top_level) {
  std::string yaml = std::string(kBogus) + ": 1\n";
  for (const std::string& s : kSections) yaml += s + ":\n  " + kBogus + ": 1\n";
  std::vector<std::string> problems;
  try {
    parse_run_config(yaml, "keys.yaml");
  } catch (const ConfigError& e) {
    problems = e.problems();
  }
  std::set<std::string> keys;
  static const std::regex unknown(R"(: ([a-z_]*\.?)zzzzzzzzzzzzzzzzzzzzzzzzzzzzzz: unknown key; known keys here: (.*)$)");
  int lists = 0;
  for (const std::string& p : problems) {
    std::smatch m;
    if (!std::regex_search(p, m, unknown)) continue;
    ++lists;
    const std::string prefix = m[1];  // "train." or "" at the top
    std::stringstream names(m[2]);
    for (std::string name; std::getline(names, name, ',');) {
      name.erase(0, name.find_first_not_of(' '));
      if (prefix.empty()) {
        top_level->insert(name);
      } else {
        keys.insert(prefix + name);
      }
    }
  }
  EXPECT_EQ(lists, static_cast<int>(kSections.size()) + 1)
      << "expected one unknown-key error listing the known keys per section and one at the top; got:\n"
      << ::testing::PrintToString(problems);
  return keys;
}

TEST(ConfigReference, EveryParserKeyIsDocumentedAndEveryDocumentedKeyIsParsed) {
  std::set<std::string> doc_top, parser_top;
  const auto documented = documented_keys(&doc_top);
  const auto parsed = parser_keys(&parser_top);
  ASSERT_GT(parsed.size(), 40u) << "the parser's key lists were not found";
  for (const std::string& key : parsed) {
    EXPECT_TRUE(documented.count(key)) << key << " is read by launch/run_config.cpp but not documented in configs/README.md";
  }
  for (const auto& [key, unused] : documented) {
    if (key.find('.') == std::string::npos) {
      EXPECT_TRUE(parser_top.count(key)) << "configs/README.md documents top-level key " << key << ", which the parser does not read";
    } else {
      EXPECT_TRUE(parsed.count(key)) << "configs/README.md documents " << key << ", which the parser does not read";
    }
  }
  // Top-level keys: the sections (a "## section" heading each) and the plain keys (resume).
  for (const std::string& key : parser_top) {
    EXPECT_TRUE(doc_top.count(key)) << "top-level key " << key << " is not documented in configs/README.md";
  }
}

bool same_value(const YAML::Node& documented, const YAML::Node& resolved) {
  if (documented.IsNull() || resolved.IsNull()) return documented.IsNull() && resolved.IsNull();
  if (documented.IsSequence() || resolved.IsSequence()) {
    if (!documented.IsSequence() || !resolved.IsSequence() || documented.size() != resolved.size()) return false;
    for (size_t i = 0; i < documented.size(); ++i) {
      if (!same_value(documented[i], resolved[i])) return false;
    }
    return true;
  }
  if (documented.IsMap() || resolved.IsMap()) {
    return documented.IsMap() && resolved.IsMap() && documented.size() == 0 && resolved.size() == 0;
  }
  const std::string a = documented.Scalar(), b = resolved.Scalar();
  char* end_a = nullptr;
  char* end_b = nullptr;
  const double x = std::strtod(a.c_str(), &end_a), y = std::strtod(b.c_str(), &end_b);
  if (!a.empty() && !b.empty() && *end_a == '\0' && *end_b == '\0') return x == y;
  return a == b;
}

TEST(ConfigReference, DocumentedDefaultsAreTheParsersDefaults) {
  std::set<std::string> unused;
  const auto documented = documented_keys(&unused);
  // Every section is present (empty): with a section left out entirely, the parser currently resolves
  // train.max_steps to null and adapter.target_modules to [] (reported to the config owner).
  const auto config = parse_run_config(
      "model: {path: m}\nadapter: {}\ndata: {train: [t.txt]}\ntrain: {}\noutput: {}\ndist: {}\n", "minimal.yaml");
  const YAML::Node resolved = YAML::Load(freehold::launch::run_config_to_yaml(config));
  static const std::regex literal(R"(^`([^`<]*)`$)");
  int compared = 0;
  for (const auto& [key, cell] : documented) {
    std::smatch m;
    if (!std::regex_match(cell, m, literal)) continue;  // "— (required)", "the 7 projections", "runs/<config name>"
    YAML::Node node = resolved;
    std::stringstream parts(key);
    for (std::string part; std::getline(parts, part, '.');) {
      YAML::Node next = node[part];
      node.reset(next);
    }
    ASSERT_TRUE(node.IsDefined()) << key << " is missing from the resolved config";
    EXPECT_TRUE(same_value(YAML::Load(m[1].str()), node))
        << key << ": configs/README.md says the default is " << m[1] << ", the parser resolves " << YAML::Dump(node);
    ++compared;
  }
  EXPECT_GT(compared, 35) << "few defaults were compared; did the table format change?";
}

}  // namespace
