// One file (~1,000 lines) because every report (compare, pivot, model selection, transfer gain,
// show) is built from the same grouping of runs and the same mean ± s.e. cells; the sections
// share those helpers and the formatting of a cell.
#include "report/report.hpp"

#include "results/classification.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string_view>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "util.hpp"

namespace tlab {

Table evaluation_table(const EvaluationRecord& e, int64_t max_matrix_classes) {
  const ClassificationCounts counts = ClassificationCounts::from_json(e.counts);
  const ClassificationReport report = summarize(counts);
  const int64_t n = counts.num_classes;
  const bool matrix = n <= max_matrix_classes;
  Table t;
  t.title = fmt::format("\nEvaluation {} ({} examples{})", e.name, report.total,
                        e.dataset.empty() ? "" : ", dataset below");
  t.header = {"true \\ predicted"};
  if (matrix)
    for (int64_t c = 0; c < n; ++c) t.header.push_back(std::to_string(c));
  for (const char* h : {"precision", "recall", "f1", "support"}) t.header.push_back(h);
  t.numeric.assign(t.header.size(), true);
  t.numeric[0] = false;
  for (int64_t c = 0; c < n; ++c) {
    std::vector<std::string> row = {std::to_string(c)};
    if (matrix)
      for (int64_t p = 0; p < n; ++p)
        row.push_back(std::to_string(counts.confusion[static_cast<std::size_t>(c * n + p)]));
    const ClassMetrics& m = report.per_class[static_cast<std::size_t>(c)];
    for (double v : {m.precision, m.recall, m.f1}) row.push_back(fmt::format("{:.4f}", v));
    row.push_back(std::to_string(m.support));
    t.rows.push_back(std::move(row));
  }
  std::string line = fmt::format(
      "acc {:.4f}  balanced_acc {:.4f}  precision_macro {:.4f}  recall_macro {:.4f}  "
      "f1_macro {:.4f}  ece {:.4f}  loss {:.4f}",
      report.accuracy, report.balanced_accuracy, report.precision_macro, report.recall_macro,
      report.f1_macro, report.ece, e.loss);
  for (const auto& [k, v] : report.top_k) line += fmt::format("  top{}_acc {:.4f}", k, v);
  t.notes.push_back(line);
  if (!matrix)
    t.notes.push_back(fmt::format(
        "{} classes: the confusion matrix is left out here (tlab results show --format json "
        "has it)",
        n));
  if (!e.dataset.empty()) t.notes.push_back("dataset:\n" + e.dataset);
  return t;
}

namespace {

std::string value_text(const ParamValue& v) { return param_text(v); }

nlohmann::json value_json(const ParamValue& v) {
  return std::visit([](const auto& x) { return nlohmann::json(x); }, v);
}

std::string number_text(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return fmt::format("{:.4g}", v);
}

std::map<std::string, std::string> param_map(const RunSummaryRow& r) {
  std::map<std::string, std::string> m;
  for (const auto& p : r.params) m[p.key] = value_text(p.value);
  return m;
}

// Left-aligned columns under a rule: a Table without a title, rendered for the terminal.
std::string render_table(const std::vector<std::string>& header,
                         const std::vector<std::vector<std::string>>& rows) {
  Table t;
  t.header = header;
  t.rows = rows;
  return render(t, TableFormat::Text);
}

}  // namespace

Format parse_format(const std::string& s) {
  if (s == "table") return Format::Table;
  if (s == "json") return Format::Json;
  if (s == "csv") return Format::Csv;
  throw std::invalid_argument(
      fmt::format("unknown format '{}'; expected 'table', 'json' or 'csv'", s));
}

std::string format_runs(const std::vector<RunSummaryRow>& runs, Format format) {
  if (format == Format::Json) {
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& r : runs) {
      nlohmann::json params = nlohmann::json::object(), summary = nlohmann::json::object();
      for (const auto& p : r.params) params[p.key] = value_json(p.value);
      for (const auto& [k, v] : r.summaries)
        summary[k] = std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
      arr.push_back({{"id", r.id},
                     {"name", r.name},
                     {"status", r.status},
                     {"reason", r.reason},
                     {"seed", r.seed},
                     {"device", r.device},
                     {"started_at", r.started_at},
                     {"ended_at", r.ended_at},
                     {"params", params},
                     {"summary", summary}});
    }
    return arr.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  }
  RunListing listing(format);
  for (const auto& r : runs) listing.add(r);
  return listing.render();
}

// The summaries `tlab results list` shows as a table, when some run has them.
constexpr const char* kListedMetrics[] = {"target/test/acc", "target/val/acc", "run/wall_seconds"};

RunListing::RunListing(Format format) : format_(format) {
  if (format == Format::Json)
    throw std::invalid_argument("RunListing makes tables and CSV; JSON is format_runs's");
  if (format == Format::Table)  // only these are shown: the others are not kept
    for (const char* m : kListedMetrics) metric_ids_.emplace(m, metric_ids_.size());
}

void RunListing::add(const RunSummaryRow& run) {
  Row row;
  row.id = run.id;
  row.status = run.status;
  row.name = run.name;
  row.params.reserve(run.params.size());
  for (const auto& p : run.params) {
    auto [id, fresh] = key_ids_.try_emplace(p.key, static_cast<uint32_t>(keys_.size()));
    if (fresh) keys_.emplace_back();
    Key& key = keys_[id->second];
    auto [value, added] =
        key.indexes.try_emplace(value_text(p.value), static_cast<uint32_t>(key.values.size()));
    if (added) key.values.push_back(value->first);
    ++key.present;
    row.params.emplace_back(id->second, value->second);
  }
  for (const auto& [name, value] : run.summaries) {
    auto found = metric_ids_.find(name);
    if (found == metric_ids_.end()) {
      if (format_ == Format::Table) continue;
      found = metric_ids_.emplace(name, metric_ids_.size()).first;
    }
    row.summaries.emplace_back(found->second, value);
  }
  rows_.push_back(std::move(row));
}

std::string RunListing::render() const {
  // Columns: table, the params whose text is not the same in every run (or that some run
  // lacks); CSV, every param. Then the summaries some run has (table: kListedMetrics, in that
  // order; CSV: all, by name).
  std::vector<std::pair<std::string, uint32_t>> keys;
  for (const auto& [name, id] : key_ids_) {
    const Key& key = keys_[id];
    if (format_ == Format::Csv || key.values.size() > 1 || key.present != rows_.size())
      keys.emplace_back(name, id);
  }
  std::vector<bool> seen(metric_ids_.size());
  for (const Row& r : rows_)
    for (const auto& s : r.summaries) seen[s.first] = true;
  std::vector<std::pair<std::string, uint32_t>> metrics;
  if (format_ == Format::Table) {
    for (const char* m : kListedMetrics)
      if (seen[metric_ids_.at(m)]) metrics.emplace_back(m, metric_ids_.at(m));
  } else {
    for (const auto& [name, id] : metric_ids_)
      if (seen[id]) metrics.emplace_back(name, id);
  }
  std::vector<std::string> header = {"id", "status", "name"};
  for (const auto& k : keys) header.push_back(k.first);
  for (const auto& m : metrics) header.push_back(m.first);
  std::vector<std::vector<std::string>> rows;
  rows.reserve(rows_.size());
  for (const Row& r : rows_) {
    std::vector<std::string> row = {std::to_string(r.id), r.status, r.name};
    row.reserve(header.size());
    for (const auto& k : keys) {
      auto p = std::find_if(r.params.begin(), r.params.end(),
                            [&](const auto& e) { return e.first == k.second; });
      row.push_back(p == r.params.end() ? "" : keys_[k.second].values[p->second]);
    }
    for (const auto& m : metrics) {
      auto v = std::find_if(r.summaries.begin(), r.summaries.end(),
                            [&](const auto& e) { return e.first == m.second; });
      row.push_back(v == r.summaries.end() ? "" : number_text(v->second));
    }
    rows.push_back(std::move(row));
  }
  if (format_ == Format::Csv) {
    std::string out;
    for (auto* r : {&header}) {
      std::vector<std::string> f;
      for (const auto& c : *r) f.push_back(csv_field(c));
      out += join(f, ",") + "\n";
    }
    for (const auto& r : rows) {
      std::vector<std::string> f;
      for (const auto& c : r) f.push_back(csv_field(c));
      out += join(f, ",") + "\n";
    }
    return out;
  }
  return render_table(header, rows);
}

