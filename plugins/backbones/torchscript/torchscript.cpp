// torchscript: a network exported from Python with torch.jit.trace or torch.jit.script and saved
// with torch.jit.save. Its parameters and buffers are registered on the backbone under their
// PyTorch names ("layer1.0.conv1.weight"), sharing the TorchScript module's tensors: the
// optimiser trains them, device moves move them, state dicts and checkpoints use PyTorch's names,
// and weights load by name. `features` chooses what the features are: the module's output, the
// output of one of its methods, or the output of one of its submodules called on the input.
#include <torch/csrc/jit/serialization/import.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <filesystem>
#include <map>
#include <set>
#include <stdexcept>

#include "tlab/sdk/model.hpp"

struct TorchScriptOptions {
  std::string path;
  std::string features;
};

namespace {

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s.empty() ? "none" : s;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s;
  for (int64_t d : shape) s += (s.empty() ? "" : "x") + std::to_string(d);
  return s;
}

class TorchScriptNet : public tlab::BackboneNet {
 public:
  TorchScriptNet(torch::jit::Module module, const std::vector<int64_t>& shape,
                 const TorchScriptOptions& o)
      : jit_(std::move(module)), path_(o.path) {
    resolve_features(o.features);
    mirror_tensors();
    // The width of the features: a forward of a batch of zeros (float, else int64 for
    // token models), in eval mode and without gradients.
    std::vector<int64_t> batch{2};
    batch.insert(batch.end(), shape.begin(), shape.end());
    jit_.train(false);
    std::string error;
    for (auto dtype : {torch::kFloat, torch::kLong}) {
      try {
        torch::NoGradGuard no_grad;
        dim_ = forward_features(torch::zeros(batch, dtype)).size(1);
        error.clear();
        break;
      } catch (const c10::Error& e) {
        if (error.empty()) error = e.what_without_backtrace();
      } catch (const std::exception& e) {
        if (error.empty()) error = e.what();
      }
    }
    if (!error.empty())
      throw std::invalid_argument("torchscript: the module in '" + path_ +
                                  "' fails on a batch of zeros shaped 2x" + shape_text(shape) +
                                  " (the dataset's input shape): " + error +
                                  "; export a module that takes the dataset's inputs");
    train(true);  // a fresh backbone trains, as LibTorch modules start in training mode
  }

  torch::Tensor forward(torch::Tensor x) override { return tap("output", forward_features(x)); }
  int64_t feature_dim() const override { return dim_; }
  // One group per top-level child of the TorchScript module that holds parameters, in order;
  // parameters of the root module itself (e.g. a class token) come first as "root".
  std::vector<tlab::LayerGroup> layer_groups() override {
    std::vector<tlab::LayerGroup> g;
    std::map<std::string, std::size_t> index;
    tlab::LayerGroup root{"root", {}};
    for (const auto& child : jit_.named_children()) {
      index[child.name] = g.size();
      g.push_back({child.name, {}});
    }
    for (const auto& p : named_parameters(/*recurse=*/true)) {
      const auto dot = p.key().find('.');
      if (dot == std::string::npos)
        root.parameters.push_back(p.value());
      else
        g[index.at(p.key().substr(0, dot))].parameters.push_back(p.value());
    }
    if (!root.parameters.empty()) g.insert(g.begin(), root);
    std::vector<tlab::LayerGroup> out;
    for (auto& x : g)
      if (!x.parameters.empty()) out.push_back(std::move(x));
    return out;
  }
  // Training mode reaches the TorchScript module (dropout, batch norm statistics).
  void train(bool on = true) override {
    torch::nn::Module::train(on);
    jit_.train(on);
  }

 private:
  // Chooses `target_` and `method_` from the `features` option.
  void resolve_features(const std::string& features) {
    target_ = jit_;
    method_ = "forward";
    if (features.empty()) return;
    if (jit_.find_method(features)) {
      method_ = features;
      return;
    }
    torch::jit::Module m = jit_;
    std::string rest = features;
    bool found = true;
    while (found && !rest.empty()) {
      const auto dot = rest.find('.');
      const std::string part = rest.substr(0, dot);
      rest = dot == std::string::npos ? "" : rest.substr(dot + 1);
      found = false;
      for (const auto& c : m.named_children())
        if (c.name == part) {
          m = c.value;
          found = true;
          break;
        }
    }
    if (found && m.find_method("forward")) {
      target_ = m;
      return;
    }
    std::vector<std::string> methods, submodules;
    for (const auto& method : jit_.get_methods()) methods.push_back(method.name());
    for (const auto& s : jit_.named_modules())
      if (!s.name.empty()) submodules.push_back(s.name);
    throw std::invalid_argument(
        "torchscript: features = '" + features +
        "' is neither a method nor a submodule of the "
        "module in '" +
        path_ + "'; methods: " + join(methods) + "; submodules: " + join(submodules) +
        "; set features to one of them, or to \"\" for the module's output");
  }

