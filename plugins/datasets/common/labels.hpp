#pragma once
// Shared by the csv and text dataset plugins (header only): class labels written as integers or
// as strings, mapped to class ids the same way in both.

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "io.hpp"

namespace tlab_ds {

/// A label as written in a file, with where it was written.
struct RawLabel {
  std::string value;
  std::filesystem::path file;
  int64_t line = 0;
};

/// Class ids for the train and test files' labels.
struct Labels {
  std::vector<int64_t> train, test;
  int64_t num_classes = 0;
  std::string description;  ///< For the log: how labels were mapped.
};

/// Maps labels to class ids:
/// - `classes` given: a label must be one of them; its id is its position in the list.
/// - otherwise, every label (train and test) an integer: the id is the integer, which must be
///   >= 0 and < `num_classes` when that is given (> 0); otherwise num_classes = max + 1.
/// - otherwise (strings): ids follow the sorted distinct labels of the train file; a test label
///   must occur in the train file.
/// Errors name the file, the line and the label. `plugin` starts every message.
inline Labels map_labels(const std::vector<RawLabel>& train, const std::vector<RawLabel>& test,
                         const std::vector<std::string>& classes, int64_t num_classes,
                         const std::string& plugin) {
  auto where = [&](const RawLabel& l) {
    return plugin + ": file " + quote(l.file) + " line " + std::to_string(l.line) + ": label '" +
           l.value + "'";
  };
  Labels out;
  std::vector<const RawLabel*> all;
  for (const auto& l : train) all.push_back(&l);
  for (const auto& l : test) all.push_back(&l);

  if (!classes.empty()) {
    std::map<std::string, int64_t> id;
    for (std::size_t i = 0; i < classes.size(); ++i) {
      if (!id.emplace(classes[i], static_cast<int64_t>(i)).second)
        throw std::invalid_argument(plugin + ": classes lists '" + classes[i] +
                                    "' twice; expected distinct class names");
    }
    auto to_id = [&](const RawLabel& l) {
      auto it = id.find(l.value);
      if (it == id.end())
        throw std::invalid_argument(where(l) + " is not one of the classes " +
                                    join_quoted(classes));
      return it->second;
    };
    for (const auto& l : train) out.train.push_back(to_id(l));
    for (const auto& l : test) out.test.push_back(to_id(l));
    out.num_classes = static_cast<int64_t>(classes.size());
    out.description =
        "labels mapped by the classes option: " + std::to_string(out.num_classes) + " classes";
    return out;
  }

  bool integers = true;
  for (const RawLabel* l : all) {
    int64_t v;
    if (!parse_int(l->value, v)) {
      integers = false;
      break;
    }
  }
  if (integers) {
    int64_t hi = -1;
    auto to_id = [&](const RawLabel& l) {
      int64_t v = 0;
      parse_int(l.value, v);
      // Without num_classes the largest label sets the head's width: refuse absurd ones.
      if (num_classes <= 0 && v >= (int64_t{1} << 20))
        throw std::invalid_argument(where(l) + " is " + std::to_string(v) +
                                    ", over 1048575; set num_classes if there really are that "
                                    "many classes");
      if (v < 0 || (num_classes > 0 && v >= num_classes))
        throw std::invalid_argument(
            where(l) + " is out of range; expected an integer in [0, " +
            (num_classes > 0 ? std::to_string(num_classes) +
                                   ") (num_classes = " + std::to_string(num_classes) + ")"
                             : std::string("num_classes)")));
      hi = std::max(hi, v);
      return v;
    };
    for (const auto& l : train) out.train.push_back(to_id(l));
    for (const auto& l : test) out.test.push_back(to_id(l));
    out.num_classes = num_classes > 0 ? num_classes : hi + 1;
    out.description = "integer labels, " + std::to_string(out.num_classes) + " classes";
    return out;
  }

  std::vector<std::string> names;
  for (const auto& l : train) names.push_back(l.value);
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  if (num_classes > 0 && static_cast<int64_t>(names.size()) > num_classes)
    throw std::invalid_argument(plugin + ": the train file " + quote(train.front().file) + " has " +
                                std::to_string(names.size()) + " distinct labels (" +
                                join_quoted(names) +
                                "); expected at most num_classes = " + std::to_string(num_classes));
  std::map<std::string, int64_t> id;
  for (std::size_t i = 0; i < names.size(); ++i) id[names[i]] = static_cast<int64_t>(i);
  for (const auto& l : train) out.train.push_back(id.at(l.value));
  for (const auto& l : test) {
    auto it = id.find(l.value);
    if (it == id.end())
      throw std::invalid_argument(where(l) + " does not occur in the train file " +
                                  quote(train.front().file) + "; expected one of " +
                                  join_quoted(names));
    out.test.push_back(it->second);
  }
  out.num_classes = num_classes > 0 ? num_classes : static_cast<int64_t>(names.size());
  out.description = "string labels mapped in sorted order:";
  for (std::size_t i = 0; i < names.size(); ++i)
    out.description += " " + std::to_string(i) + "='" + names[i] + "'";
  return out;
}

}  // namespace tlab_ds
