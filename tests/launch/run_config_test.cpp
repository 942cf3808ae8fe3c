#include "launch/run_config.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace freehold::launch {
namespace {

const char* kGood = R"(# a tiny experiment
model: {path: models/tiny, dtype: bf16}
adapter:
  r: 8
  alpha: 16
  dropout: 0.0
  target_modules: [q_proj, v_proj]
  rank_pattern: {v_proj: 4}
data:
  train: [{path: data/train.h5, weight: 2.0}, data/more.jsonl]
  eval: data/eval.jsonl
  seq_len: 256
train:
  max_steps: 50
  warmup_steps: 5
  lr: 1.0e-3
  eval_every: 10
output: {dir: runs/tiny, save_every: 10}
)";

std::vector<std::string> problems_of(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  try {
    parse_run_config(yaml, "exp.yaml", overrides);
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.exit_code(), core::ExitCode::kUsage);
    return e.problems();
  }
  ADD_FAILURE() << "no ConfigError for:\n" << yaml;
  return {};
}

// The single problem of `yaml` (after overrides), which must contain every string in `expected`.
void expect_problem(const std::string& yaml, const std::vector<std::string>& overrides,
                    const std::vector<std::string>& expected) {
  std::vector<std::string> problems = problems_of(yaml, overrides);
  ASSERT_EQ(problems.size(), 1u) << ::testing::PrintToString(problems);
  for (const std::string& part : expected) {
    EXPECT_NE(problems[0].find(part), std::string::npos) << "missing \"" << part << "\" in: " << problems[0];
  }
}

TEST(RunConfigTest, ReadsAGoodConfigWithDefaultsForTheRest) {
  RunConfig c = parse_run_config(kGood, "configs/exp.yaml");
  EXPECT_EQ(c.name, "exp");
  EXPECT_EQ(c.model.path, "models/tiny");
  EXPECT_EQ(c.adapter.r, 8);
  EXPECT_EQ(c.adapter.target_modules, (std::vector<std::string>{"q_proj", "v_proj"}));
  ASSERT_EQ(c.adapter.rank_pattern.size(), 1u);
  EXPECT_EQ(c.adapter.rank_pattern[0].second, 4);
  ASSERT_EQ(c.data.train.size(), 2u);
  EXPECT_EQ(c.data.train[0].weight, 2.0);
  EXPECT_EQ(c.data.train[1].path, "data/more.jsonl");
  EXPECT_EQ(c.data.train[1].weight, 1.0);
  ASSERT_EQ(c.data.eval.size(), 1u);
  EXPECT_EQ(c.train.max_steps, 50);
  EXPECT_DOUBLE_EQ(c.train.lr, 1e-3);
  EXPECT_EQ(c.train.grad_accum_steps, 1);  // default
  EXPECT_EQ(c.train.lr_schedule, trainer::LrSchedule::kCosine);
  EXPECT_EQ(c.output.save_every, 10);
  EXPECT_EQ(c.output.keep_last, 3);
  EXPECT_EQ(c.resume.mode, ResumeOptions::Mode::kAuto);
}

// A section left out entirely gives the same defaults as an empty one (a regression: absent sections read their
// optional keys as explicit nulls, so train.max_steps became null and adapter.target_modules empty).
TEST(RunConfigTest, AbsentSectionsKeepTheirDefaults) {
  const char* minimal = "model: {path: models/tiny}\ndata: {train: [data/train.jsonl]}\n";
  RunConfig absent = parse_run_config(minimal, "exp.yaml");
  RunConfig empty = parse_run_config(std::string(minimal) + "adapter: {}\ntrain: {}\noutput: {}\ndist: {}\n", "exp.yaml");
  ASSERT_TRUE(absent.train.max_steps.has_value());
  EXPECT_EQ(absent.train.max_steps, empty.train.max_steps);
  EXPECT_EQ(absent.train.max_steps, 1000);
  EXPECT_EQ(absent.adapter.target_modules, empty.adapter.target_modules);
  EXPECT_EQ(absent.adapter.target_modules.size(), 7u);
  EXPECT_EQ(absent.adapter.layers, empty.adapter.layers);
  EXPECT_EQ(absent.train.loraplus_lr_ratio, empty.train.loraplus_lr_ratio);
  EXPECT_EQ(absent.output.keep_last, empty.output.keep_last);
  EXPECT_EQ(absent.dist.timeout_s, empty.dist.timeout_s);
}