namespace {

const char* const kSourceVal = "source/val/acc";
// The worst of several pooled source domains' validation accuracies (run/session.cpp).
const char* const kSourceValWorst = "source/val/worst/acc";
const char* const kTargetVal = "target/val/acc";
const char* const kTargetTest = "target/test/acc";
const char* const kAbsent = "\001absent";  // group value of a param a run lacks

using ParamMap = std::map<std::string, std::string>;

// A run with its params and summaries in maps.
struct RunView {
  const RunSummaryRow* run = nullptr;
  ParamMap params;
  std::map<std::string, double> summaries;
  std::string param(const std::string& key) const {
    auto it = params.find(key);
    return it == params.end() ? std::string() : it->second;
  }
  std::string param_or_absent(const std::string& key) const {
    auto it = params.find(key);
    return it == params.end() ? std::string(kAbsent) : it->second;
  }
  const double* summary(const std::string& name) const {
    auto it = summaries.find(name);
    return it == summaries.end() ? nullptr : &it->second;
  }
};

std::vector<RunView> finished_views(const std::vector<RunSummaryRow>& runs) {
  std::vector<RunView> out;
  for (const auto& r : runs) {
    if (r.status != to_string(RunStatus::kFinished)) continue;
    RunView v;
    v.run = &r;
    v.params = param_map(r);
    v.summaries.insert(r.summaries.begin(), r.summaries.end());
    out.push_back(std::move(v));
  }
  return out;
}

// Params that do not have the same value in every run (in key order).
std::vector<std::string> varying_params(const std::vector<const RunView*>& runs) {
  std::map<std::string, std::set<std::string>> values;
  std::map<std::string, std::size_t> present;
  for (const auto* r : runs)
    for (const auto& [k, v] : r->params) values[k].insert(v), ++present[k];
  std::vector<std::string> keys;
  for (const auto& [k, vs] : values)
    if (vs.size() > 1 || present[k] != runs.size()) keys.push_back(k);
  return keys;
}

// The params that tell configurations apart: those that vary, except the ones `exclude`
// names, and except the options of a varying plugin that are constant per plugin (when a
// table's plugin varies, its other keys are that plugin's options; they distinguish groups
// only where they vary among runs of the same plugin).
std::vector<std::string> distinguishing_params(
    const std::vector<const RunView*>& runs,
    const std::function<bool(const std::string&)>& exclude) {
  const auto varying = varying_params(runs);
  auto needed = [&](const std::string& k) {
    if (exclude(k)) return false;
    const auto dot = k.find('.');
    if (dot == std::string::npos || k.substr(dot + 1) == "plugin") return true;
    const std::string plugin_key = k.substr(0, dot) + ".plugin";
    if (std::find(varying.begin(), varying.end(), plugin_key) == varying.end()) return true;
    std::map<std::string, std::set<std::string>> per_plugin;
    for (const auto* r : runs) per_plugin[r->param(plugin_key)].insert(r->param_or_absent(k));
    for (const auto& [plugin, values] : per_plugin)
      if (values.size() > 1) return true;
    return false;
  };
  std::vector<std::string> keys;
  for (const auto& k : varying)
    if (needed(k)) keys.push_back(k);
  return keys;
}

std::vector<const RunView*> pointers(const std::vector<RunView>& views) {
  std::vector<const RunView*> out;
  for (const auto& v : views) out.push_back(&v);
  return out;
}

std::string fixed4(double v) { return fmt::format("{:.4f}", v); }

// Full precision for CSV and JSON: the shortest text that reads back as the same double.
std::string full(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return fmt::format("{}", v);
}

// "mean ± s.e."; a single value alone (its s.e. is not defined); "" for none.
std::string mean_se_text(const MeanSe& s) {
  if (s.n == 0) return "";
  if (s.n == 1) return fixed4(s.mean);
  return fixed4(s.mean) + " ± " + fixed4(s.se);
}

// The header of each metric's column: "<m> (mean ± s.e.)", or for CSV/JSON three columns
// "<m> mean", "<m> se", "<m> n".
void add_metric_headers(std::vector<std::string>& header, const std::vector<std::string>& metrics,
                        bool machine_readable) {
  for (const auto& m : metrics) {
    if (machine_readable) {
      for (const char* stat : {"mean", "se", "n"}) header.push_back(m + " " + stat);
    } else {
      header.push_back(m + " (mean ± s.e.)");
    }
  }
}

// The cells of one such column: the text, or mean, se and n at full precision.
void add_mean_se_cells(std::vector<std::string>& row, const MeanSe& s, bool machine_readable) {
  if (machine_readable) {
    row.push_back(s.n ? full(s.mean) : "");
    row.push_back(s.n > 1 ? full(s.se) : "");
    row.push_back(std::to_string(s.n));
  } else {
    row.push_back(mean_se_text(s));
  }
}

// "4, 9, 12" (at most 10, then "...").
std::string id_list(const std::vector<int64_t>& ids) {
  std::vector<std::string> parts;
  for (std::size_t i = 0; i < ids.size() && i < 10; ++i) parts.push_back(std::to_string(ids[i]));
  if (ids.size() > 10) parts.push_back("...");
  return join(parts, ", ");
}

std::string plural(std::size_t n, const std::string& one, const std::string& many) {
  return fmt::format("{} {}", n, n == 1 ? one : many);
}

// Where the runs come from, for messages: "'results.db'", or with the filter that chose them
// "'results.db' (of those matching --where 'x')".
std::string place(const std::filesystem::path& db, const std::string& where) {
  std::string out = "'" + db.string() + "'";
  if (!where.empty()) out += " (of those matching --where '" + where + "')";
  return out;
}

// The error for a name no run has: the nearest candidates, or the list when none is near.
[[noreturn]] void unknown_name(const std::string& option, const std::string& name,
                               const std::string& what, const std::set<std::string>& have,
                               const std::string& db, const std::string& fix = "") {
  std::vector<std::string> all(have.begin(), have.end());
  std::string message =
      fmt::format("{} '{}': no run in {} has {} '{}'", option, name, db, what, name);
  const auto near = nearest(name, all);
  if (!near.empty()) {
    message += "; " + did_you_mean(near);
  } else if (!all.empty()) {
    std::vector<std::string> shown(all.begin(),
                                   all.begin() + std::min<std::size_t>(all.size(), 15));
    message += fmt::format("; the database has: {}{}", join(shown, ", "),
                           all.size() > shown.size() ? ", ..." : "");
  } else {
    message += " (it has none)";
  }
  throw ReportError(message + fix);
}

std::set<std::string> all_params(const std::vector<RunSummaryRow>& runs) {
  std::set<std::string> keys;
  for (const auto& r : runs)
    for (const auto& p : r.params) keys.insert(p.key);
  return keys;
}

std::set<std::string> all_summaries(const std::vector<RunSummaryRow>& runs) {
  std::set<std::string> names;
  for (const auto& r : runs)
    for (const auto& s : r.summaries) names.insert(s.first);
  return names;
}

// Whether `s` is a whole decimal number ("0.01", "-3", "1e-4").
bool is_number(const std::string& s) {
  if (s.empty() || std::isspace(static_cast<unsigned char>(s[0]))) return false;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size() && std::isfinite(v);
}

// Orders pivot values: numerically when every value is a number, else as text; a missing
// param ("(none)") last.
void sort_values(std::vector<std::string>& values) {
  auto number = [](const std::string& s, double& out) {
    if (!is_number(s)) return false;
    out = std::strtod(s.c_str(), nullptr);
    return true;
  };
  bool numeric = true;
  double ignored = 0;
  for (const auto& v : values)
    if (v != kAbsent && !number(v, ignored)) numeric = false;
  std::stable_sort(values.begin(), values.end(), [&](const std::string& a, const std::string& b) {
    if ((a == kAbsent) != (b == kAbsent)) return b == kAbsent;
    if (numeric && a != kAbsent) {
      double x = 0, y = 0;
      number(a, x), number(b, y);
      return x < y;
    }
    return a < b;
  });
}

std::string shown_value(const std::string& v) { return v == kAbsent ? "(none)" : v; }

// Picks the value of a metric for each run under a selection rule, remembering why a run had
// none (for the notes under the table).
class ValuePicker {
 public:
  ValuePicker(Store* store, Selection selection) : store_(store), selection_(selection) {}

