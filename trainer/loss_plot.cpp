#include "trainer/loss_plot.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/error.h"
#include "core/file.h"

namespace freehold::trainer {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// Canvas and plot area in SVG user units; the right margin holds the learning-rate axis.
constexpr double kWidth = 800, kHeight = 450;
constexpr double kLeft = 70, kRight = 730, kTop = 50, kBottom = 400;

const char* kTrainColor = "#1f77b4";
const char* kEvalColor = "#d62728";
const char* kLrColor = "#2ca02c";

std::string xml_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default:
        // Control characters other than tab and newline are not allowed in XML 1.0 at all.
        if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n') {
          out += '?';
        } else {
          out += c;
        }
    }
  }
  return out;
}

// Tick positions at 1, 2 or 5 times a power of ten, about `count` of them, covering [lo, hi].
struct Axis {
  double lo, hi, step;
};

Axis nice_axis(double lo, double hi, int count) {
  if (!(hi > lo)) {
    const double pad = lo == 0 ? 1.0 : std::abs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  const double raw = (hi - lo) / count;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  double step = magnitude;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * magnitude;
    if (raw <= step) break;
  }
  return {std::floor(lo / step) * step, std::ceil(hi / step) * step, step};
}

std::string number(double v) { return absl::StrFormat("%.1f", v); }

std::string tick_label(double v, double step) {
  if (std::abs(v) < step * 1e-9) return "0";
  const double a = std::abs(v);
  if (a >= 1e5 || a < 1e-3) return absl::StrFormat("%.1e", v);
  return absl::StrFormat("%g", v);
}

// "x1,y1 x2,y2 ..." for the series mapped onto the plot area.
std::string points(const PlotSeries& series, const Axis& x, const Axis& y) {
  std::string out;
  for (const auto& [step, value] : series) {
    const double px = kLeft + (static_cast<double>(step) - x.lo) / (x.hi - x.lo) * (kRight - kLeft);
    const double py = kBottom - (value - y.lo) / (y.hi - y.lo) * (kBottom - kTop);
    if (!out.empty()) out += ' ';
    absl::StrAppend(&out, number(px), ",", number(py));
  }
  return out;
}

void draw_series(std::string* svg, const char* id, const char* color, const PlotSeries& series, const Axis& x,
                 const Axis& y, bool dashed) {
  if (series.empty()) return;
  const std::string pts = points(series, x, y);
  if (series.size() == 1) {
    const size_t comma = pts.find(',');
    absl::StrAppend(svg, "  <circle id=\"", id, "\" cx=\"", pts.substr(0, comma), "\" cy=\"", pts.substr(comma + 1),
                    "\" r=\"3\" fill=\"", color, "\"/>\n");
    return;
  }
  absl::StrAppend(svg, "  <polyline id=\"", id, "\" fill=\"none\" stroke=\"", color, "\" stroke-width=\"1.5\"",
                  dashed ? " stroke-dasharray=\"6,3\"" : "", " points=\"", pts, "\"/>\n");
}

double required_number(const json& record, const char* key, const std::string& where) {
  const json& v = record.at(key);
  if (!v.is_number()) {
    throw core::DataError(absl::StrCat(where, ": \"", key, "\" is ", v.dump(), "; expected a number"));
  }
  return v.get<double>();
}

}  // namespace

RunCurves read_run_curves(const std::string& metrics_path) {
  std::error_code ec;
  if (!fs::is_regular_file(metrics_path, ec)) {
    throw core::UsageError(absl::StrCat(metrics_path, " does not exist; a run directory has metrics.jsonl once "
                                        "`freehold train` has logged its first step"));
  }
  const std::string text = core::read_file(metrics_path);
  RunCurves curves;
  size_t begin = 0, records = 0;
  for (int64_t line_number = 1; begin < text.size(); ++line_number) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(begin, end - begin);
    begin = end + 1;
    const std::string where = absl::StrCat(metrics_path, ":", line_number);
    if (line.find_first_not_of(" \t\r") == std::string::npos) {
      throw core::DataError(absl::StrCat(where, ": empty line; expected one JSON object per line as "
                                         "`freehold train` writes them"));
    }
    json record = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (record.is_discarded() || !record.is_object()) {
      throw core::DataError(absl::StrCat(where, ": not a JSON object (\"", line.substr(0, 60),
                                         line.size() > 60 ? "...\"" : "\"",
                                         "); expected one record like {\"step\":1,\"loss\":2.5,\"lr\":1e-4}"));
    }
    if (!record.contains("step") || !record["step"].is_number_integer()) {
      throw core::DataError(absl::StrCat(where, ": \"step\" is ",
                                         record.contains("step") ? record["step"].dump() : std::string("missing"),
                                         "; expected an integer step number"));
    }
    const int64_t step = record["step"].get<int64_t>();
    ++records;
    // A skipped (non-finite) step logs "loss": null; it is a gap in the curve, not an error.
    if (record.contains("loss") && !record["loss"].is_null()) {
      const double v = required_number(record, "loss", where);
      if (std::isfinite(v)) curves.train_loss.emplace_back(step, v);
    }
    if (record.contains("eval_loss")) {
      const double v = required_number(record, "eval_loss", where);
      if (std::isfinite(v)) curves.eval_loss.emplace_back(step, v);
    }
    if (record.contains("lr")) {
      const double v = required_number(record, "lr", where);
      if (std::isfinite(v)) curves.lr.emplace_back(step, v);
    }
  }
  if (records == 0) {
    throw core::DataError(absl::StrCat(metrics_path, ": no records (the file is empty); expected one JSON object "
                                       "per logged step"));
  }
  return curves;
}

