// The loss-curve SVG (trainer/loss_plot) and `freehold plot`: the image is well-formed XML whose series carry one
// point per metrics record of their kind, checked with Python's XML parser as the independent reader; bad run
// directories and metrics files give errors that name the file and line.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/error.h"
#include "tests/launch/run_command.h"
#include "trainer/loss_plot.h"

namespace {

namespace fs = std::filesystem;

using freehold::testing::RunResult;

RunResult run(const std::string& command) { return freehold::testing::run_command(command); }

std::string freehold() { return freehold::testing::freehold_binary(); }

class PlotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("freehold_plot_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  void write_metrics(const std::string& text) { std::ofstream(dir_ / "metrics.jsonl") << text; }

  // Python's ElementTree parses the SVG and prints "<id> <number of points>" per series.
  std::string series_counts(const fs::path& svg) {
    const std::string script =
        "import sys, xml.etree.ElementTree as ET\n"
        "root = ET.parse(sys.argv[1]).getroot()\n"
        "assert root.tag == '{http://www.w3.org/2000/svg}svg', root.tag\n"
        "out = []\n"
        "for el in root.iter():\n"
        "    i = el.get('id')\n"
        "    if i in ('train-loss', 'eval-loss', 'lr'):\n"
        "        n = len(el.get('points').split()) if el.tag.endswith('polyline') else 1\n"
        "        out.append('%s %d' % (i, n))\n"
        "print(' '.join(sorted(out)))\n";
    std::ofstream(dir_ / "count.py") << script;
    const RunResult r = run(std::string(FREEHOLD_SOURCE_DIR) + "/.venv/bin/python " + (dir_ / "count.py").string() +
                            " " + svg.string());
    EXPECT_EQ(r.exit_code, 0) << r.output;
    std::string out = r.output;
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
  }

  fs::path dir_;
};

// Ten logged steps (one of them skipped, loss null), three evals.
std::string sample_metrics() {
  std::string text;
  for (int step = 1; step <= 10; ++step) {
    const std::string loss = step == 4 ? "null" : std::to_string(3.0 / step);
    text += "{\"step\":" + std::to_string(step) + ",\"loss\":" + loss + ",\"lr\":" + std::to_string(1e-4 * step) +
            ",\"grad_norm\":1.0,\"tokens\":" + std::to_string(64 * step) + "}\n";
    if (step % 4 == 0 || step == 10) {
      text += "{\"step\":" + std::to_string(step) + ",\"eval_loss\":" + std::to_string(2.5 / step) +
              ",\"eval_ppl\":1.0,\"eval_tokens\":100}\n";
    }
  }
  return text;
}

TEST_F(PlotTest, ReadsEachSeriesFromItsRecords) {
  write_metrics(sample_metrics());
  const freehold::trainer::RunCurves c = freehold::trainer::read_run_curves((dir_ / "metrics.jsonl").string());
  EXPECT_EQ(c.train_loss.size(), 9u);  // the skipped step 4 is a gap
  EXPECT_EQ(c.eval_loss.size(), 3u);
  EXPECT_EQ(c.lr.size(), 10u);
  EXPECT_EQ(c.eval_loss[1].first, 8);
  EXPECT_DOUBLE_EQ(c.train_loss[0].second, 3.0);
}

TEST_F(PlotTest, SvgIsXmlWithOnePointPerRecord) {
  write_metrics(sample_metrics());
  const std::string written = freehold::trainer::write_loss_curve(dir_.string());
  EXPECT_EQ(written, (dir_ / "loss_curve.svg").string());
  EXPECT_EQ(series_counts(written), "eval-loss 3 lr 10 train-loss 9");
}

TEST_F(PlotTest, TitleIsEscaped) {
  freehold::trainer::RunCurves c;
  c.train_loss = {{1, 2.0}, {2, 1.0}};
  const std::string svg = freehold::trainer::render_loss_curve_svg(c, "a<b & \"c\"");
  std::ofstream(dir_ / "t.svg") << svg;
  EXPECT_EQ(series_counts(dir_ / "t.svg"), "train-loss 2");
  EXPECT_NE(svg.find("a&lt;b &amp; &quot;c&quot;"), std::string::npos);
}

TEST_F(PlotTest, SinglePointsAndConstantSeriesStillDraw) {
  // One record: a run that logged its first step. Constant values must not divide by a zero range.
  write_metrics("{\"step\":1,\"loss\":2.0,\"lr\":0.0}\n{\"step\":1,\"eval_loss\":2.0}\n");
  const std::string written = freehold::trainer::write_loss_curve(dir_.string());
  EXPECT_EQ(series_counts(written), "eval-loss 1 lr 1 train-loss 1");
  const std::string svg = freehold::trainer::render_loss_curve_svg(freehold::trainer::read_run_curves((dir_ / "metrics.jsonl").string()), "x");
  EXPECT_EQ(svg.find("nan"), std::string::npos) << svg;
  EXPECT_EQ(svg.find("inf"), std::string::npos) << svg;
}

TEST_F(PlotTest, CommandWritesTheImageWhereAsked) {
  write_metrics(sample_metrics());
  const fs::path out = dir_ / "elsewhere.svg";
  const RunResult r = run(freehold() + " plot " + dir_.string() + " --out " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(out.string()), std::string::npos) << r.output;
  EXPECT_EQ(series_counts(out), "eval-loss 3 lr 10 train-loss 9");
  EXPECT_FALSE(fs::exists(dir_ / "loss_curve.svg"));
}

TEST_F(PlotTest, MissingRunDirectoryIsAUsageError) {
  const std::string missing = (dir_ / "no-such-run").string();
  try {
    freehold::trainer::write_loss_curve(missing);
    FAIL() << "expected an error";
  } catch (const freehold::core::UsageError& e) {
    EXPECT_NE(std::string(e.what()).find(missing + " is not a directory"), std::string::npos) << e.what();
  }
  const RunResult r = run(freehold() + " plot " + missing);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("no-such-run is not a directory"), std::string::npos) << r.output;
}

