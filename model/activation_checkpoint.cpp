#include "model/activation_checkpoint.h"

#include <ATen/Context.h>
#include <ATen/core/Generator.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/zeros_like.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>

#include <mutex>

#include "core/error.h"

namespace freehold::model {
namespace {

using torch::autograd::variable_list;

// The generator LoRA dropout draws from for tensors on `device` (the CPU's, or that CUDA device's).
at::Generator generator_for(const at::Device& device) { return at::globalContext().defaultGenerator(device); }

at::Tensor get_generator_state(at::Generator& generator) {
  std::lock_guard<std::mutex> lock(generator.mutex());
  return generator.get_state();
}

void set_generator_state(at::Generator& generator, const at::Tensor& state) {
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(state);
}

// Runs `layer` the way the non-checkpointed model would: grad mode on, x requiring grad exactly when the
// original did. Only the requires_grad pattern matters for which op variant runs; the graph built here is
// dropped by the caller (forward) or back-propagated once (backward).
at::Tensor run_layer(const std::function<at::Tensor(const at::Tensor&)>& layer, const at::Tensor& x_detached) {
  at::AutoGradMode grad_mode(true);
  return layer(x_detached);
}

// The autograd node standing for one checkpointed layer: its one input gradient is dL/dy, its one output
// gradient dL/dx (none when x needs none). The adapters' gradients are accumulated into their .grad by the
// nested backward.
class CheckpointBackward : public torch::autograd::Node {
 public:
  CheckpointBackward(std::function<at::Tensor(const at::Tensor&)> layer, at::Tensor x, bool x_requires_grad,
                     at::Generator generator, at::Tensor generator_state)
      : layer_(std::move(layer)),
        x_(std::move(x)),
        x_requires_grad_(x_requires_grad),
        generator_(std::move(generator)),
        generator_state_(std::move(generator_state)) {}

  std::string name() const override { return "freehold::CheckpointBackward"; }

  variable_list apply(variable_list&& grads) override {
    std::lock_guard<std::mutex> lock(mutex_);
    FH_CHECK(x_.defined(), "activation checkpointing: the backward of a layer ran twice (retain_graph is not "
                           "supported with model.activation_checkpointing)");
    // Replay the forward's random stream (dropout masks), then restore where the stream is now.
    const at::Tensor now = get_generator_state(generator_);
    set_generator_state(generator_, generator_state_);
    at::Tensor x = x_.detach().requires_grad_(x_requires_grad_);
    at::Tensor y;
    try {
      y = run_layer(layer_, x);
    } catch (...) {
      set_generator_state(generator_, now);
      throw;
    }
    set_generator_state(generator_, now);
    FH_CHECK(y.requires_grad(), "activation checkpointing: the recomputed layer needs no gradient but the forward did");
    at::Tensor grad_y = grads[0].defined() ? grads[0] : at::zeros_like(y);
    torch::autograd::backward({y}, {grad_y}, /*retain_graph=*/false, /*create_graph=*/false);
    at::Tensor grad_x = x_requires_grad_ ? x.grad() : at::Tensor();
    return {grad_x};
  }

  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    x_.reset();
    generator_state_.reset();
    layer_ = nullptr;
  }

 private:
  std::function<at::Tensor(const at::Tensor&)> layer_;
  at::Tensor x_;  // (B, T, C), detached: the only activation kept for this layer
  bool x_requires_grad_;
  at::Generator generator_;
  at::Tensor generator_state_;  // before the forward drew its dropout masks
};

}  // namespace

at::Tensor checkpointed_forward(std::function<at::Tensor(const at::Tensor&)> layer, const at::Tensor& x) {
  if (!at::GradMode::is_enabled()) return layer(x);
  at::Generator generator = generator_for(x.device());
  at::Tensor state = get_generator_state(generator);
  const bool x_requires_grad = x.requires_grad();
  at::Tensor x_detached = x.detach().requires_grad_(x_requires_grad);
  at::Tensor y = run_layer(layer, x_detached);
  if (!y.requires_grad()) return y;  // nothing in or before this layer is trained: no graph to keep
  at::Tensor out = y.detach();  // drops the layer's graph and, with it, every activation it saved
  y.reset();
  auto node = std::shared_ptr<CheckpointBackward>(
      new CheckpointBackward(std::move(layer), x.detach(), x_requires_grad, generator, std::move(state)),
      torch::autograd::deleteNode);
  node->set_next_edges(torch::autograd::collect_next_edges(x));
  torch::autograd::set_history(out, node);
  return out;
}

}  // namespace freehold::model