TEST(RunConfigTest, OverridesReplaceAndCreateKeys) {
  RunConfig c = parse_run_config(kGood, "exp.yaml",
                                 {"train.lr=5e-5", "adapter.target_modules=[q_proj, k_proj, v_proj]",
                                  "train.loraplus_lr_ratio=16", "resume=never", "output.dir=/tmp/x"});
  EXPECT_DOUBLE_EQ(c.train.lr, 5e-5);
  EXPECT_EQ(c.adapter.target_modules.size(), 3u);
  EXPECT_EQ(c.train.loraplus_lr_ratio, 16.0);
  EXPECT_EQ(c.resume.mode, ResumeOptions::Mode::kNever);
  EXPECT_EQ(c.output.dir, "/tmp/x");
  RunConfig epochs = parse_run_config(kGood, "exp.yaml", {"train.max_steps=null", "train.epochs=3"});
  EXPECT_FALSE(epochs.train.max_steps.has_value());
  EXPECT_EQ(epochs.train.epochs, 3);
}

TEST(RunConfigTest, ResolvedYamlReadsBackToTheSameConfig) {
  RunConfig c = parse_run_config(kGood, "exp.yaml", {"data.template=chatml", "train.betas=[0.8, 0.95]"});
  std::string yaml = run_config_to_yaml(c);
  RunConfig again = parse_run_config(yaml, "resolved.yaml");
  EXPECT_EQ(run_config_to_yaml(again), yaml);
  EXPECT_EQ(again.train.betas[0], 0.8);
  EXPECT_EQ(again.data.template_name, "chatml");
}

// Each kind of bad config gives its own specific error with the key path, the value and what is accepted.
TEST(RunConfigTest, BadConfigsEachGiveTheirSpecificError) {
  // 1. misspelt key, with a suggestion
  expect_problem(kGood, {"train.learning_rte=1"}, {"train.learning_rte", "unknown key"});
  expect_problem(kGood, {"train.lrr=1"}, {"train.lrr", "did you mean train.lr?"});
  // 2. misspelt section
  expect_problem(std::string(kGood) + "trian: {lr: 1}\n", {}, {"exp.yaml:19", "trian", "did you mean train?"});
  // 3. wrong type: a string where a number goes
  expect_problem(kGood, {"train.lr=fast"}, {"train.lr", "\"fast\"", "expected a number > 0"});
  // 4. out of range
  expect_problem(kGood, {"adapter.dropout=1.5"}, {"adapter.dropout", "1.5", "[0, 1)"});
  // 5. integer where a fraction was given
  expect_problem(kGood, {"train.micro_batch_size=2.5"}, {"train.micro_batch_size", "\"2.5\"", "integer"});
  // 6. enum value misspelt
  expect_problem(kGood, {"train.lr_schedule=cosin"}, {"train.lr_schedule", "\"cosin\"", "did you mean cosine?"});
  // 7. boolean spelt otherwise
  expect_problem(kGood, {"data.packing=maybe"}, {"data.packing", "true or false"});
  // 8. conflicting: both max_steps and epochs
  expect_problem(kGood, {"train.epochs=2"}, {"train.epochs", "train.max_steps", "both set"});
  // 9. conflicting: warmup longer than the run
  expect_problem(kGood, {"train.warmup_steps=500"}, {"train.warmup_steps", "500", "more than train.max_steps"});
  // 10. eval without eval data
  expect_problem(kGood, {"data.eval=null"}, {"train.eval_every", "data.eval"});
  // 11. missing required model path
  expect_problem(kGood, {"model.path=null"}, {"model.path", "required"});
  // 12. a data source with a bad weight
  expect_problem(kGood, {"data.train=[{path: a.h5, weight: -1}]"}, {"data.train[0].weight", "\"-1\"", "> 0"});
  // 13. an unknown chat template
  expect_problem(kGood, {"data.template=chatlm"}, {"data.template", "chatml"});
  // 14. betas malformed
  expect_problem(kGood, {"train.betas=[0.9]"}, {"train.betas", "two numbers"});
  // 15. precision not offered
  expect_problem(kGood, {"train.precision=fp16"}, {"train.precision", "\"fp16\"", "bf16, fp32"});
  // 16. a section that is not a mapping
  expect_problem(kGood, {"dist=fast"}, {"dist", "expected a mapping"});
  // 17. an override that is not key=value
  expect_problem(kGood, {"train.lr"}, {"train.lr", "section.key=value"});
  // 18. duplicate key in the file
  expect_problem(std::string(kGood) + "dist: {timeout_s: 10, timeout_s: 20}\n", {}, {"dist.timeout_s", "twice"});
  // 19. template on plain text
  expect_problem(kGood, {"data.format=text", "data.template=llama3"}, {"data.template", "data.format is text"});
  // 20. rank_pattern with a non-rank
  expect_problem(kGood, {"adapter.rank_pattern={v_proj: 0}"}, {"adapter.rank_pattern.v_proj", "rank >= 1"});
}

