// `tlab run --sweeper optuna`: an Optuna study (run/optuna.hpp) chooses the configurations of a
// sweep as results come in. Ask-and-tell in batches: each batch asks as many trials as the
// launcher runs at once (-j N runs, divided by the runs of a trial: one per seed), runs them
// through the launcher like any sweep (local child processes, or a SLURM array it waits for),
// and tells the study each trial's objective: the mean over its runs of the metric. TPE's
// constant liar keeps the trials of one batch apart. The study lives in Optuna's storage
// (default: optuna.db beside the results database); each run's runs.search names the study,
// storage and trial, and each trial's user attributes name its runs. Resume: trials a stopped
// search left running are run again (their finished runs are skipped by run key), and the
// search asks only for the trials it still lacks.

#include <algorithm>
#include <cmath>
#include <iostream>
#include <limits>
#include <set>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "errors.hpp"
#include "optuna_search.hpp"
#include "results/classification.hpp"
#include "run/executor.hpp"
#include "run/optuna.hpp"
#include "run/signals.hpp"
#include "util.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace tlab::engine {
namespace {

using cfg::SearchDim;

json space_json(const cfg::SearchSpec& search) {
  json space = json::object();
  for (const SearchDim& d : search.space) {
    if (d.kind == SearchDim::Kind::Categorical)
      space[d.name] = {{"type", "categorical"}, {"choices", d.choices}};
    else
      space[d.name] = {{"type", d.kind == SearchDim::Kind::Int ? "int" : "float"},
                       {"low", d.low},
                       {"high", d.high},
                       {"log", d.log}};
  }
  return space;
}

/// A trial's params (Optuna's JSON) as the draw compose expands.
cfg::GivenDraw given_draw(int64_t number, const json& params, const cfg::SearchSpec& search) {
  cfg::GivenDraw draw;
  draw.trial = number;
  for (const SearchDim& d : search.space) {
    if (!params.contains(d.name))
      throw OptunaError(fmt::format(
          "trial {} of the study has no value for '{}' (it has {}): the study was made for "
          "another search space; name another study with sweep.optuna.study=NAME",
          number, d.name, params.dump()));
    const json& v = params[d.name];
    if (d.kind == SearchDim::Kind::Categorical) {
      const std::string text = v.is_string() ? v.get<std::string>() : v.dump();
      const auto it = std::find(d.choices.begin(), d.choices.end(), text);
      if (it == d.choices.end())
        throw OptunaError(fmt::format(
            "trial {} of the study chose '{}' for '{}', which is not one of {}; name another "
            "study with sweep.optuna.study=NAME",
            number, text, d.name, d.distribution));
      draw.values.emplace_back(d.name, static_cast<double>(it - d.choices.begin()));
    } else {
      if (!v.is_number())
        throw OptunaError(fmt::format("trial {} of the study gives '{}' the value {}, not a number",
                                      number, d.name, v.dump()));
      draw.values.emplace_back(d.name, v.get<double>());
    }
  }
  return draw;
}

/// A run's value of `metric`: its summary, else the last finite value it logged.
std::optional<double> metric_value(Store& store, const RunSummaryRow& run,
                                   const std::string& metric) {
  if (const double* v = run.summary(metric)) return *v;
  const auto rows = store.metrics(run.id, metric);
  for (auto it = rows.rbegin(); it != rows.rend(); ++it)
    if (std::isfinite(it->value)) return it->value;
  return std::nullopt;
}

}  // namespace

OptunaPlan plan_optuna(const cfg::SearchSpec& search, const RunSpec& probe, const std::string& db) {
  OptunaPlan plan;
  plan.metric = search.metric.empty() ? "target/val/" + probe.selection.monitor : search.metric;
  const std::string leaf = plan.metric.substr(plan.metric.rfind('/') + 1);
  plan.direction = !search.direction.empty() ? search.direction
                   : higher_is_better(leaf)  ? "maximize"
                                             : "minimize";
  plan.study = !search.study.empty()
                   ? search.study
                   : fmt::format("{}-{}", probe.name, hash_string(search.fingerprint).substr(0, 8));
  const fs::path folder = fs::path(db).parent_path();
  plan.storage = optuna_storage_url(!search.storage.empty() ? search.storage
                                                            : (folder / "optuna.db").string());
  return plan;
}

