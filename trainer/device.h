// The device a rank trains on (train.device): the CPU, or GPU local_rank when freehold is built with CUDA and the
// process sees a GPU. The model, the adapters, the optimizer state and the batches all live there.
#pragma once

#include <c10/core/Device.h>

#include <string>

#include "trainer/train_options.h"

namespace freehold::trainer {

// How many CUDA devices this process sees: 0 in a build without CUDA (LibTorch's CUDA hooks are not loaded).
int visible_cuda_devices();

// The device for `choice` on a rank with `local_rank` that sees `cuda_devices` GPUs (the count is a parameter so
// the rule is tested without a GPU). auto: the CPU without GPUs, else as cuda. cuda: GPU local_rank, or GPU 0 when
// the launcher gave each rank exactly one (CUDA_VISIBLE_DEVICES per task, srun --gpus-per-task=1). Throws a
// UsageError naming train.device when no GPU is visible, or when there are fewer GPUs than ranks on the node.
c10::Device choose_training_device(DeviceChoice choice, int local_rank, int cuda_devices);

// The default generator of `device` as bytes in hex, and back: the dropout streams a checkpoint records.
std::string generator_state_hex(const c10::Device& device);
void set_generator_state_hex(const c10::Device& device, const std::string& hex, const std::string& origin);

}  // namespace freehold::trainer