  // The run's history of `name`, ordered by step (cached).
  const std::vector<MetricRow>& history(int64_t run, const std::string& name) {
    auto key = std::make_pair(run, name);
    auto it = histories_.find(key);
    if (it == histories_.end())
      it = histories_.emplace(key, store_ ? store_->metrics(run, name) : std::vector<MetricRow>{})
               .first;
    return it->second;
  }

  // The value of `metric` for `run`, or nothing (the reason is recorded).
  std::optional<double> value(const RunView& run, const std::string& metric) {
    const Choice& c = choice(*run.run);
    if (!c.usable) return std::nullopt;  // counted in no_selector
    if (c.final) {
      if (const double* v = run.summary(metric)) return *v;
      missing_[metric].push_back(run.run->id);
      return std::nullopt;
    }
    const MetricRow* found = nullptr;
    for (const auto& row : history(run.run->id, metric))
      if (row.step == c.step) found = &row;  // the last one logged at that step
    if (!found) {
      missing_[metric].push_back(run.run->id);
      return std::nullopt;
    }
    return found->value;
  }

  const std::vector<int64_t>& fell_back() const { return fell_back_; }
  const std::vector<int64_t>& no_selector() const { return no_selector_; }
  const std::map<std::string, std::vector<int64_t>>& missing() const { return missing_; }

 private:
  struct Choice {
    bool final = true;   // report the summary
    bool usable = true;  // false: the run has nothing to select by
    int64_t step = 0;
  };

  // The epoch (step) the selection rule picks for `run`.
  const Choice& choice(const RunSummaryRow& run) {
    auto it = choices_.find(run.id);
    if (it != choices_.end()) return it->second;
    Choice c;
    if (selection_ == Selection::SourceVal) {
      // Only the target stage counts: the steps where the target split metrics are logged.
      std::set<int64_t> target_steps;
      for (const char* name : {kTargetTest, kTargetVal})
        for (const auto& row : history(run.id, name)) target_steps.insert(row.step);
      if (const MetricRow* best = best_row(history(run.id, kSourceVal), &target_steps)) {
        c.final = false;
        c.step = best->step;
      } else {
        fell_back_.push_back(run.id);
      }
    } else if (selection_ == Selection::Oracle) {
      if (const MetricRow* best = best_row(history(run.id, kTargetVal), nullptr)) {
        c.final = false;
        c.step = best->step;
      } else {
        c.usable = false;
        no_selector_.push_back(run.id);
      }
    }
    return choices_.emplace(run.id, c).first->second;
  }

  // The row with the highest finite value (the earliest on ties), among `steps` when given.
  static const MetricRow* best_row(const std::vector<MetricRow>& rows,
                                   const std::set<int64_t>* steps) {
    const MetricRow* best = nullptr;
    for (const auto& row : rows) {
      if (!std::isfinite(row.value)) continue;
      if (steps && !steps->count(row.step)) continue;
      if (!best || row.value > best->value) best = &row;
    }
    return best;
  }

