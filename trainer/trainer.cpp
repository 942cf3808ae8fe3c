// The training loop; see trainer.h. Sections: set-up, the loop, one optimizer step, evaluation, checkpoints,
// resume, logging.
#include "trainer/trainer.h"

#include <ATen/Context.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "adapters/lora_group.h"
#include "adapters/merged_export.h"
#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "io/peft_adapter.h"
#include "io/safetensors.h"
#include "trainer/checkpoint.h"
#include "trainer/device.h"
#include "trainer/flops.h"
#include "trainer/grad_clip.h"
#include "kernels/cpu_gemm.h"
#include "kernels/rms_norm.h"
#include "trainer/loss.h"
#include "trainer/loss_plot.h"
#include "core/sha256.h"
#include "data/batch_source.h"
#include "data/data_fingerprint.h"
#include "trainer/token_batches.h"

namespace freehold::trainer {
namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

// ─── signals: the handler only sets a flag ───────────────────────────────────────────────────────────────────────
// Under `freehold` the handler runs on core/stop_signals.h's thread while the training thread reads the flag: a
// lock-free atomic is both async-signal-safe and visible across threads, where a volatile sig_atomic_t is only the
// first.
namespace {
std::atomic<int> g_stop_signal{0};
static_assert(std::atomic<int>::is_always_lock_free);
extern "C" void on_stop_signal(int signal) { g_stop_signal = signal; }
struct sigaction g_old_usr1, g_old_term;
bool g_handlers_installed = false;

void install_stop_handlers() {
  if (g_handlers_installed) return;
  struct sigaction action;
  std::memset(&action, 0, sizeof(action));
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGUSR1, &action, &g_old_usr1);
  sigaction(SIGTERM, &action, &g_old_term);
  g_handlers_installed = true;
}
void restore_stop_handlers() {
  if (!g_handlers_installed) return;
  sigaction(SIGUSR1, &g_old_usr1, nullptr);
  sigaction(SIGTERM, &g_old_term, nullptr);
  g_handlers_installed = false;
}

// A micro-batch on the training device (the loaders make CPU tensors; on the CPU this is a no-op).
data::Batch on_device(const data::Batch& b, const c10::Device& device) {
  if (device.is_cpu()) return b;
  auto move = [&](const at::Tensor& t) { return t.defined() ? t.to(device) : t; };
  data::Batch out = b;
  out.input_ids = move(b.input_ids);
  out.labels = move(b.labels);
  out.position_ids = move(b.position_ids);
  out.segment_ids = move(b.segment_ids);
  return out;
}

double peak_rss_gib() {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / (1024.0 * 1024.0);  // ru_maxrss is KiB on Linux
}

std::string duration_text(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t s = static_cast<int64_t>(seconds);
  if (s >= 3600) return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
  if (s >= 60) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%ds", s);
}

std::string selector_text(const io::ModuleSelector& s) {
  switch (s.kind) {
    case io::ModuleSelector::Kind::kNone: return "null";
    case io::ModuleSelector::Kind::kRegex: return absl::StrCat("\"", s.regex, "\"");
    case io::ModuleSelector::Kind::kNames: {
      std::vector<std::string> names = s.names;
      std::sort(names.begin(), names.end());
      return absl::StrCat("[", absl::StrJoin(names, ", "), "]");
    }
  }
  return "?";
}

// Structural differences between the adapter a checkpoint holds and the one this config builds (C12).
std::vector<std::string> adapter_differences(const io::PeftAdapterConfig& saved, const io::PeftAdapterConfig& now) {
  std::vector<std::string> d;
  auto diff = [&](const char* key, const std::string& a, const std::string& b) {
    if (a != b) d.push_back(absl::StrCat(key, ": checkpoint ", a, ", config ", b));
  };
  diff("r", absl::StrCat(saved.r), absl::StrCat(now.r));
  diff("lora_alpha", absl::StrCat(saved.lora_alpha), absl::StrCat(now.lora_alpha));
  diff("target_modules", selector_text(saved.target_modules), selector_text(now.target_modules));
  diff("exclude_modules", selector_text(saved.exclude_modules), selector_text(now.exclude_modules));
  diff("use_rslora", saved.use_rslora ? "true" : "false", now.use_rslora ? "true" : "false");
  diff("use_dora", saved.use_dora ? "true" : "false", now.use_dora ? "true" : "false");
  auto pairs = [](const auto& v) {
    std::string out;
    for (const auto& [k, x] : v) absl::StrAppend(&out, out.empty() ? "" : ", ", k, ": ", x);
    return absl::StrCat("{", out, "}");
  };
  diff("rank_pattern", pairs(saved.rank_pattern), pairs(now.rank_pattern));
  diff("alpha_pattern", pairs(saved.alpha_pattern), pairs(now.alpha_pattern));
  diff("layers_to_transform", absl::StrCat("[", absl::StrJoin(saved.layers_to_transform, ", "), "]"),
       absl::StrCat("[", absl::StrJoin(now.layers_to_transform, ", "), "]"));
  return d;
}

// A resume sums its CPU GEMMs as the checkpointed run did (bit-exact resume), unless `env_var` asks for another
// path: the path to run from now on. `current` is this run's own choice (measured or from the environment).
template <typename Path>
Path resumed_gemm_path(const nlohmann::json& state, const char* key, const char* env_var, Path current,
                       std::string_view (*name)(Path), std::optional<Path> (*from_name)(std::string_view),
                       const char* what) {
  if (!state.contains(key) || !state[key].is_string()) return current;
  const std::optional<Path> saved = from_name(state[key].get<std::string>());
  if (!saved || *saved == current) return current;
  const char* env = std::getenv(env_var);
  if (env != nullptr && *env != '\0') {
    core::log_warning("resume: the checkpoint ran its ", what, " ", state[key].dump(), ", ", env_var, "=", env,
                      " runs them ", std::string(name(current)), "; results now differ from an uninterrupted run in "
                      "rounding");
    return current;
  }
  core::log_info("resume: ", what, " ", state[key].dump(), " as in the checkpoint (measured here: ",
                 std::string(name(current)), ")");
  return *saved;
}

}  // namespace

