#include "report/report.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "util.hpp"

namespace tlab {
namespace {

std::string value_text(const ParamValue& v) {
  return std::visit(
      [](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, bool>)
          return x ? "true" : "false";
        else if constexpr (std::is_same_v<T, std::string>)
          return x;
        else
          return fmt::format("{}", x);
      },
      v);
}

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

// Param keys whose value is not the same in every run (in key order).
std::vector<std::string> varying_keys(const std::vector<RunSummaryRow>& runs) {
  std::map<std::string, std::set<std::string>> values;
  for (const auto& r : runs)
    for (const auto& [k, v] : param_map(r)) values[k].insert(v);
  std::vector<std::string> keys;
  for (const auto& [k, vs] : values) {
    std::size_t present = 0;
    for (const auto& r : runs) present += param_map(r).count(k);
    if (vs.size() > 1 || present != runs.size()) keys.push_back(k);
  }
  return keys;
}

std::string render_table(const std::vector<std::string>& header,
                         const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width(header.size());
  auto cells = [](const std::string& s) {  // display width: count UTF-8 code points
    std::size_t n = 0;
    for (unsigned char c : s) n += (c & 0xC0) != 0x80;
    return n;
  };
  for (std::size_t i = 0; i < header.size(); ++i) width[i] = cells(header[i]);
  for (const auto& r : rows)
    for (std::size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], cells(r[i]));
  std::string out;
  auto line = [&](const std::vector<std::string>& r) {
    for (std::size_t i = 0; i < r.size(); ++i) {
      out += r[i] + std::string(width[i] - cells(r[i]), ' ');
      out += i + 1 < r.size() ? "  " : "";
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    out += "\n";
  };
  line(header);
  std::vector<std::string> rule;
  for (auto w : width) rule.push_back(std::string(w, '-'));
  line(rule);
  for (const auto& r : rows) line(r);
  return out;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

}  // namespace

Format parse_format(const std::string& s) {
  if (s == "table") return Format::Table;
  if (s == "json") return Format::Json;
  if (s == "csv") return Format::Csv;
  throw std::invalid_argument(
      fmt::format("unknown format '{}'; expected 'table', 'json' or 'csv'", s));
}

MeanSe mean_se(const std::vector<double>& values) {
  MeanSe m;
  m.n = values.size();
  if (m.n == 0) return m;
  for (double v : values) m.mean += v;
  m.mean /= m.n;
  if (m.n > 1) {
    double ss = 0;
    for (double v : values) ss += (v - m.mean) * (v - m.mean);
    m.se = std::sqrt(ss / (m.n - 1)) / std::sqrt(static_cast<double>(m.n));
  }
  return m;
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
  std::vector<std::string> keys =
      format == Format::Csv ? std::vector<std::string>{} : varying_keys(runs);
  std::set<std::string> metric_set;
  for (const auto& r : runs)
    for (const auto& [k, v] : r.summaries) metric_set.insert(k);
  if (format == Format::Csv) {
    std::set<std::string> all;
    for (const auto& r : runs)
      for (const auto& p : r.params) all.insert(p.key);
    keys.assign(all.begin(), all.end());
  }
  std::vector<std::string> metrics;
  if (format == Format::Table) {
    for (const char* m : {"target/test/acc", "target/val/acc", "run/wall_seconds"})
      if (metric_set.count(m)) metrics.push_back(m);
  } else {
    metrics.assign(metric_set.begin(), metric_set.end());
  }
  std::vector<std::string> header = {"id", "status", "name"};
  header.insert(header.end(), keys.begin(), keys.end());
  header.insert(header.end(), metrics.begin(), metrics.end());
  std::vector<std::vector<std::string>> rows;
  for (const auto& r : runs) {
    auto pm = param_map(r);
    std::map<std::string, double> sm(r.summaries.begin(), r.summaries.end());
    std::vector<std::string> row = {std::to_string(r.id), r.status, r.name};
    for (const auto& k : keys) row.push_back(pm.count(k) ? pm[k] : "");
    for (const auto& m : metrics) row.push_back(sm.count(m) ? number_text(sm[m]) : "");
    rows.push_back(std::move(row));
  }
  if (format == Format::Csv) {
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

std::string format_comparison(const std::vector<RunSummaryRow>& runs,
                              const std::vector<std::string>& by_keys,
                              const std::vector<std::string>& metrics) {
  std::vector<const RunSummaryRow*> finished;
  for (const auto& r : runs)
    if (r.status == "finished") finished.push_back(&r);
  std::vector<std::string> by = by_keys;
  if (by.empty()) {
    std::vector<RunSummaryRow> f;
    for (auto* r : finished) f.push_back(*r);
    // When a table's plugin varies, its other keys are that plugin's options: they only
    // distinguish groups where they vary among runs of the same plugin.
    auto varying = varying_keys(f);
    auto needed = [&](const std::string& k) {
      auto dot = k.find('.');
      if (k == "seed") return false;
      if (dot == std::string::npos || k.substr(dot + 1) == "plugin") return true;
      std::string plugin_key = k.substr(0, dot) + ".plugin";
      if (std::find(varying.begin(), varying.end(), plugin_key) == varying.end()) return true;
      std::map<std::string, std::set<std::string>> per_plugin;
      for (const auto& r : f) {
        auto pm = param_map(r);
        per_plugin[pm[plugin_key]].insert(pm.count(k) ? pm[k]
                                                      : std::string("\x01"
                                                                    "absent"));
      }
      for (const auto& [plugin, values] : per_plugin)
        if (values.size() > 1) return true;
      return false;
    };
    for (const auto& k : varying)
      if (needed(k)) by.push_back(k);
  }
  // Groups in order of first appearance.
  std::vector<std::vector<std::string>> group_keys;
  std::map<std::vector<std::string>, std::vector<const RunSummaryRow*>> groups;
  for (auto* r : finished) {
    auto pm = param_map(*r);
    std::vector<std::string> g;
    for (const auto& k : by) g.push_back(pm.count(k) ? pm[k] : "");
    if (!groups.count(g)) group_keys.push_back(g);
    groups[g].push_back(r);
  }
  std::vector<std::string> header = by;
  for (const auto& m : metrics) header.push_back(m + " (mean ± s.e.)");
  header.push_back("runs");
  std::vector<std::vector<std::string>> rows;
  for (const auto& g : group_keys) {
    std::vector<std::string> row = g;
    for (const auto& m : metrics) {
      std::vector<double> vals;
      for (auto* r : groups[g])
        for (const auto& [k, v] : r->summaries)
          if (k == m) vals.push_back(v);
      MeanSe s = mean_se(vals);
      row.push_back(s.n == 0   ? ""
                    : s.n == 1 ? fmt::format("{:.4f}", s.mean)
                               : fmt::format("{:.4f} ± {:.4f}", s.mean, s.se));
    }
    row.push_back(std::to_string(groups[g].size()));
    rows.push_back(std::move(row));
  }
  std::string out = render_table(header, rows);
  std::size_t failed = runs.size() - finished.size();
  if (failed)
    out += fmt::format("({} of {} runs did not finish and are not counted)\n", failed, runs.size());
  return out;
}

}  // namespace tlab
