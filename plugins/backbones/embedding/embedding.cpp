// embedding: word embeddings over token ids, pooled (a bag of embeddings: the mean over the real
// tokens) or read by a text CNN (Kim 2014: convolutions of several widths, ReLU, max over time),
// optionally initialised from pretrained word vectors — word2vec's binary format, GloVe's text
// format or fastText's .vec — aligned to the dataset's vocabulary (a file with one token per line,
// line i = id i, as the text dataset's vocab_out writes it or BERT's vocab.txt), frozen or
// fine-tuned. Words without a vector keep their random initialisation; their count is logged.
// Input: int64 token ids N x L, id 0 = padding.
#include <torch/nn/init.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/embedding.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <unordered_map>

#include "tlab/sdk/model.hpp"
#include "tlab/sdk/tokens.hpp"
#include "tlab/sdk/unicode.hpp"

struct EmbeddingOptions {
  int64_t vocab_size = 10000;
  int64_t dim = 100;
  std::string arch = "bag";
  int64_t filters = 100;
  std::vector<int64_t> widths{3, 4, 5};
  double dropout = 0.5;
  std::string vectors;
  std::string format = "auto";
  std::string vocab;
  bool freeze = false;
};

namespace {

std::string quote(const std::string& s) { return "'" + s + "'"; }

// One token per line; line i = id i.
std::vector<std::string> read_vocabulary(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw std::invalid_argument("embedding: cannot read the vocabulary " + quote(path) +
                                "; expected the dataset's token list, one token per line (the "
                                "text dataset writes it with vocab_out = \"vocab.txt\")");
  std::vector<std::string> tokens;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    tokens.push_back(line);
  }
  if (tokens.size() < 2 ||
      !((tokens[0] == "<pad>" && tokens[1] == "<unk>") || tokens[0] == "[PAD]"))
    throw std::invalid_argument(
        "embedding: the vocabulary " + quote(path) +
        " does not start with <pad> and <unk> (the text dataset's vocab_out) or [PAD] (BERT's "
        "vocab.txt), so its line numbers are not the dataset's ids; write it with the text "
        "dataset's vocab_out");
  return tokens;
}

// The vectors of the words in `wanted`, from a word2vec binary, GloVe text or fastText .vec
// file; every other word is skipped (but its line still checked).
struct Vectors {
  int64_t dim = 0;
  std::unordered_map<std::string, std::vector<float>> found;
  std::string format;
};

Vectors read_vectors(const std::string& path, std::string format,
                     const std::unordered_map<std::string, int64_t>& wanted) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::invalid_argument("embedding: cannot read the vectors file " + quote(path));
  std::string first;
  std::getline(in, first);
  if (!first.empty() && first.back() == '\r') first.pop_back();
  // A header "count dim" (word2vec, fastText), or a first vector (GloVe).
  int64_t count = -1, header_dim = -1;
  {
    std::istringstream h(first);
    std::string extra;
    if ((h >> count >> header_dim) && !(h >> extra) && count >= 0 && header_dim > 0) {
    } else {
      count = header_dim = -1;
    }
  }
  if (format == "auto") {
    if (header_dim < 0) {
      format = "glove";
    } else {
      // Text (fastText's .vec) when the line after the header is a word and header_dim
      // numbers; word2vec's binary floats do not read so.
      const std::streampos at = in.tellg();
      std::string line;
      std::getline(in, line);
      std::istringstream ls(line);
      std::string word, x;
      ls >> word;
      int64_t numbers = 0;
      bool text = true;
      while (ls >> x) {
        char* end = nullptr;
        std::strtof(x.c_str(), &end);
        text = text && end && *end == '\0';
        ++numbers;
      }
      text = text && numbers == header_dim;
      format = text ? "fasttext" : "word2vec";
      in.clear();
      in.seekg(at);
    }
  }
  Vectors v;
  v.format = format;
  if (format == "word2vec") {
    if (header_dim < 0)
      throw std::invalid_argument("embedding: " + quote(path) +
                                  " has no word2vec header \"<count> <dim>\" on its first line");
    v.dim = header_dim;
    std::vector<float> buf(static_cast<std::size_t>(v.dim));
    for (int64_t k = 0; k < count; ++k) {
      std::string word;
      char c;
      while (in.get(c) && c != ' ')
        if (c != '\n') word += c;
      if (!in)
        throw std::invalid_argument("embedding: " + quote(path) + " ends at word " +
                                    std::to_string(k + 1) + " of the " + std::to_string(count) +
                                    " its header announces; the file is truncated");
      in.read(reinterpret_cast<char*>(buf.data()),
              static_cast<std::streamsize>(buf.size() * sizeof(float)));
      if (in.gcount() != static_cast<std::streamsize>(buf.size() * sizeof(float)))
        throw std::invalid_argument("embedding: " + quote(path) +
                                    " ends inside the vector of word " + std::to_string(k + 1) +
                                    " ('" + word + "'): expected " + std::to_string(v.dim) +
                                    " floats; the file is truncated");
      if (!tlab::utf8::valid(word))
        throw std::invalid_argument("embedding: " + quote(path) + " word " + std::to_string(k + 1) +
                                    " is not UTF-8");
      if (wanted.count(word) && !v.found.count(word)) v.found.emplace(word, buf);
    }
    return v;
  }
  if (format != "glove" && format != "fasttext")
    throw std::invalid_argument("embedding: unknown format '" + format +
                                "'; expected auto, word2vec, glove or fasttext");
  v.dim = header_dim;
  auto parse = [&](const std::string& line, int64_t number) {
    std::istringstream s(line);
    std::string word;
    s >> word;
    if (word.empty()) return;
    if (!tlab::utf8::valid(word))
      throw std::invalid_argument("embedding: " + quote(path) + " line " + std::to_string(number) +
                                  ": the word is not UTF-8");
    std::vector<float> values;
    std::string x;
    while (s >> x) {
      char* end = nullptr;
      const float f = std::strtof(x.c_str(), &end);
      if (!end || *end != '\0')
        throw std::invalid_argument("embedding: " + quote(path) + " line " +
                                    std::to_string(number) + ": '" + x +
                                    "' is not a number; expected a word and its vector");
      values.push_back(f);
    }
    if (v.dim < 0) v.dim = static_cast<int64_t>(values.size());
    if (static_cast<int64_t>(values.size()) != v.dim)
      throw std::invalid_argument("embedding: " + quote(path) + " line " + std::to_string(number) +
                                  " ('" + word + "') has " + std::to_string(values.size()) +
                                  " values; expected " + std::to_string(v.dim) + " like the " +
                                  (header_dim > 0 ? "header" : "first line") +
                                  " (a truncated or mixed file?)");
    if (wanted.count(word) && !v.found.count(word)) v.found.emplace(word, std::move(values));
  };
  int64_t number = 1;
  if (header_dim < 0) parse(first, number);  // GloVe: the first line is a vector
  std::string line;
  int64_t lines = 0;
  while (std::getline(in, line)) {
    ++number;
    ++lines;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    parse(line, number);
  }
  if (count >= 0 && lines < count)
    throw std::invalid_argument("embedding: " + quote(path) + " has " + std::to_string(lines) +
                                " vectors; its header announces " + std::to_string(count) +
                                " (the file is truncated)");
  if (v.dim <= 0) throw std::invalid_argument("embedding: " + quote(path) + " holds no vectors");
  return v;
}