bool stop_requested() { return g_stop_signal != 0; }

std::unique_ptr<data::BatchSource> open_batch_source(const data::DataOptions& options, bool eval,
                                                     int64_t micro_batch_size, uint64_t seed, int64_t vocab_size,
                                                     const std::string& model_dir,
                                                     std::unique_ptr<data::Tokenizer>& tokenizer, int rank,
                                                     int world_size) {
  const std::vector<data::DataSource>& sources = eval ? options.eval : options.train;
  if (sources.size() == 1 && is_testing_batches_path(sources[0].path) && world_size > 1) {
    throw core::UsageError(absl::StrCat("data.", eval ? "eval" : "train", ": ", sources[0].path, " is a testing batch "
                                        "file, which has no rank shares; with ", world_size, " ranks use a dataset "
                                        "(HDF5, JSONL or text) that data/'s loader splits across the ranks"));
  }
  if (sources.size() == 1 && is_testing_batches_path(sources[0].path)) {
    return std::make_unique<TokenBatchSource>(sources[0].path, micro_batch_size, vocab_size);
  }
  for (const data::DataSource& s : sources) {
    if (is_testing_batches_path(s.path)) {
      throw core::UsageError(absl::StrCat("data.", eval ? "eval" : "train", ": ", s.path,
                                          " is a testing batch file; it can only be the one source"));
    }
  }
  if (!tokenizer) {
    const std::string path = options.tokenizer ? *options.tokenizer : (fs::path(model_dir) / "tokenizer.json").string();
    if (!fs::exists(path)) {
      throw core::UsageError(absl::StrCat("data.tokenizer: ", path, " does not exist; set data.tokenizer to the "
                                          "tokenizer.json of the model"));
    }
    tokenizer = std::make_unique<data::Tokenizer>(data::Tokenizer::load(path));
  }
  // Rank r of W reads batch k's rows [(k·W + r)·B, +B) (data/sampler.h): W ranks of B see the rows 1 rank of W·B does.
  return data::open_batch_source(options, *tokenizer, micro_batch_size, seed, rank, world_size, eval,
                                 vocab_size);
}

// ─── set-up ──────────────────────────────────────────────────────────────────────────────────────────────────────

Trainer::Trainer(TrainerConfig config, dist::World* world) : config_(std::move(config)), world_(world) {
  if (world_ == nullptr) {
    own_world_ = dist::World::single_process();
    world_ = own_world_.get();
  }
}

Trainer::~Trainer() { restore_stop_handlers(); }

