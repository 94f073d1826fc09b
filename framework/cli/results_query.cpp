// tlab results list | show | export: selecting runs (--where, --sort, --limit) and printing
// one run in full or many runs as a table.
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "report/report.hpp"
#include "results/classification.hpp"
#include "results/query.hpp"
#include "results/table.hpp"
#include "results_cli.hpp"
#include "util.hpp"

namespace tlab::cli {
namespace {

// Options shared by list and export.
struct Selection {
  std::string where;
  std::vector<std::string> sort;
  int64_t limit = 0;
};

void add_selection_options(CLI::App& cmd, Selection& s) {
  cmd.add_option("--where", s.where,
                 "Keep the runs that match, e.g. \"strategy.plugin = 'dann' AND "
                 "target/test/acc > 0.8\" (see docs/results.md)");
  cmd.add_option("--sort", s.sort,
                 "Sort by a field, optionally followed by asc or desc, e.g. \"target/test/acc "
                 "desc\"; repeat for ties (missing values last)")
      ->take_all()
      ->allow_extra_args(false);
  cmd.add_option("--limit", s.limit, "At most this many runs (0 = all)")->capture_default_str();
}

QueryOptions query_options(const Selection& s) {
  QueryOptions options;
  options.where = s.where;
  options.sort = s.sort;
  options.limit = s.limit;
  return options;
}

std::vector<RunSummaryRow> select(Store& store, const Selection& s) {
  try {
    return select_runs(store, query_options(s));
  } catch (const QueryError& e) {
    throw UsageError(e.what());
  }
}

// Numbers as text at full precision (the shortest text that reads back the same).
std::string number_text(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return fmt::format("{}", v);
}

// Numbers as text for people: 6 significant digits (`--format json` has them all).
std::string short_number(double v) {
  if (!std::isfinite(v)) return number_text(v);
  return fmt::format("{:.6g}", v);
}

nlohmann::json number_json(double v) {
  return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
}

std::string param_text(const ParamValue& v) {
  return std::visit(
      [](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, bool>)
          return x ? "true" : "false";
        else if constexpr (std::is_same_v<T, std::string>)
          return x;
        else if constexpr (std::is_same_v<T, double>)
          return number_text(x);
        else
          return std::to_string(x);
      },
      v);
}

nlohmann::json param_json(const ParamValue& v) {
  return std::visit(
      [](const auto& x) -> nlohmann::json {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, double>)
          return number_json(x);
        else
          return nlohmann::json(x);
      },
      v);
}

std::string indent(const std::string& text, const std::string& prefix = "  ") {
  std::string out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out += (line.empty() ? "" : prefix + line) + "\n";
  return out;
}

// ---------------------------------------------------------------------------------------------
// show

struct MetricSummary {
  std::string name;
  std::size_t count = 0;
  MetricRow last{};
};

// Per metric name (in name order): how many values and the last one (by step).
std::vector<MetricSummary> summarize_metrics(const std::vector<MetricRow>& rows) {
  std::map<std::string, MetricSummary> by_name;
  for (const auto& row : rows) {
    auto& s = by_name[row.name];
    s.name = row.name;
    ++s.count;
    s.last = row;
  }
  std::vector<MetricSummary> out;
  for (auto& [name, s] : by_name) out.push_back(s);
  return out;
}

std::string optional_int(int64_t v) { return v < 0 ? "-" : std::to_string(v); }

std::string git_text(const RunRecord& r) {
  std::string commit = r.git_commit.empty() ? "unknown" : r.git_commit;
  if (r.git_dirty == 1) return commit + " (uncommitted changes)";
  if (r.git_dirty == 0) return commit + " (clean)";
  return commit;
}

