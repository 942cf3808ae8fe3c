#include "launch/command_line.h"

#include <gtest/gtest.h>

#include "core/error.h"

namespace freehold::launch {
namespace {

const std::vector<FlagSpec> kFlags = {
    {"model", "DIR", "model", true},
    {"input", "FILE", "inputs", false, true},
    {"dtype", "NAME", "dtype"},
    {"verify", "", "check"},
    {"steps", "N", "steps"},
};

std::string usage_error(const std::vector<std::string>& args) {
  try {
    parse_command_line("score", kFlags, args, 0, 1);
  } catch (const core::UsageError& e) {
    EXPECT_EQ(e.exit_code(), core::ExitCode::kUsage);
    return e.what();
  }
  ADD_FAILURE() << "no usage error";
  return "";
}

TEST(CommandLineTest, ParsesValuesBooleansRepeatsAndPositionals) {
  ParsedArgs a = parse_command_line("score", kFlags,
                                    {"--model", "m", "--input", "a", "b", "--dtype=bf16", "--verify", "pos"}, 0, 1);
  EXPECT_EQ(a.get("model"), "m");
  EXPECT_EQ(a.get_all("input"), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(a.get("dtype"), "bf16");
  EXPECT_TRUE(a.has("verify"));
  EXPECT_FALSE(a.has("steps"));
  EXPECT_EQ(a.positionals(), (std::vector<std::string>{"pos"}));  // after a boolean flag: positional
  ParsedArgs greedy = parse_command_line("score", kFlags, {"--model", "m", "--input", "a", "b"}, 0, 1);
  EXPECT_TRUE(greedy.positionals().empty());  // a repeated flag takes values up to the next flag
  ParsedArgs b = parse_command_line("score", kFlags, {"pos", "--model", "m", "--steps", "12"}, 0, 1);
  EXPECT_EQ(b.positionals(), (std::vector<std::string>{"pos"}));
  EXPECT_EQ(b.get_int("steps", 0, 1, 100), 12);
}

TEST(CommandLineTest, ErrorsNameTheFlagTheValueAndAHint) {
  EXPECT_NE(usage_error({"--modle", "m"}).find("did you mean --model"), std::string::npos);
  EXPECT_NE(usage_error({"--dtype", "bf16"}).find("--model DIR is required"), std::string::npos);
  EXPECT_NE(usage_error({"--model"}).find("--model needs a value"), std::string::npos);
  EXPECT_NE(usage_error({"--model", "a", "--model", "b"}).find("given twice"), std::string::npos);
  EXPECT_NE(usage_error({"--model", "m", "--verify=yes"}).find("takes no value"), std::string::npos);
  EXPECT_NE(usage_error({"--model", "m", "x", "y"}).find("got 2"), std::string::npos);
  ParsedArgs a = parse_command_line("score", kFlags, {"--model", "m", "--steps", "1e3"}, 0, 1);
  try {
    a.get_int("steps", 0, 1, 100);
    FAIL();
  } catch (const core::UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("\"1e3\""), std::string::npos) << e.what();
  }
}

TEST(CommandLineTest, HelpIsAnsweredWithoutTheRequiredArguments) {
  const std::vector<FlagSpec> flags = {{"model", "DIR", "model", true}, {"help", "", "show this help"}};
  ParsedArgs a = parse_command_line("score", flags, {"--help"}, 1, 1);  // no --model, no positional
  EXPECT_TRUE(a.has("help"));
  EXPECT_THROW(parse_command_line("score", flags, {}, 0, 0), core::UsageError);
}

TEST(CommandLineTest, ClosestMatchOnlySuggestsLikelyTypos) {
  EXPECT_EQ(closest_match("socre", {"score", "inspect", "train"}), "score");
  EXPECT_FALSE(closest_match("banana", {"score", "inspect", "train"}).has_value());
}

}  // namespace
}  // namespace freehold::launch