void Trainer::setup() {
  const TrainOptions& t = config_.train;
  const OutputOptions& o = config_.output;
  checkpoints_dir_ = (fs::path(o.dir) / "checkpoints").string();
  core::create_directories(o.dir);  // owner-only, as everything under it (core/file.h)
  // Rank 0 writes the run directory; the others share it (a shared filesystem across nodes, docs/distributed.md).
  if (world_->rank() == 0) {
    core::write_file_atomic((fs::path(o.dir) / "config.yaml").string(), config_.resolved_config_yaml);
  }

  // A fresh run's randomness (adapter init, dropout) starts from the seed; a resumed run restores the streams.
  at::manual_seed(t.seed);

  // The rank's device: the CPU, or GPU local_rank (train.device). Every rank must agree on the kind: an all-reduce
  // between a GPU rank and a CPU rank has no backend.
  device_ = choose_training_device(t.device, world_->local_rank(), visible_cuda_devices());
  {
    const std::vector<std::string> kinds =
        world_->all_gather(std::string(device_.is_cpu() ? "cpu" : "cuda"), "device kind");
    for (size_t r = 1; r < kinds.size(); ++r) {
      if (kinds[r] != kinds[0]) {
        throw core::UsageError(absl::StrCat("train.device: ", std::string(device_choice_name(t.device)),
                                            " gives rank 0 ", kinds[0], " but rank ", r, " ", kinds[r],
                                            "; give every rank a GPU, or set train.device: cpu"));
      }
    }
  }
  if (device_.is_cuda()) {
    // The rank's GPU becomes the thread's current device, so that everything not placed by a tensor (streams,
    // NCCL, the caching allocator's context) is on it too.
    c10::impl::getDeviceGuardImpl(c10::kCUDA)->setDevice(device_);
    core::log_info("training on ", device_.str(), " (train.device: ", std::string(device_choice_name(t.device)), ")");
  }

  // Base: frozen, in the compute dtype (bf16 or fp32), on the device; the adapters stay fp32 either way.
  model::LoadOptions load;
  load.dtype = t.precision;
  load.device = device_;
  model_ = model::Transformer::load(config_.model.path, load);
  model_->set_activation_checkpointing(config_.model.activation_checkpointing);
  base_config_sha256_ = core::sha256_file_hex((fs::path(config_.model.path) / "config.json").string());
  check_ranks_agree();
  adapters_ = adapters::AdapterSet::create(*model_, config_.adapter, t.seed);
  if ((o.export_kind == ExportKind::kMerged || o.export_kind == ExportKind::kBoth) &&
      !adapters_->residual_base_weights().empty()) {
    throw core::UsageError(absl::StrCat("output.export: ", std::string(export_kind_name(o.export_kind)), " with adapter.init ",
                                        config_.adapter.init, ": the adapter belongs on the residual base that init "
                                        "leaves, not on ", config_.model.path, "; use output.export: adapter"));
  }
  adapters_->set_training(true);
  // model.fused_kernels: LoRA projections as one autograd node each (the loss decides for itself, trainer/loss.h).
  const bool fused_kernels = use_fused_kernels(config_.model.fused_kernels, *model_);
  for (const adapters::AdapterSet::Entry& e : adapters_->entries()) e.adapter->set_fused(fused_kernels);
  kernels::set_fused_kernels_enabled(fused_kernels);  // RMSNorm forward and backward (kernels/rms_norm.h)
  adapters::set_lora_grouping(*model_, fused_kernels);  // q/k/v and gate/up share their A GEMM (adapters/lora_group.h)
  const at::ScalarType compute_dtype = model_->dtype();
  if (fused_kernels && (compute_dtype == at::kBFloat16 || compute_dtype == at::kHalf) &&
      model_->lm_head().weight().device().is_cpu()) {
    // Every rank sums its base GEMMs alike: rank 0's choice (each rank's own measurement may differ).
    const kernels::HalfGemmPath mine = kernels::half_gemm_path(compute_dtype, model_->config().hidden_size);
    const std::string chosen = world_->broadcast(std::string(kernels::half_gemm_path_name(mine)), 0, "16-bit GEMM path");
    half_gemm_path_ = kernels::half_gemm_path_from_name(chosen).value_or(kernels::HalfGemmPath::kNative);
    kernels::set_half_gemm_path(compute_dtype, *half_gemm_path_);
  }
  if (fused_kernels && model_->lm_head().weight().device().is_cpu()) {
    // The fp32 GEMMs (an fp32 model's, or a 16-bit model's float path) likewise: BLAS or oneDNN, rank 0's choice.
    const kernels::CpuGemmPath mine = kernels::cpu_gemm_path(model_->config().hidden_size);
    const std::string chosen = world_->broadcast(std::string(kernels::cpu_gemm_path_name(mine)), 0, "fp32 GEMM path");
    cpu_gemm_path_ =
        kernels::set_cpu_gemm_path(kernels::cpu_gemm_path_from_name(chosen).value_or(kernels::CpuGemmPath::kBlas));
  }
  {
    // Every rank starts from rank 0's adapter (inits are seeded alike, but an SVD-based init need not agree across
    // machines), and draws its own dropout masks: rank 0 keeps the seed's stream, so world size 1 is unchanged.
    std::vector<at::Tensor> params;
    std::vector<std::string> names;
    for (const io::NamedTensor& p : adapters_->parameters()) {
      params.push_back(p.tensor);
      names.push_back(p.name);
    }
    grad_buckets_.emplace(params, world_->options().bucket_mb << 20, names);
    at::NoGradGuard no_grad;
    for (const at::Tensor& p : params) world_->communicator(p.device()).broadcast_(p, 0, "adapter broadcast");
    if (world_->rank() > 0) at::manual_seed(t.seed + 1000003ULL * static_cast<uint64_t>(world_->rank()));
  }
  {
    const PeakFlops peak = matmul_peak_flops(io::to_scalar_type(t.precision), device_);
    peak_flops_ = peak.flops_per_s;
    core::log_info(absl::StrFormat("MFU: %.4g FLOP per token at T = %d (4N + 6N_lora + 12LHDT, trainer/flops.h); "
                                   "peak %.4g TFLOP/s (%s)",
                                   training_flops_per_token(model_->config(), adapters_->num_parameters(),
                                                            config_.data.seq_len),
                                   config_.data.seq_len, peak_flops_ / 1e12, peak.source));
  }

  AdamWOptions adamw;
  adamw.beta1 = t.betas[0];
  adamw.beta2 = t.betas[1];
  adamw.eps = t.eps;
  adamw.weight_decay = t.weight_decay;
  adamw.loraplus_lr_ratio = t.loraplus_lr_ratio;
  optimizer_.emplace(adapters_->parameters(), adamw);

  const int64_t vocab = model_->config().vocab_size;
  train_source_ = open_batch_source(config_.data, false, t.micro_batch_size, t.seed, vocab, config_.model.path,
                                    tokenizer_, world_->rank(), world_->size());
  if (!config_.data.eval.empty()) {
    eval_source_ = open_batch_source(config_.data, true, t.micro_batch_size, t.seed, vocab, config_.model.path,
                                     tokenizer_, world_->rank(), world_->size());
  }
  if (t.max_steps) {
    total_steps_ = *t.max_steps;
  } else {
    const int64_t per_epoch = train_source_->batches_per_epoch() / t.grad_accum_steps;
    if (per_epoch == 0) {
      throw core::UsageError(absl::StrCat("train.grad_accum_steps is ", t.grad_accum_steps, " but an epoch has only ",
                                          train_source_->batches_per_epoch(), " micro-batches"));
    }
    total_steps_ = *t.epochs * per_epoch;
  }
  schedule_ = {t.lr_schedule, t.warmup_steps, total_steps_, t.min_lr_ratio};

  std::optional<std::string> checkpoint = agree_on_checkpoint();
  if (checkpoint) {
    resume_from(*checkpoint);
  } else if (world_->rank() == 0) {
    // A run that starts over does not keep the metrics of an earlier one.
    std::error_code ec;
    fs::remove(fs::path(o.dir) / "metrics.jsonl", ec);
  }
  if (o.tensorboard && world_->rank() == 0) tensorboard_ = std::make_unique<TensorBoardWriter>(o.dir);
  install_stop_handlers();
}

// Start-up check across ranks: the same freehold, config and base model everywhere, else every rank stops with
// the first difference (a rank with another binary or config would train something else and still all-reduce).
void Trainer::check_ranks_agree() {
  json mine;
  mine["freehold"] = FREEHOLD_TRAINER_VERSION;
  mine["config_sha256"] = core::sha256_hex(config_.resolved_config_yaml);
  mine["base_model_config_sha256"] = base_config_sha256_;
  mine["base_model_parameters"] = model_->num_parameters();
  const std::vector<std::string> all = world_->all_gather(mine.dump(), "start-up check");
  std::vector<std::string> differences;
  const json first = json::parse(all[0]);
  for (size_t r = 1; r < all.size(); ++r) {
    const json other = json::parse(all[r]);
    for (const auto& [key, value] : first.items()) {
      if (other.at(key) != value) {
        differences.push_back(absl::StrCat(key, ": rank 0 has ", value.dump(), ", rank ", r, " has ", other.at(key).dump()));
      }
    }
  }
  if (!differences.empty()) {
    throw core::UsageError(absl::StrCat("the ranks of this job differ:\n  ", absl::StrJoin(differences, "\n  "),
                                        "\nStart every rank with the same freehold binary, config (and overrides) "
                                        "and model.path"));
  }
  if (world_->size() > 1) {
    core::log_info("world size ", world_->size(), ": ranks agree on freehold ", FREEHOLD_TRAINER_VERSION, ", config ",
                   first["config_sha256"].get<std::string>().substr(0, 12), " and base model ",
                   base_config_sha256_.substr(0, 12));
  }
}

