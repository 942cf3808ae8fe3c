// train.device (trainer/device.h): the rule from (choice, local rank, visible GPUs) to a device, its errors, and
// the generator states a checkpoint records.
#include "trainer/device.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/rand.h>
#include <gtest/gtest.h>

#include "core/error.h"

namespace freehold::trainer {
namespace {

std::string usage_error_of(DeviceChoice choice, int local_rank, int gpus) {
  try {
    choose_training_device(choice, local_rank, gpus);
  } catch (const core::UsageError& e) {
    return e.what();
  }
  return "";
}

TEST(DeviceTest, AutoIsTheCpuWithoutGpusAndTheRanksGpuWithThem) {
  EXPECT_EQ(choose_training_device(DeviceChoice::kAuto, 0, 0), c10::Device(c10::kCPU));
  EXPECT_EQ(choose_training_device(DeviceChoice::kAuto, 3, 0), c10::Device(c10::kCPU));
  EXPECT_EQ(choose_training_device(DeviceChoice::kAuto, 2, 8), c10::Device(c10::kCUDA, 2));
  EXPECT_EQ(choose_training_device(DeviceChoice::kCuda, 7, 8), c10::Device(c10::kCUDA, 7));
  // One GPU per rank bound by the launcher (CUDA_VISIBLE_DEVICES per task): it is device 0 whatever the local rank.
  EXPECT_EQ(choose_training_device(DeviceChoice::kAuto, 5, 1), c10::Device(c10::kCUDA, 0));
  EXPECT_EQ(choose_training_device(DeviceChoice::kCpu, 1, 8), c10::Device(c10::kCPU));
}

TEST(DeviceTest, CudaWithoutAGpuSaysWhyAndWhatIsAccepted) {
  const std::string error = usage_error_of(DeviceChoice::kCuda, 0, 0);
  EXPECT_NE(error.find("train.device: cuda"), std::string::npos) << error;
  EXPECT_NE(error.find("no CUDA device"), std::string::npos) << error;
#if defined(FREEHOLD_WITH_CUDA)
  EXPECT_NE(error.find("CUDA_VISIBLE_DEVICES"), std::string::npos) << error;
#else
  EXPECT_NE(error.find("-DFREEHOLD_CUDA=ON"), std::string::npos) << error;
#endif
  EXPECT_NE(error.find("auto, cpu, cuda"), std::string::npos) << error;
}

TEST(DeviceTest, MoreRanksThanGpusOnANodeNamesBothCounts) {
  const std::string error = usage_error_of(DeviceChoice::kAuto, 4, 2);
  EXPECT_NE(error.find("local rank 4"), std::string::npos) << error;
  EXPECT_NE(error.find("only 2 CUDA devices"), std::string::npos) << error;
  EXPECT_NE(error.find("--gpus-per-task=1"), std::string::npos) << error;
  EXPECT_NE(usage_error_of(DeviceChoice::kCuda, 2, 2), "");
}

TEST(DeviceTest, ThisProcessCountsItsGpus) {
  // A build without CUDA has no CUDA hooks: it sees none, and auto trains on the CPU.
  if (!at::globalContext().hasCUDA()) {
    EXPECT_EQ(visible_cuda_devices(), 0);
  } else {
    EXPECT_GE(visible_cuda_devices(), 0);
  }
  EXPECT_EQ(choose_training_device(DeviceChoice::kAuto, 0, visible_cuda_devices()).is_cuda(),
            visible_cuda_devices() > 0);
}

TEST(DeviceTest, GeneratorStateRoundTripsThroughHex) {
  const c10::Device cpu(c10::kCPU);
  at::manual_seed(7);
  const std::string saved = generator_state_hex(cpu);
  ASSERT_FALSE(saved.empty());
  const at::Tensor first = at::rand({16});
  set_generator_state_hex(cpu, saved, "trainer_state.json");
  const at::Tensor again = at::rand({16});
  EXPECT_TRUE(at::equal(first, again));
  EXPECT_NE(generator_state_hex(cpu), saved);  // drawing moved the stream on
}

TEST(DeviceTest, ABrokenGeneratorStateNamesItsFile) {
  const c10::Device cpu(c10::kCPU);
  const std::string before = generator_state_hex(cpu);
  for (const std::string bad : {"abc", "zz", "ABCD", "00"}) {
    try {
      set_generator_state_hex(cpu, bad, "ckpt/trainer_state.json");
      ADD_FAILURE() << "accepted \"" << bad << "\"";
    } catch (const core::FormatError& e) {
      EXPECT_NE(std::string(e.what()).find("ckpt/trainer_state.json"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(generator_state_hex(cpu), before);  // a refused state leaves the stream as it was
}

}  // namespace
}  // namespace freehold::trainer