std::string show_text(const RunRecord& r, const std::vector<RunSummaryRow>& listed,
                      const std::vector<MetricRow>& metrics,
                      const std::vector<PluginRecord>& plugins,
                      const std::vector<EvaluationRecord>& evaluations, bool full_metrics) {
  const RunSummaryRow* row = listed.empty() ? nullptr : &listed.front();
  std::string out = fmt::format("Run {}: {} ({})\n", r.id, r.name, r.status);
  if (!r.reason.empty()) out += fmt::format("reason: {}\n", r.reason);

  std::vector<std::pair<std::string, std::string>> prov;
  auto add = [&](const std::string& k, const std::string& v) {
    prov.emplace_back(k, v.empty() ? "-" : v);
  };
  add("uuid", r.uuid);
  add("run_key", r.run_key);
  add("experiment", r.experiment);
  add("seed", std::to_string(r.seed));
  add("host", r.host);
  add("pid", optional_int(r.pid));
  add("device", r.device);
  if (!r.gpu.empty()) add("gpu", r.gpu);
  add("git", git_text(r));
  add("tlab_version", r.tlab_version);
  add("run_dir", r.run_dir);
  add("created_at", r.created_at);
  add("started_at", r.started_at);
  add("ended_at", r.ended_at);
  add("heartbeat_at", r.heartbeat_at);
  add("exit_code", optional_int(r.exit_code));
  add("signal", optional_int(r.signal));
  if (!r.sweep.empty()) add("sweep", r.sweep);
  if (!r.job.empty()) add("job", r.job);
  if (r.processes > 1) add("processes", fmt::format("{} ({})", r.processes, r.backend));
  if (!r.search.empty()) add("search", r.search);
  add("override_args", r.override_args.empty() ? "(none)" : join(r.override_args, " "));
  add("overrides", r.overrides);
  add("config_hash", r.config_hash);
  out += "\nProvenance\n";
  std::size_t width = 0;
  for (const auto& kv : prov) width = std::max(width, kv.first.size());
  for (const auto& [k, v] : prov) out += fmt::format("  {:<{}}  {}\n", k, width, v);
  if (!r.stderr_tail.empty()) out += "\nstderr (last lines)\n" + indent(r.stderr_tail);

  out += "\nConfig\n" + (r.config_toml.empty() ? std::string("  (none)\n") : indent(r.config_toml));

  if (row && !row->params.empty()) {
    Table params;
    params.title = "\nParams";
    params.header = {"key", "value", "type"};
    for (const auto& p : row->params) params.rows.push_back({p.key, param_text(p.value), p.type});
    out += render(params, TableFormat::Text);
  }

  if (row && !row->summaries.empty()) {
    Table summaries;
    summaries.title = "\nSummaries";
    summaries.header = {"name", "value"};
    summaries.numeric = {false, true};
    for (const auto& [name, v] : row->summaries) summaries.rows.push_back({name, short_number(v)});
    out += render(summaries, TableFormat::Text);
  }

  if (!metrics.empty()) {
    Table m;
    if (full_metrics) {
      m.title = "\nMetrics";
      m.header = {"name", "step", "epoch", "value", "wall_time"};
      m.numeric = {false, true, true, true, true};
      for (const auto& row_m : metrics)
        m.rows.push_back({row_m.name, std::to_string(row_m.step), std::to_string(row_m.epoch),
                          short_number(row_m.value), fmt::format("{:.3f}", row_m.wall_time)});
    } else {
      m.title = "\nMetrics (last value of each; --metrics for the full history)";
      m.header = {"name", "count", "last step", "last epoch", "last value"};
      m.numeric = {false, true, true, true, true};
      for (const auto& s : summarize_metrics(metrics))
        m.rows.push_back({s.name, std::to_string(s.count), std::to_string(s.last.step),
                          std::to_string(s.last.epoch), short_number(s.last.value)});
    }
    out += render(m, TableFormat::Text);
  }

  for (const auto& e : evaluations) {
    try {
      out += render(evaluation_table(e), TableFormat::Text);
    } catch (const ClassificationError& error) {
      out += fmt::format("\nEvaluation {}: its counts cannot be read: {}\n", e.name, error.what());
    }
  }

  if (!plugins.empty()) {
    Table p;
    p.title = "\nPlugins";
    p.header = {"kind", "name", "version", "file_hash", "path"};
    for (const auto& pl : plugins)
      p.rows.push_back({pl.kind, pl.name, pl.version, pl.file_hash, pl.path});
    out += render(p, TableFormat::Text);
  }
  return printable(out, /*keep_lines=*/true);  // values from the database reach a terminal
}