// The resume point: rank 0 alone scans (the scan removes uncommitted directories) and tells the others.
std::optional<std::string> Trainer::agree_on_checkpoint() {
  std::string found;
  std::string problem;
  if (world_->rank() == 0) {
    try {
      if (config_.resume == ResumeMode::kAuto) {
        found = find_latest_checkpoint(checkpoints_dir_).value_or("");
      } else if (config_.resume == ResumeMode::kPath) {
        problem = check_checkpoint(config_.resume_path);
        if (!problem.empty()) {
          problem = absl::StrCat("resume: ", config_.resume_path, " is not a committed checkpoint: ", problem);
        }
        found = config_.resume_path;
      }
    } catch (const core::Error& e) {
      problem = e.what();
    }
  }
  // "\n" cannot start a path: it separates the problem (if any) from the checkpoint.
  const std::string agreed = world_->broadcast(absl::StrCat(problem, "\n", found), 0, "resume point");
  const size_t cut = agreed.find('\n');
  if (cut > 0) throw core::UsageError(agreed.substr(0, cut));
  if (agreed.size() == cut + 1) return std::nullopt;
  return agreed.substr(cut + 1);
}

// ─── the loop ────────────────────────────────────────────────────────────────────────────────────────────────────

TrainOutcome Trainer::train() {
  const TrainOptions& t = config_.train;
  const OutputOptions& o = config_.output;
  start_ = std::chrono::steady_clock::now();
  start_step_ = step_;
  core::log_info("training steps ", step_ + 1, " to ", total_steps_, " (", t.grad_accum_steps, " micro-batches of ",
                 t.micro_batch_size, " sequences per step)");
  while (step_ < total_steps_) {
    StepResult r = train_step();
    ++step_;
    tokens_seen_ += r.tokens;
    if (r.applied) {
      consecutive_nonfinite_ = 0;
    } else {
      ++skipped_steps_;
      ++consecutive_nonfinite_;
      core::log_warning("step ", step_, ": non-finite ", std::isfinite(r.loss) ? "gradient" : "loss",
                        " (loss ", r.loss, ", grad norm ", r.grad_norm, "); update skipped (", skipped_steps_,
                        " skipped so far)");
    }
    if (world_->rank() == 0 && o.log_every > 0 && (step_ % o.log_every == 0 || step_ == total_steps_ || !r.applied)) {
      log_step(r);
    }
    if (!r.applied && t.nonfinite == NonfinitePolicy::kAbort) {
      throw core::Error(absl::StrCat("step ", step_, ": non-finite loss or gradient and train.nonfinite is abort; the "
                                     "newest committed checkpoint under ", checkpoints_dir_, " is intact"));
    }
    if (consecutive_nonfinite_ >= t.max_consecutive_nonfinite) {
      throw core::Error(absl::StrCat(consecutive_nonfinite_, " consecutive non-finite steps (train.max_consecutive_"
                                     "nonfinite is ", t.max_consecutive_nonfinite, "); stopping. Nothing non-finite "
                                     "was applied; the newest committed checkpoint under ", checkpoints_dir_,
                                     " is intact. Lower train.lr or check the data"));
    }
    if (t.eval_every > 0 && step_ % t.eval_every == 0) evaluate();
    if (o.save_every > 0 && step_ % o.save_every == 0) save();
    // Every rank stops at the same step: a signal that reached any rank stops them all (D7).
    const int64_t stop_signal = world_->all_reduce_max(static_cast<int64_t>(g_stop_signal), "stop flag");
    if (stop_signal != 0) {
      core::log_warning("signal ", stop_signal, g_stop_signal != 0 ? "" : " (on another rank)",
                        ": checkpointing at step ", step_, " and exiting");
      if (last_saved_step_ != step_) save();
      return TrainOutcome::kStopped;
    }
  }
  if (last_saved_step_ != step_) save();
  return TrainOutcome::kCompleted;
}

data::Batch Trainer::next_batch() {
  std::optional<data::Batch> batch = train_source_->next();
  if (!batch) batch = train_source_->next();  // the epoch ended: the next call starts the next one
  if (!batch) throw core::DataError("data.train: the training data yields no micro-batch");
  return std::move(*batch);
}

// ─── one optimizer step ──────────────────────────────────────────────────────────────────────────────────────────