  Store* store_;
  Selection selection_;
  std::map<std::pair<int64_t, std::string>, std::vector<MetricRow>> histories_;
  std::map<int64_t, Choice> choices_;
  std::vector<int64_t> fell_back_, no_selector_;
  std::map<std::string, std::vector<int64_t>> missing_;
};

std::string selection_description(Selection s) {
  switch (s) {
    case Selection::Final:
      return "final (the value after the last epoch)";
    case Selection::SourceVal:
      return "source-val = training-domain validation (the target-stage epoch with the highest "
             "source/val/acc)";
    case Selection::Oracle:
      return "oracle = test-domain validation (the epoch with the highest target/val/acc)";
  }
  return "";
}

// Checks the metrics against what the runs record: a summary for Final, a per-epoch history
// for the other rules.
void check_metrics(ValuePicker& picker, const std::vector<RunSummaryRow>& runs,
                   const std::vector<RunView>& finished, const CompareOptions& o,
                   const std::string& db, Store& store) {
  const auto summaries = all_summaries(runs);
  for (const auto& m : o.metrics) {
    if (o.selection == Selection::Final) {
      if (summaries.count(m)) continue;
      std::string fix;
      for (const auto& f : finished)
        if (!picker.history(f.run->id, m).empty()) {
          fix =
              "; it is only logged per epoch: pick an epoch with --select oracle or "
              "--select source-val";
          break;
        }
      unknown_name("--metric", m, "a summary", summaries, db, fix);
    }
    bool logged = false;
    for (const auto& f : finished)
      if (!picker.history(f.run->id, m).empty()) {
        logged = true;
        break;
      }
    if (logged) continue;
    // Names logged per epoch, from the first run that logs anything.
    std::set<std::string> per_epoch;
    for (const auto& f : finished) {
      for (const auto& row : store.metrics(f.run->id)) per_epoch.insert(row.name);
      if (!per_epoch.empty()) break;
    }
    if (summaries.count(m))
      throw ReportError(fmt::format(
          "--metric '{}': --select {} picks an epoch, so it needs the metric's per-epoch "
          "history, but no finished run in {} logs '{}' per epoch (it is only a final "
          "summary); use --select final for it, or a metric logged per epoch{}{}",
          m, selection_name(o.selection), db, m, per_epoch.empty() ? "" : ": ",
          join(std::vector<std::string>(per_epoch.begin(), per_epoch.end()), ", ")));
    std::set<std::string> known = summaries;
    known.insert(per_epoch.begin(), per_epoch.end());
    unknown_name("--metric", m, "a metric", known, db);
  }
  if (o.selection == Selection::Oracle) {
    for (const auto& f : finished)
      if (!picker.history(f.run->id, kTargetVal).empty()) return;
    throw ReportError(fmt::format(
        "--select oracle picks the epoch with the highest {} of each run, but no finished run "
        "in {} logs {} per epoch (its target dataset has no validation split?); use "
        "--select final",
        kTargetVal, db, kTargetVal));
  }
}

struct Cell {
  std::vector<double> values;
};

Table build_comparison(Store* store, const std::string& db, const std::vector<RunSummaryRow>& runs,
                       const CompareOptions& o, bool strict) {
  const auto finished = finished_views(runs);
  const auto finished_ptrs = pointers(finished);
  const bool pivot = !o.pivot.empty();
  ValuePicker picker(store, o.selection);

  if (strict) {
    if (o.metrics.empty())
      throw ReportError(
          "--metric: no metric given; name at least one, e.g. --metric target/test/acc");
    if (pivot && o.metrics.size() != 1)
      throw ReportError(fmt::format(
          "--pivot '{}' shows one metric, but {} were given ({}); run compare once per metric",
          o.pivot, o.metrics.size(), join(o.metrics, ", ")));
    if (pivot && std::find(o.group_by.begin(), o.group_by.end(), o.pivot) != o.group_by.end())
      throw ReportError(fmt::format(
          "--pivot '{}' is also a --group-by key; a key gives either the rows or the columns, "
          "so drop it from --group-by",
          o.pivot));
    if (!runs.empty()) {
      const auto params = all_params(runs);
      for (const auto& k : o.group_by)
        if (!params.count(k)) unknown_name("--group-by", k, "a param", params, db);
      if (pivot && !params.count(o.pivot)) unknown_name("--pivot", o.pivot, "a param", params, db);
      if (!finished.empty()) check_metrics(picker, runs, finished, o, db, *store);
    }
  }

  // Row keys.
  std::vector<std::string> by = o.group_by;
  if (by.empty()) {
    if (pivot && o.pivot != "strategy.plugin") {
      by = {"strategy.plugin"};
    } else {
      by = distinguishing_params(finished_ptrs, [&](const std::string& k) {
        return k == "seed" || (pivot && k == o.pivot);
      });
    }
  }

  // Values of each run (in the order of the metrics), then the groups in order of first
  // appearance; with a pivot, the cells of each group by pivot value.
  std::vector<std::vector<std::string>> order;
  std::map<std::vector<std::string>, std::vector<const RunView*>> groups;
  std::map<std::vector<std::string>, std::map<std::string, Cell>> pivot_cells;
  std::map<std::vector<std::string>, std::vector<Cell>> metric_cells;
  std::vector<std::string> columns;
  for (const auto& r : finished) {
    std::vector<std::string> g;
    for (const auto& k : by) g.push_back(r.param(k));
    if (!groups.count(g)) {
      order.push_back(g);
      metric_cells[g].resize(o.metrics.size());
    }
    groups[g].push_back(&r);
    if (pivot) {
      const std::string column = r.param_or_absent(o.pivot);
      if (std::find(columns.begin(), columns.end(), column) == columns.end())
        columns.push_back(column);
      auto& cell = pivot_cells[g][column];
      if (auto v = picker.value(r, o.metrics.front())) cell.values.push_back(*v);
    } else {
      for (std::size_t i = 0; i < o.metrics.size(); ++i)
        if (auto v = picker.value(r, o.metrics[i])) metric_cells[g][i].values.push_back(*v);
    }
  }
  sort_values(columns);

  Table t;
  t.header = by;
  if (pivot) {
    for (const auto& c : columns) {
      if (o.machine_readable) {
        for (const char* stat : {"mean", "se", "n"})
          t.header.push_back(fmt::format("{} {}", shown_value(c), stat));
      } else {
        t.header.push_back(shown_value(c));
      }
    }
    t.header.push_back("Avg");
  } else {
    add_metric_headers(t.header, o.metrics, o.machine_readable);
    t.header.push_back("runs");
  }
  if (o.machine_readable) {
    t.numeric.assign(t.header.size(), true);
    for (std::size_t i = 0; i < by.size(); ++i) t.numeric[i] = false;
  }

  std::size_t blank_avg = 0, min_cell = SIZE_MAX, max_cell = 0;
  for (const auto& g : order) {
    std::vector<std::string> row = g;
    auto add = [&](const std::vector<double>& values) {
      const MeanSe s = mean_se(values);
      add_mean_se_cells(row, s, o.machine_readable);
      return s;
    };
    if (pivot) {
      double sum = 0;
      bool complete = true;
      for (const auto& c : columns) {
        auto it = pivot_cells[g].find(c);
        const std::vector<double> none;
        const MeanSe s = add(it == pivot_cells[g].end() ? none : it->second.values);
        if (s.n == 0) {
          complete = false;
        } else {
          sum += s.mean;
          min_cell = std::min(min_cell, s.n);
          max_cell = std::max(max_cell, s.n);
        }
      }
      if (!complete) ++blank_avg;
      row.push_back(
          complete && !columns.empty()
              ? (o.machine_readable ? full(sum / columns.size()) : fixed4(sum / columns.size()))
              : "");
    } else {
      for (std::size_t i = 0; i < o.metrics.size(); ++i) {
        const auto& values = metric_cells[g][i].values;
        add(values);
        // Fewer values than runs (some lack the metric): say how many the cell stands for.
        if (values.size() != groups[g].size() && !o.machine_readable && !values.empty())
          row.back() += fmt::format(" (n={})", values.size());
      }
      row.push_back(std::to_string(groups[g].size()));
    }
    t.rows.push_back(std::move(row));
  }

  // Notes.
  const std::size_t unfinished = runs.size() - finished.size();
  if (unfinished)
    t.notes.push_back(
        fmt::format("({} of {} runs did not finish and are not counted)", unfinished, runs.size()));
  if (!picker.fell_back().empty())
    t.notes.push_back(fmt::format(
        "({} of {} finished runs {} no {} in {} target stage (no source domain, or an older "
        "runner) and {} the final value instead: run {})",
        picker.fell_back().size(), finished.size(), picker.fell_back().size() == 1 ? "has" : "have",
        kSourceVal, picker.fell_back().size() == 1 ? "its" : "their",
        picker.fell_back().size() == 1 ? "reports" : "report", id_list(picker.fell_back())));
  if (!picker.no_selector().empty())
    t.notes.push_back(fmt::format("({} no {} to select an epoch by and {} not counted: run {})",
                                  plural(picker.no_selector().size(), "run logs", "runs log"),
                                  kTargetVal, picker.no_selector().size() == 1 ? "is" : "are",
                                  id_list(picker.no_selector())));
  for (const auto& [metric, ids] : picker.missing())
    t.notes.push_back(
        fmt::format("({} no {} {} and {} not counted in it: run {})",
                    plural(ids.size(), "run has", "runs have"), metric,
                    o.selection == Selection::Final ? "summary" : "value at the selected epoch",
                    ids.size() == 1 ? "is" : "are", id_list(ids)));
  if (pivot && max_cell > 0)
    t.notes.push_back(
        min_cell == max_cell
            ? fmt::format("(each cell: mean ± s.e. over {})", plural(max_cell, "run", "runs"))
            : fmt::format("(each cell: mean ± s.e. over {} to {} runs; a cell of one run shows "
                          "its value alone)",
                          min_cell, max_cell));
  if (blank_avg)
    t.notes.push_back(fmt::format("(Avg is the mean of a row's column means; blank in {} a column)",
                                  plural(blank_avg, "row that lacks", "rows that lack")));
  // Params that differ inside a cell although they are not seeds: the cell mixes configurations.
  std::set<std::string> pooled;
  {
    std::map<std::vector<std::string>, std::vector<const RunView*>> cells;
    for (const auto& r : finished) {
      std::vector<std::string> key;
      for (const auto& k : by) key.push_back(r.param(k));
      if (pivot) key.push_back(r.param_or_absent(o.pivot));
      cells[key].push_back(&r);
    }
    for (const auto& [key, members] : cells)
      for (const auto& k : varying_params(members))
        if (k != "seed" && k != o.pivot && std::find(by.begin(), by.end(), k) == by.end())
          pooled.insert(k);
  }
  if (!pooled.empty())
    t.notes.push_back(
        fmt::format("(runs that differ in {} share a {}; add {} to --group-by to separate them)",
                    join(std::vector<std::string>(pooled.begin(), pooled.end()), ", "),
                    pivot ? "cell" : "row", pooled.size() == 1 ? "it" : "them"));
  if (finished.empty())
    t.notes.push_back(runs.empty() ? "(no runs)" : "(no finished runs to compare)");
  return t;
}

std::string gain_text(double v, bool machine) {
  if (machine) return full(v);
  return std::isfinite(v) ? fmt::format("{:+.4f}", v) : full(v);
}

std::string p_text(double p, bool machine) {
  if (machine || !std::isfinite(p)) return full(p);
  return p >= 1e-4 ? fmt::format("{:.4f}", p) : fmt::format("{:.1e}", p);
}

// The key of the data a run is trained and tested on: target.*, backbone.* and the seed. The
// backbone's initial weights (backbone.weights*) are not: they are what a run transfers.
bool is_pairing_param(const std::string& k) {
  if (k.rfind("backbone.weights", 0) == 0) return false;
  return k == "seed" || k.rfind("target.", 0) == 0 || k.rfind("backbone.", 0) == 0;
}

std::string pairing_key(const RunView& r) {
  std::string key = fmt::format("seed={}", r.run->seed);
  for (const auto& [k, v] : r.params)
    if (k != "seed" && is_pairing_param(k)) key += "\x1f" + k + "=" + v;
  return key;
}

// Params other than the pairing ones and the strategy's.
ParamMap other_params(const RunView& r) {
  ParamMap out;
  for (const auto& [k, v] : r.params)
    if (!is_pairing_param(k) && k.rfind("strategy.", 0) != 0) out[k] = v;
  return out;
}

// Each finished run whose strategy.plugin is not `baseline` paired with the baseline run of
// the same target.*, backbone.* and seed (gain_table's rules). With `need_baseline`, no baseline
// run or no transfer run is a ReportError.
struct Pair {
  const RunView* transfer;
  const RunView* baseline;
};
struct Pairing {
  std::vector<const RunView*> baselines, transfers;
  std::vector<Pair> pairs;
  std::vector<int64_t> unmatched, duplicates;  // transfer runs without / with several baselines
  std::set<int64_t> used;                      // baseline runs paired
};
Pairing pair_with_baseline(const std::vector<RunView>& finished, const std::string& baseline,
                           const std::string& db, bool need_baseline) {
  Pairing out;
  auto& [baselines, transfers, pairs, unmatched, duplicates, used] = out;
  std::set<std::string> strategies;
  for (const auto& r : finished) {
    const std::string s = r.param("strategy.plugin");
    strategies.insert(s);
    (s == baseline ? baselines : transfers).push_back(&r);
  }
  if (baselines.empty() && need_baseline) {
    const std::vector<std::string> all(strategies.begin(), strategies.end());
    const std::string hint = did_you_mean(nearest(baseline, all));
    throw ReportError(fmt::format(
        "--baseline '{}': no finished run in {} has strategy.plugin = '{}'; {}; --baseline names "
        "the strategy trained without transfer, whose runs the others are paired with",
        baseline, db, baseline,
        hint.empty() ? "the strategies are: " + join(all, ", ", "'") : hint));
  }
  if (transfers.empty() && need_baseline)
    throw ReportError(fmt::format(
        "no finished transfer run in {}: every finished run has strategy.plugin = '{}' (the "
        "baseline); run a transfer strategy (e.g. finetune) on the same targets and seeds",
        db, baseline));

  std::map<std::string, std::vector<const RunView*>> by_key;
  for (const auto* b : baselines) by_key[pairing_key(*b)].push_back(b);

  for (const auto* tr : transfers) {
    auto it = by_key.find(pairing_key(*tr));
    if (it == by_key.end()) {
      unmatched.push_back(tr->run->id);
      continue;
    }
    std::vector<const RunView*> candidates = it->second;
    if (candidates.size() > 1) {
      // Prefer the baseline runs trained like this one (train.*, other host keys).
      const ParamMap mine = other_params(*tr);
      std::vector<const RunView*> alike;
      for (const auto* b : candidates) {
        bool same = true;
        for (const auto& [k, v] : other_params(*b)) {
          auto m = mine.find(k);
          if (m != mine.end() && m->second != v) same = false;
        }
        if (same) alike.push_back(b);
      }
      if (alike.size() != 1) {
        const auto& pool = alike.empty() ? candidates : alike;
        const std::vector<std::string> differ = varying_params(pool);
        if (!differ.empty()) {
          std::vector<int64_t> ids;
          for (const auto* b : pool) ids.push_back(b->run->id);
          const std::string& key = differ.front();
          const std::string value = pool.front()->param_or_absent(key);
          const std::string literal = value == kAbsent   ? "null"
                                      : is_number(value) ? value
                                                         : "'" + value + "'";
          throw ReportError(fmt::format(
              "run {} ({}) has {} '{}' runs with its target, backbone and seed (run {}), which "
              "differ in {}; keep one of them with --where (e.g. --where \"strategy.plugin != "
              "'{}' OR {} = {}\"), so that each transfer run has one baseline",
              tr->run->id, tr->param("strategy.plugin"), pool.size(), baseline, id_list(ids),
              join(differ, ", "), baseline, key, literal));
        }
        // Identical configurations run more than once: take the newest.
        alike = {*std::max_element(pool.begin(), pool.end(), [](const auto* a, const auto* b) {
          return a->run->id < b->run->id;
        })};
        duplicates.push_back(tr->run->id);
      }
      candidates = alike;
    }
    pairs.push_back({tr, candidates.front()});
    used.insert(candidates.front()->run->id);
  }

  return out;
}

}  // namespace