std::vector<cfg::GivenDraw> probe_draws(const cfg::SearchSpec& search) {
  // Every categorical choice and both ends of every interval, in as few draws as that takes.
  std::size_t n = 2;
  for (const SearchDim& d : search.space) n = std::max(n, d.choices.size());
  std::vector<cfg::GivenDraw> draws(n);
  for (std::size_t i = 0; i < n; ++i) {
    draws[i].trial = static_cast<int64_t>(i);
    for (const SearchDim& d : search.space)
      draws[i].values.emplace_back(d.name, d.kind == SearchDim::Kind::Categorical
                                               ? static_cast<double>(i % d.choices.size())
                                           : i % 2 == 0 ? d.low
                                                        : d.high);
  }
  return draws;
}

void describe_optuna(const cfg::SearchSpec& search, const OptunaPlan& plan,
                     std::size_t runs_per_trial, std::ostream& out) {
  out << fmt::format(
      "Optuna search: {} trial(s) of {}{} (seed {}), each {} run(s){}; objective: {} {} (mean "
      "over a trial's runs)\n  study '{}' in {}\n",
      search.samples, search.sampler == "tpe" ? "TPE" : "random sampling",
      search.sampler == "tpe"
          ? fmt::format(" after {} random startup trial(s)", search.startup_trials)
          : "",
      search.search_seed, runs_per_trial, runs_per_trial > 1 ? " (one per seed)" : "",
      plan.direction, plan.metric, plan.study, plan.storage);
  for (const SearchDim& d : search.space) out << fmt::format("  {} ~ {}\n", d.name, d.distribution);
}