nlohmann::json show_json(const RunRecord& r, const std::vector<RunSummaryRow>& listed,
                         const std::vector<MetricRow>& metrics,
                         const std::vector<PluginRecord>& plugins,
                         const std::vector<EvaluationRecord>& evaluations, bool full_metrics) {
  auto optional = [](int64_t v) { return v < 0 ? nlohmann::json(nullptr) : nlohmann::json(v); };
  auto text_or_null = [](const std::string& s) {
    return s.empty() ? nlohmann::json(nullptr) : nlohmann::json(s);
  };
  nlohmann::json overrides =
      nlohmann::json::parse(r.overrides, nullptr, /*allow_exceptions=*/false);
  if (overrides.is_discarded()) overrides = r.overrides;
  nlohmann::json j = {
      {"id", r.id},
      {"uuid", r.uuid},
      {"name", r.name},
      {"status", r.status},
      {"reason", r.reason},
      {"experiment", r.experiment},
      {"seed", r.seed},
      {"config_toml", r.config_toml},
      {"config_hash", r.config_hash},
      {"provenance",
       {{"host", r.host},
        {"pid", optional(r.pid)},
        {"device", r.device},
        {"gpu", text_or_null(r.gpu)},
        {"git_commit", text_or_null(r.git_commit)},
        {"git_dirty", r.git_dirty < 0 ? nlohmann::json(nullptr) : nlohmann::json(r.git_dirty == 1)},
        {"tlab_version", r.tlab_version},
        {"run_dir", r.run_dir},
        {"created_at", text_or_null(r.created_at)},
        {"started_at", text_or_null(r.started_at)},
        {"ended_at", text_or_null(r.ended_at)},
        {"heartbeat_at", text_or_null(r.heartbeat_at)},
        {"exit_code", optional(r.exit_code)},
        {"signal", optional(r.signal)},
        {"stderr_tail", r.stderr_tail},
        {"run_key", r.run_key},
        {"sweep", text_or_null(r.sweep)},
        {"job", text_or_null(r.job)},
        {"processes", r.processes},
        {"backend", text_or_null(r.backend)},
        {"search", r.search.empty() ? nlohmann::json(nullptr)
                                    : nlohmann::json::parse(r.search, nullptr, false)},
        {"override_args", r.override_args},
        {"overrides", overrides}}}};
  nlohmann::json params = nlohmann::json::object(), types = nlohmann::json::object(),
                 summaries = nlohmann::json::object();
  if (!listed.empty()) {
    for (const auto& p : listed.front().params) {
      params[p.key] = param_json(p.value);
      types[p.key] = p.type;
    }
    for (const auto& [name, v] : listed.front().summaries) summaries[name] = number_json(v);
  }
  j["params"] = params;
  nlohmann::json evaluated = nlohmann::json::array();
  for (const auto& e : evaluations) {
    nlohmann::json counts = nlohmann::json::parse(e.counts, nullptr, /*allow_exceptions=*/false);
    evaluated.push_back({{"name", e.name},
                         {"dataset", text_or_null(e.dataset)},
                         {"loss", number_json(e.loss)},
                         {"created_at", e.created_at},
                         {"counts", counts.is_discarded() ? nlohmann::json(e.counts) : counts}});
  }
  j["evaluations"] = evaluated;
  j["param_types"] = types;
  j["summaries"] = summaries;
  nlohmann::json compact = nlohmann::json::object();
  for (const auto& s : summarize_metrics(metrics))
    compact[s.name] = {{"count", s.count},
                       {"last_step", s.last.step},
                       {"last_epoch", s.last.epoch},
                       {"last_value", number_json(s.last.value)}};
  j["metrics"] = compact;
  if (full_metrics) {
    nlohmann::json history = nlohmann::json::array();
    for (const auto& m : metrics)
      history.push_back({{"name", m.name},
                         {"step", m.step},
                         {"epoch", m.epoch},
                         {"value", number_json(m.value)},
                         {"wall_time", m.wall_time}});
    j["metric_history"] = history;
  }
  nlohmann::json pl = nlohmann::json::array();
  for (const auto& p : plugins)
    pl.push_back({{"kind", p.kind},
                  {"name", p.name},
                  {"version", p.version},
                  {"path", p.path},
                  {"file_hash", p.file_hash}});
  j["plugins"] = pl;
  return j;
}

// ---------------------------------------------------------------------------------------------
// export

// The text of the run column `column` (one of id, name, status, seed).
std::string column_text(const RunSummaryRow& r, const std::string& column) {
  if (column == "id") return std::to_string(r.id);
  if (column == "name") return r.name;
  if (column == "status") return r.status;
  return std::to_string(r.seed);
}