Selection parse_selection(const std::string& name) {
  if (name == "final") return Selection::Final;
  if (name == "source-val") return Selection::SourceVal;
  if (name == "oracle") return Selection::Oracle;
  const std::string hint = did_you_mean(nearest(name, {"final", "source-val", "oracle"}));
  throw ReportError(fmt::format(
      "--select '{}': unknown model selection{}{}; expected 'final' (the value after the last "
      "epoch), 'source-val' (training-domain validation) or 'oracle' (test-domain validation)",
      name, hint.empty() ? "" : "; ", hint));
}

std::string selection_name(Selection selection) {
  switch (selection) {
    case Selection::Final:
      return "final";
    case Selection::SourceVal:
      return "source-val";
    case Selection::Oracle:
      return "oracle";
  }
  return "";
}

std::string evaluated_domain(const std::string& summary, const std::string& split_metric) {
  const std::string suffix = "/" + split_metric;
  if (summary.rfind("eval/", 0) != 0 || summary.size() <= 5 + suffix.size() ||
      summary.compare(summary.size() - suffix.size(), suffix.size(), suffix) != 0)
    return "";
  const std::string domain = summary.substr(5, summary.size() - 5 - suffix.size());
  return domain.find('/') == std::string::npos ? domain : "";
}

std::vector<RunSummaryRow> cross_domain_rows(const std::vector<RunSummaryRow>& runs,
                                             const std::string& split_metric,
                                             const std::string& db) {
  const auto slash = split_metric.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == split_metric.size() ||
      split_metric.find('/', slash + 1) != std::string::npos)
    throw ReportError(fmt::format(
        "--cross-domain: metric '{}' is not <split>/<metric>; expected e.g. test/acc or "
        "test/f1_macro (the summaries eval/<domain>/<split>/<metric> that tlab eval writes)",
        split_metric));
  const std::string name = "eval/*/" + split_metric;
  std::vector<RunSummaryRow> out;
  std::set<std::string> metrics_seen;
  for (const auto& r : runs) {
    for (const auto& [summary, value] : r.summaries) {
      if (summary.rfind("eval/", 0) != 0) continue;
      metrics_seen.insert(summary);
      const std::string label = evaluated_domain(summary, split_metric);
      if (label.empty()) continue;
      RunSummaryRow row = r;
      row.summaries = {{name, value}};
      row.params.push_back({"eval.domain", label, "string"});
      out.push_back(std::move(row));
    }
  }
  if (out.empty()) {
    if (metrics_seen.empty())
      throw ReportError(fmt::format(
          "--cross-domain: no selected run in '{}' was evaluated on another domain; evaluate "
          "finished runs with tlab eval RUN -m target.<option>=a,b,c (docs/evaluation.md)",
          db));
    throw ReportError(fmt::format(
        "--cross-domain: no evaluation in '{}' has the metric '{}'; the runs have e.g. {}", db,
        split_metric, *metrics_seen.begin()));
  }
  return out;
}