TEST_F(PlotTest, MissingMetricsFileIsNamed) {
  const RunResult r = run(freehold() + " plot " + dir_.string());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find((dir_ / "metrics.jsonl").string() + " does not exist"), std::string::npos) << r.output;
}

TEST_F(PlotTest, EmptyMetricsFileIsAnError) {
  write_metrics("");
  const RunResult r = run(freehold() + " plot " + dir_.string());
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("metrics.jsonl: no records"), std::string::npos) << r.output;
}

TEST_F(PlotTest, BadLinesAreNamedWithTheirLineNumber) {
  const std::string head = "{\"step\":1,\"loss\":2.0,\"lr\":1e-4}\n";
  const struct {
    std::string second_line;
    std::string message;
  } cases[] = {
      {"\n", "metrics.jsonl:2: empty line"},
      {"{\"step\":2,\"loss\":1.9,\"l\n", "metrics.jsonl:2: not a JSON object"},
      {"[1,2]\n", "metrics.jsonl:2: not a JSON object"},
      {"{\"loss\":1.0}\n", "metrics.jsonl:2: \"step\" is missing"},
      {"{\"step\":\"two\",\"loss\":1.0}\n", "metrics.jsonl:2: \"step\" is \"two\""},
      {"{\"step\":2,\"loss\":\"low\"}\n", "metrics.jsonl:2: \"loss\" is \"low\"; expected a number"},
      {"{\"step\":2,\"eval_loss\":[1]}\n", "metrics.jsonl:2: \"eval_loss\" is [1]"},
  };
  for (const auto& c : cases) {
    write_metrics(head + c.second_line + head);
    try {
      freehold::trainer::read_run_curves((dir_ / "metrics.jsonl").string());
      ADD_FAILURE() << "no error for " << c.second_line;
    } catch (const freehold::core::DataError& e) {
      EXPECT_NE(std::string(e.what()).find(c.message), std::string::npos) << e.what();
    }
  }
  // The command reports the same, with exit code 3 (bad input data).
  write_metrics(head + "garbage\n");
  const RunResult r = run(freehold() + " plot " + dir_.string());
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("metrics.jsonl:2: not a JSON object (\"garbage\")"), std::string::npos) << r.output;
}

}  // namespace
