// train.device: which device a rank trains on, and the dropout streams of that device; see device.h.
#include "trainer/device.h"

#include <ATen/Context.h>
#include <ATen/core/Generator.h>
#include <ATen/ops/empty.h>

#include <mutex>

#include "absl/strings/str_cat.h"
#include "core/error.h"

namespace freehold::trainer {
namespace {

#if defined(FREEHOLD_WITH_CUDA)
constexpr bool kBuiltWithCuda = true;
#else
constexpr bool kBuiltWithCuda = false;
#endif

std::string to_hex(const at::Tensor& bytes) {
  const at::Tensor b = bytes.contiguous();
  const uint8_t* p = b.const_data_ptr<uint8_t>();
  static const char* kHex = "0123456789abcdef";
  std::string out;
  out.reserve(static_cast<size_t>(2 * b.numel()));
  for (int64_t i = 0; i < b.numel(); ++i) {
    out.push_back(kHex[p[i] >> 4]);
    out.push_back(kHex[p[i] & 15]);
  }
  return out;
}

at::Tensor from_hex(const std::string& hex, const std::string& origin) {
  if (hex.size() % 2 != 0) throw core::FormatError(absl::StrCat(origin, ": a generator state of odd-length hex"));
  at::Tensor out = at::empty({static_cast<int64_t>(hex.size() / 2)}, at::kByte);
  uint8_t* p = out.data_ptr<uint8_t>();
  auto nibble = [&](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    throw core::FormatError(absl::StrCat(origin, ": a generator state that is not lower-case hex"));
  };
  for (size_t i = 0; i < hex.size() / 2; ++i) {
    p[i] = static_cast<uint8_t>(nibble(hex[2 * i]) << 4 | nibble(hex[2 * i + 1]));
  }
  return out;
}

}  // namespace

int visible_cuda_devices() {
  if (!at::globalContext().hasCUDA()) return 0;
  return static_cast<int>(at::detail::getCUDAHooks().deviceCount());
}

c10::Device choose_training_device(DeviceChoice choice, int local_rank, int cuda_devices) {
  if (choice == DeviceChoice::kCpu || (choice == DeviceChoice::kAuto && cuda_devices == 0)) return c10::Device(c10::kCPU);
  if (cuda_devices == 0) {
    throw core::UsageError(absl::StrCat("train.device: cuda, but this process sees no CUDA device (",
                                        kBuiltWithCuda ? "check CUDA_VISIBLE_DEVICES and that nvidia-smi lists a GPU"
                                                       : "this freehold is built without CUDA: build it with "
                                                         "-DFREEHOLD_CUDA=ON (make build-cuda)",
                                        "); accepted: auto, cpu, cuda"));
  }
  if (cuda_devices == 1) return c10::Device(c10::kCUDA, 0);  // the launcher bound one GPU to this rank
  if (local_rank >= cuda_devices) {
    throw core::UsageError(absl::StrCat("train.device: ", std::string(device_choice_name(choice)), ": this rank is local rank ",
                                        local_rank, " on its node but the node shows it only ", cuda_devices,
                                        " CUDA devices; start at most ", cuda_devices, " ranks per node (one per GPU), "
                                        "or give each rank one GPU (srun --gpus-per-task=1)"));
  }
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(local_rank));
}

std::string generator_state_hex(const c10::Device& device) {
  at::Generator generator = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(generator.mutex());
  return to_hex(generator.get_state());
}

void set_generator_state_hex(const c10::Device& device, const std::string& hex, const std::string& origin) {
  at::Generator generator = at::globalContext().defaultGenerator(device);
  const at::Tensor state = from_hex(hex, origin);
  std::lock_guard<std::mutex> lock(generator.mutex());
  try {
    generator.set_state(state);
  } catch (const c10::Error& e) {
    throw core::FormatError(absl::StrCat(origin, ": the ", device.str(), " generator state does not fit this build: ",
                                         e.what_without_backtrace()));
  }
}

}  // namespace freehold::trainer