Trainer::StepResult Trainer::train_step() {
  const TrainOptions& t = config_.train;
  StepResult r;
  const double factor = lr_factor(schedule_, step_);
  r.lr = t.lr * factor;
  StepTimer timer;
  timer.start();

  timer.enter(StepPhase::kData);
  std::vector<data::Batch> micro;
  for (int64_t i = 0; i < t.grad_accum_steps; ++i) micro.push_back(next_batch());
  seq_len_ = micro.front().input_ids.size(1);
  for (const data::Batch& b : micro) {
    r.targets += b.num_target_tokens;
    r.tokens += b.input_ids.numel();
  }
  // The step's counts over all ranks: the global target count is the loss denominator (token-weighted across
  // micro-batches and ranks; a rank whose micro-batches have no targets still takes part, R7).
  timer.enter(StepPhase::kComm);
  const std::vector<int64_t> counts = world_->all_reduce_sum(std::vector<int64_t>{r.targets, r.tokens}, "step token counts");
  r.targets = counts[0];
  r.tokens = counts[1];
  const int64_t step_targets = r.targets;

  // Gradients are summed over the ranks once per step, in buckets: armed before the last micro-batch's backward
  // pass, a bucket's reduction starts as soon as its gradients are accumulated, overlapping the rest of that pass
  // (dist/grad_buckets.h); the earlier micro-batches only accumulate. The loss is already divided by the global
  // target count, so the sum is the gradient of the global mean.
  dist::Communicator& gradient_communicator = world_->communicator(grad_buckets_->device());
  bool armed = false;
  double loss_sum = 0;
  for (size_t i = 0; i < micro.size(); ++i) {
    if (micro[i].num_target_tokens == 0) continue;  // contributes exactly 0 (R7)
    timer.enter(StepPhase::kForward);
    const data::Batch b = on_device(micro[i], device_);
    // The LM head and the loss together (trainer/loss.h): with fused kernels the (B, T, V) logits never exist whole.
    at::Tensor loss = model_sum_cross_entropy(*model_, {b.input_ids, b.position_ids, b.segment_ids}, b.labels,
                                              config_.model.fused_kernels) /
                      static_cast<double>(std::max<int64_t>(1, step_targets));
    timer.enter(StepPhase::kBackward);
    if (i + 1 == micro.size()) {
      grad_buckets_->arm(gradient_communicator, "gradient all-reduce");
      armed = true;
    }
    loss.backward();
    loss_sum += loss.item<double>();
  }
  timer.enter(StepPhase::kComm);
  if (!armed) grad_buckets_->arm(gradient_communicator, "gradient all-reduce");  // no targets in the last micro-batch
  grad_buckets_->finish_();
  r.loss = world_->all_reduce_sum(std::vector<double>{loss_sum}, "step loss")[0];
  timer.enter(StepPhase::kOptimizer);
  r.grad_norm = clip_grad_norm(optimizer_->params(), t.max_grad_norm);
  // Every rank applies or skips the update together (N1, N2): the decision is all-reduced, never local.
  r.applied = world_->all_ok(std::isfinite(r.loss) && std::isfinite(r.grad_norm), "finite check");
  if (r.applied) optimizer_->step(t.lr, factor);
  optimizer_->zero_grad();
  r.times = timer.stop();
  return r;
}

// ─── evaluation ──────────────────────────────────────────────────────────────────────────────────────────────────

void Trainer::evaluate() {
  if (!eval_source_) return;
  at::NoGradGuard no_grad;
  adapters_->set_training(false);
  eval_source_->seek({});
  double nll = 0;
  int64_t targets = 0, batches = 0;
  for (; batches < config_.train.eval_batches; ++batches) {
    std::optional<data::Batch> next = eval_source_->next();
    if (!next) break;
    if (next->num_target_tokens == 0) continue;
    const data::Batch b = on_device(*next, device_);
    nll += model_sum_cross_entropy(*model_, {b.input_ids, b.position_ids, b.segment_ids}, b.labels,
                                   config_.model.fused_kernels)
               .item<double>();
    targets += b.num_target_tokens;
  }
  adapters_->set_training(true);
  // Each rank evaluated its share of the eval rows; the totals are over all ranks (rank 0 reports them).
  const std::vector<double> totals = world_->all_reduce_sum(
      std::vector<double>{nll, static_cast<double>(targets), static_cast<double>(batches)}, "eval loss");
  nll = totals[0];
  targets = static_cast<int64_t>(totals[1]);
  batches = static_cast<int64_t>(totals[2]);
  if (world_->rank() != 0) return;
  const double loss = targets > 0 ? nll / static_cast<double>(targets) : 0.0;
  core::log_info(absl::StrFormat("eval step %d | loss %.4f | ppl %.3f | %d batches, %d tokens", step_, loss,
                                 std::exp(loss), batches, targets));
  json record;
  record["step"] = step_;
  record["eval_loss"] = loss;
  record["eval_ppl"] = std::exp(loss);
  record["eval_tokens"] = targets;
  append_metrics(record);
  if (tensorboard_) {
    tensorboard_->add_scalar("eval/loss", loss, step_);
    tensorboard_->add_scalar("eval/perplexity", std::exp(loss), step_);
    tensorboard_->flush();
  }
}

// ─── checkpoints ─────────────────────────────────────────────────────────────────────────────────────────────────

json Trainer::hyperparameters() const {
  const TrainOptions& t = config_.train;
  json h;
  h["seed"] = t.seed;
  h["micro_batch_size"] = t.micro_batch_size;
  h["grad_accum_steps"] = t.grad_accum_steps;
  h["total_steps"] = total_steps_;
  h["lr"] = t.lr;
  h["betas"] = {t.betas[0], t.betas[1]};
  h["eps"] = t.eps;
  h["weight_decay"] = t.weight_decay;
  h["loraplus_lr_ratio"] = t.loraplus_lr_ratio ? json(*t.loraplus_lr_ratio) : json(nullptr);
  h["lr_schedule"] = std::string(lr_schedule_name(t.lr_schedule));
  h["warmup_steps"] = t.warmup_steps;
  h["min_lr_ratio"] = t.min_lr_ratio;
  h["max_grad_norm"] = t.max_grad_norm;
  h["precision"] = std::string(core::dtype_name(t.precision));
  h["dropout"] = config_.adapter.dropout;
  std::vector<std::string> train_paths;
  for (const auto& s : config_.data.train) train_paths.push_back(s.path);
  h["data.train"] = train_paths;
  h["seq_len"] = config_.data.seq_len;
  return h;
}

// The dropout streams: the CPU generator always, and the GPU's when training there (dropout masks of CUDA
// tensors come from the device's generator).
json Trainer::rng_state() const {
  json rng;
  rng["cpu"] = generator_state_hex(c10::Device(c10::kCPU));
  if (device_.is_cuda()) rng["cuda"] = generator_state_hex(device_);
  return rng;
}