class EmbeddingNet : public tlab::BackboneNet {
 public:
  explicit EmbeddingNet(const EmbeddingOptions& o) : o_(o) {
    embedding_ = register_module(
        "embedding",
        torch::nn::Embedding(torch::nn::EmbeddingOptions(o.vocab_size, o.dim).padding_idx(0)));
    if (o.arch == "cnn") {
      auto convs = register_module("convs", std::make_shared<torch::nn::Module>());
      for (std::size_t i = 0; i < o.widths.size(); ++i)
        convs_.push_back(convs->register_module(
            std::to_string(i),
            torch::nn::Conv1d(torch::nn::Conv1dOptions(o.dim, o.filters, o.widths[i]))));
    }
  }
  torch::Tensor forward(torch::Tensor x) override {
    const torch::Tensor ids = tlab::token_ids(x, o_.vocab_size, "embedding",
                                              "set backbone.vocab_size to the vocabulary's size");
    torch::Tensor e = tap("embedding", embedding_->forward(ids));  // N x L x D
    if (o_.arch == "bag") {
      const torch::Tensor keep = ids.ne(0).to(e.scalar_type()).unsqueeze(-1);
      return (e * keep).sum(1) / keep.sum(1).clamp_min(1);
    }
    torch::Tensor t = e.transpose(1, 2);  // N x D x L
    std::vector<torch::Tensor> pooled;
    for (auto& c : convs_) {
      torch::Tensor h = t;
      const int64_t w = c->options.kernel_size()->at(0);
      if (h.size(2) < w) h = torch::constant_pad_nd(h, {0, w - h.size(2)});
      pooled.push_back(std::get<0>(torch::relu(c->forward(h)).max(2)));
    }
    return torch::dropout(torch::cat(pooled, 1), o_.dropout, is_training());
  }
  int64_t feature_dim() const override {
    return o_.arch == "bag" ? o_.dim : o_.filters * static_cast<int64_t>(o_.widths.size());
  }
  std::vector<tlab::LayerGroup> layer_groups() override {
    std::vector<tlab::LayerGroup> g{{"embedding", embedding_->parameters()}};
    if (!convs_.empty()) {
      std::vector<torch::Tensor> p;
      for (auto& c : convs_)
        for (auto& t : c->parameters()) p.push_back(t);
      g.push_back({"convs", p});
    }
    return g;
  }
  torch::nn::Embedding& table() { return embedding_; }

 private:
  EmbeddingOptions o_;
  torch::nn::Embedding embedding_{nullptr};
  std::vector<torch::nn::Conv1d> convs_;
};

}  // namespace