// compare --select-config: per row, the searched configuration with the best mean validation
// value, and the metrics of its runs.
Table config_selection_table(Store& store, const std::vector<RunSummaryRow>& runs,
                             const CompareOptions& o) {
  const std::string db = place(store.path(), o.where);
  if (!o.pivot.empty())
    throw ReportError(
        "--select-config chooses one configuration per row; leave out --pivot (or pivot the "
        "selected runs yourself with --where)");
  if (o.metrics.empty())
    throw ReportError(
        "--metric: no metric given; name at least one, e.g. --metric "
        "target/test/acc");
  const std::string val = o.select_config == "source-val"         ? kSourceVal
                          : o.select_config == "source-val-worst" ? kSourceValWorst
                          : o.select_config == "oracle"           ? kTargetVal
                                                                  : o.select_config;
  const auto finished = finished_views(runs);
  const auto ptrs = pointers(finished);
  const auto params = all_params(runs);
  // The keys the sweep searched: every swept key a run records in runs.search, except seed.
  std::set<std::string> searched;
  const auto listed = store.searches();  // one query, not one per run
  const std::map<int64_t, std::string> searches(listed.begin(), listed.end());
  for (const auto& f : finished) {
    const auto it = searches.find(f.run->id);
    if (it == searches.end()) continue;
    const auto search = nlohmann::json::parse(it->second, nullptr, false);
    if (!search.is_object() || !search.contains("distributions")) continue;
    for (const auto& [key, d] : search["distributions"].items())
      if (key != "seed" && params.count(key)) searched.insert(key);
  }
  for (const auto& k : o.group_by) {
    if (!params.count(k)) unknown_name("--group-by", k, "a param", params, db);
    searched.erase(k);
  }
  if (searched.empty())
    throw ReportError(fmt::format(
        "--select-config chooses among the configurations a sweep searched, but no finished run "
        "in {} records a searched key other than seed (runs.search; a sweep with [sweep] "
        "samples = N or a grid over values writes it)",
        db));
  ValuePicker picker(&store, o.selection);
  // A metric's value: the epoch --select picks; with final, the summary, or else the last
  // value logged (source/val/acc is logged per epoch only).
  auto value = [&](const RunView& r, const std::string& m) -> std::optional<double> {
    if (o.selection == Selection::Final && !r.summary(m)) {
      const auto& h = picker.history(r.run->id, m);
      for (auto it = h.rbegin(); it != h.rend(); ++it)
        if (std::isfinite(it->value)) return it->value;
      return std::nullopt;
    }
    return picker.value(r, m);
  };
  bool any_val = false;
  for (const auto& f : finished)
    if (value(f, val)) {
      any_val = true;
      break;
    }
  if (!any_val)
    unknown_name("--select-config", val, "a value of", all_summaries(runs), db,
                 o.select_config == "source-val"
                     ? "; source-val needs runs with a source domain (source/val/acc); use "
                       "--select-config oracle for target/val/acc"
                 : o.select_config == "source-val-worst"
                     ? "; source-val-worst needs runs whose source pools several domains, "
                       "e.g. [source.transform] rotate = [0, 15, 30] (each one validated: "
                       "source/val/<domain>/acc, the worst source/val/worst/acc); use "
                       "--select-config source-val for the pooled source/val/acc"
                     : "");

  std::vector<std::string> by = o.group_by;
  if (by.empty()) {
    if (params.count("strategy.plugin") && !searched.count("strategy.plugin"))
      by.push_back("strategy.plugin");
    for (const auto& k : distinguishing_params(ptrs, [&](const std::string& k) {
           return k == "seed" || k == "strategy.plugin" || searched.count(k);
         }))
      by.push_back(k);
  }
  // A configuration: the searched keys, and whatever else varies outside the rows but seed.
  std::set<std::string> config_keys = searched;
  for (const auto& k : distinguishing_params(ptrs, [&](const std::string& k) {
         return k == "seed" || std::find(by.begin(), by.end(), k) != by.end();
       }))
    config_keys.insert(k);
  const std::vector<std::string> keys(config_keys.begin(), config_keys.end());
  struct Config {
    std::vector<const RunView*> runs;
    std::vector<double> val;
  };
  std::vector<std::vector<std::string>> order;
  std::map<std::vector<std::string>, std::vector<std::vector<std::string>>> config_order;
  std::map<std::vector<std::string>, std::map<std::vector<std::string>, Config>> groups;
  std::vector<int64_t> no_val;
  for (const auto& f : finished) {
    std::vector<std::string> g, c;
    for (const auto& k : by) g.push_back(f.param_or_absent(k));
    for (const auto& k : keys) c.push_back(f.param_or_absent(k));
    if (!groups.count(g)) order.push_back(g);
    auto& configs = groups[g];
    if (!configs.count(c)) config_order[g].push_back(c);
    Config& config = configs[c];
    config.runs.push_back(&f);
    if (auto v = value(f, val))
      config.val.push_back(*v);
    else
      no_val.push_back(f.run->id);
  }

  Table t;
  t.title = fmt::format(
      "model selection over the search of {}: per row, the configuration with the best mean {} "
      "over its seeds ({}); epochs: {}",
      join(keys, ", "), val,
      o.select_config == "source-val"         ? "training-domain validation"
      : o.select_config == "source-val-worst" ? "the worst training domain's validation"
      : o.select_config == "oracle"           ? "test-domain validation, an oracle"
                                              : "validation",
      selection_description(o.selection));
  t.header = by;
  for (const char* h : {"configs", "selected", "val"}) t.header.push_back(h);
  add_metric_headers(t.header, o.metrics, o.machine_readable);
  t.header.push_back("runs");
  t.numeric.assign(t.header.size(), true);
  for (std::size_t i = 0; i < by.size() + 2; ++i) t.numeric[i] = false;
  std::map<std::string, std::vector<int64_t>> missing;
  for (const auto& g : order) {
    const std::vector<std::string>* best = nullptr;
    double best_val = 0;
    for (const auto& c : config_order[g]) {
      const Config& config = groups[g][c];
      if (config.val.empty()) continue;
      const double m = mean_se(config.val).mean;
      if (!best || m > best_val) best = &c, best_val = m;  // ties: the first configuration
    }
    std::vector<std::string> row = g;
    row.push_back(std::to_string(config_order[g].size()));
    if (!best) {
      row.push_back("(none has " + val + ")");
      row.resize(t.header.size());
      t.rows.push_back(std::move(row));
      continue;
    }
    std::vector<std::string> chosen;
    for (std::size_t i = 0; i < keys.size(); ++i)
      chosen.push_back(keys[i] + "=" + shown_value((*best)[i]));
    row.push_back(join(chosen, " "));
    row.push_back(o.machine_readable ? full(best_val) : fixed4(best_val));
    const Config& config = groups[g][*best];
    for (const auto& m : o.metrics) {
      std::vector<double> values;
      for (const auto* r : config.runs) {
        if (auto v = value(*r, m))
          values.push_back(*v);
        else
          missing[m].push_back(r->run->id);
      }
      add_mean_se_cells(row, mean_se(values), o.machine_readable);
    }
    row.push_back(std::to_string(config.runs.size()));
    t.rows.push_back(std::move(row));
  }
  const std::size_t unfinished = runs.size() - finished.size();
  if (unfinished)
    t.notes.push_back(
        fmt::format("({} of {} runs did not finish and are not counted)", unfinished, runs.size()));
  if (!no_val.empty())
    t.notes.push_back(fmt::format("({} no {} and cannot be selected: run {})",
                                  plural(no_val.size(), "run has", "runs have"), val,
                                  id_list(no_val)));
  for (const auto& [m, ids] : missing)
    t.notes.push_back(fmt::format("({} of the selected configurations {} no {}: run {})",
                                  plural(ids.size(), "run", "runs"),
                                  ids.size() == 1 ? "has" : "have", m, id_list(ids)));
  return t;
}

