#include "weights/state_dict.hpp"

#include <map>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

namespace tlab::weights {

namespace {

std::string shape_text(const torch::Tensor& t) {
  if (t.dim() == 0) return "scalar";
  return fmt::format("{}", fmt::join(t.sizes(), "x"));
}

std::string names_text(const std::vector<std::string>& names, std::size_t max_names) {
  if (names.empty()) return "";
  std::vector<std::string> shown(names.begin(), names.begin() + std::min(names.size(), max_names));
  std::string text = fmt::format(" ({}", fmt::join(shown, ", "));
  if (names.size() > max_names) text += fmt::format(", ... {} more", names.size() - max_names);
  return text + ")";
}

}  // namespace

std::vector<RemapRule> parse_remap(const std::vector<std::string>& rules) {
  std::vector<RemapRule> out;
  for (const auto& r : rules) {
    auto eq = r.find('=');
    if (eq == std::string::npos || eq == 0 || r.find('=', eq + 1) != std::string::npos)
      throw WeightsError(fmt::format(
          "weights remapping rule \"{}\" is not of the form \"from=to\" (a key prefix and its "
          "replacement, empty to strip it), e.g. \"module.=\" or \"encoder.=backbone.\"",
          r));
    out.push_back({r.substr(0, eq), r.substr(eq + 1)});
  }
  return out;
}

std::string remap_key(const std::string& key, const std::vector<RemapRule>& rules) {
  for (const auto& r : rules)
    if (key.compare(0, r.from.size(), r.from) == 0) return r.to + key.substr(r.from.size());
  return key;
}

std::string LoadReport::summary(std::size_t max_names) const {
  std::string text = fmt::format("{} matched, {} missing{}, {} unexpected{}, {} shape mismatches{}",
                                 matched.size(), missing.size(), names_text(missing, max_names),
                                 unexpected.size(), names_text(unexpected, max_names),
                                 mismatched.size(), names_text(mismatched, max_names));
  if (!ignored.empty()) text += fmt::format(", {} ignored", ignored.size());
  return text;
}

NamedTensors state_dict(torch::nn::Module& module) {
  NamedTensors out;
  for (const auto& p : module.named_parameters(/*recurse=*/true))
    out.emplace_back(p.key(), p.value());
  for (const auto& b : module.named_buffers(/*recurse=*/true)) out.emplace_back(b.key(), b.value());
  return out;
}

LoadReport load_state_dict(torch::nn::Module& module, const NamedTensors& tensors,
                           const std::string& source, const LoadOptions& options) {
  LoadReport report;
  // The file's tensors under the model's names.
  std::map<std::string, const torch::Tensor*> file;
  std::map<std::string, std::string> original;  // model name -> file name, for messages
  for (const auto& [name, t] : tensors) {
    std::string key = remap_key(name, options.remap);
    if (!options.only_prefix.empty()) {
      if (key.compare(0, options.only_prefix.size(), options.only_prefix) != 0) {
        report.ignored.push_back(name);
        continue;
      }
      key = key.substr(options.only_prefix.size());
    }
    if (file.count(key))
      throw WeightsError(
          fmt::format("{}: tensors \"{}\" and \"{}\" both map to \"{}\"; check the remapping rules",
                      source, original[key], name, key));
    file[key] = &t;
    original[key] = name;
  }
  std::vector<std::pair<torch::Tensor, const torch::Tensor*>> copies;
  std::set<std::string> used;
  for (auto& [name, target] : state_dict(module)) {
    auto it = file.find(name);
    if (it == file.end()) {
      report.missing.push_back(name);
      continue;
    }
    used.insert(name);
    const torch::Tensor& t = *it->second;
    if (t.sizes() != target.sizes()) {
      report.mismatched.push_back(
          fmt::format("{}: file {}, model {}", name, shape_text(t), shape_text(target)));
      continue;
    }
    report.matched.push_back(name);
    copies.emplace_back(target, &t);
  }
  for (const auto& [name, t] : file)
    if (!used.count(name)) report.unexpected.push_back(original[name]);

  if (options.strict && !report.complete())
    throw WeightsError(fmt::format("{}: the weights do not fit {}: {}; {}", source, options.what,
                                   report.summary(8), options.hint));
  if (report.matched.empty() && report.mismatched.empty() && !file.empty())
    throw WeightsError(fmt::format(
        "{}: no tensor of the file fits {} ({}); the names differ entirely, e.g. file \"{}\" "
        "vs model \"{}\"; {}",
        source, options.what, report.summary(3), original.begin()->second,
        report.missing.empty() ? std::string("?") : report.missing.front(), options.hint));
  torch::NoGradGuard no_grad;
  for (auto& [target, t] : copies) target.copy_(*t);
  return report;
}

}  // namespace tlab::weights
