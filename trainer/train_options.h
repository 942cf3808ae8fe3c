// The `train:` and `output:` sections of a run config (DESIGN.md §4) as plain structs (STYLE.md habit 3).
// launch/ fills them from YAML and validates them; the trainer only reads them.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/dtype.h"

namespace freehold::trainer {

enum class LrSchedule { kConstant, kLinear, kCosine };
enum class NonfinitePolicy { kSkip, kAbort };
enum class ExportKind { kNone, kAdapter, kMerged, kBoth };
// Where a rank keeps the model and computes: auto is the rank's GPU when this freehold has CUDA and one is visible.
enum class DeviceChoice { kAuto, kCpu, kCuda };

struct TrainOptions {
  uint64_t seed = 1234;
  int64_t micro_batch_size = 4;  // sequences per micro-batch, per rank
  int64_t grad_accum_steps = 1;  // micro-batches per optimizer step
  std::optional<int64_t> max_steps = 1000;  // optimizer steps; exactly one of max_steps and epochs is set
  std::optional<int64_t> epochs;
  double lr = 2.0e-4;
  std::array<double, 2> betas = {0.9, 0.999};
  double eps = 1.0e-8;
  double weight_decay = 0.0;
  std::optional<double> loraplus_lr_ratio;  // LoRA+: B's learning rate is lr × ratio
  LrSchedule lr_schedule = LrSchedule::kCosine;
  int64_t warmup_steps = 0;
  double min_lr_ratio = 0.0;  // the schedule decays to lr × min_lr_ratio
  double max_grad_norm = 1.0;  // 0 disables clipping
  core::DType precision = core::DType::kBF16;  // fp32 or bf16 base and compute; adapters stay fp32
  DeviceChoice device = DeviceChoice::kAuto;  // trainer/device.h
  int64_t eval_every = 0;  // optimizer steps; 0: no evaluation
  int64_t eval_batches = 20;
  NonfinitePolicy nonfinite = NonfinitePolicy::kSkip;
  int64_t max_consecutive_nonfinite = 3;
};

struct OutputOptions {
  std::string dir;  // default runs/<config file name without .yaml>
  int64_t log_every = 1;
  int64_t save_every = 0;  // optimizer steps; 0: only at the end
  int64_t keep_last = 3;
  ExportKind export_kind = ExportKind::kAdapter;
  core::DType export_dtype = core::DType::kBF16;
  bool tensorboard = true;
};

inline std::string_view lr_schedule_name(LrSchedule schedule) {
  return schedule == LrSchedule::kConstant ? "constant" : schedule == LrSchedule::kLinear ? "linear" : "cosine";
}
inline std::string_view nonfinite_policy_name(NonfinitePolicy policy) {
  return policy == NonfinitePolicy::kSkip ? "skip" : "abort";
}
inline std::string_view device_choice_name(DeviceChoice choice) {
  return choice == DeviceChoice::kAuto ? "auto" : choice == DeviceChoice::kCpu ? "cpu" : "cuda";
}
inline std::string_view export_kind_name(ExportKind kind) {
  switch (kind) {
    case ExportKind::kNone: return "none";
    case ExportKind::kAdapter: return "adapter";
    case ExportKind::kMerged: return "merged";
    case ExportKind::kBoth: return "both";
  }
  return "?";
}

}  // namespace freehold::trainer
