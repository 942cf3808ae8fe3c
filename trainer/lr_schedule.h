// Learning-rate schedules as transformers' get_*_schedule_with_warmup compute them (optimization.py), extended
// with min_lr_ratio as get_cosine_with_min_lr_schedule_with_warmup does: the factor the base learning rate is
// multiplied by before optimizer step `step` (0-based: the first step uses factor(0), as LambdaLR after its
// construction-time step). Warmup: step / max(1, warmup) for step < warmup, so with warmup the first step has lr 0
// exactly as in transformers' Trainer.
//
//   constant: 1
//   linear:   m + (1 − m) · max(0, (total − step) / max(1, total − warmup))
//   cosine:   max(0, m + (1 − m) · ½ (1 + cos(π · progress))),  progress = (step − warmup) / max(1, total − warmup)
//
// with m = min_lr_ratio (transformers' linear has no floor: m = 0 gives it exactly).
#pragma once

#include <cstdint>

#include "trainer/train_options.h"

namespace freehold::trainer {

struct LrScheduleOptions {
  LrSchedule kind = LrSchedule::kCosine;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  double min_lr_ratio = 0.0;
};

double lr_factor(const LrScheduleOptions& options, int64_t step);

}  // namespace freehold::trainer