Table compare_table(Store& store, const std::vector<RunSummaryRow>& runs,
                    const CompareOptions& options) {
  if (!options.select_config.empty()) return config_selection_table(store, runs, options);
  Table t = build_comparison(&store, place(store.path(), options.where), runs, options,
                             /*strict=*/true);
  if (options.pivot == "eval.domain") {  // cross_domain_rows: evaluations of the kept models
    t.title = fmt::format(
        "{}: mean ± s.e. over seeds, columns = the domains evaluated with tlab eval (the model "
        "each run kept)",
        options.metrics.front());
  } else if (!options.pivot.empty()) {
    t.title = fmt::format("{}: mean ± s.e. over seeds, columns = {}; selection: {}",
                          options.metrics.front(), options.pivot,
                          selection_description(options.selection));
  } else if (options.selection != Selection::Final) {
    t.title = "selection: " + selection_description(options.selection);
  }
  return t;
}

std::string format_comparison(const std::vector<RunSummaryRow>& runs,
                              const std::vector<std::string>& by,
                              const std::vector<std::string>& metrics) {
  CompareOptions o;
  o.group_by = by;
  o.metrics = metrics;
  return render(build_comparison(nullptr, "", runs, o, /*strict=*/false), TableFormat::Text);
}

Table gain_table(Store& store, const std::vector<RunSummaryRow>& runs, const GainOptions& o) {
  const std::string db = place(store.path(), o.where);
  const bool machine = o.machine_readable;
  if (o.baseline.empty())
    throw ReportError(
        "--baseline: empty; name the strategy trained without transfer, e.g. "
        "--baseline scratch");
  const auto params = all_params(runs);
  for (const auto& k : o.group_by)
    if (!params.count(k)) unknown_name("--by", k, "a param", params, db);
  if (!all_summaries(runs).count(o.metric))
    unknown_name("--metric", o.metric, "a summary", all_summaries(runs), db);

  const auto finished = finished_views(runs);
  const Pairing pairing = pair_with_baseline(finished, o.baseline, db, /*need_baseline=*/true);
  const auto& [baselines, transfers, pairs, unmatched, duplicates, used] = pairing;

  // Rows.
  std::vector<std::string> by = o.group_by;
  if (by.empty()) {
    by = {"strategy.plugin"};
    for (const auto& k : distinguishing_params(transfers, [](const std::string& k) {
           return k == "strategy.plugin" || is_pairing_param(k);
         }))
      by.push_back(k);
  }
  struct Group {
    std::vector<double> base, method;
  };
  std::vector<std::vector<std::string>> order;
  std::map<std::vector<std::string>, Group> groups;
  std::vector<int64_t> no_value;
  for (const auto& p : pairs) {
    std::vector<std::string> g;
    for (const auto& k : by) g.push_back(p.transfer->param(k));
    if (!groups.count(g)) order.push_back(g), groups[g];
    const double* m = p.transfer->summary(o.metric);
    const double* b = p.baseline->summary(o.metric);
    if (!m || !b || !std::isfinite(*m) || !std::isfinite(*b)) {
      no_value.push_back(p.transfer->run->id);
      continue;
    }
    groups[g].method.push_back(*m);
    groups[g].base.push_back(*b);
  }

  Table t;
  t.title = fmt::format("transfer gain on {} over '{}' (paired by target, backbone and seed)",
                        o.metric, o.baseline);
  t.header = by;
  for (const char* h : {"pairs", "baseline", "method", "gain", "s.e.", "t", "p", "flag"})
    t.header.push_back(h);
  t.numeric.assign(t.header.size(), true);
  for (std::size_t i = 0; i < by.size(); ++i) t.numeric[i] = false;
  t.numeric.back() = false;
  for (const auto& g : order) {
    const Group& group = groups[g];
    std::vector<std::string> row = g;
    const TTest test = paired_t_test(group.method, group.base);
    row.push_back(std::to_string(test.n));
    if (test.n == 0) {
      for (int i = 0; i < 7; ++i) row.push_back("");
    } else {
      auto value = [&](double v) { return machine ? full(v) : fixed4(v); };
      row.push_back(value(mean_se(group.base).mean));
      row.push_back(value(mean_se(group.method).mean));
      row.push_back(gain_text(test.mean, machine));
      row.push_back(test.n > 1 ? value(test.se) : "");
      row.push_back(test.n > 1 ? (machine ? full(test.t) : fmt::format("{:.2f}", test.t)) : "");
      row.push_back(test.n > 1 ? p_text(test.p, machine) : "");
      std::string flag;
      if (test.mean < 0)
        flag = test.n > 1 && test.p < 0.05 ? "NEGATIVE TRANSFER" : "negative (n.s.)";
      row.push_back(flag);
    }
    t.rows.push_back(std::move(row));
  }

  const std::size_t unfinished = runs.size() - finished.size();
  if (unfinished)
    t.notes.push_back(
        fmt::format("({} of {} runs did not finish and are not counted)", unfinished, runs.size()));
  if (!unmatched.empty())
    t.notes.push_back(fmt::format(
        "({} no '{}' run with the same target.*, backbone.* and seed and {} not counted: run {})",
        plural(unmatched.size(), "transfer run has", "transfer runs have"), o.baseline,
        unmatched.size() == 1 ? "is" : "are", id_list(unmatched)));
  std::vector<int64_t> unused;
  for (const auto* b : baselines)
    if (!used.count(b->run->id)) unused.push_back(b->run->id);
  if (!unused.empty())
    t.notes.push_back(fmt::format("({} '{}' {} no transfer run: run {})", unused.size(), o.baseline,
                                  unused.size() == 1 ? "run matches" : "runs match",
                                  id_list(unused)));
  if (!no_value.empty())
    t.notes.push_back(
        fmt::format("({} without a finite {} on both sides {} not counted: transfer run {})",
                    plural(no_value.size(), "pair", "pairs"), o.metric,
                    no_value.size() == 1 ? "is" : "are", id_list(no_value)));
  if (!duplicates.empty())
    t.notes.push_back(
        fmt::format("({} several identical '{}' runs to pair with; the newest is used: run {})",
                    plural(duplicates.size(), "transfer run had", "transfer runs had"), o.baseline,
                    id_list(duplicates)));
  if (o.metric.find("loss") != std::string::npos)
    t.notes.push_back(fmt::format(
        "({} is a loss: lower is better, so a positive gain is worse here, and the flags, which "
        "assume higher is better, do not apply)",
        o.metric));
  t.notes.push_back(
      "(gain = method - baseline, mean over pairs; p: two-sided paired t-test, n - 1 degrees of "
      "freedom; NEGATIVE TRANSFER: mean gain < 0 with p < 0.05)");
  return t;
}

