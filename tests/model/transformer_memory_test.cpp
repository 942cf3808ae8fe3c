// Issue 2: loading a bf16 checkpoint of N bytes raises peak RSS by at most 1.1 × N, because weights already in
// the compute dtype stay in the checkpoint's mmap instead of being copied.
#include <ATen/core/grad_mode.h>
#include <ATen/ops/tensor.h>

#include <cstdio>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "core/error.h"
#include "model/transformer.h"
#include "tests/model/tiny_checkpoint.h"

namespace freehold::model {
namespace {

// Peak resident set size of this process (VmHWM), in bytes.
uint64_t peak_rss_bytes() {
  std::ifstream status("/proc/self/status");
  std::string key;
  while (status >> key) {
    if (key == "VmHWM:") {
      uint64_t kib = 0;
      status >> kib;
      return kib * 1024;
    }
    status.ignore(1 << 20, '\n');
  }
  ADD_FAILURE() << "no VmHWM in /proc/self/status";
  return 0;
}

// True when `address` lies in a mapping of `path` (per /proc/self/maps).
bool address_is_mapped_from(const void* address, const std::string& path) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  const auto target = reinterpret_cast<uintptr_t>(address);
  while (std::getline(maps, line)) {
    if (line.size() < path.size() || line.compare(line.size() - path.size(), path.size(), path) != 0) continue;
    uintptr_t begin = 0, end = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx", &begin, &end) == 2 && target >= begin && target < end) return true;
  }
  return false;
}

// Writing "5" to clear_refs resets the peak RSS to the current RSS (Linux ≥ 4.0).
bool reset_peak_rss() {
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
  return static_cast<bool>(clear.flush());
}

TEST(TransformerMemoryTest, LoadingABf16CheckpointCostsAboutItsOwnSize) {
  std::string dir = testing::make_temp_dir("memory");
  // ~150 MB of bf16 weights: large enough that fixed overheads (thread pools, allocator arenas) are noise.
  testing::write_checkpoint(dir, testing::llama_config_json(16384, 1024, 2816, 6, 16, 4, "bfloat16"), at::kBFloat16,
                            11);
  std::ifstream weights(dir + "/model.safetensors", std::ios::ate | std::ios::binary);
  const uint64_t n = static_cast<uint64_t>(weights.tellg());
  ASSERT_GT(n, 100u << 20);

  at::NoGradGuard no_grad;
  at::Tensor ids = at::tensor(std::vector<int64_t>{3, 1, 4, 1, 5, 9, 2, 6}, at::kLong).unsqueeze(0);
  {
    // Warm up the allocator and thread pools on a different load so they are not charged to the measurement.
    Transformer warm = Transformer::load(dir);
    warm.forward({ids, {}, {}});
  }
  ASSERT_TRUE(reset_peak_rss());
  const uint64_t before = peak_rss_bytes();
  Transformer model = Transformer::load(dir);
  at::Tensor logits = model.forward({ids, {}, {}});  // touches every weight
  const uint64_t raised = peak_rss_bytes() - before;
  EXPECT_EQ(model.dtype(), at::kBFloat16);
  EXPECT_LE(static_cast<double>(raised), 1.1 * static_cast<double>(n))
      << "peak RSS rose by " << raised << " bytes for a checkpoint of " << n << " bytes";
  std::printf("peak RSS rose by %.1f MB for a %.1f MB checkpoint (%.3f x)\n", raised / 1e6, n / 1e6,
              static_cast<double>(raised) / static_cast<double>(n));
  // Why it is cheap: the weights are views of the file's mapping. (A lower bound on the RSS rise would be a
  // weaker check of the same thing: the kernel may reclaim clean file pages under memory pressure.)
  for (const at::Tensor* weight : {&model.embed_tokens(), &model.layers()[3].mlp.down_proj.weight(),
                                   &model.lm_head().weight()}) {
    EXPECT_TRUE(address_is_mapped_from(weight->data_ptr(), dir + "/model.safetensors"));
  }
}

}  // namespace
}  // namespace freehold::model