class Embedding : public tlab::Backbone {
 public:
  using Options = EmbeddingOptions;
  static tlab::Schema schema() {
    return tlab::SchemaFor<Options>()
        .field("vocab_size", &Options::vocab_size, "ids in [0, vocab_size), 0 = padding")
        .range(2, 1 << 26)
        .field("dim", &Options::dim, "embedding width (= the vectors' dimension)")
        .range(1, 1 << 14)
        .field("arch", &Options::arch,
               "bag (mean of the real tokens' embeddings) or cnn (Kim 2014's text CNN)")
        .choices({"bag", "cnn"})
        .field("filters", &Options::filters, "cnn: filters per width")
        .range(1, 1 << 14)
        .field("widths", &Options::widths, "cnn: convolution widths in tokens")
        .field("dropout", &Options::dropout, "cnn: dropout on the pooled features")
        .range(0, 0.95)
        .field("vectors", &Options::vectors,
               "pretrained word vectors: word2vec binary, GloVe text or fastText .vec ('' = "
               "random)")
        .field("format", &Options::format, "the vectors file's format (auto: from its contents)")
        .choices({"auto", "word2vec", "glove", "fasttext"})
        .field("vocab", &Options::vocab,
               "the dataset's token list (line i = id i), e.g. the text dataset's vocab_path; "
               "'' = vocab.txt in the run folder (text's vocab_out = \"vocab.txt\")")
        .field("freeze", &Options::freeze,
               "keep the embeddings fixed (a frozen feature extractor)");
  }
  explicit Embedding(Options o) : o_(std::move(o)) {
    if (o_.arch == "cnn" && o_.widths.empty())
      throw std::invalid_argument("embedding: arch = \"cnn\" needs widths, e.g. [3, 4, 5]");
    for (int64_t w : o_.widths)
      if (w < 1)
        throw std::invalid_argument("embedding: width " + std::to_string(w) + " must be >= 1");
  }
  std::shared_ptr<tlab::BackboneNet> build(const std::vector<int64_t>& shape,
                                           tlab::Context& ctx) override {
    if (shape.size() != 1)
      throw std::invalid_argument("embedding needs token sequences, input_shape = {L}, got " +
                                  std::to_string(shape.size()) + " dimension(s)");
    auto net = std::make_shared<EmbeddingNet>(o_);
    if (!o_.vectors.empty()) load_vectors(*net, ctx);
    if (o_.freeze) net->table()->weight.requires_grad_(false);
    return net;
  }

 private:
  void load_vectors(EmbeddingNet& net, tlab::Context& ctx) const {
    const std::string vocab_path =
        o_.vocab.empty() ? (ctx.run_dir / "vocab.txt").string() : o_.vocab;
    const std::vector<std::string> tokens = read_vocabulary(vocab_path);
    if (static_cast<int64_t>(tokens.size()) > o_.vocab_size)
      throw std::invalid_argument("embedding: the vocabulary " + quote(vocab_path) + " has " +
                                  std::to_string(tokens.size()) +
                                  " tokens, more than vocab_size = " +
                                  std::to_string(o_.vocab_size) + "; raise vocab_size");
    std::unordered_map<std::string, int64_t> wanted;
    for (std::size_t i = 2; i < tokens.size(); ++i)  // not the padding and unknown ids
      wanted.emplace(tokens[i], static_cast<int64_t>(i));
    const Vectors v = read_vectors(o_.vectors, o_.format, wanted);
    if (v.dim != o_.dim)
      throw std::invalid_argument("embedding: " + quote(o_.vectors) + " holds vectors of " +
                                  std::to_string(v.dim) +
                                  " dimensions, and dim = " + std::to_string(o_.dim) +
                                  "; set backbone.dim = " + std::to_string(v.dim));
    torch::NoGradGuard no_grad;
    torch::Tensor w = net.table()->weight;
    int64_t missing = 0;
    std::string examples;
    for (const auto& [word, id] : wanted) {
      auto it = v.found.find(word);
      if (it == v.found.end()) {
        ++missing;
        if (missing <= 5) examples += (examples.empty() ? "" : ", ") + word;
        continue;
      }
      w[id].copy_(torch::from_blob(const_cast<float*>(it->second.data()), {v.dim}, torch::kFloat));
    }
    if (ctx.log)
      ctx.log->info(std::to_string(wanted.size() - missing) + " of " +
                    std::to_string(wanted.size()) + " words have a vector in " + quote(o_.vectors) +
                    " (" + v.format + ", " + std::to_string(v.dim) + " dimensions); " +
                    std::to_string(missing) + " without one keep random " + "vectors" +
                    (examples.empty() ? "" : " (e.g. " + examples + ")") +
                    (o_.freeze ? "; frozen" : "; fine-tuned"));
  }
  Options o_;
};

TLAB_PLUGIN(Embedding, "embedding", "1.0.0",
            "Word embeddings (bag or text CNN), from word2vec, GloVe or fastText vectors")