// One row per run: id, name, status, seed, every param, every summary. A param named like one of
// the first four columns (the config's top-level `name` and `seed`) is left out when it equals
// that column in every run, else written as "param:<key>"; a summary named like a param is
// written as "summary:<name>".
Table export_table(const std::vector<RunSummaryRow>& runs) {
  Table t;
  t.header = {"id", "name", "status", "seed"};
  t.numeric = {true, false, false, true};
  std::set<std::string> param_keys, summary_names;
  for (const auto& r : runs) {
    for (const auto& p : r.params) param_keys.insert(p.key);
    for (const auto& s : r.summaries) summary_names.insert(s.first);
  }
  std::set<std::string> taken(t.header.begin(), t.header.end());
  for (const auto& column : t.header) {
    if (!param_keys.count(column)) continue;
    bool same = true;
    for (const auto& r : runs)
      for (const auto& p : r.params)
        if (p.key == column && param_text(p.value) != column_text(r, column)) same = false;
    if (same) param_keys.erase(column);
  }
  std::vector<std::string> params(param_keys.begin(), param_keys.end());
  std::vector<std::string> summaries(summary_names.begin(), summary_names.end());
  for (const auto& k : params) {
    const std::string column = taken.count(k) ? "param:" + k : k;
    taken.insert(column);
    t.header.push_back(column);
    bool numeric = true;
    for (const auto& r : runs)
      for (const auto& p : r.params)
        if (p.key == k && !std::holds_alternative<int64_t>(p.value) &&
            !std::holds_alternative<double>(p.value))
          numeric = false;
    t.numeric.push_back(numeric);
  }
  for (const auto& s : summaries) {
    t.header.push_back(taken.count(s) ? "summary:" + s : s);
    t.numeric.push_back(true);
  }
  for (const auto& r : runs) {
    std::vector<std::string> row = {std::to_string(r.id), r.name, r.status, std::to_string(r.seed)};
    std::map<std::string, std::string> pm;
    for (const auto& p : r.params) pm[p.key] = param_text(p.value);
    std::map<std::string, double> sm(r.summaries.begin(), r.summaries.end());
    for (const auto& k : params) row.push_back(pm.count(k) ? pm[k] : "");
    for (const auto& s : summaries) row.push_back(sm.count(s) ? number_text(sm[s]) : "");
    t.rows.push_back(std::move(row));
  }
  return t;
}

void write_output(const std::string& text, const std::string& path) {
  if (path.empty() || path == "-") {
    std::cout << text;
    return;
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out)
    throw UsageError(
        fmt::format("cannot write '{}': {}; check that its folder exists and is "
                    "writable, or leave out --output to print to stdout",
                    path, std::strerror(errno)));
  out << text;
  out.close();
  if (!out)
    throw UsageError(
        fmt::format("writing '{}' failed: {}; check the free space", path, std::strerror(errno)));
}

}  // namespace

