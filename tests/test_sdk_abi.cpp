// The ABI guard, checked by a machine: the layout of every SDK type that crosses between the host
// and a plugin (sizes, alignments, member offsets, virtual-table slots and base adjustments),
// compared with the layout recorded for the current TLAB_SDK_ABI_VERSION in
// tests/abi/sdk_abi_<N>.txt. A change of layout without a version bump fails here, naming what
// moved; a bump without a record fails too, saying how to record it. A type declared in an SDK
// header that is in neither this layout nor the list of plugin-side helpers fails as well, so
// a new type cannot slip past the guard.
//
// Virtual slots are read from pointers to member functions as the Itanium C++ ABI (gcc, clang)
// represents them: for a virtual function, 1 + its byte offset in the vtable, plus the this-
// adjustment of the base that declares it.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "test_helpers.hpp"
#include "test_paths.hpp"
#include "tlab/sdk/sdk.hpp"

namespace fs = std::filesystem;

namespace {

template <class T, class M>
std::ptrdiff_t offset_of(M T::*member) {
  alignas(T) static unsigned char storage[sizeof(T)];
  const T* object = reinterpret_cast<const T*>(storage);
  return reinterpret_cast<const unsigned char*>(&(object->*member)) - storage;
}

// "slot N adj A" of a virtual member function (Itanium ABI), or "not virtual".
template <class F>
std::string vslot(F pmf) {
  static_assert(sizeof(F) == 2 * sizeof(std::uintptr_t), "expected an Itanium member pointer");
  std::uintptr_t words[2];
  std::memcpy(words, &pmf, sizeof words);
  if ((words[0] & 1) == 0) return "not virtual";
  std::ostringstream out;
  out << "slot " << (words[0] - 1) / sizeof(void*) << " adj "
      << static_cast<std::ptrdiff_t>(words[1]);
  return out.str();
}

#define TYPE(T) out << #T << ": size " << sizeof(T) << " align " << alignof(T) << "\n"
#define FIELD(T, f) out << "  " #f " @" << offset_of(&T::f) << "\n"
#define VIRTUAL(T, f) out << "  virtual " #f " " << vslot(&T::f) << "\n"
#define BASE(T, B)                                                                          \
  out << "  base " #B " @"                                                                  \
      << (reinterpret_cast<std::uintptr_t>(                                                 \
              static_cast<const B*>(reinterpret_cast<const T*>(std::uintptr_t{1} << 12))) - \
          (std::uintptr_t{1} << 12))                                                        \
      << "\n"

// Every type a host and a plugin both see in memory, with what may not move.
std::string sdk_layout() {
  std::ostringstream out;
  out << "torch " << TORCH_VERSION << "\n";
  TYPE(TlabAbiStamp);
  FIELD(TlabAbiStamp, magic);
  FIELD(TlabAbiStamp, size);
  FIELD(TlabAbiStamp, sdk_abi);
  FIELD(TlabAbiStamp, torch_version);
  FIELD(TlabAbiStamp, cxx11_abi);
  FIELD(TlabAbiStamp, compiler_major);
  FIELD(TlabAbiStamp, compiler);
  // params.hpp
  TYPE(tlab::Value);
  TYPE(tlab::ParamSpec);
  FIELD(tlab::ParamSpec, key);
  FIELD(tlab::ParamSpec, type);
  FIELD(tlab::ParamSpec, default_value);
  FIELD(tlab::ParamSpec, doc);
  FIELD(tlab::ParamSpec, min);
  FIELD(tlab::ParamSpec, max);
  FIELD(tlab::ParamSpec, choices);
  FIELD(tlab::ParamSpec, min_size);
  FIELD(tlab::ParamSpec, assign);
  FIELD(tlab::ParamSpec, get);
  TYPE(tlab::Schema);
  FIELD(tlab::Schema, params);
  // plugin.hpp
  TYPE(tlab::Plugin);
  VIRTUAL(tlab::Plugin, kind);
  TYPE(tlab::Descriptor);
  FIELD(tlab::Descriptor, kind);
  FIELD(tlab::Descriptor, name);
  FIELD(tlab::Descriptor, version);
  FIELD(tlab::Descriptor, summary);
  FIELD(tlab::Descriptor, schema);
  FIELD(tlab::Descriptor, create);
  // context.hpp
  TYPE(tlab::Logger);
  VIRTUAL(tlab::Logger, debug);
  VIRTUAL(tlab::Logger, info);
  VIRTUAL(tlab::Logger, warn);
  TYPE(tlab::Metrics);
  VIRTUAL(tlab::Metrics, log);
  VIRTUAL(tlab::Metrics, summary);
  TYPE(tlab::Context);
  FIELD(tlab::Context, plugin);
  FIELD(tlab::Context, device);
  FIELD(tlab::Context, seed);
  FIELD(tlab::Context, run_dir);
  FIELD(tlab::Context, log);
  FIELD(tlab::Context, metrics);
  // data.hpp
  TYPE(tlab::ExampleSource);
  VIRTUAL(tlab::ExampleSource, get);
  VIRTUAL(tlab::ExampleSource, workers);
  TYPE(tlab::Split);
  FIELD(tlab::Split, x);
  FIELD(tlab::Split, y);
  FIELD(tlab::Split, stream);
  TYPE(tlab::DomainData);
  FIELD(tlab::DomainData, name);
  FIELD(tlab::DomainData, train);
  FIELD(tlab::DomainData, val);
  FIELD(tlab::DomainData, test);
  FIELD(tlab::DomainData, unlabeled);
  FIELD(tlab::DomainData, num_classes);
  FIELD(tlab::DomainData, input_shape);
  TYPE(tlab::Dataset);
  VIRTUAL(tlab::Dataset, kind);
  VIRTUAL(tlab::Dataset, load);
  // model.hpp
  TYPE(tlab::LayerGroup);
  FIELD(tlab::LayerGroup, name);
  FIELD(tlab::LayerGroup, parameters);
  TYPE(tlab::BackboneNet);
  VIRTUAL(tlab::BackboneNet, forward);
  VIRTUAL(tlab::BackboneNet, feature_dim);
  VIRTUAL(tlab::BackboneNet, layer_groups);
  TYPE(tlab::Backbone);
  VIRTUAL(tlab::Backbone, build);
  TYPE(tlab::Model);
  FIELD(tlab::Model, backbone);
  FIELD(tlab::Model, head);
  FIELD(tlab::Model, before_forward);
  TYPE(tlab::TaskInfo);
  FIELD(tlab::TaskInfo, num_classes);
  FIELD(tlab::TaskInfo, input_shape);
  TYPE(tlab::Adapter);
  VIRTUAL(tlab::Adapter, attach);
  // strategy.hpp
  TYPE(tlab::TrainConfig);
  FIELD(tlab::TrainConfig, epochs);
  FIELD(tlab::TrainConfig, batch_size);
  FIELD(tlab::TrainConfig, optimizer);
  FIELD(tlab::TrainConfig, lr);
  FIELD(tlab::TrainConfig, momentum);
  FIELD(tlab::TrainConfig, weight_decay);
  FIELD(tlab::TrainConfig, schedule);
  FIELD(tlab::TrainConfig, step_epochs);
  FIELD(tlab::TrainConfig, gamma);
  TYPE(tlab::ParamGroup);
  FIELD(tlab::ParamGroup, name);
  FIELD(tlab::ParamGroup, parameters);
  FIELD(tlab::ParamGroup, lr_scale);
  TYPE(tlab::Batch);
  FIELD(tlab::Batch, x);
  FIELD(tlab::Batch, y);
  FIELD(tlab::Batch, index);
  TYPE(tlab::StageHooks);
  VIRTUAL(tlab::StageHooks, on_epoch_start);
  VIRTUAL(tlab::StageHooks, loss);
  VIRTUAL(tlab::StageHooks, on_epoch_end);
  TYPE(tlab::Stage);
  FIELD(tlab::Stage, domain);
  FIELD(tlab::Stage, config);
  FIELD(tlab::Stage, parameters);
  FIELD(tlab::Stage, groups);
  FIELD(tlab::Stage, module);
  FIELD(tlab::Stage, forward);
  FIELD(tlab::Stage, hooks);
  FIELD(tlab::Stage, train);
  FIELD(tlab::Stage, val);
  FIELD(tlab::Stage, test);
  TYPE(tlab::Evaluation);
  FIELD(tlab::Evaluation, acc);
  FIELD(tlab::Evaluation, loss);
  TYPE(tlab::Session);
  VIRTUAL(tlab::Session, context);
  VIRTUAL(tlab::Session, model);
  VIRTUAL(tlab::Session, source);
  VIRTUAL(tlab::Session, target);
  VIRTUAL(tlab::Session, train_config);
  VIRTUAL(tlab::Session, step);
  VIRTUAL(tlab::Session, fit);
  VIRTUAL(tlab::Session, stage);
  VIRTUAL(tlab::Session, evaluate);
  VIRTUAL(tlab::Session, reuse);
  VIRTUAL(tlab::Session, load_model);
  TYPE(tlab::Strategy);
  BASE(tlab::Strategy, tlab::Plugin);
  BASE(tlab::Strategy, tlab::StageHooks);
  VIRTUAL(tlab::Strategy, kind);
  VIRTUAL(tlab::Strategy, prepare);
  VIRTUAL(tlab::Strategy, setup);
  VIRTUAL(tlab::Strategy, parameter_groups);
  VIRTUAL(tlab::Strategy, on_epoch_start);
  VIRTUAL(tlab::Strategy, loss);
  VIRTUAL(tlab::Strategy, on_epoch_end);
  return out.str();
}

// Types of the SDK headers that never cross between host and plugin: compiled into the plugin
// alone (helpers), or compile-time only. Their layout may change without a version bump.
const std::set<std::string> kPluginSide = {
    "SchemaFor",  "TypeOf",          "HasOptions", "SourceOptions", "Sampler",
    "ModeScope",  "AdaptationHooks", "SplitMix64", "WordPiece",     "ByteLevelBpe",
    "MlmOptions", "MaskedTokens",    "MlmHead",    "MlmHooks",      "MlmTapOff"};

// Names of the classes and structs an SDK header defines.
std::set<std::string> declared_types() {
  std::set<std::string> out;
  const std::regex def(R"(^\s*(?:class|struct)\s+(\w+)(?:\s+final)?\s*(?::[^;{]*)?\{)");
  for (const auto& entry :
       fs::directory_iterator(fs::path(TLAB_SOURCE_DIR) / "framework/include/tlab/sdk")) {
    std::ifstream in(entry.path());
    std::string line;
    std::smatch m;
    while (std::getline(in, line))
      if (std::regex_search(line, m, def)) out.insert(m[1]);
  }
  return out;
}

const fs::path kRecordDir = fs::path(TLAB_SOURCE_DIR) / "tests" / "abi";

fs::path record_path(int version) {
  return kRecordDir / ("sdk_abi_" + std::to_string(version) + ".txt");
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// The first lines where two layouts differ, for the message.
std::string first_differences(const std::string& want, const std::string& got) {
  const auto a = lines(want), b = lines(got);
  std::string out;
  int shown = 0;
  for (std::size_t i = 0; i < std::max(a.size(), b.size()) && shown < 8; ++i) {
    const std::string la = i < a.size() ? a[i] : "<none>", lb = i < b.size() ? b[i] : "<none>";
    if (la == lb) continue;
    out += "  line " + std::to_string(i + 1) + ": recorded '" + la + "', now '" + lb + "'\n";
    ++shown;
  }
  return out;
}

TEST(SdkAbi, LayoutMatchesTheRecordOfItsVersion) {
  const std::string now = sdk_layout();
  const fs::path record = record_path(TLAB_SDK_ABI_VERSION);
  if (std::getenv("TLAB_RECORD_ABI")) {
    ASSERT_FALSE(fs::exists(record))
        << "refusing to overwrite " << record
        << ": a recorded version is frozen; bump TLAB_SDK_ABI_VERSION instead";
    tlab::test::write_file(record, now);
    GTEST_SKIP() << "recorded " << record;
  }
  ASSERT_TRUE(fs::exists(record))
      << "no layout is recorded for SDK ABI version " << TLAB_SDK_ABI_VERSION << " (" << record
      << "); record it once with: TLAB_RECORD_ABI=1 build/bin/tlab_tests "
         "--gtest_filter='SdkAbi.LayoutMatchesTheRecordOfItsVersion'";
  const std::string recorded = tlab::test::read_file(record);
  const std::string torch_line = "torch " TORCH_VERSION;
  if (recorded.rfind(torch_line + "\n", 0) != 0)
    GTEST_SKIP() << "the record was made with another LibTorch (" << recorded.substr(0, 20)
                 << "...) than this build's " << TORCH_VERSION
                 << ": LibTorch's own types differ in size; the stamp's torch_version guards that";
  EXPECT_EQ(recorded, now)
      << "the SDK's binary layout changed but TLAB_SDK_ABI_VERSION is still "
      << TLAB_SDK_ABI_VERSION << ":\n"
      << first_differences(recorded, now)
      << "Bump TLAB_SDK_ABI_VERSION in framework/include/tlab/sdk/abi.hpp (every plugin must be "
         "rebuilt) and record the new layout with TLAB_RECORD_ABI=1 build/bin/tlab_tests "
         "--gtest_filter='SdkAbi.*'";
}

TEST(SdkAbi, EveryTypeOfTheSdkIsGuardedOrPluginSide) {
  const std::string layout = sdk_layout();
  for (const auto& name : declared_types()) {
    const bool guarded = layout.find("tlab::" + name + ":") != std::string::npos ||
                         layout.find(name + ":") == 0 ||
                         layout.find("\n" + name + ":") != std::string::npos;
    EXPECT_TRUE(guarded || kPluginSide.count(name))
        << "SDK type '" << name
        << "' is neither in the ABI layout nor in the plugin-side list of tests/test_sdk_abi.cpp: "
           "add its fields and virtual functions to sdk_layout() if host and plugin share it, "
           "else add it to kPluginSide";
  }
}

TEST(SdkAbi, TheVirtualSlotsReadAsTheItaniumAbiSays) {
  // The decoding itself: the first virtual function declared after the destructor pair.
  EXPECT_EQ(vslot(&tlab::Logger::debug), "slot 2 adj 0");
  EXPECT_EQ(vslot(&tlab::Model::out_dim), "not virtual");
  // A function of the second base carries that base's offset.
  EXPECT_EQ(
      vslot(static_cast<torch::Tensor (tlab::Strategy::*)(tlab::Session&, const tlab::Batch&)>(
          &tlab::Strategy::loss)),
      "slot 3 adj " + std::to_string(sizeof(void*)));
}

}  // namespace