  // Registers every parameter and buffer of the TorchScript module under its dotted name, on
  // empty child modules mirroring the hierarchy. The tensors are shared, not copied.
  void mirror_tensors() {
    std::set<const void*> seen;  // tied weights are registered once, under their first name
    for (const auto& p : jit_.named_parameters(/*recurse=*/true))
      if (seen.insert(p.value.unsafeGetTensorImpl()).second)
        owner(p.name).first->register_parameter(owner(p.name).second, p.value,
                                                p.value.requires_grad());
    for (const auto& b : jit_.named_buffers(/*recurse=*/true))
      if (seen.insert(b.value.unsafeGetTensorImpl()).second)
        owner(b.name).first->register_buffer(owner(b.name).second, b.value);
  }
  // The mirror module holding `dotted` ("a.b.weight" -> module a.b, "weight").
  std::pair<torch::nn::Module*, std::string> owner(const std::string& dotted) {
    torch::nn::Module* m = this;
    std::string prefix, rest = dotted;
    for (auto dot = rest.find('.'); dot != std::string::npos; dot = rest.find('.')) {
      const std::string part = rest.substr(0, dot);
      prefix += (prefix.empty() ? "" : ".") + part;
      auto it = mirrors_.find(prefix);
      if (it == mirrors_.end())
        it = mirrors_
                 .emplace(prefix, m->register_module(part, std::make_shared<torch::nn::Module>()))
                 .first;
      m = it->second.get();
      rest = rest.substr(dot + 1);
    }
    return {m, rest};
  }

  torch::Tensor forward_features(const torch::Tensor& x) {
    c10::IValue out = target_.get_method(method_)({x});
    if (!out.isTensor())
      throw std::runtime_error("torchscript: " + method_ + " of the module in '" + path_ +
                               "' returned a " + out.tagKind() +
                               ", not a tensor; export a module (or choose features) that "
                               "returns one tensor");
    torch::Tensor t = out.toTensor();
    if (t.dim() == 1) return t.unsqueeze(1);
    return t.dim() > 2 ? t.flatten(1) : t;
  }

  torch::jit::Module jit_, target_;
  std::string method_, path_;
  std::map<std::string, std::shared_ptr<torch::nn::Module>> mirrors_;
  int64_t dim_ = 0;
};

}  // namespace

class TorchScript : public tlab::Backbone {
 public:
  using Options = TorchScriptOptions;
  static tlab::Schema schema() {
    return tlab::SchemaFor<Options>()
        .field("path", &Options::path,
               "file saved with torch.jit.save (traced or scripted module); required")
        .field("features", &Options::features,
               "\"\" = the module's output; a method name (e.g. one marked @torch.jit.export); "
               "or a dotted submodule path (e.g. \"backbone\") whose forward takes the input");
  }
  explicit TorchScript(Options o) : o_(std::move(o)) {
    if (o_.path.empty())
      throw std::invalid_argument(
          "torchscript: `path` is required: the file written in Python by "
          "torch.jit.save(torch.jit.trace(model, example_input), \"model.pt\")");
    if (!std::filesystem::is_regular_file(o_.path))
      throw std::invalid_argument("torchscript: path = '" + o_.path +
                                  "' is not a file (relative paths are from the working "
                                  "directory); give the file written by torch.jit.save");
  }
  std::shared_ptr<tlab::BackboneNet> build(const std::vector<int64_t>& shape,
                                           tlab::Context&) override {
    torch::jit::Module m;
    try {
      m = torch::jit::load(o_.path, torch::kCPU);
    } catch (const c10::Error& e) {
      throw std::invalid_argument(
          "torchscript: '" + o_.path +
          "' is not a TorchScript file (torch.jit.load: " + first_line(e.what_without_backtrace()) +
          "); save one in Python with torch.jit.save(torch.jit.trace(model, example_input), "
          "path) or torch.jit.script: a state dict saved with torch.save is not TorchScript");
    }
    return std::make_shared<TorchScriptNet>(std::move(m), shape, o_);
  }

 private:
  static std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }
  Options o_;
};

TLAB_PLUGIN(TorchScript, "torchscript", "1.0.0",
            "A TorchScript module exported from PyTorch (torch.jit.save), trained under its names")