TEST(RunConfigTest, AllProblemsAreReportedAtOnce) {
  std::vector<std::string> problems =
      problems_of(kGood, {"train.lr=-1", "adapter.r=0", "output.keep_last=0", "dist.backend=gloo", "train.seeed=1"});
  EXPECT_EQ(problems.size(), 5u) << ::testing::PrintToString(problems);
}

TEST(RunConfigTest, ProblemsNameTheLineOfTheFile) {
  std::vector<std::string> problems = problems_of(std::string(kGood) + "dist: {timeout_s: 0}\n");
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].rfind("exp.yaml:19: dist.timeout_s: is 0", 0), 0u) << problems[0];
}

TEST(RunConfigTest, BucketSizeOutOfRangeNamesTheRange) {
  const std::vector<std::string> problems = problems_of(std::string(kGood) + "dist: {bucket_mb: 0}\n");
  ASSERT_EQ(problems.size(), 1u) << ::testing::PrintToString(problems);
  EXPECT_EQ(problems[0].rfind("exp.yaml:19: dist.bucket_mb: is 0", 0), 0u) << problems[0];
  EXPECT_NE(problems[0].find("1024"), std::string::npos) << problems[0];
  EXPECT_EQ(parse_run_config(std::string(kGood) + "dist: {bucket_mb: 4}\n", "exp.yaml").dist.bucket_mb, 4);
  EXPECT_EQ(parse_run_config(kGood, "exp.yaml").dist.bucket_mb, 25);
}

TEST(RunConfigTest, DeviceChoiceNamesWhatIsAccepted) {
  const std::vector<std::string> problems = problems_of(kGood, {"train.device=gpu"});
  ASSERT_EQ(problems.size(), 1u) << ::testing::PrintToString(problems);
  EXPECT_NE(problems[0].find("train.device"), std::string::npos) << problems[0];
  EXPECT_NE(problems[0].find("gpu"), std::string::npos) << problems[0];
  EXPECT_NE(problems[0].find("auto, cpu, cuda"), std::string::npos) << problems[0];
  EXPECT_EQ(parse_run_config(kGood, "exp.yaml").train.device, trainer::DeviceChoice::kAuto);
  EXPECT_EQ(parse_run_config(kGood, "exp.yaml", {"train.device=cuda"}).train.device, trainer::DeviceChoice::kCuda);
}

TEST(RunConfigTest, InvalidYamlNamesLineAndColumn) {
  std::vector<std::string> problems = problems_of("model: {path: [unclosed\n");
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].find("exp.yaml:"), std::string::npos) << problems[0];
  EXPECT_NE(problems[0].find("not valid YAML"), std::string::npos) << problems[0];
}

}  // namespace
}  // namespace freehold::launch

namespace freehold::launch {
namespace {

// The ready experiments in configs/ must stay valid as the config grows.
TEST(RunConfigTest, EveryShippedConfigParses) {
  for (const char* name : {"tiny-cpu.yaml", "llama3-8b-lora.yaml", "qwen2.5-7b-dora.yaml"}) {
    const std::string path = std::string(FREEHOLD_SOURCE_DIR) + "/configs/" + name;
    EXPECT_NO_THROW(load_run_config(path)) << path;
  }
  RunConfig tiny = load_run_config(std::string(FREEHOLD_SOURCE_DIR) + "/configs/tiny-cpu.yaml");
  EXPECT_EQ(tiny.adapter.target_modules, (std::vector<std::string>{"all-linear"}));
  EXPECT_EQ(tiny.output.dir, "runs/demo/train");
}

}  // namespace
}  // namespace freehold::launch