// rng_state() back into the generators; streams of a device this run does not use are left, with a warning.
void Trainer::restore_rng_state(const nlohmann::json& rng, const std::string& origin) {
  set_generator_state_hex(c10::Device(c10::kCPU), rng.at("cpu").get<std::string>(), origin);
  const bool saved_cuda = rng.contains("cuda");
  if (device_.is_cuda() && saved_cuda) {
    set_generator_state_hex(device_, rng.at("cuda").get<std::string>(), origin);
  } else if (device_.is_cuda() != saved_cuda) {
    core::log_warning("resume: ", origin, " was written by a run on ", saved_cuda ? "a GPU" : "the CPU", "; on ",
                      device_.str(), " the dropout masks now differ from an uninterrupted run");
  }
}

// This rank's part of a checkpoint: its data position and RNG streams, and the step and directory it is about to
// write (all ranks must agree on those, C8).
json Trainer::rank_state() const {
  json r;
  r["rank"] = world_->rank();
  r["step"] = step_;
  r["checkpoints_dir"] = checkpoints_dir_;
  const data::DataPosition pos = train_source_->position();
  r["data_position"] = {{"epoch", pos.epoch}, {"sample_index", pos.sample_index}};
  r["rng"] = rng_state();
  return r;
}

json Trainer::trainer_state(const json& ranks) const {
  json s;
  s["format"] = "freehold.trainer_state";
  s["version"] = kCheckpointFormatVersion;
  s["step"] = step_;
  s["total_steps"] = total_steps_;
  s["tokens_seen"] = tokens_seen_;
  s["skipped_steps"] = skipped_steps_;
  s["consecutive_nonfinite"] = consecutive_nonfinite_;
  const data::DataPosition pos = train_source_->position();
  s["data_position"] = {{"epoch", pos.epoch}, {"sample_index", pos.sample_index}};
  s["data_fingerprints"] = data::fingerprint_sources(config_.data.train);  // checked on resume (R9)
  s["rng"] = rng_state();
  s["world_size"] = world_->size();
  s["ranks"] = ranks;  // every rank's rank_state(), by rank; "data_position" and "rng" above are rank 0's
  s["config_sha256"] = core::sha256_hex(config_.resolved_config_yaml);
  s["base_model"] = {{"path", config_.model.path}, {"config_sha256", base_config_sha256_},
                     {"num_parameters", model_->num_parameters()}};
  s["hyperparameters"] = hyperparameters();
  if (half_gemm_path_) s["half_gemm"] = std::string(kernels::half_gemm_path_name(*half_gemm_path_));
  if (cpu_gemm_path_) s["fp32_gemm"] = std::string(kernels::cpu_gemm_path_name(*cpu_gemm_path_));
  const double elapsed =
      elapsed_before_s_ + std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  s["elapsed_s"] = elapsed;
  return s;
}

// Every rank: gather the rank states. Rank 0: write the replicated adapter and optimizer state and the gathered
// trainer state; commit (rename) only after every rank has reported success (C7); then tell the others whether the
// commit happened. Each rank takes part in exactly two votes, whatever fails where.
void Trainer::save() {
  const std::vector<std::string> gathered = world_->all_gather(rank_state().dump(), "checkpoint rank states");
  json ranks = json::array();
  for (const std::string& g : gathered) ranks.push_back(json::parse(g));
  for (const json& r : ranks) {
    if (r.at("step") != ranks[0].at("step") || r.at("checkpoints_dir") != ranks[0].at("checkpoints_dir")) {
      throw core::Error(absl::StrCat("checkpoint: rank ", r.at("rank").dump(), " would save step ", r.at("step").dump(),
                                     " under ", r.at("checkpoints_dir").dump(), ", rank 0 step ",
                                     ranks[0].at("step").dump(), " under ", ranks[0].at("checkpoints_dir").dump(),
                                     "; nothing written (the ranks must share output.dir)"));
    }
  }
  if (world_->rank() != 0) {
    const bool written = world_->all_ok(true, "checkpoint write");
    const bool committed = world_->all_ok(true, "checkpoint commit");
    if (!written || !committed) {
      throw core::Error(absl::StrCat("checkpoint step ", step_, " was not committed (rank 0 says why); the newest "
                                     "committed checkpoint under ", checkpoints_dir_, " is intact"));
    }
    last_saved_step_ = step_;
    return;
  }
  const json state = trainer_state(ranks);
  bool voted = false;
  std::string dir;
  try {
    dir = commit_checkpoint(
        checkpoints_dir_, step_,
        [&](const std::string& tmp) {
          adapters_->save(tmp);
          optimizer_->save((fs::path(tmp) / kOptimizerFile).string());
          core::write_file_atomic((fs::path(tmp) / kTrainerStateFile).string(), state.dump(2) + "\n");
        },
        config_.output.keep_last,
        [&] {
          voted = true;
          if (!world_->all_ok(true, "checkpoint write")) throw core::Error("checkpoint: another rank failed");
        });
  } catch (...) {
    if (!world_->lost()) {
      try {
        if (!voted) world_->all_ok(false, "checkpoint write");
        world_->all_ok(false, "checkpoint commit");
      } catch (const std::exception& e) {
        core::log_warning(e.what());
      }
    }
    throw;
  }
  world_->all_ok(true, "checkpoint commit");
  last_saved_step_ = step_;
  core::log_info("checkpoint ", dir, " committed");
}

// ─── resume ──────────────────────────────────────────────────────────────────────────────────────────────────────