int64_t resolve_run(Store& store, const std::string& spec, const std::string& db) {
  if (spec.empty())
    throw UsageError("expected a run id or the start of a run's uuid (tlab results list)");
  const auto runs = store.list_runs();
  const bool digits = std::all_of(
      spec.begin(), spec.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
  if (digits && spec.size() < 19) {
    const int64_t id = std::stoll(spec);
    for (const auto& r : runs)
      if (r.id == id) return id;
  }
  auto lower = [](std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  };
  const std::string prefix = lower(spec);
  std::vector<const RunSummaryRow*> hits;
  for (const auto& r : runs)
    if (!r.uuid.empty() && lower(r.uuid).compare(0, prefix.size(), prefix) == 0) hits.push_back(&r);
  if (hits.size() == 1) return hits[0]->id;
  if (hits.size() > 1) {
    std::vector<std::string> names;
    for (const auto* r : hits) names.push_back(fmt::format("{} (id {})", r->uuid, r->id));
    throw UsageError(fmt::format(
        "run '{}' is ambiguous in '{}': {} runs have a uuid starting with it: {}; give more "
        "characters of the uuid, or the id",
        spec, db, hits.size(), join(names, ", ")));
  }
  if (runs.empty())
    throw UsageError(fmt::format("no run '{}' in '{}': the database has no runs", spec, db));
  throw UsageError(
      fmt::format("no run '{}' in '{}': expected a run id ({} to {}) or the start of a run's uuid; "
                  "tlab results list --db {} shows them",
                  spec, db, runs.front().id, runs.back().id, db));
}

std::vector<int64_t> resolve_runs(Store& store, const std::string& spec, const std::string& db) {
  std::vector<int64_t> ids;
  auto add = [&](int64_t id) {
    if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
  };
  std::stringstream in(spec);
  for (std::string part; std::getline(in, part, ',');) {
    const auto dash = part.find('-');
    const bool range = dash != std::string::npos && dash > 0 && dash + 1 < part.size() &&
                       part.find_first_not_of("0123456789-") == std::string::npos &&
                       part.find('-', dash + 1) == std::string::npos;
    if (!range) {
      add(resolve_run(store, part, db));
      continue;
    }
    const int64_t first = resolve_run(store, part.substr(0, dash), db);
    const int64_t last = resolve_run(store, part.substr(dash + 1), db);
    if (last < first)
      throw UsageError(
          fmt::format("runs '{}': the range {} goes down; expected the lower id first, e.g. {}-{}",
                      spec, part, last, first));
    for (int64_t id = first; id <= last; ++id) add(resolve_run(store, std::to_string(id), db));
  }
  if (ids.empty()) throw UsageError("expected a run id or the start of a run's uuid");
  return ids;
}

void add_results_query(CLI::App& results, std::vector<Command>& out) {
  // list
  {
    struct Options {
      std::string db = "results/results.db";
      std::string format = "table";
      Selection selection;
    };
    auto o = std::make_shared<Options>();
    auto* list = results.add_subcommand("list", "One row per run");
    add_db_option(*list, o->db);
    list->add_option("--format", o->format, "table, json or csv")
        ->check(CLI::IsMember({"table", "json", "csv"}))
        ->capture_default_str();
    add_selection_options(*list, o->selection);
    out.push_back({list, [o] {
                     Store store = open_results(o->db);
                     const Format format = parse_format(o->format);
                     if (format == Format::Json) {
                       std::cout << format_runs(select(store, o->selection), format);
                       return 0;
                     }
                     // A table or CSV keeps a few hundred bytes of each run, not the run.
                     RunListing listing(format);
                     try {
                       for_each_selected_run(store, query_options(o->selection),
                                             [&](const RunSummaryRow& r) { listing.add(r); });
                     } catch (const QueryError& e) {
                       throw UsageError(e.what());
                     }
                     std::cout << listing.render();
                     return 0;
                   }});
  }
  // show
  {
    struct Options {
      std::string db = "results/results.db";
      std::string run;
      std::string format = "text";
      bool metrics = false;
    };
    auto o = std::make_shared<Options>();
    auto* show = results.add_subcommand(
        "show",
        "Everything recorded about one run: config, params, summaries, metrics, plugins "
        "and provenance");
    add_db_option(*show, o->db);
    show->add_option("run", o->run, "Run id, or the start of the run's uuid")->required();
    show->add_option("--format", o->format, "text or json")
        ->check(CLI::IsMember({"text", "json"}))
        ->capture_default_str();
    show->add_flag("--metrics", o->metrics, "Show every metric value, not only the last of each");
    out.push_back(
        {show, [o] {
           Store store = open_results(o->db);
           const int64_t id = resolve_run(store, o->run, o->db);
           const RunRecord record = store.run(id);
           const auto listed = store.list_runs({id});
           const auto metrics = store.metrics(id);
           const auto plugins = store.plugins(id);
           const auto evaluations = store.evaluations(id);
           if (o->format == "json")
             std::cout << show_json(record, listed, metrics, plugins, evaluations, o->metrics)
                              .dump(2, ' ', false, nlohmann::json::error_handler_t::replace)
                       << "\n";
           else
             std::cout << show_text(record, listed, metrics, plugins, evaluations, o->metrics);
           return 0;
         }});
  }
  // export
  {
    struct Options {
      std::string db = "results/results.db";
      std::string format = "csv";
      std::string output;
      Selection selection;
    };
    auto o = std::make_shared<Options>();
    auto* exp = results.add_subcommand(
        "export", "One row per run with every param and summary, as CSV, JSON, Markdown or LaTeX");
    add_db_option(*exp, o->db);
    exp->add_option("--format", o->format, "csv, json, markdown or latex")
        ->check(CLI::IsMember({"csv", "json", "markdown", "md", "latex"}))
        ->capture_default_str();
    exp->add_option("--output,-o", o->output, "Write to this file instead of stdout");
    add_selection_options(*exp, o->selection);
    out.push_back({exp, [o] {
                     Store store = open_results(o->db);
                     const auto rows = select(store, o->selection);
                     TableFormat format;
                     try {
                       format = parse_table_format(o->format);
                     } catch (const std::invalid_argument& e) {
                       throw UsageError(e.what());
                     }
                     write_output(render(export_table(rows), format), o->output);
                     if (!o->output.empty() && o->output != "-")
                       std::cerr << fmt::format("wrote {} run(s) to '{}'\n", rows.size(),
                                                o->output);
                     return 0;
                   }});
  }
}

}  // namespace tlab::cli
