// Activation checkpointing (model.activation_checkpointing) changes memory, never results: the loss and every
// adapter gradient are bit-identical to a run without it — with LoRA dropout drawing masks, over two
// micro-batches, for LoRA and DoRA — the random stream continues identically, and the activations alive between
// forward and backward shrink to the layers' inputs (counted by a CPU allocator that tracks live bytes).
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <c10/core/CPUAllocator.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <gtest/gtest.h>

#include "adapters/adapter_set.h"
#include "model/transformer.h"
#include "tests/model/tiny_checkpoint.h"

namespace freehold::model {
namespace {

// Wraps LibTorch's CPU allocator and counts the bytes currently allocated through it. Each DataPtr's context is its
// data pointer, as the default CPU allocator's is: oneDNN's scratchpads come through raw_allocate, which asserts that
// (kernels/cpu_gemm.h). The blocks live in a process-wide table by pointer, each with the counter of the allocator
// that made it, so a tensor may outlive its allocator (a step's gradients do).
class CountingAllocator : public c10::Allocator {
 public:
  explicit CountingAllocator(c10::Allocator* base) : base_(base) {}

  c10::DataPtr allocate(size_t n) override {
    c10::DataPtr inner = base_->allocate(n);
    void* data = inner.get();
    const c10::Device device = inner.device();
    *live_ += static_cast<int64_t>(n);
    Table& t = table();
    {
      const std::lock_guard<std::mutex> lock(t.mutex);
      t.blocks.emplace(data, Block{std::move(inner), n, live_});
    }
    return c10::DataPtr(data, data, &CountingAllocator::release, device);
  }
  c10::DeleterFnPtr raw_deleter() const override { return &CountingAllocator::release; }
  void copy_data(void* dest, const void* src, std::size_t count) const override { base_->copy_data(dest, src, count); }

  int64_t live_bytes() const { return live_->load(); }

 private:
  struct Block {
    c10::DataPtr inner;  // frees through the base allocator when the block leaves the table
    size_t bytes;
    std::shared_ptr<std::atomic<int64_t>> live;
  };
  struct Table {
    std::mutex mutex;
    std::map<void*, Block> blocks;
  };
  static Table& table() {
    static Table* t = new Table;  // never destroyed: tensors may be freed during static destruction
    return *t;
  }
  static void release(void* data) {
    Table& t = table();
    c10::DataPtr inner;  // freed after the lock is released
    const std::lock_guard<std::mutex> lock(t.mutex);
    auto it = t.blocks.find(data);
    if (it == t.blocks.end()) return;
    *it->second.live -= static_cast<int64_t>(it->second.bytes);
    inner = std::move(it->second.inner);
    t.blocks.erase(it);
  }

  c10::Allocator* base_;
  std::shared_ptr<std::atomic<int64_t>> live_ = std::make_shared<std::atomic<int64_t>>(0);
};

// Installs a CountingAllocator as the CPU allocator for the scope (allocations before it are not counted).
class ScopedCountingAllocator {
 public:
  ScopedCountingAllocator() : base_(c10::GetCPUAllocator()), counting_(base_) {
    c10::SetCPUAllocator(&counting_, kPriority);
  }
  ~ScopedCountingAllocator() { c10::SetCPUAllocator(base_, kPriority); }
  int64_t live_bytes() const { return counting_.live_bytes(); }

 private:
  static constexpr uint8_t kPriority = 100;
  c10::Allocator* base_;
  CountingAllocator counting_;
};

struct StepOutcome {
  double loss = 0;
  std::map<std::string, at::Tensor> grads;
  at::Tensor rng_after;            // the CPU generator's state after the step
  int64_t live_after_forward = 0;  // bytes allocated by the forward passes and still alive before backward
};

constexpr int64_t kB = 2, kT = 48, kC = 64, kI = 192, kV = 101, kLayers = 4;

// Two micro-batches of gradient accumulation through a fresh model + adapter, with the loss
// Σ logits · w (w fixed random weights), from a fixed seed.
StepOutcome run_step(const std::string& dir, bool checkpointing, double dropout, bool dora,
                     ScopedCountingAllocator* counter = nullptr) {
  Transformer model = Transformer::load(dir);
  adapters::LoraOptions options;
  options.r = 4;
  options.alpha = 8;
  options.dropout = dropout;
  options.use_dora = dora;
  options.init = "gaussian";  // B = 0 would leave A's gradient 0; give B values below
  adapters::AdapterSet set = adapters::AdapterSet::create(model, options, 3);
  {
    at::NoGradGuard no_grad;
    at::Generator g = at::make_generator<at::CPUGeneratorImpl>(5);
    for (const io::NamedTensor& p : set.parameters()) {
      if (p.name.find("lora_B") != std::string::npos) p.tensor.copy_(at::randn(p.tensor.sizes(), g) * 0.1);
    }
  }
  set.set_training(true);
  model.set_activation_checkpointing(checkpointing);

  at::Generator data_gen = at::make_generator<at::CPUGeneratorImpl>(9);
  at::manual_seed(1234);
  StepOutcome out;
  for (int micro = 0; micro < 2; ++micro) {
    at::Tensor ids = at::randint(kV, {kB, kT}, data_gen, at::kLong);
    at::Tensor w = at::randn({kB, kT, kV}, data_gen);
    const int64_t before = counter ? counter->live_bytes() : 0;
    at::Tensor loss = (model.forward({ids, {}, {}}) * w).sum() / static_cast<double>(kB * kT);
    if (counter && micro == 0) out.live_after_forward = counter->live_bytes() - before;
    loss.backward();
    out.loss += loss.item<double>();
  }
  for (const io::NamedTensor& p : set.parameters()) {
    EXPECT_TRUE(p.tensor.grad().defined()) << p.name << " got no gradient";
    if (p.tensor.grad().defined()) out.grads[p.name] = p.tensor.grad().clone();
  }
  out.rng_after = at::detail::getDefaultCPUGenerator().get_state();
  return out;
}

class ActivationCheckpointTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(testing::make_temp_dir("activation_checkpoint"));
    testing::write_checkpoint(*dir_, testing::llama_config_json(kV, kC, kI, kLayers, 4, 2, "float32"), at::kFloat,
                              21);
  }
  static std::string* dir_;
};
std::string* ActivationCheckpointTest::dir_ = nullptr;