void Trainer::resume_from(const std::string& dir) {
  if (std::string missing = missing_for_resume(dir); !missing.empty()) throw core::UsageError(missing);
  const std::string state_path = (fs::path(dir) / kTrainerStateFile).string();
  nlohmann::json s;
  try {
    s = nlohmann::json::parse(core::read_file(state_path, 64 << 20));
    if (s.at("format") != "freehold.trainer_state") throw std::runtime_error("not a freehold trainer state");
    if (s.at("version").get<int64_t>() != kCheckpointFormatVersion) {
      throw core::FormatError(absl::StrCat(state_path, ": version ", s.at("version").dump(), "; this freehold reads ",
                                           kCheckpointFormatVersion));
    }
  } catch (const core::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw core::FormatError(absl::StrCat(state_path, ": ", e.what()));
  }
  // Structural mismatches are fatal (C11, C12): the checkpoint cannot continue this run.
  std::vector<std::string> problems;
  // Another world size continues from the same global sample position (C11), but not bit for bit.
  const int64_t saved_world_size = s.at("world_size").get<int64_t>();
  if (saved_world_size != world_->size()) {
    core::log_warning("resume: the checkpoint was trained by ", saved_world_size, " ranks, this run has ",
                      world_->size(), "; continuing from the same global sample position (epoch ",
                      s.at("data_position").at("epoch").dump(), ", sample ", s.at("data_position").at("sample_index").dump(),
                      "), but results now differ from an uninterrupted run (other dropout streams and summation order)");
  }
  const auto& base = s.at("base_model");
  if (base.at("config_sha256").get<std::string>() != base_config_sha256_ ||
      base.at("num_parameters").get<int64_t>() != model_->num_parameters()) {
    problems.push_back(absl::StrCat("base model: checkpoint trained ", base.at("path").dump(), " (config.json sha256 ",
                                    base.at("config_sha256").get<std::string>().substr(0, 12), ", ",
                                    base.at("num_parameters").dump(), " parameters), this run loads \"",
                                    config_.model.path, "\" (", base_config_sha256_.substr(0, 12), ", ",
                                    model_->num_parameters(), " parameters)"));
  } else if (base.at("path").get<std::string>() != config_.model.path) {
    core::log_warning("resume: the base model moved from ", base.at("path").dump(), " to ", config_.model.path,
                      " (same config.json)");
  }
  const std::string adapter_config_path = (fs::path(dir) / io::kAdapterConfigFile).string();
  io::PeftAdapterConfig saved =
      io::parse_peft_adapter_config(core::read_file(adapter_config_path, 16 << 20), adapter_config_path);
  for (const std::string& d : adapter_differences(saved, adapters_->config())) problems.push_back("adapter " + d);
  if (!problems.empty()) {
    throw core::UsageError(absl::StrCat("resume: checkpoint ", dir, " does not fit this config:\n  ",
                                        absl::StrJoin(problems, "\n  "),
                                        "\nUse the config it was trained with, another output.dir, or resume: never"));
  }
  // The data position means something only for the same data (R9): changed data is refused.
  data::check_resume_data(s, config_.data.train, state_path);
  // Hyperparameter changes are allowed, with a warning each (C12).
  const nlohmann::json saved_h = s.at("hyperparameters");
  const nlohmann::json now_h = nlohmann::json::parse(hyperparameters().dump());
  for (const auto& [key, value] : now_h.items()) {
    if (!saved_h.contains(key) || saved_h[key] != value) {
      core::log_warning("resume: ", key, " changed from ", saved_h.contains(key) ? saved_h[key].dump() : "(absent)",
                        " to ", value.dump());
    }
  }

  // Adapter weights into the tensors the optimizer already holds.
  {
    at::NoGradGuard no_grad;
    const std::string weights_path = (fs::path(dir) / io::kAdapterWeightsFile).string();
    auto file = io::SafetensorsFile::open(weights_path);
    std::vector<io::NamedTensor> params = adapters_->parameters();
    if (file->names().size() != params.size()) {
      throw core::FormatError(absl::StrCat(weights_path, ": ", file->names().size(), " tensors; this adapter has ",
                                           params.size()));
    }
    for (io::NamedTensor& p : params) {
      if (!file->contains(p.name)) throw core::FormatError(absl::StrCat(weights_path, ": \"", p.name, "\" is missing"));
      at::Tensor w = file->tensor(p.name);
      if (w.sizes() != p.tensor.sizes() || w.scalar_type() != at::kFloat) {
        throw core::FormatError(absl::StrCat(weights_path, ": \"", p.name, "\" is ", c10::toString(w.scalar_type()),
                                             " [", absl::StrJoin(w.sizes(), ","), "]; expected Float [",
                                             absl::StrJoin(p.tensor.sizes(), ","), "]"));
      }
      p.tensor.copy_(w);
    }
  }
  optimizer_->load((fs::path(dir) / kOptimizerFile).string());
  // The base GEMMs sum as they did before the interruption (bit-exact resume), unless the environment says else.
  if (half_gemm_path_) {
    half_gemm_path_ = resumed_gemm_path(s, "half_gemm", "FREEHOLD_HALF_GEMM", *half_gemm_path_,
                                        &kernels::half_gemm_path_name, &kernels::half_gemm_path_from_name,
                                        "16-bit GEMMs");
    kernels::set_half_gemm_path(model_->dtype(), *half_gemm_path_);
  }
  if (cpu_gemm_path_) {
    cpu_gemm_path_ = resumed_gemm_path(s, "fp32_gemm", "FREEHOLD_FP32_GEMM", *cpu_gemm_path_,
                                       &kernels::cpu_gemm_path_name, &kernels::cpu_gemm_path_from_name, "fp32 GEMMs");
    cpu_gemm_path_ = kernels::set_cpu_gemm_path(*cpu_gemm_path_);
  }

  step_ = s.at("step").get<int64_t>();
  tokens_seen_ = s.at("tokens_seen").get<int64_t>();
  skipped_steps_ = s.at("skipped_steps").get<int64_t>();
  consecutive_nonfinite_ = s.at("consecutive_nonfinite").get<int64_t>();
  elapsed_before_s_ = s.at("elapsed_s").get<double>();
  data::DataPosition pos;
  pos.epoch = s.at("data_position").at("epoch").get<int64_t>();
  pos.sample_index = s.at("data_position").at("sample_index").get<int64_t>();
  train_source_->seek(pos);
  // This rank's RNG streams; a rank the checkpoint did not have keeps its fresh per-rank stream (see setup()).
  const size_t rank = static_cast<size_t>(world_->rank());
  if (s.contains("ranks") && s["ranks"].is_array() && rank < s["ranks"].size()) {
    restore_rng_state(s["ranks"][rank].at("rng"), state_path);
  } else if (rank == 0) {
    restore_rng_state(s.at("rng"), state_path);
  }
  last_saved_step_ = step_;

  // metrics.jsonl keeps the records up to the checkpoint: steps after it will be trained (and logged) again.
  const fs::path metrics = fs::path(config_.output.dir) / "metrics.jsonl";
  if (world_->rank() == 0 && fs::exists(metrics)) {
    std::ifstream in(metrics);
    std::string line, kept;
    while (std::getline(in, line)) {
      try {
        if (nlohmann::json::parse(line).at("step").get<int64_t>() <= step_) absl::StrAppend(&kept, line, "\n");
      } catch (const std::exception&) {
        // a torn last line of a killed run
      }
    }
    core::write_file_atomic(metrics.string(), kept);
  }
  core::log_info("resumed from ", dir, " at step ", step_, " (", tokens_seen_, " tokens seen)");
}

