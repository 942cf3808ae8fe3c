// Schedules at their boundaries, against transformers' formulas written out.
#include "trainer/lr_schedule.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

namespace freehold::trainer {
namespace {

TEST(LrScheduleTest, WarmupStartsAtZeroAndReachesOne) {
  for (LrSchedule kind : {LrSchedule::kConstant, LrSchedule::kLinear, LrSchedule::kCosine}) {
    LrScheduleOptions o{kind, 4, 20, 0.0};
    EXPECT_EQ(lr_factor(o, 0), 0.0);
    EXPECT_EQ(lr_factor(o, 1), 0.25);
    EXPECT_EQ(lr_factor(o, 3), 0.75);
    EXPECT_EQ(lr_factor(o, 4), 1.0);
  }
}

TEST(LrScheduleTest, ConstantLinearCosine) {
  EXPECT_EQ(lr_factor({LrSchedule::kConstant, 0, 10, 0.0}, 9), 1.0);
  LrScheduleOptions linear{LrSchedule::kLinear, 2, 12, 0.0};
  EXPECT_DOUBLE_EQ(lr_factor(linear, 7), 0.5);
  EXPECT_EQ(lr_factor(linear, 12), 0.0);
  EXPECT_EQ(lr_factor(linear, 20), 0.0);  // past the end: clamped, never negative
  LrScheduleOptions linear_min{LrSchedule::kLinear, 2, 12, 0.1};
  EXPECT_DOUBLE_EQ(lr_factor(linear_min, 12), 0.1);
  EXPECT_DOUBLE_EQ(lr_factor(linear_min, 7), 0.1 + 0.9 * 0.5);
  LrScheduleOptions cosine{LrSchedule::kCosine, 2, 12, 0.0};
  EXPECT_EQ(lr_factor(cosine, 2), 1.0);
  EXPECT_NEAR(lr_factor(cosine, 7), 0.5, 1e-15);
  EXPECT_NEAR(lr_factor(cosine, 12), 0.0, 1e-15);
  EXPECT_NEAR(lr_factor(cosine, 4), 0.5 * (1 + std::cos(std::numbers::pi * 0.2)), 1e-15);
  LrScheduleOptions cosine_min{LrSchedule::kCosine, 0, 10, 0.2};
  EXPECT_NEAR(lr_factor(cosine_min, 10), 0.2, 1e-15);
  EXPECT_NEAR(lr_factor(cosine_min, 5), 0.6, 1e-15);
  EXPECT_EQ(lr_factor(cosine_min, 0), 1.0);
}

TEST(LrScheduleTest, DegenerateLengths) {
  // warmup == total: every step is warmup; total 1 without warmup: factor 1 at step 0.
  EXPECT_EQ(lr_factor({LrSchedule::kCosine, 3, 3, 0.0}, 2), 2.0 / 3.0);
  EXPECT_EQ(lr_factor({LrSchedule::kCosine, 0, 1, 0.0}, 0), 1.0);
  EXPECT_EQ(lr_factor({LrSchedule::kLinear, 0, 1, 0.0}, 0), 1.0);
}

}  // namespace
}  // namespace freehold::trainer