void expect_identical(const StepOutcome& plain, const StepOutcome& checkpointed) {
  EXPECT_EQ(plain.loss, checkpointed.loss);  // bit-identical, not close
  ASSERT_EQ(plain.grads.size(), checkpointed.grads.size());
  for (const auto& [name, grad] : plain.grads) {
    ASSERT_TRUE(checkpointed.grads.count(name)) << name;
    const at::Tensor& other = checkpointed.grads.at(name);
    EXPECT_GT(grad.abs().max().item<double>(), 0.0) << name << ": a zero gradient proves nothing";
    EXPECT_TRUE(at::equal(grad, other)) << name << ": max |difference| " << (grad - other).abs().max().item<double>();
  }
  EXPECT_TRUE(at::equal(plain.rng_after, checkpointed.rng_after)) << "the random stream diverged";
}

TEST_F(ActivationCheckpointTest, LossAndGradientsAreBitIdenticalWithoutDropout) {
  expect_identical(run_step(*dir_, false, 0.0, false), run_step(*dir_, true, 0.0, false));
}

TEST_F(ActivationCheckpointTest, DropoutMasksAreReplayedInTheRecomputation) {
  StepOutcome plain = run_step(*dir_, false, 0.3, false);
  expect_identical(plain, run_step(*dir_, true, 0.3, false));
  // The masks matter: another dropout stream gives other gradients, so the equality above is not vacuous.
  StepOutcome no_dropout = run_step(*dir_, false, 0.0, false);
  EXPECT_NE(plain.loss, no_dropout.loss);
}

TEST_F(ActivationCheckpointTest, DoraWithDropoutIsBitIdentical) {
  expect_identical(run_step(*dir_, false, 0.2, true), run_step(*dir_, true, 0.2, true));
}

TEST_F(ActivationCheckpointTest, OnlyTheLayerInputsStayAliveBetweenForwardAndBackward) {
  int64_t plain = 0, checkpointed = 0;
  {
    ScopedCountingAllocator counter;
    plain = run_step(*dir_, false, 0.1, false, &counter).live_after_forward;
  }
  {
    ScopedCountingAllocator counter;
    checkpointed = run_step(*dir_, true, 0.1, false, &counter).live_after_forward;
  }
  // Kept either way: the logits (B, T, V), the loss's product with w, the final norm's input and output. With
  // checkpointing, on top of that, one (B, T, C) input per layer; nothing else of the layers.
  const int64_t layer_input = kB * kT * kC * 4;
  const int64_t head = 3 * kB * kT * kV * 4 + 4 * kB * kT * kC * 4;
  std::printf("live bytes after forward: %lld without, %lld with checkpointing\n", static_cast<long long>(plain),
              static_cast<long long>(checkpointed));
  EXPECT_LE(checkpointed, kLayers * layer_input + head);
  // Without it, every layer keeps its projections, norms, attention and dropout masks: many inputs' worth each.
  EXPECT_GE(plain - head, 8 * kLayers * layer_input);
}

TEST_F(ActivationCheckpointTest, OffOutsideGradModeAndGivesTheSameLogits) {
  Transformer model = Transformer::load(*dir_);
  at::Tensor ids = at::randint(kV, {1, 16}, at::kLong);
  at::NoGradGuard no_grad;
  at::Tensor plain = model.forward({ids, {}, {}});
  model.set_activation_checkpointing(true);
  EXPECT_TRUE(at::equal(plain, model.forward({ids, {}, {}})));
}

}  // namespace
}  // namespace freehold::model