// ─── logging ─────────────────────────────────────────────────────────────────────────────────────────────────────

void Trainer::append_metrics(const json& record) {
  const std::string path = (fs::path(config_.output.dir) / "metrics.jsonl").string();
  core::create_file_if_missing(path);
  std::ofstream out(path, std::ios::app);
  out << record.dump() << "\n";
  out.flush();
  if (!out) throw core::SystemError("write " + path, errno);
}

void Trainer::log_step(const StepResult& r) {
  const double elapsed_now = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const int64_t steps_now = step_ - start_step_;
  const double tokens_per_s = elapsed_now > 0 ? static_cast<double>(tokens_seen_) / (elapsed_before_s_ + elapsed_now) : 0;
  const double eta = steps_now > 0 ? elapsed_now / steps_now * static_cast<double>(total_steps_ - step_) : NAN;
  // N3: a loss far above the recent ones is flagged (never skipped silently).
  bool spike = false;
  if (std::isfinite(r.loss)) {
    if (recent_losses_.size() >= 5) {
      spike = r.loss > 10 * *std::max_element(recent_losses_.begin(), recent_losses_.end());
    }
    recent_losses_.push_back(r.loss);
    if (recent_losses_.size() > 50) recent_losses_.pop_front();
  }
  if (spike) core::log_warning("step ", step_, ": loss ", r.loss, " is over 10x the recent maximum");
  const double mfu = model_flops_utilization(
      tokens_per_s, training_flops_per_token(model_->config(), adapters_->num_parameters(), seq_len_), peak_flops_);
  core::log_info(absl::StrFormat("step %d/%d | loss %.4f | lr %.3e | grad norm %.3f | %.0f tok/s | mfu %.1f%% | eta %s | rss %.2f GiB%s",
                                 step_, total_steps_, r.loss, r.lr, r.grad_norm, tokens_per_s, 100 * mfu, duration_text(eta),
                                 peak_rss_gib(), r.applied ? "" : " | SKIPPED"));
  json record;
  record["step"] = step_;
  record["loss"] = std::isfinite(r.loss) ? json(r.loss) : json(nullptr);
  record["lr"] = r.lr;
  record["grad_norm"] = std::isfinite(r.grad_norm) ? json(r.grad_norm) : json(nullptr);
  record["tokens"] = tokens_seen_;
  record["target_tokens"] = r.targets;
  record["tokens_per_s"] = tokens_per_s;
  record["mfu"] = mfu;
  record["elapsed_s"] = elapsed_before_s_ + elapsed_now;
  record["skipped"] = skipped_steps_;
  record["time_s"] = step_times_json(r.times);
  if (spike) record["loss_spike"] = true;
  append_metrics(record);
  if (tensorboard_) {
    if (std::isfinite(r.loss)) tensorboard_->add_scalar("train/loss", r.loss, step_);
    tensorboard_->add_scalar("train/lr", r.lr, step_);
    if (std::isfinite(r.grad_norm)) tensorboard_->add_scalar("train/grad_norm", r.grad_norm, step_);
    tensorboard_->add_scalar("train/tokens_per_s", tokens_per_s, step_);
    tensorboard_->add_scalar("train/mfu", mfu, step_);
    tensorboard_->add_scalar("train/skipped_steps", static_cast<double>(skipped_steps_), step_);
    tensorboard_->flush();
  }
}

// ─── the end ─────────────────────────────────────────────────────────────────────────────────────────────────────

void Trainer::finish() {
  const OutputOptions& o = config_.output;
  // adapter/ is written for every export but none: merged/ is made from it. The adapter is replicated: rank 0 writes.
  if (o.export_kind != ExportKind::kNone && world_->rank() == 0) {
    const std::string adapter_dir = (fs::path(o.dir) / "adapter").string();
    core::create_directories(adapter_dir);
    adapters_->save(adapter_dir);
    core::log_info("adapter written to ", adapter_dir, " (PEFT format)");
    if (o.export_kind == ExportKind::kMerged || o.export_kind == ExportKind::kBoth) {
      adapters::MergedExportOptions merge;
      merge.base_dir = config_.model.path;
      merge.adapter_dir = adapter_dir;
      merge.out_dir = (fs::path(o.dir) / "merged").string();
      merge.dtype = o.export_dtype;
      merge.overwrite = true;
      const adapters::MergedExportSummary summary = adapters::export_merged_model(merge);
      core::log_info("merged model written to ", merge.out_dir, " (", summary.merged, " of ", summary.tensors,
                     " tensors merged, ", std::string(core::dtype_name(summary.dtype)), ")");
    }
  }
  // The loss curve is a convenience: a run whose weights are saved does not fail over its picture. Rank 0 draws it.
  try {
    if (world_->rank() == 0) core::log_info("loss curve written to ", write_loss_curve(o.dir));
  } catch (const std::exception& e) {
    core::log_warning("no loss curve: ", e.what());
  }
  restore_stop_handlers();
}

}  // namespace freehold::trainer