SweepResult run_optuna_search(const OptunaSearch& s) {
  const cfg::SearchSpec& search = s.search;
  const OptunaPlan& plan = s.plan;
  OptunaBridge bridge;
  json open{{"op", "open"},
            {"storage", plan.storage},
            {"study", plan.study},
            {"direction", plan.direction},
            {"sampler", search.sampler},
            {"seed", search.search_seed},
            {"startup_trials", search.startup_trials},
            {"space", space_json(search)},
            {"attrs",
             {{"tlab_db", fs::absolute(s.sweep.db).lexically_normal().string()},
              {"tlab_experiment", s.experiment},
              {"tlab_metric", plan.metric}}}};
  const json opened = bridge.request(open);
  int64_t done = 0;
  std::vector<std::pair<int64_t, json>> rerun;  // trials a stopped search left running
  double best = std::numeric_limits<double>::quiet_NaN();
  int64_t best_trial = -1;
  const bool maximize = plan.direction == "maximize";
  auto better = [&](double v) { return std::isnan(best) || (maximize ? v > best : v < best); };
  for (const json& t : opened["trials"]) {
    const std::string state = t.value("state", "");
    if (state == "complete" || state == "pruned" || state == "fail") ++done;
    if (state == "running") {
      // A trial left running whose params do not make a configuration of this space (asked by
      // hand without them, say) cannot be run again: it is told failed, and counts.
      const int64_t number = t["number"].get<int64_t>();
      try {
        given_draw(number, t["params"], search);
        rerun.emplace_back(number, t["params"]);
      } catch (const OptunaError& e) {
        bridge.request({{"op", "tell"},
                        {"number", number},
                        {"state", "fail"},
                        {"attrs", {{"tlab_error", e.what()}}}});
        std::cout << fmt::format(
            "[optuna] trial {} was left running without a configuration "
            "of this search: told failed ({})\n",
            number, e.what());
        ++done;
      }
    }
    if (state == "complete" && t["value"].is_number() && better(t["value"].get<double>())) {
      best = t["value"].get<double>();
      best_trial = t["number"].get<int64_t>();
    }
  }
  std::cout << fmt::format("[optuna] study '{}' in {}: {} of {} trial(s) done{}\n", plan.study,
                           plan.storage, std::min(done, search.samples), search.samples,
                           rerun.empty() ? ""
                                         : fmt::format(", {} left running by a stopped search: "
                                                       "run again",
                                                       rerun.size()));
  std::cout.flush();
  const int64_t slots = std::max(1, s.slots);
  const int64_t batch =
      std::max<int64_t>(1, (slots + static_cast<int64_t>(s.runs_per_trial) - 1) /
                               static_cast<int64_t>(std::max<std::size_t>(1, s.runs_per_trial)));

  SweepResult total;
  while (done < search.samples && !stop_signal()) {
    const int64_t k = std::min(batch, search.samples - done);
    std::vector<std::pair<int64_t, json>> trials;
    while (!rerun.empty() && static_cast<int64_t>(trials.size()) < k) {
      trials.push_back(rerun.front());
      rerun.erase(rerun.begin());
    }
    if (static_cast<int64_t>(trials.size()) < k) {
      const json asked =
          bridge.request({{"op", "ask"}, {"n", k - static_cast<int64_t>(trials.size())}});
      for (const json& t : asked["trials"])
        trials.emplace_back(t["number"].get<int64_t>(), t["params"]);
    }
    std::vector<cfg::GivenDraw> draws;
    for (const auto& [number, params] : trials) draws.push_back(given_draw(number, params, search));
    std::vector<RunSpec> specs;
    try {
      specs = s.expand(draws);
    } catch (const std::exception& e) {  // a drawn configuration the plugins refuse
      for (const auto& [number, params] : trials)
        bridge.request({{"op", "tell"},
                        {"number", number},
                        {"state", "fail"},
                        {"attrs", {{"tlab_error", e.what()}}}});
      throw;
    }
    std::vector<int64_t> trial_of;  // each spec's trial number
    for (auto& spec : specs) {
      nlohmann::ordered_json j = nlohmann::ordered_json::parse(spec.search_json);  // key order kept
      trial_of.push_back(j.value("trial", int64_t{-1}));
      j["study"] = plan.study;
      j["storage"] = plan.storage;
      j["metric"] = plan.metric;
      j["direction"] = plan.direction;
      spec.search_json = j.dump();
    }
    SweepResult r = s.launch(specs);
    total.total += r.total;
    total.skipped += r.skipped;
    total.elsewhere += r.elsewhere;
    total.finished += r.finished;
    total.pruned += r.pruned;
    total.submitted += r.submitted;
    total.failures.insert(total.failures.end(), r.failures.begin(), r.failures.end());
    for (int64_t id : r.ids)
      if (std::find(total.ids.begin(), total.ids.end(), id) == total.ids.end())
        total.ids.push_back(id);
    if (r.stop_signal) {  // the trials stay running in the study: a resumed search reruns them
      total.stop_signal = r.stop_signal;
      break;
    }
    // Each trial's runs: the complete run with its run key (as a resumed sweep finds it).
    for (const auto& [number, params] : trials) {
      std::vector<int64_t> ids;
      std::size_t runs = 0;
      for (std::size_t i = 0; i < specs.size(); ++i) {
        if (trial_of[i] != number) continue;
        ++runs;
        if (int64_t id = s.store.finished_run_with_key(s.key(specs[i]))) ids.push_back(id);
      }
      json attrs{{"tlab_runs", ids}};
      std::string state = "complete";
      std::string line;
      double value = 0;
      if (ids.size() < runs) {
        state = "fail";
        line = fmt::format("{} of its {} run(s) did not finish", runs - ids.size(), runs);
      } else {
        std::vector<std::string> missing;
        bool pruned = false;
        for (const RunSummaryRow& row : s.store.list_runs(ids)) {
          if (row.status == "pruned") pruned = true;
          if (auto v = metric_value(s.store, row, plan.metric))
            value += *v;
          else
            missing.push_back(std::to_string(row.id));
        }
        if (!missing.empty()) {
          bridge.request({{"op", "tell"}, {"number", number}, {"state", "fail"}, {"attrs", attrs}});
          throw OptunaError(fmt::format(
              "the Optuna objective {} is not a value of run(s) {} (trial {}): name a metric "
              "the runs record with sweep.optuna.metric=NAME (`tlab results show {}` lists "
              "them), e.g. target/val/acc",
              plan.metric, join(missing, ", "), number, missing.front()));
        }
        value /= static_cast<double>(ids.size());
        if (pruned) {
          state = "pruned";
          line = fmt::format("pruned by ASHA ({} {:.4f} at its last epoch)", plan.metric, value);
        } else {
          line = fmt::format("{} = {:.4f}", plan.metric, value);
        }
      }
      json tell{{"op", "tell"}, {"number", number}, {"state", state}, {"attrs", attrs}};
      if (state == "complete") {
        tell["value"] = value;
        if (better(value)) {
          best = value;
          best_trial = number;
        }
      }
      bridge.request(tell);
      std::vector<std::string> id_texts;
      for (int64_t id : ids) id_texts.push_back(std::to_string(id));
      std::cout << fmt::format(
          "[optuna] trial {}: {} (run{} {}){}\n", number, line, ids.size() == 1 ? "" : "s",
          id_texts.empty() ? "-" : join(id_texts, " "),
          best_trial >= 0 ? fmt::format("; best so far: trial {}, {:.4f}", best_trial, best) : "");
      std::cout.flush();
    }
    done += k;
  }
  if (!total.stop_signal) total.stop_signal = stop_signal();
  if (best_trial >= 0)
    std::cout << fmt::format(
        "[optuna] study '{}': best trial {} with {} = {:.4f} (optuna.load_study(study_name='{}', "
        "storage='{}').best_trial)\n",
        plan.study, best_trial, plan.metric, best, plan.study, plan.storage);
  return total;
}

}  // namespace tlab::engine
