// transformers' schedule lambdas, in the same floating-point order.
#include "trainer/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace freehold::trainer {

double lr_factor(const LrScheduleOptions& o, int64_t step) {
  if (step < o.warmup_steps) {
    return static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, o.warmup_steps));
  }
  const double m = o.min_lr_ratio;
  switch (o.kind) {
    case LrSchedule::kConstant:
      return 1.0;
    case LrSchedule::kLinear: {
      const double decay = std::max(0.0, static_cast<double>(o.total_steps - step) /
                                             static_cast<double>(std::max<int64_t>(1, o.total_steps - o.warmup_steps)));
      return m == 0.0 ? decay : m + (1 - m) * decay;
    }
    case LrSchedule::kCosine: {
      const double progress = static_cast<double>(step - o.warmup_steps) /
                              static_cast<double>(std::max<int64_t>(1, o.total_steps - o.warmup_steps));
      // num_cycles = 0.5: cos(π · 0.5 · 2 · progress)
      double factor = 0.5 * (1.0 + std::cos(std::numbers::pi * 0.5 * 2.0 * progress));
      factor = factor * (1 - m) + m;
      return std::max(0.0, factor);
    }
  }
  return 1.0;
}

}  // namespace freehold::trainer
