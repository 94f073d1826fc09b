// The commands the training engine executes (framework/engine): `tlab run`, `tlab _run`,
// `tlab config` and `tlab plugins`. Their options are defined and parsed here, in the front, so
// that `tlab --help`, `tlab run --help` and every usage error answer without loading LibTorch;
// the parsed arguments then go to the engine, opened on first need (engine_client.hpp).

#include <filesystem>
#include <iostream>
#include <memory>

#include <fmt/format.h>

#include "config/compose.hpp"
#include "engine_client.hpp"
#include "results_cli.hpp"

namespace tlab::cli {

namespace fs = std::filesystem;

void add_engine_commands(CLI::App& app, std::vector<Command>& out,
                         std::shared_ptr<engine::Globals> globals) {
  // tlab run
  auto r = std::make_shared<engine::RunArgs>();
  r->db = "results/results.db";
  r->spawn = "auto";
  r->grace = "10s";
  auto* run = app.add_subcommand("run", "Run an experiment: one run, or every run of its sweep");
  auto run_help = std::make_shared<bool>(false);
  run->set_help_flag();  // --help also lists the experiment's config groups (below)
  run->add_flag("-h,--help", *run_help, "Print this help and the config groups of EXPERIMENT");
  run->add_option("experiment", r->experiment, "Experiment TOML file");
  run->add_option("overrides", r->overrides,
                  "Overrides: key=value, +key=value, ++key=value, ~key, group=option, "
                  "group@package=option; with -m also sweeps a,b,c / range() / choice() / "
                  "glob() / zip() (see docs/configuration.md)");
  run->add_flag("-m,--multirun", r->multirun, "Allow sweeps in the overrides (one run per value)");
  run->add_flag("--dry-run", r->dry_run, "List the runs with their overrides; run nothing");
  run->add_option("--config-dir", r->config_dirs,
                  "Extra folder of config groups (repeatable; searched after the experiment's "
                  "folder, before ./experiments)");
  run->add_option("--db", r->db, "Results database")->capture_default_str();
  run->add_option("--threads", r->threads,
                  "LibTorch intra-op threads per run (0 = cores / runs at once)")
      ->check(CLI::Range(0, 1024));
  run->add_option("-j,--jobs", r->jobs, "Runs at once, each in its own process")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  run->add_option("--timeout", r->timeout,
                  "Wall-clock limit per run: seconds, or with a unit (90s, 30m, 2h); then the "
                  "run gets SIGTERM and, after --grace, SIGKILL; status timeout");
  run->add_option("--grace", r->grace,
                  "Time a stopped run gets to flush and exit before SIGKILL (Ctrl-C, timeout)")
      ->capture_default_str();
  run->add_flag("--rerun", r->rerun,
                "Run again the runs already finished with the same config and plugin builds "
                "(default: skip them, so an interrupted sweep resumes)");
  run->add_option("--gpus", r->gpus,
                  "GPU ids to hand out round-robin as CUDA_VISIBLE_DEVICES, e.g. 0,1,2,3 "
                  "(default: every visible GPU when a run's device is not cpu)");
  run->add_option("--spawn", r->spawn,
                  "How a run's process starts: exec (a fresh tlab), fork (a copy of this "
                  "process, without reloading LibTorch: ~0.5 s less per run; CPU runs only) or "
                  "auto (fork when every run is on the CPU, else exec)")
      ->check(CLI::IsMember({"auto", "exec", "fork"}))
      ->capture_default_str();
  run->add_option("--runs-per-gpu", r->runs_per_gpu, "Runs sharing one GPU at once")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  run->add_option("--launcher", r->launcher,
                  "Where the runs execute: local (child processes here, the default) or slurm "
                  "(one job array; sets launcher.name, options in [launcher] or the config "
                  "group launcher=slurm; see docs/cluster.md)")
      ->check(CLI::IsMember({"local", "slurm"}));
  run->add_flag("--in-process", r->in_process,
                "Run each run in this process, one after another, without a child process: "
                "for gdb, valgrind and sanitizers (no crash isolation, no --timeout)");
  auto sweeper = std::make_shared<std::string>();
  auto trials = std::make_shared<int64_t>(0);
  auto nproc = std::make_shared<int64_t>(0);
  run->add_option("--nproc", *nproc,
                  "Processes (ranks) that train each run together, data-parallel through c10d "
                  "(= run.processes; train.batch_size stays the global batch); each takes a "
                  "--jobs slot")
      ->check(CLI::Range(1, 1024));
  run->add_option("--sweeper", *sweeper,
                  "How a sweep chooses its runs: grid (every combination), random "
                  "(sweep.samples draws) or optuna (sweep.samples trials asked from an Optuna "
                  "study, TPE by default; objective and study in [sweep.optuna]; see "
                  "docs/configuration.md). Same as the override sweep.sweeper=NAME");
  run->add_option("--trials", *trials,
                  "Configurations a random or Optuna search tries; same as sweep.samples=N")
      ->check(CLI::Range(int64_t{1}, int64_t{1000000}));
  run->add_flag("--wait", r->wait,
                "With --launcher slurm: wait for the tasks to end, then collect their results");
  run->add_flag("--profile", r->profile,
                "Time each phase of training (data, forward, backward, optimizer, evaluation, "
                "logging) into the runs' summaries profile/<domain>/<phase>_seconds and log a "
                "line per stage (synchronises after each phase on a GPU)");
  out.push_back(
      {run, [run, r, run_help, globals, sweeper, trials, nproc] {
         if (*run_help) {  // no engine needed: the groups are config files
           std::cout << run->help() << "\n"
                     << cfg::describe_groups(cfg::SearchPath::for_experiment(
                            r->experiment, {r->config_dirs.begin(), r->config_dirs.end()}));
           return 0;
         }
         if (r->experiment.empty())
           throw UsageError(
               "tlab run needs an experiment file, e.g. tlab run "
               "experiments/quickstart.toml");
         // After the user's overrides: the flags win over the experiment's [sweep] table.
         if (!sweeper->empty()) r->overrides.push_back("sweep.sweeper=" + *sweeper);
         if (*trials > 0) r->overrides.push_back(fmt::format("sweep.samples={}", *trials));
         if (*nproc > 0) r->overrides.push_back(fmt::format("run.processes={}", *nproc));
         r->jobs_given = run->get_option("--jobs")->count() > 0;
         r->spawn_given = run->get_option("--spawn")->count() > 0;
         r->runs_per_gpu_given = run->get_option("--runs-per-gpu")->count() > 0;
         return open_engine("run").run(*globals, *r);
       }});

  // The child process of a sweep (not for users): executes one queued run of the database.
  auto c = std::make_shared<engine::ChildArgs>();
  auto* child = app.add_subcommand("_run", "");
  child->group("");  // hidden from --help
  child->add_option("--db", c->db)->required();
  child->add_option("--id", c->id)->required();
  child->add_option("--threads", c->threads);
  child->add_flag("--shard", c->shard);  // a SLURM task's own database (rollback journal)
  child->add_option("--rank", c->rank);  // a rank > 0 of a run on several processes
  child->add_option("--world", c->world);
  child->add_option("--timeout-ms", c->timeout_ms);
  child->add_flag("--srun", c->srun);  // a task of a run's ranks under srun (SLURM_PROCID)
  out.push_back({child, [c, globals] { return open_engine("_run").child(*globals, *c); }});

  // tlab config
  auto k = std::make_shared<engine::ConfigArgs>();
  auto groups = std::make_shared<bool>(false);
  auto* config = app.add_subcommand(
      "config", "Print an experiment composed with its config groups and overrides");
  config->add_option("experiment", k->experiment, "Experiment TOML file");
  config->add_option("overrides", k->overrides, "Overrides, as for tlab run");
  config->add_flag("-m,--multirun", k->multirun, "Allow sweeps in the overrides");
  config->add_flag("--resolve", k->resolve, "Resolve ${...} interpolations");
  config->add_option("--format", k->format, "toml, yaml or json")
      ->check(CLI::IsMember({"toml", "yaml", "json"}))
      ->capture_default_str();
  config->add_flag("--groups", *groups, "List the config groups and their options");
  config->add_option("--config-dir", k->config_dirs, "Extra folder of config groups (repeatable)");
  out.push_back({config, [k, groups, globals] {
                   if (*groups) {  // config files only: no engine needed
                     std::cout << cfg::describe_groups(cfg::SearchPath::for_experiment(
                         k->experiment, {k->config_dirs.begin(), k->config_dirs.end()}));
                     return 0;
                   }
                   if (k->experiment.empty())
                     throw UsageError("tlab config needs an experiment file (or --groups)");
                   return open_engine("config").config(*globals, *k);
                 }});

  // tlab eval RUN [overrides]
  auto e = std::make_shared<engine::EvalArgs>();
  auto e_run = std::make_shared<std::string>();
  e->db = "results/results.db";
  auto* eval = app.add_subcommand(
      "eval",
      "Evaluate finished runs' models on other datasets, domains or splits (recorded with the "
      "runs)");
  eval->add_option("runs", *e_run,
                   "Runs: an id, the start of a uuid, or a list of them and id ranges, e.g. "
                   "1-6,9")
      ->required();
  eval->add_option("overrides", e->overrides,
                   "Overrides of the run's resolved config: target.* (the data evaluated, e.g. "
                   "target.domain=rotated), eval.* (metrics) and device; with -m sweeps, e.g. "
                   "target.domain=a,b,c for one evaluation per domain");
  eval->add_flag("-m,--multirun", e->multirun, "Allow sweeps in the overrides");
  eval->add_option("--split", e->splits, "Splits to evaluate: train, val, test (default test)")
      ->delimiter(',');
  eval->add_option("--name", e->name,
                   "Label of the evaluation (default: the dataset's domain name)");
  eval->add_flag("--dry-run", e->dry_run, "List the evaluations; evaluate nothing");
  eval->add_option("--threads", e->threads, "LibTorch intra-op threads (0 = LibTorch's default)")
      ->check(CLI::Range(0, 1024));
  add_db_option(*eval, e->db);
  out.push_back({eval, [e, e_run, globals] {
                   {
                     Store store = open_results(e->db);
                     e->runs = resolve_runs(store, *e_run, e->db);
                   }
                   return open_engine("eval").evaluate(*globals, *e);
                 }});

  // tlab export RUN
  auto x = std::make_shared<engine::ExportArgs>();
  auto x_run = std::make_shared<std::string>();
  x->db = "results/results.db";
  auto* exp = app.add_subcommand(
      "export",
      "Write a finished run's model as a TorchScript module for torch.jit.load, metadata "
      "beside it");
  exp->add_option("run", *x_run, "Run id, or the start of the run's uuid")->required();
  exp->add_option("--format", x->format, "torchscript")->capture_default_str();
  exp->add_option("--output,-o", x->output,
                  "The module file (default: model.torchscript.pt in the run's folder); the "
                  "metadata goes beside it as .json");
  add_db_option(*exp, x->db);
  out.push_back({exp, [x, x_run, globals] {
                   {
                     Store store = open_results(x->db);
                     x->run = resolve_run(store, *x_run, x->db);
                   }
                   return open_engine("export").export_model(*globals, *x);
                 }});

  // tlab predict RUN
  auto pr = std::make_shared<engine::PredictArgs>();
  auto pr_run = std::make_shared<std::string>();
  pr->db = "results/results.db";
  auto* predict = app.add_subcommand(
      "predict",
      "Class probabilities of a finished run's model as CSV, for a file (--input) or a split");
  predict->add_option("run", *pr_run, "Run id, or the start of the run's uuid")->required();
  predict->add_option("overrides", pr->overrides,
                      "Overrides of the run's resolved config: target.*, eval.*, device");
  predict->add_option("--input,-i", pr->input,
                      "Inputs without labels, in the format of the run's dataset plugin (a CSV "
                      "without the label column, IDX images, a folder of images, one text per "
                      "line)");
  predict->add_option("--split", pr->split, "Without --input: train, val or test")
      ->capture_default_str();
  predict->add_option("--output,-o", pr->output, "Write the CSV here (default: stdout)");
  predict->add_option("--threads", pr->threads, "LibTorch intra-op threads")
      ->check(CLI::Range(0, 1024));
  add_db_option(*predict, pr->db);
  out.push_back({predict, [pr, pr_run, globals] {
                   {
                     Store store = open_results(pr->db);
                     pr->run = resolve_run(store, *pr_run, pr->db);
                   }
                   return open_engine("predict").predict(*globals, *pr);
                 }});

  // tlab transferability EXPERIMENT --candidates run:3,run:7
  auto tf = std::make_shared<engine::TransferabilityArgs>();
  auto tf_candidates = std::make_shared<std::vector<std::string>>();
  tf->db = "results/results.db";
  auto* transfer = app.add_subcommand(
      "transferability",
      "Score finished runs' models as starting points for an experiment's target, before any "
      "fine-tuning: LogME, LEEP, NCE, H-score");
  transfer->add_option("experiment", tf->experiment, "Experiment TOML file (its target is scored)")
      ->required();
  transfer->add_option("overrides", tf->overrides,
                       "Overrides, as for tlab run (one configuration)");
  transfer
      ->add_option("--candidates", *tf_candidates,
                   "Candidate models, comma-separated: run:ID or run:UUID-PREFIX (a finished "
                   "run's model), or a weights file for the experiment's backbone "
                   "(safetensors, as backbone.weights takes)")
      ->delimiter(',')
      ->required();
  transfer->add_option("--config-dir", tf->config_dirs,
                       "Extra folder of config groups (repeatable)");
  transfer->add_option("--threads", tf->threads, "LibTorch intra-op threads (0 = its default)")
      ->check(CLI::Range(0, 1024));
  add_db_option(*transfer, tf->db);
  out.push_back({transfer, [tf, tf_candidates, globals] {
                   {
                     Store store = open_results(tf->db);
                     for (const auto& c : *tf_candidates) {
                       if (c.rfind("run:", 0) == 0) {
                         tf->candidates.push_back(
                             fmt::format("run:{}", resolve_run(store, c.substr(4), tf->db)));
                         continue;
                       }
                       std::error_code ec;
                       if (c.empty() || !fs::is_regular_file(c, ec))
                         throw UsageError(fmt::format(
                             "--candidates: '{}' is neither run:ID (a finished run, e.g. run:3, "
                             "or run:UUID-PREFIX) nor a weights file{}",
                             c, c.empty() ? "" : " (no such file)"));
                       tf->candidates.push_back("file:" + fs::absolute(c).string());
                     }
                   }
                   return open_engine("transferability").transferability(*globals, *tf);
                 }});

  // tlab plugins [show NAME]
  auto p = std::make_shared<engine::PluginsArgs>();
  auto* plugins = app.add_subcommand("plugins", "List plugins, or show one's parameters");
  auto* show = plugins->add_subcommand("show", "Parameters and a sample TOML of a plugin");
  show->add_option("name", p->show, "Plugin name")->required();
  out.push_back({plugins, [p, globals] { return open_engine("plugins").plugins(*globals, *p); }});
}

}  // namespace tlab::cli
