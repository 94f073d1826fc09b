#include "run/asha.hpp"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace tlab {

std::optional<AshaSpec> asha_of(const std::string& search_json) {
  if (search_json.empty()) return std::nullopt;
  const auto j = nlohmann::json::parse(search_json, nullptr, false);
  if (!j.is_object() || !j.contains("pruner") || !j["pruner"].is_object()) return std::nullopt;
  AshaSpec s;
  s.min_epochs = j["pruner"].value("min_epochs", int64_t{1});
  s.reduction = j["pruner"].value("reduction", int64_t{3});
  s.bracket = j.value("bracket", "");
  return s;
}

bool is_rung(int64_t epochs_done, const AshaSpec& spec) {
  for (int64_t r = spec.min_epochs; r <= epochs_done; r *= spec.reduction)
    if (r == epochs_done) return true;
  return false;
}

namespace {

// The value a run must match at a rung: the (n / reduction)-th best of `values` (the best when
// n < reduction); NaN ranks last.
double asha_bar(std::vector<double> values, int64_t reduction, bool higher) {
  auto better = [&](double a, double b) {
    if (std::isnan(a) || std::isnan(b)) return !std::isnan(a) && std::isnan(b);
    return higher ? a > b : a < b;
  };
  std::sort(values.begin(), values.end(), better);
  const int64_t idx = std::max<int64_t>(0, static_cast<int64_t>(values.size()) / reduction - 1);
  return values[static_cast<std::size_t>(idx)];
}

}  // namespace

bool asha_promotes(std::vector<double> values, double mine, int64_t reduction, bool higher) {
  if (values.empty()) return true;
  if (std::isnan(mine)) return false;
  const double bar = asha_bar(std::move(values), reduction, higher);
  if (std::isnan(bar)) return true;
  return higher ? mine >= bar : mine <= bar;
}

AshaPruner::AshaPruner(Store& store, int64_t run, AshaSpec spec, std::string monitor, bool higher)
    : store_(store),
      run_(run),
      spec_(std::move(spec)),
      monitor_(std::move(monitor)),
      higher_(higher) {}

std::string AshaPruner::after_epoch(int64_t epochs_done, double value) {
  if (!is_rung(epochs_done, spec_)) return "";
  store_.write_metrics(run_, {{kAshaMetric, epochs_done, epochs_done, value, 0.0}});
  const std::vector<double> values = store_.rung_values(spec_.bracket, kAshaMetric, epochs_done);
  if (asha_promotes(values, value, spec_.reduction, higher_)) return "";
  const std::size_t keep =
      std::max<std::size_t>(1, values.size() / static_cast<std::size_t>(spec_.reduction));
  return fmt::format(
      "pruned by ASHA after epoch {} (rung {}): target val {} {:.4f} is not among the best {} "
      "of the {} runs of its bracket there (the {}-th best is {:.4f}; [sweep.asha] reduction = {})",
      epochs_done, epochs_done, monitor_, value, keep, values.size(), keep,
      asha_bar(values, spec_.reduction, higher_), spec_.reduction);
}

}  // namespace tlab
