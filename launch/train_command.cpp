// `freehold train CONFIG.yaml [KEY=VALUE ...]`: one training run (trainer/trainer.h) from a run config. Exit codes:
// 0 done, 2 config error, 3 bad data, 4 a peer rank lost or a collective past dist.timeout_s, 75 stopped by
// SIGUSR1/SIGTERM after a committed checkpoint (requeue me). Under mpirun / srun every rank runs this; the World
// (dist/world.h) is bootstrapped here, before anything else, so that log lines carry the rank.
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "core/log.h"
#include "dist/world.h"
#include "launch/commands.h"
#include "launch/run_config.h"
#include "trainer/trainer.h"

namespace freehold::launch {

trainer::TrainerConfig trainer_config_from(const RunConfig& config) {
  trainer::TrainerConfig t;
  t.model = config.model;
  t.adapter = config.adapter;
  t.data = config.data;
  t.train = config.train;
  t.output = config.output;
  switch (config.resume.mode) {
    case ResumeOptions::Mode::kAuto: t.resume = trainer::ResumeMode::kAuto; break;
    case ResumeOptions::Mode::kNever: t.resume = trainer::ResumeMode::kNever; break;
    case ResumeOptions::Mode::kPath: t.resume = trainer::ResumeMode::kPath; break;
  }
  t.resume_path = config.resume.path;
  t.resolved_config_yaml = run_config_to_yaml(config);
  return t;
}

int run_train(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::printf(
        "usage: freehold train CONFIG.yaml [SECTION.KEY=VALUE ...]\n\n"
        "Fine-tunes the config's model with LoRA. Output in output.dir (default runs/<config name>): config.yaml,\n"
        "metrics.jsonl, checkpoints/step-NNNNNN/, and the final PEFT adapter in adapter/. With resume: auto (the\n"
        "default) a run continues from its newest committed checkpoint. SIGUSR1 or SIGTERM: checkpoint at the next\n"
        "step boundary and exit 75. Every key: configs/README.md.\n\n"
        "Data-parallel: `mpirun -np N freehold train CONFIG.yaml` or `srun freehold train CONFIG.yaml`; a lost rank\n"
        "or a collective past dist.timeout_s ends every rank with exit code 4 (docs/distributed.md).\n");
    return args.empty() ? 2 : 0;
  }
  RunConfig config = load_run_config(args[0], std::vector<std::string>(args.begin() + 1, args.end()));
  std::unique_ptr<dist::World> world = dist::World::bootstrap(config.dist);
  core::set_log_rank(world->rank(), world->size());
  // Every rank says where it stands, so a launcher's view (SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS) can be checked.
  core::log_info("rank ", world->rank(), " of ", world->size(), ", local rank ", world->local_rank());
  trainer::Trainer trainer(trainer_config_from(config), world.get());
  trainer.setup();
  const trainer::TrainOutcome outcome = trainer.train();
  if (outcome == trainer::TrainOutcome::kStopped) return static_cast<int>(core::ExitCode::kRequeue);
  trainer.finish();
  return 0;
}

}  // namespace freehold::launch
