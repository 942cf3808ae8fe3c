// `freehold --help` and `freehold COMMAND --help` for every command of the binary's command table: each lists its
// flags with their defaults, and mistyped commands and flags get a "did you mean". The commands are read from the
// top-level help, which prints the table, so a command added without a help text fails here.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tests/launch/run_command.h"

namespace {

using freehold::testing::RunResult;

RunResult run_freehold(const std::string& args) {
  return freehold::testing::run_command(freehold::testing::freehold_binary() + " " + args);
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// The command names under "commands:" in `freehold --help`.
std::vector<std::string> listed_commands() {
  const RunResult top = run_freehold("--help");
  std::vector<std::string> names;
  bool in_table = false;
  static const std::regex row(R"(^  ([a-z][a-z-]*)\s+\S.*$)");
  for (const std::string& line : lines_of(top.output)) {
    if (line == "commands:") {
      in_table = true;
      continue;
    }
    std::smatch m;
    if (in_table && std::regex_match(line, m, row)) {
      names.push_back(m[1]);
    } else if (in_table && line.empty()) {
      break;
    }
  }
  return names;
}

// Checks one help text; returns the `freehold ... --help` commands it points to (subcommands).
std::vector<std::string> check_help(const std::string& command) {
  const RunResult r = run_freehold(command + " --help");
  EXPECT_EQ(r.exit_code, 0) << "freehold " << command << " --help\n" << r.output;
  EXPECT_EQ(r.output.rfind("usage: freehold " + command, 0), 0u)
      << "`freehold " << command << " --help` should start with its usage line:\n" << r.output;
  static const std::regex flag_line(R"(^  --([a-z0-9-]+)( \S+)?\s.*$)");
  for (const std::string& line : lines_of(r.output)) {
    std::smatch m;
    if (!std::regex_match(line, m, flag_line) || m[1] == "help") continue;
    const bool states_default = line.find("(required)") != std::string::npos || line.find("default") != std::string::npos;
    EXPECT_TRUE(states_default) << "freehold " << command << " --help: flag line without its default:\n" << line;
  }
  std::vector<std::string> nested;
  static const std::regex pointer("`freehold ([a-z -]+) --help`");
  for (std::sregex_iterator it(r.output.begin(), r.output.end(), pointer), end; it != end; ++it) {
    if ((*it)[1] != command) nested.push_back((*it)[1]);
  }
  return nested;
}

TEST(Help, TopLevelListsCommandsAndExitsZero) {
  const RunResult r = run_freehold("--help");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("usage: freehold COMMAND"), std::string::npos) << r.output;
  const std::vector<std::string> names = listed_commands();
  // The commands of DESIGN.md §3 that exist today, and plot; a table that lost one fails here.
  const std::set<std::string> have(names.begin(), names.end());
  for (const char* expected : {"train", "validate", "prepare", "tokenize", "export", "score", "inspect", "plot"}) {
    EXPECT_TRUE(have.count(expected)) << "`freehold --help` does not list " << expected << ":\n" << r.output;
  }
  // No arguments at all is a usage error that still shows the table.
  const RunResult bare = run_freehold("");
  EXPECT_EQ(bare.exit_code, 2);
  EXPECT_NE(bare.output.find("commands:"), std::string::npos) << bare.output;
}

TEST(Help, EveryCommandHasHelpWithEveryFlagsDefault) {
  const std::vector<std::string> names = listed_commands();
  ASSERT_FALSE(names.empty());
  std::vector<std::string> todo(names.begin(), names.end());
  std::set<std::string> seen;
  while (!todo.empty()) {
    const std::string command = todo.back();
    todo.pop_back();
    if (!seen.insert(command).second) continue;
    SCOPED_TRACE(command);
    for (const std::string& sub : check_help(command)) todo.push_back(sub);
  }
  EXPECT_TRUE(seen.count("adapter init")) << "the adapter command's help should point at `freehold adapter init --help`";
}

TEST(Help, MistypedCommandSuggestsTheRightOne) {
  const RunResult r = run_freehold("trian configs/tiny-cpu.yaml");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("did you mean `train`"), std::string::npos) << r.output;
  const RunResult p = run_freehold("plto runs/x");
  EXPECT_EQ(p.exit_code, 2);
  EXPECT_NE(p.output.find("did you mean `plot`"), std::string::npos) << p.output;
}

TEST(Help, MistypedFlagSuggestsTheRightOne) {
  const RunResult r = run_freehold("score --modle m --input a --out b");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("unknown option --modle"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("did you mean --model?"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("freehold score --help"), std::string::npos) << r.output;
  const RunResult p = run_freehold("plot runs/x --otu y.svg");
  EXPECT_EQ(p.exit_code, 2);
  EXPECT_NE(p.output.find("did you mean --out?"), std::string::npos) << p.output;
}

TEST(Help, MissingRequiredFlagNamesItAndTheHelp) {
  const RunResult r = run_freehold("export --base a --adapter b");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--out DIR is required"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("freehold export --help"), std::string::npos) << r.output;
}

}  // namespace