const std::vector<std::string>& transferability_scores() {
  static const std::vector<std::string> scores = {"logme", "leep", "nce", "hscore"};
  return scores;
}

TransferabilityData transferability_data(const std::vector<RunSummaryRow>& runs,
                                         const TransferabilityOptions& o, const std::string& db) {
  const auto finished = finished_views(runs);
  std::vector<const RunView*> scored;
  for (const auto& r : finished)
    for (const auto& score : transferability_scores())
      if (r.summary("transfer/" + score)) {
        scored.push_back(&r);
        break;
      }
  if (scored.empty())
    throw ReportError(fmt::format(
        "no finished run in {} recorded transferability scores (summaries transfer/logme, ...); "
        "run the transfer experiments with +eval.transferability=true (or [eval] "
        "transferability = true), which scores each run's starting point before it trains",
        db));
  if (!all_summaries(runs).count(o.metric))
    unknown_name("--metric", o.metric, "a summary", all_summaries(runs), db);
  std::map<int64_t, const RunView*> baseline_of;
  TransferabilityData out;
  const Pairing pairing = pair_with_baseline(finished, o.baseline, db, /*need_baseline=*/false);
  for (const auto& p : pairing.pairs) baseline_of[p.transfer->run->id] = p.baseline;
  out.group_keys = distinguishing_params(
      scored, [](const std::string& k) { return k == "seed" || k == "eval.transferability"; });
  for (const auto& k : out.group_keys) {  // "domain", "source" (for source.plugin), ...
    const auto dot = k.rfind('.');
    std::string name = dot == std::string::npos ? k : k.substr(dot + 1);
    out.group_names.push_back(name == "plugin" ? k.substr(0, k.find('.')) : name);
  }
  std::size_t no_metric = 0, no_baseline = 0;
  for (const auto* r : scored) {
    const double* m = r->summary(o.metric);
    if (!m || !std::isfinite(*m)) {
      ++no_metric;
      continue;
    }
    double gain = std::numeric_limits<double>::quiet_NaN();
    auto b = baseline_of.find(r->run->id);
    if (r->param("strategy.plugin") == o.baseline) {
      gain = 0;  // the baseline's own starting point: no gain over itself
    } else if (b != baseline_of.end()) {
      if (const double* bm = b->second->summary(o.metric); bm && std::isfinite(*bm))
        gain = *m - *bm;
    } else {
      ++no_baseline;
    }
    std::vector<std::string> group;
    for (const auto& k : out.group_keys)
      group.push_back(r->param(k).empty() ? "-" : r->param(k));  // "-": the run has no such key
    for (const auto& score : transferability_scores())
      if (const double* v = r->summary("transfer/" + score); v && std::isfinite(*v))
        out.points[score].push_back({r->run->id, *v, *m, gain, join(group, ", ")});
  }
  if (no_metric)
    out.notes.push_back(fmt::format("({} without a finite {} not counted)",
                                    plural(no_metric, "scored run", "scored runs"), o.metric));
  if (no_baseline)
    out.notes.push_back(fmt::format(
        "({} no finished '{}' run with the same target.*, backbone.* and seed: no gain)",
        plural(no_baseline, "scored run has", "scored runs have"), o.baseline));
  return out;
}

Table transferability_table(Store& store, const std::vector<RunSummaryRow>& runs,
                            const TransferabilityOptions& o) {
  const std::string db = place(store.path(), o.where);
  const TransferabilityData data = transferability_data(runs, o, db);
  const bool machine = o.machine_readable;
  Table t;
  t.title = fmt::format(
      "transferability scores against the realised {} and its gain over '{}' (each run's "
      "starting point scored before training)",
      o.metric, o.baseline);
  t.header = {"score", "runs",     "tau", "p",      "r", "p",
              "pairs", "tau gain", "p",   "r gain", "p", "flag"};
  t.numeric.assign(t.header.size(), true);
  t.numeric.front() = t.numeric.back() = false;
  auto value = [&](double v) {
    if (!std::isfinite(v)) return std::string();
    return machine ? full(v) : fmt::format("{:.3f}", v);
  };
  for (const auto& score : transferability_scores()) {
    auto it = data.points.find(score);
    if (it == data.points.end()) continue;
    std::vector<double> sx, my, gx, gy;
    for (const auto& p : it->second) {
      sx.push_back(p.score);
      my.push_back(p.metric);
      if (std::isfinite(p.gain)) gx.push_back(p.score), gy.push_back(p.gain);
    }
    const Correlation tau = kendall_tau(sx, my), r = pearson(sx, my);
    const Correlation tau_g = kendall_tau(gx, gy), r_g = pearson(gx, gy);
    std::string flag;
    const Correlation& judged = gx.size() >= 3 ? tau_g : tau;
    if (judged.value < 0) flag = judged.p < 0.05 ? "RANKS INVERSELY" : "inverse (n.s.)";
    auto p_of = [&](const Correlation& c) {
      return std::isfinite(c.value) && std::isfinite(c.p) ? p_text(c.p, machine) : std::string();
    };
    t.rows.push_back({score, std::to_string(sx.size()), value(tau.value), p_of(tau), value(r.value),
                      p_of(r), std::to_string(gx.size()), value(tau_g.value), p_of(tau_g),
                      value(r_g.value), p_of(r_g), flag});
  }
  for (const auto& n : data.notes) t.notes.push_back(n);
  t.notes.push_back(fmt::format(
      "(tau: Kendall's tau-b, r: Pearson's, over the runs' (score, {}) and (score, gain) pairs; "
      "p: two-sided, as scipy.stats; the baseline's own runs count with gain 0; higher scores "
      "should mean higher outcomes: tau near 1 ranks the starting points as fine-tuning did)",
      o.metric));
  return t;
}

}  // namespace tlab