std::string render_loss_curve_svg(const RunCurves& curves, const std::string& title) {
  double step_lo = std::numeric_limits<double>::infinity(), step_hi = -step_lo;
  double loss_lo = step_lo, loss_hi = -step_lo, lr_hi = 0;
  for (const PlotSeries* s : {&curves.train_loss, &curves.eval_loss, &curves.lr}) {
    for (const auto& [step, value] : *s) {
      step_lo = std::min(step_lo, static_cast<double>(step));
      step_hi = std::max(step_hi, static_cast<double>(step));
      if (s == &curves.lr) {
        lr_hi = std::max(lr_hi, value);
      } else {
        loss_lo = std::min(loss_lo, value);
        loss_hi = std::max(loss_hi, value);
      }
    }
  }
  if (!std::isfinite(step_lo)) step_lo = 0, step_hi = 1;
  if (!std::isfinite(loss_lo)) loss_lo = 0, loss_hi = 1;
  const Axis x = nice_axis(step_lo, step_hi, 8);
  const Axis y = nice_axis(loss_lo, loss_hi, 6);
  // The learning rate starts at zero so warmup reads as a ramp; its ticks line up with the loss axis' grid.
  const Axis lr{0, lr_hi > 0 ? lr_hi * 1.05 : 1.0, 0};

  std::string svg = absl::StrCat(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n", "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"",
      number(kWidth), "\" height=\"", number(kHeight), "\" viewBox=\"0 0 ", number(kWidth), " ", number(kHeight),
      "\" font-family=\"sans-serif\" font-size=\"12\">\n", "  <title>", xml_escape(title), "</title>\n",
      "  <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n", "  <text x=\"", number(kWidth / 2),
      "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">", xml_escape(title), "</text>\n");

  // Grid and tick labels.
  absl::StrAppend(&svg, "  <g id=\"grid\" stroke=\"#dddddd\" stroke-width=\"1\">\n");
  std::string labels;
  for (double v = x.lo; v <= x.hi + x.step * 1e-9; v += x.step) {
    const double px = kLeft + (v - x.lo) / (x.hi - x.lo) * (kRight - kLeft);
    absl::StrAppend(&svg, "    <line x1=\"", number(px), "\" y1=\"", number(kTop), "\" x2=\"", number(px), "\" y2=\"",
                    number(kBottom), "\"/>\n");
    absl::StrAppend(&labels, "  <text x=\"", number(px), "\" y=\"", number(kBottom + 16),
                    "\" text-anchor=\"middle\">", tick_label(v, x.step), "</text>\n");
  }
  const int y_ticks = static_cast<int>(std::lround((y.hi - y.lo) / y.step));
  for (int i = 0; i <= y_ticks; ++i) {
    const double v = y.lo + i * y.step;
    const double py = kBottom - static_cast<double>(i) / y_ticks * (kBottom - kTop);
    absl::StrAppend(&svg, "    <line x1=\"", number(kLeft), "\" y1=\"", number(py), "\" x2=\"", number(kRight),
                    "\" y2=\"", number(py), "\"/>\n");
    absl::StrAppend(&labels, "  <text x=\"", number(kLeft - 6), "\" y=\"", number(py + 4), "\" text-anchor=\"end\">",
                    tick_label(v, y.step), "</text>\n");
    if (!curves.lr.empty()) {
      const double lr_value = lr.lo + static_cast<double>(i) / y_ticks * (lr.hi - lr.lo);
      absl::StrAppend(&labels, "  <text x=\"", number(kRight + 6), "\" y=\"", number(py + 4), "\" fill=\"",
                      kLrColor, "\">", absl::StrFormat("%.2e", lr_value), "</text>\n");
    }
  }
  absl::StrAppend(&svg, "  </g>\n", labels);
  absl::StrAppend(&svg, "  <rect x=\"", number(kLeft), "\" y=\"", number(kTop), "\" width=\"", number(kRight - kLeft),
                  "\" height=\"", number(kBottom - kTop), "\" fill=\"none\" stroke=\"black\"/>\n");
  absl::StrAppend(&svg, "  <text x=\"", number((kLeft + kRight) / 2), "\" y=\"", number(kBottom + 36),
                  "\" text-anchor=\"middle\">step</text>\n");
  absl::StrAppend(&svg, "  <text x=\"18\" y=\"", number((kTop + kBottom) / 2), "\" text-anchor=\"middle\" transform=\"rotate(-90 18 ",
                  number((kTop + kBottom) / 2), ")\">loss</text>\n");

  draw_series(&svg, "lr", kLrColor, curves.lr, x, lr, /*dashed=*/true);
  draw_series(&svg, "train-loss", kTrainColor, curves.train_loss, x, y, false);
  draw_series(&svg, "eval-loss", kEvalColor, curves.eval_loss, x, y, false);
  // Eval points are few and far apart: mark each one.
  if (curves.eval_loss.size() > 1) {
    absl::StrAppend(&svg, "  <g id=\"eval-markers\" fill=\"", kEvalColor, "\">\n");
    const std::string pts = points(curves.eval_loss, x, y);
    for (size_t at = 0; at < pts.size();) {
      size_t space = pts.find(' ', at);
      if (space == std::string::npos) space = pts.size();
      const std::string p = pts.substr(at, space - at);
      const size_t comma = p.find(',');
      absl::StrAppend(&svg, "    <circle cx=\"", p.substr(0, comma), "\" cy=\"", p.substr(comma + 1), "\" r=\"3\"/>\n");
      at = space + 1;
    }
    absl::StrAppend(&svg, "  </g>\n");
  }

  // Legend, with the last value of each series.
  double legend_x = kLeft;
  auto legend = [&](const char* color, const std::string& text, bool dashed) {
    absl::StrAppend(&svg, "  <line x1=\"", number(legend_x), "\" y1=\"38\" x2=\"", number(legend_x + 20),
                    "\" y2=\"38\" stroke=\"", color, "\" stroke-width=\"2\"", dashed ? " stroke-dasharray=\"6,3\"" : "",
                    "/>\n  <text x=\"", number(legend_x + 24), "\" y=\"42\">", xml_escape(text), "</text>\n");
    legend_x += 34 + 7.0 * static_cast<double>(text.size());
  };
  if (!curves.train_loss.empty()) {
    legend(kTrainColor, absl::StrFormat("train loss (last %.4g)", curves.train_loss.back().second), false);
  }
  if (!curves.eval_loss.empty()) {
    legend(kEvalColor, absl::StrFormat("eval loss (last %.4g)", curves.eval_loss.back().second), false);
  }
  if (!curves.lr.empty()) legend(kLrColor, "learning rate (right axis)", true);
  if (curves.train_loss.empty() && curves.eval_loss.empty() && curves.lr.empty()) {
    absl::StrAppend(&svg, "  <text x=\"", number((kLeft + kRight) / 2), "\" y=\"", number((kTop + kBottom) / 2),
                    "\" text-anchor=\"middle\">no loss or learning-rate records yet</text>\n");
  }
  absl::StrAppend(&svg, "</svg>\n");
  return svg;
}

std::string write_loss_curve(const std::string& run_dir, const std::string& out_path) {
  std::error_code ec;
  if (!fs::is_directory(run_dir, ec)) {
    throw core::UsageError(absl::StrCat(run_dir, " is not a directory; expected a run directory (output.dir of a "
                                        "run config, e.g. runs/demo) holding metrics.jsonl"));
  }
  const RunCurves curves = read_run_curves((fs::path(run_dir) / "metrics.jsonl").string());
  const std::string out = out_path.empty() ? (fs::path(run_dir) / kLossCurveFile).string() : out_path;
  std::string name = fs::path(run_dir).lexically_normal().filename().string();
  if (name.empty() || name == ".") name = fs::absolute(run_dir, ec).lexically_normal().parent_path().filename().string();
  core::write_file_atomic(out, render_loss_curve_svg(curves, absl::StrCat("freehold run ", name)));
  return out;
}

}  // namespace freehold::trainer
