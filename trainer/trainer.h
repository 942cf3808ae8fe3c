// The training loop (STYLE.md habit 4): one class, read top to bottom — setup() loads the base and the adapters,
// the optimizer and the data and, with resume, the newest committed checkpoint; train() runs optimizer steps
// (micro-batches with gradient accumulation → token-weighted loss → backward → clip → AdamW → schedule), logging,
// evaluating and checkpointing on their cadence; save() writes a checkpoint; finish() writes the final adapter.
// A single process is world size 1: the places where ranks must agree (the step's target-token count, the finite
// check, the stop flag) are marked, and the multi-rank issue puts the collectives there without new branches.
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "adapters/adapter_set.h"
#include "adapters/lora_options.h"
#include "data/batch.h"
#include "data/data_options.h"
#include "data/tokenizer.h"
#include "dist/grad_buckets.h"
#include "dist/world.h"
#include "kernels/cpu_gemm.h"
#include "kernels/half_gemm.h"
#include "model/model_options.h"
#include "model/transformer.h"
#include "nlohmann/json.hpp"
#include "trainer/adamw.h"
#include "trainer/lr_schedule.h"
#include "trainer/step_timer.h"
#include "trainer/tensorboard.h"
#include "trainer/train_options.h"

namespace freehold::trainer {

enum class ResumeMode { kAuto, kNever, kPath };

// Everything the trainer reads: the run config's sections (launch/ builds this from RunConfig).
struct TrainerConfig {
  model::ModelOptions model;
  adapters::LoraOptions adapter;
  data::DataOptions data;
  TrainOptions train;
  OutputOptions output;
  ResumeMode resume = ResumeMode::kAuto;
  std::string resume_path;          // for kPath: a checkpoint directory
  std::string resolved_config_yaml;  // written as config.yaml; its SHA-256 is the config hash
};

// Why train() returned.
enum class TrainOutcome {
  kCompleted,  // max_steps (or the epochs) done
  kStopped,    // SIGUSR1 / SIGTERM: a checkpoint was committed; exit code 75
};

// Opens the training (or, with eval, the eval) stream of this rank: data/'s loader (data/batch_source.h), or the
// testing-only TokenBatchSource when the sources are one ".batches.safetensors" file. The loader needs the
// tokenizer (data.tokenizer, else the model directory's tokenizer.json); it is loaded into `tokenizer` on first
// use and must outlive the source.
std::unique_ptr<data::BatchSource> open_batch_source(const data::DataOptions& options, bool eval,
                                                     int64_t micro_batch_size, uint64_t seed, int64_t vocab_size,
                                                     const std::string& model_dir,
                                                     std::unique_ptr<data::Tokenizer>& tokenizer, int rank = 0,
                                                     int world_size = 1);

class Trainer {
 public:
  // `world`: this process's ranks (launch/ bootstraps it under mpirun / srun); null is world size 1. Rank 0 writes
  // the run directory (config.yaml, metrics, checkpoints, adapter/); every rank trains its share of each step.
  explicit Trainer(TrainerConfig config, dist::World* world = nullptr);
  ~Trainer();

  void setup();
  TrainOutcome train();
  // Commits a checkpoint of the current state (checkpoints/step-NNNNNN).
  void save();
  // Writes the final adapter/ (PEFT format); restores the signal handlers.
  void finish();

  int64_t step() const { return step_; }
  int64_t total_steps() const { return total_steps_; }
  const std::string& run_dir() const { return config_.output.dir; }
  const adapters::AdapterSet& adapters() const { return *adapters_; }
  const AdamW& optimizer() const { return *optimizer_; }

 private:
  struct StepResult {
    double loss = 0;         // mean over the step's target tokens
    double grad_norm = 0;    // before clipping
    double lr = 0;           // base learning rate of the step
    int64_t tokens = 0;      // input tokens of the step
    int64_t targets = 0;     // target tokens of the step
    bool applied = false;    // false: non-finite loss or gradient, update skipped
    StepTimes times;         // wall time per phase (metrics "time_s")
  };

  StepResult train_step();
  data::Batch next_batch();
  void evaluate();
  void resume_from(const std::string& checkpoint_dir);
  nlohmann::ordered_json rank_state() const;
  nlohmann::ordered_json rng_state() const;
  void restore_rng_state(const nlohmann::json& rng, const std::string& origin);
  nlohmann::ordered_json trainer_state(const nlohmann::ordered_json& ranks) const;
  nlohmann::ordered_json hyperparameters() const;
  void log_step(const StepResult& result);
  void append_metrics(const nlohmann::ordered_json& record);

  TrainerConfig config_;
  // ── multi-rank (dist/): world size 1 runs the same calls ──
  std::unique_ptr<dist::World> own_world_;         // when the caller gave none
  dist::World* world_ = nullptr;
  std::optional<dist::GradientBuckets> grad_buckets_;  // adapter gradients, summed over ranks once per step
  void check_ranks_agree();                        // same binary version, config hash and base model
  std::optional<std::string> agree_on_checkpoint(); // rank 0 scans for the resume point, every rank gets it
  std::string checkpoints_dir_;
  std::optional<model::Transformer> model_;
  std::optional<adapters::AdapterSet> adapters_;
  std::optional<AdamW> optimizer_;
  std::unique_ptr<data::Tokenizer> tokenizer_;  // outlives the sources that tokenize with it
  std::unique_ptr<data::BatchSource> train_source_;
  std::unique_ptr<data::BatchSource> eval_source_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;  // with output.tensorboard
  LrScheduleOptions schedule_;
  int64_t total_steps_ = 0;

  // Progress, all saved in trainer_state.json.
  int64_t step_ = 0;              // optimizer steps attempted (skipped ones included)
  int64_t tokens_seen_ = 0;
  int64_t skipped_steps_ = 0;
  int64_t consecutive_nonfinite_ = 0;
  double elapsed_before_s_ = 0;   // training time of earlier runs of this job
  int64_t last_saved_step_ = -1;

  std::chrono::steady_clock::time_point start_;
  int64_t start_step_ = 0;
  std::deque<double> recent_losses_;  // for the loss-spike flag (N3)
  std::string base_config_sha256_;
  // Where this rank keeps the model, adapters, optimizer state and batches (train.device, trainer/device.h).
  c10::Device device_ = c10::Device(c10::kCPU);
  double peak_flops_ = 0;  // matmul peak for MFU (trainer/flops.h), measured in setup()
  int64_t seq_len_ = 0;    // T of the last micro-batch: the attention term of the FLOPs per token
  // The CPU GEMM path for the 16-bit base weights (kernels/half_gemm.h), rank 0's choice, when the fused kernels
  // run a bf16/fp16 model on the CPU; saved in trainer_state.json so that a resumed run sums as the first did.
  std::optional<kernels::HalfGemmPath> half_gemm_path_;
  // The library of the CPU fp32 GEMMs (kernels/cpu_gemm.h), rank 0's choice, when the fused kernels run on the CPU;
  // saved likewise.
  std::optional<kernels::CpuGemmPath> cpu_gemm_path_;
};

// Set by SIGUSR1 / SIGTERM while a Trainer is set up; checked at step boundaries. The `freehold` binary receives
// both on a thread of their own (core/stop_signals.h).
bool stop_requested();

}  // namespace freehold::trainer
