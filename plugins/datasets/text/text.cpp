// text: text classification from a TSV file, one `label<TAB>text` example per line. Texts are
// tokenised, mapped to ids through a vocabulary and padded or cut to `max_len`; x is an int64
// tensor of token ids (N x max_len), 0 = <pad>, 1 = <unk>.
//
// The vocabulary is built from the training split of this dataset, from every text of another
// file (`vocab_from`), or read from a file (`vocab_path`). Two domains share one vocabulary by
// naming the same `vocab_from` file (typically the source's training file) in both tables: the
// vocabulary is then a function of options and files alone, whichever domain the host loads
// first and whether or not it loads the source at all (a cached pre-training does not).
// `vocab_out` saves the vocabulary in the run folder.

#include <torch/types.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../common/io.hpp"
#include "../common/labels.hpp"
#include "../common/rng.hpp"
#include "tlab/sdk/bpe.hpp"
#include "tlab/sdk/data.hpp"
#include "tlab/sdk/files.hpp"
#include "tlab/sdk/wordpiece.hpp"

#include <dlfcn.h>

namespace {

namespace fs = std::filesystem;
using tlab_ds::quote;

constexpr int64_t kPad = 0, kUnk = 1;
const char* const kPadToken = "<pad>";
const char* const kUnkToken = "<unk>";

// A SentencePiece model through libtlab_spm (spm_shim.cpp), opened with RTLD_DEEPBIND: Debian's
// libsentencepiece carries its own protobuf, which must not bind to the one LibTorch loaded.
class Spm {
 public:
  explicit Spm(const std::string& model) {
    void* lib = library();
    auto sym = [&](const char* name) {
      void* f = ::dlsym(lib, name);
      if (!f) throw std::runtime_error(std::string("text: libtlab_spm lacks ") + name);
      return f;
    };
    load_ = reinterpret_cast<void* (*)(const char*, char*, std::size_t)>(sym("tlab_spm_load"));
    free_ = reinterpret_cast<void (*)(void*)>(sym("tlab_spm_free"));
    size_ = reinterpret_cast<int (*)(void*)>(sym("tlab_spm_size"));
    pad_ = reinterpret_cast<int (*)(void*)>(sym("tlab_spm_pad_id"));
    unk_ = reinterpret_cast<int (*)(void*)>(sym("tlab_spm_unk_id"));
    piece_ = reinterpret_cast<int (*)(void*, int, char*, std::size_t)>(sym("tlab_spm_piece"));
    encode_ = reinterpret_cast<int (*)(void*, const char*, int*, int, char*, std::size_t)>(
        sym("tlab_spm_encode"));
    char err[1024] = {};
    p_ = load_(model.c_str(), err, sizeof err);
    if (!p_)
      throw std::invalid_argument("text: cannot load the SentencePiece model '" + model +
                                  "': " + err + "; expected a .model file written by spm_train");
    char buf[4096];
    for (int i = 0; i < size_(p_); ++i)
      pieces_.emplace_back(piece_(p_, i, buf, sizeof buf) >= 0 ? buf : "");
  }
  ~Spm() {
    if (p_) free_(p_);
  }
  Spm(const Spm&) = delete;
  Spm& operator=(const Spm&) = delete;
  int pad_id() const { return pad_(p_); }
  int64_t unk_id() const { return unk_(p_); }
  const std::vector<std::string>& pieces() const { return pieces_; }
  std::vector<std::string> encode(const std::string& text, const std::string& where) const {
    std::vector<int> ids(256);
    char err[1024] = {};
    int n = encode_(p_, text.c_str(), ids.data(), static_cast<int>(ids.size()), err, sizeof err);
    if (n > static_cast<int>(ids.size())) {
      ids.resize(static_cast<std::size_t>(n));
      n = encode_(p_, text.c_str(), ids.data(), n, err, sizeof err);
    }
    if (n < 0) throw std::invalid_argument(where + ": SentencePiece: " + err);
    std::vector<std::string> out;
    for (int i = 0; i < n; ++i)
      out.push_back(pieces_.at(static_cast<std::size_t>(ids[static_cast<std::size_t>(i)])));
    return out;
  }

 private:
  // libtlab_spm.so: where the build put it, or beside an installed tlab (lib/tlab/plugins/
  // datasets/text.so -> lib/tlab/libtlab_spm.so).
  static void* library() {
    static void* lib = [] {
      std::vector<std::string> tried;
#ifdef TLAB_SPM_BUILD_PATH
      tried.push_back(TLAB_SPM_BUILD_PATH);
#endif
      Dl_info info{};
      if (::dladdr(reinterpret_cast<void*>(&Spm::library), &info) && info.dli_fname)
        tried.push_back(
            (fs::path(info.dli_fname).parent_path() / ".." / ".." / "libtlab_spm.so").string());
      std::string errors;
      for (const auto& path : tried) {
        if (!fs::exists(path)) continue;
        if (void* h = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND)) return h;
        errors += std::string(" ") + ::dlerror();
      }
      throw std::invalid_argument(
          "text: tokenize = \"sentencepiece\" needs libtlab_spm.so, built when Debian's "
          "libsentencepiece-dev is installed (tools/setup.sh installs it; then build again)" +
          (errors.empty() ? std::string() : ";" + errors));
      return static_cast<void*>(nullptr);
    }();
    return lib;
  }
  void* p_ = nullptr;
  void* (*load_)(const char*, char*, std::size_t) = nullptr;
  void (*free_)(void*) = nullptr;
  int (*size_)(void*) = nullptr;
  int (*pad_)(void*) = nullptr;
  int (*unk_)(void*) = nullptr;
  int (*piece_)(void*, int, char*, std::size_t) = nullptr;
  int (*encode_)(void*, const char*, int*, int, char*, std::size_t) = nullptr;
  std::vector<std::string> pieces_;
};

struct TextOptions {
  /// The training file: `label<TAB>text` per line (required).
  std::string path;
  /// A test file in the same format (optional).
  std::string test_path;
  /// "whitespace" (words and punctuation marks), "char" (characters), "wordpiece" (BERT's
  /// tokenizer with the vocab.txt of vocab_path: [CLS] pieces [SEP], [PAD] = id 0) or
  /// "sentencepiece" (a SentencePiece model, spm_model: its ids; its pad id must be 0) or "bpe"
  /// (GPT-2's byte-level BPE as RoBERTa uses it: vocab_path = vocab.json, merges_path =
  /// merges.txt; <s> tokens </s>, padded with <pad>'s id) (default "whitespace").
  std::string tokenize = "whitespace";
  /// Lower-case ASCII letters before tokenising (default true); with wordpiece: lower-case and
  /// strip accents (an uncased vocabulary), or neither (a cased one); not with bpe (cased).
  bool lowercase = true;
  /// Sequences are cut or padded (with id 0) to this many tokens (default 64).
  int64_t max_len = 64;
  /// At most this many ids, <pad> and <unk> included, when building (default 20000).
  int64_t max_vocab = 20000;
  /// Tokens seen fewer times in the training split are <unk>, when building (default 1).
  int64_t min_freq = 1;
  /// Build the vocabulary from every text of this label<TAB>text file (e.g. the source's).
  std::string vocab_from;
  /// Read the vocabulary from this file (one token per line) instead of building it.
  std::string vocab_path;
  /// tokenize = "sentencepiece": the model file (.model) of Google's SentencePiece.
  std::string spm_model;
  /// tokenize = "bpe": the model's merges.txt (with vocab_path = its vocab.json).
  std::string merges_path;
  /// tokenize = "sentencepiece": a piece of the model put before every text (ALBERT: "[CLS]",
  /// models trained with a BOS: "<s>"); empty = none.
  std::string bos_token;
  /// tokenize = "sentencepiece": a piece put after every text, kept when the text is cut
  /// (ALBERT: "[SEP]", T5: "</s>"); empty = none.
  std::string eos_token;
  /// Write the vocabulary to this file name in the run folder.
  std::string vocab_out;
  /// Fraction of the training file held out for validation, chosen by `seed` (default 0.1).
  double val_fraction = 0.1;
  /// Fraction of the training file held out for testing when there is no test file (0).
  double test_fraction = 0.0;
  /// Data seed for the hold-outs (default 0).
  int64_t seed = 0;
  /// Number of classes; 0 = from the labels (integers: max + 1; strings: distinct values).
  int64_t num_classes = 0;
  /// Class names in id order; labels must be among them (empty = from the labels).
  std::vector<std::string> classes;
  /// Texts without labels, one per line (a line 'label<TAB>text' counts as its text): the
  /// domain's unlabelled inputs, encoded with the training vocabulary; what adaptation methods
  /// train on and `tlab predict --input` predicts (optional).
  std::string unlabeled_path;
};

std::string percent(int64_t part, int64_t whole) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", whole ? 100.0 * part / whole : 0.0);
  return buf;
}

bool ascii_punct(unsigned char c) { return c < 128 && std::ispunct(c); }
char lower(char c, bool on) { return (on && c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c; }

// Words and punctuation: whitespace separates tokens, each ASCII punctuation mark is a token of
// its own ("don't!" -> don ' t !); other bytes (letters, digits, UTF-8) make words.
std::vector<std::string> whitespace_tokens(std::string_view s, bool lowercase) {
  std::vector<std::string> out;
  std::string word;
  auto flush = [&] {
    if (!word.empty()) out.push_back(std::move(word));
    word.clear();
  };
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (tlab_ds::is_space(c)) {
      flush();
    } else if (ascii_punct(u)) {
      flush();
      out.emplace_back(1, c);
    } else {
      word += lower(c, lowercase);
    }
  }
  flush();
  return out;
}

// Characters (UTF-8 code points); a run of whitespace is one " " token.
std::vector<std::string> char_tokens(std::string_view s, bool lowercase) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < s.size();) {
    const auto u = static_cast<unsigned char>(s[i]);
    if (tlab_ds::is_space(s[i])) {
      if (out.empty() || out.back() != " ") out.emplace_back(" ");
      ++i;
      continue;
    }
    std::size_t len = u < 0x80           ? 1
                      : (u >> 5) == 0x6  ? 2
                      : (u >> 4) == 0xE  ? 3
                      : (u >> 3) == 0x1E ? 4
                                         : 1;
    len = std::min(len, s.size() - i);
    for (std::size_t k = 1; k < len; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) len = k;  // broken sequence
    std::string t(s.substr(i, len));
    if (len == 1) t[0] = lower(t[0], lowercase);
    out.push_back(std::move(t));
    i += len;
  }
  return out;
}

// One file's examples: tokens and raw labels.
struct Examples {
  std::vector<std::vector<std::string>> tokens;
  std::vector<char> cut;  // pieces dropped to keep a closing mark ([SEP], </s>, eos_token)
  std::vector<tlab_ds::RawLabel> labels;
};

class Text : public tlab::Dataset {
 public:
  using Options = TextOptions;

  static tlab::Schema schema() {
    using O = Options;
    return tlab::SchemaFor<O>()
        .field("path", &O::path, "training file: label<TAB>text per line")
        .field("test_path", &O::test_path, "test file in the same format (optional)")
        .field("tokenize", &O::tokenize,
               "whitespace (words, punctuation), char, wordpiece (BERT's, with vocab_path), "
               "sentencepiece (spm_model) or bpe (RoBERTa's byte-level BPE: vocab_path = "
               "vocab.json, merges_path)")
        .choices({"whitespace", "char", "wordpiece", "sentencepiece", "bpe"})
        .field("lowercase", &O::lowercase,
               "lower-case ASCII letters first (wordpiece: lower-case and strip accents; bpe: "
               "never, it is cased)")
        .field("max_len", &O::max_len, "tokens per example: longer are cut, shorter padded")
        .range(1, 100000)
        .field("max_vocab", &O::max_vocab, "at most this many ids, <pad> and <unk> included")
        .range(3, 100000000)
        .field("min_freq", &O::min_freq, "rarer training tokens become <unk>")
        .min(1)
        .field("vocab_from", &O::vocab_from, "build the vocabulary from all texts of this file")
        .field("vocab_path", &O::vocab_path, "read the vocabulary (one token per line)")
        .field("spm_model", &O::spm_model,
               "tokenize = sentencepiece: the SentencePiece model file (.model)")
        .field("merges_path", &O::merges_path,
               "tokenize = bpe: the model's merges.txt (vocab_path: its vocab.json)")
        .field("bos_token", &O::bos_token,
               "tokenize = sentencepiece: a piece of the model put first (ALBERT: [CLS])")
        .field("eos_token", &O::eos_token,
               "tokenize = sentencepiece: a piece put last, kept when cut (ALBERT: [SEP], T5: "
               "</s>)")
        .field("vocab_out", &O::vocab_out, "write the vocabulary to this file in the run folder")
        .field("val_fraction", &O::val_fraction, "fraction of the train file held out for val")
        .range(0.0, 0.99)
        .field("test_fraction", &O::test_fraction,
               "fraction of the train file held out for test (only without test_path)")
        .range(0.0, 0.99)
        .field("seed", &O::seed, "data seed for the hold-outs")
        .min(0)
        .field("num_classes", &O::num_classes, "number of classes (0 = from the labels)")
        .min(0)
        .field("classes", &O::classes, "class names in id order (empty = from the labels)")
        .field("unlabeled_path", &O::unlabeled_path,
               "texts without labels, one per line: the unlabelled inputs (optional)");
  }

  explicit Text(Options options) : o_(std::move(options)) {
    if (o_.path.empty())
      throw std::invalid_argument("text: path is required; expected the training file's path");
    if (o_.tokenize != "whitespace" && o_.tokenize != "char" && o_.tokenize != "wordpiece" &&
        o_.tokenize != "sentencepiece" && o_.tokenize != "bpe")
      throw std::invalid_argument(
          "text: unknown tokenize '" + o_.tokenize +
          "'; expected one of: whitespace, char, wordpiece, sentencepiece, bpe");
    if ((o_.tokenize == "bpe") != !o_.merges_path.empty())
      throw std::invalid_argument(
          o_.merges_path.empty()
              ? "text: tokenize = \"bpe\" needs the model's merges; set merges_path to its "
                "merges.txt (and vocab_path to its vocab.json)"
              : "text: merges_path is set but tokenize = \"" + o_.tokenize +
                    "\"; set tokenize = \"bpe\" or remove merges_path");
    if (o_.tokenize != "sentencepiece" && (!o_.bos_token.empty() || !o_.eos_token.empty()))
      throw std::invalid_argument(
          "text: bos_token / eos_token add a SentencePiece model's pieces, but tokenize = \"" +
          o_.tokenize + "\"; wordpiece adds [CLS] and [SEP] itself, bpe <s> and </s>: remove them");
    if (o_.tokenize == "sentencepiece" &&
        o_.max_len < !o_.bos_token.empty() + !o_.eos_token.empty() + 1)
      throw std::invalid_argument(
          "text: max_len " + std::to_string(o_.max_len) +
          " leaves no room for a piece beside bos_token and eos_token; "
          "expected >= " +
          std::to_string(!o_.bos_token.empty() + !o_.eos_token.empty() + 1));
    if (o_.tokenize == "bpe" && o_.vocab_path.empty())
      throw std::invalid_argument(
          "text: tokenize = \"bpe\" needs the model's vocabulary; set vocab_path to its "
          "vocab.json");
    if ((o_.tokenize == "sentencepiece") != !o_.spm_model.empty())
      throw std::invalid_argument(
          o_.spm_model.empty()
              ? "text: tokenize = \"sentencepiece\" needs the model; set spm_model to its "
                ".model file"
              : "text: spm_model is set but tokenize = \"" + o_.tokenize +
                    "\"; set tokenize = \"sentencepiece\" or remove spm_model");
    if (o_.tokenize == "wordpiece" && o_.vocab_path.empty())
      throw std::invalid_argument(
          "text: tokenize = \"wordpiece\" needs the model's vocabulary; set vocab_path to its "
          "vocab.txt (BERT's format, one token per line)");
    if ((o_.tokenize == "wordpiece" || o_.tokenize == "bpe") && o_.max_len < 2)
      throw std::invalid_argument(
          "text: max_len " + std::to_string(o_.max_len) + " leaves no room for " +
          (o_.tokenize == "bpe" ? "<s> and </s>" : "[CLS] and [SEP]") + "; expected >= 2");
    tlab_ds::check_range("text", "max_len", static_cast<double>(o_.max_len), 1, 100000);
    tlab_ds::check_range("text", "max_vocab", static_cast<double>(o_.max_vocab), 3, 1e8);
    tlab_ds::check_range("text", "min_freq", static_cast<double>(o_.min_freq), 1, 1e18);
    tlab_ds::check_range("text", "val_fraction", o_.val_fraction, 0.0, 0.99);
    tlab_ds::check_range("text", "test_fraction", o_.test_fraction, 0.0, 0.99);
    if (!o_.test_path.empty() && o_.test_fraction > 0)
      throw std::invalid_argument(
          "text: test_fraction holds out a test split when there is no test file; expected "
          "test_fraction = 0 with test_path");
    if (o_.num_classes < 0)
      throw std::invalid_argument("text: num_classes " + std::to_string(o_.num_classes) +
                                  " is negative; expected 0 (from the labels) or a count");
    if (!o_.vocab_from.empty() && !o_.vocab_path.empty())
      throw std::invalid_argument("text: vocab_from ('" + o_.vocab_from + "') and vocab_path ('" +
                                  o_.vocab_path + "') both choose the vocabulary; expected one");
    if (!o_.vocab_out.empty()) {
      const fs::path out(o_.vocab_out);
      bool up = false;
      for (const auto& part : out) up = up || part == "..";
      if (out.is_absolute() || up || !out.has_filename())
        throw std::invalid_argument("text: vocab_out '" + o_.vocab_out +
                                    "' leaves the run folder; expected a file name such as "
                                    "\"vocab.txt\" (it is written in the run folder)");
    }
  }

  tlab::DomainData load(tlab::Context& ctx) override {
    if (o_.tokenize == "wordpiece") {
      wordpiece_.emplace(tlab::WordPiece::from_file(o_.vocab_path, o_.lowercase));
      if (wordpiece_->id("[PAD]") != kPad)
        throw std::invalid_argument(
            "text: the vocabulary '" + o_.vocab_path + "' has [PAD] at id " +
            std::to_string(wordpiece_->id("[PAD]")) +
            "; tokenize = \"wordpiece\" pads with id 0, as BERT's vocab.txt has [PAD] on its "
            "first line");
      for (const char* special : {"[CLS]", "[SEP]"})
        if (wordpiece_->id(special) < 0)
          throw std::invalid_argument("text: the vocabulary '" + o_.vocab_path + "' has no " +
                                      special + "; expected BERT's vocab.txt");
    }
    if (o_.tokenize == "bpe") {
      bpe_.emplace(tlab::ByteLevelBpe::from_files(o_.vocab_path, o_.merges_path));
      for (const char* special : {"<s>", "</s>", "<pad>", "<unk>"})
        if (bpe_->id(special) < 0)
          throw std::invalid_argument("text: the vocabulary '" + o_.vocab_path + "' has no " +
                                      special +
                                      "; tokenize = \"bpe\" encodes as RoBERTa (<s> tokens "
                                      "</s>, padded with <pad>), whose vocab.json has them");
      pad_id_ = bpe_->id("<pad>");
      unk_id_ = bpe_->id("<unk>");
    }
    if (o_.tokenize == "sentencepiece") {
      spm_ = std::make_shared<Spm>(o_.spm_model);
      if (spm_->pad_id() != kPad)
        throw std::invalid_argument(
            "text: the SentencePiece model " + quote(o_.spm_model) + " has pad id " +
            std::to_string(spm_->pad_id()) +
            " (-1: none); the text dataset pads with id 0, so the model must have its pad "
            "piece at id 0 (spm_train --pad_id=0 --unk_id=1, as ALBERT's and T5's models do)");
      for (const auto& [key, piece] :
           {std::pair{"bos_token", o_.bos_token}, std::pair{"eos_token", o_.eos_token}})
        if (!piece.empty() &&
            std::find(spm_->pieces().begin(), spm_->pieces().end(), piece) == spm_->pieces().end())
          throw std::invalid_argument(
              std::string("text: ") + key + " = '" + piece +
              "' is not a piece of the SentencePiece model " + quote(o_.spm_model) +
              "; use one of its pieces (e.g. <s>, </s>), or train the model with "
              "--control_symbols=[CLS],[SEP] as ALBERT's");
    }
    Examples train = read(o_.path);
    Examples test;
    if (!o_.test_path.empty()) test = read(o_.test_path);
    tlab_ds::Labels labels =
        tlab_ds::map_labels(train.labels, test.labels, o_.classes, o_.num_classes, "text");
    tlab_ds::log_info(ctx, labels.description);

    const auto n = static_cast<int64_t>(train.tokens.size());
    const tlab_ds::Parts parts =
        tlab_ds::split_examples(n, o_.val_fraction, o_.test_fraction, 0,
                                static_cast<uint64_t>(o_.seed), "text: file " + quote(o_.path));

    std::vector<std::string> vocab;
    if (spm_) {
      vocab = spm_->pieces();
      tlab_ds::log_info(ctx, "SentencePiece model of " + std::to_string(vocab.size()) +
                                 " pieces from " + quote(o_.spm_model));
    } else if (bpe_) {
      for (int64_t i = 0; i < bpe_->size(); ++i) vocab.push_back(bpe_->token(i));
      tlab_ds::log_info(ctx, "byte-level BPE vocabulary of " + std::to_string(vocab.size()) +
                                 " ids from " + quote(o_.vocab_path) + " and merges " +
                                 quote(o_.merges_path) + " (<pad> = " + std::to_string(pad_id_) +
                                 ")");
    } else if (wordpiece_) {
      for (int64_t i = 0; i < wordpiece_->size(); ++i) vocab.push_back(wordpiece_->token(i));
      tlab_ds::log_info(ctx, "WordPiece vocabulary of " + std::to_string(vocab.size()) +
                                 " ids from " + quote(o_.vocab_path) +
                                 (o_.lowercase ? " (uncased)" : " (cased)"));
    } else if (!o_.vocab_path.empty()) {
      vocab = read_vocab(o_.vocab_path);
      tlab_ds::log_info(ctx, "read a vocabulary of " + std::to_string(vocab.size()) + " ids from " +
                                 quote(o_.vocab_path));
    } else if (!o_.vocab_from.empty()) {
      const Examples from = read(o_.vocab_from);
      std::vector<int64_t> every(from.tokens.size());
      for (std::size_t i = 0; i < every.size(); ++i) every[i] = static_cast<int64_t>(i);
      vocab = build_vocab(from, every);
      tlab_ds::log_info(ctx, "built a vocabulary of " + std::to_string(vocab.size()) +
                                 " ids from the " + std::to_string(every.size()) +
                                 " texts of vocab_from " + quote(o_.vocab_from));
    } else {
      vocab = build_vocab(train, parts.train);
      tlab_ds::log_info(ctx, "built a vocabulary of " + std::to_string(vocab.size()) +
                                 " ids from the " + std::to_string(parts.train.size()) +
                                 " training examples");
    }
    if (!o_.vocab_out.empty()) write_vocab(ctx, vocab);
    std::unordered_map<std::string, int64_t> id;
    for (std::size_t i = 0; i < vocab.size(); ++i) id.emplace(vocab[i], static_cast<int64_t>(i));

    tlab::DomainData d;
    d.name = fs::path(o_.path).stem().string();
    d.num_classes = labels.num_classes;
    d.input_shape = {o_.max_len};
    std::string stats;
    auto encode = [&](const Examples& ex, const std::vector<int64_t>& ids,
                      const std::vector<int64_t>& which, const char* name) {
      const auto m = static_cast<int64_t>(which.size());
      torch::Tensor x = torch::full({m, o_.max_len}, pad_id_, torch::kLong);
      torch::Tensor y = torch::empty({m}, torch::kLong);
      int64_t* px = x.data_ptr<int64_t>();
      int64_t* py = y.data_ptr<int64_t>();
      int64_t tokens = 0, unknown = 0, cut = 0;
      for (int64_t r = 0; r < m; ++r) {
        const auto& t = ex.tokens[which[r]];
        cut += ex.cut[which[r]] || static_cast<int64_t>(t.size()) > o_.max_len;
        for (int64_t k = 0; k < static_cast<int64_t>(t.size()) && k < o_.max_len; ++k) {
          auto it = id.find(t[k]);
          px[r * o_.max_len + k] = it == id.end() ? unk_id_ : it->second;
          unknown += it == id.end() || (wordpiece_ && t[k] == "[UNK]") ||
                     (bpe_ && it->second == unk_id_) || (spm_ && it->second == spm_->unk_id());
          ++tokens;
        }
        py[r] = ids[which[r]];
      }
      if (m > 0)
        stats += std::string(stats.empty() ? "" : "; ") + name + ": " + std::to_string(m) +
                 " examples, " + std::to_string(cut) + " cut to max_len, " +
                 percent(unknown, tokens) + " <unk>";
      return tlab::Split{x, y};
    };
    d.train = encode(train, labels.train, parts.train, "train");
    d.val = encode(train, labels.train, parts.val, "val");
    if (o_.test_path.empty()) {
      d.test = encode(train, labels.train, parts.test, "test");
    } else {
      std::vector<int64_t> all(test.tokens.size());
      for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int64_t>(i);
      d.test = encode(test, labels.test, all, "test");
    }
    if (!o_.unlabeled_path.empty()) {
      Examples u = read(o_.unlabeled_path, /*labelled=*/false);
      std::vector<int64_t> all(u.tokens.size()), none(u.tokens.size(), 0);
      for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int64_t>(i);
      d.unlabeled = encode(u, none, all, "unlabeled").x;
    }
    tlab_ds::log_info(ctx, stats);
    return d;
  }

 private:
  // `first` pieces `last` (each mark only when not empty), the pieces cut so that the whole fits
  // max_len with `last` kept; *cut says whether pieces were dropped.
  std::vector<std::string> framed(std::vector<std::string> pieces, const std::string& first,
                                  const std::string& last, bool* cut) const {
    std::vector<std::string> out;
    if (!first.empty()) out.push_back(first);
    const auto room = static_cast<std::size_t>(o_.max_len - !last.empty());
    for (auto& p : pieces) {
      if (out.size() >= room) {
        *cut = true;
        break;
      }
      out.push_back(std::move(p));
    }
    if (!last.empty()) out.push_back(last);
    return out;
  }

  // The tokens of one text; *cut is set when a tokenizer that adds marks had to drop pieces
  // (longer token lists are cut by the encoding).
  std::vector<std::string> tokens(std::string_view s, const std::string& where, bool* cut) const {
    *cut = false;
    if (spm_) {  // the model's pieces, between bos_token and eos_token when set
      std::vector<std::string> pieces = spm_->encode(std::string(s), where);
      if (o_.bos_token.empty() && o_.eos_token.empty()) return pieces;
      return framed(std::move(pieces), o_.bos_token, o_.eos_token, cut);
    }
    if (bpe_ || wordpiece_) {  // <s> tokens </s> or [CLS] pieces [SEP]
      std::vector<std::string> pieces;
      try {
        pieces = bpe_ ? bpe_->tokenize(std::string(s)) : wordpiece_->tokenize(std::string(s));
      } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(where + ": " + e.what());
      }
      return bpe_ ? framed(std::move(pieces), "<s>", "</s>", cut)
                  : framed(std::move(pieces), "[CLS]", "[SEP]", cut);
    }
    return o_.tokenize == "char" ? char_tokens(s, o_.lowercase)
                                 : whitespace_tokens(s, o_.lowercase);
  }

  Examples read(const fs::path& path, bool labelled = true) const {
    const std::string bytes = tlab_ds::read_bytes(path, "text: file", /*text=*/true);
    Examples ex;
    for (const tlab_ds::Line& line : tlab_ds::split_lines(bytes)) {
      if (tlab_ds::trim(line.text).empty()) continue;
      const std::string where =
          "text: file " + quote(path) + " line " + std::to_string(line.number);
      const std::size_t tab = line.text.find('\t');
      bool cut = false;
      if (!labelled) {
        ex.tokens.push_back(tokens(
            tlab_ds::trim(tab == std::string_view::npos ? line.text : line.text.substr(tab + 1)),
            where, &cut));
        ex.cut.push_back(cut);
        continue;
      }
      if (tab == std::string_view::npos)
        throw std::invalid_argument(where + ": no tab; expected 'label<TAB>text'");
      const std::string label(tlab_ds::trim(line.text.substr(0, tab)));
      if (label.empty())
        throw std::invalid_argument(where + ": empty label before the tab; expected " +
                                    "'label<TAB>text'");
      const std::string_view body = tlab_ds::trim(line.text.substr(tab + 1));
      if (body.empty())
        throw std::invalid_argument(where + ": empty text after the tab; expected " +
                                    "'label<TAB>text'");
      ex.tokens.push_back(tokens(body, where, &cut));
      ex.cut.push_back(cut);
      ex.labels.push_back({label, path, line.number});
    }
    if (ex.tokens.empty())
      throw std::invalid_argument("text: file " + quote(path) + " has no examples; expected " +
                                  (labelled ? "'label<TAB>text' lines" : "one text per line"));
    return ex;
  }

  // <pad>, <unk>, then the training split's tokens seen at least min_freq times, most frequent
  // first (ties in byte order), at most max_vocab ids in all.
  std::vector<std::string> build_vocab(const Examples& ex,
                                       const std::vector<int64_t>& which) const {
    std::map<std::string, int64_t> count;
    for (int64_t i : which)
      for (const auto& t : ex.tokens[i]) ++count[t];
    std::vector<std::pair<std::string, int64_t>> kept;
    for (auto& [t, c] : count)
      if (c >= o_.min_freq && t != kPadToken && t != kUnkToken) kept.emplace_back(t, c);
    std::stable_sort(kept.begin(), kept.end(),
                     [](const auto& a, const auto& b) { return a.second > b.second; });
    std::vector<std::string> vocab{kPadToken, kUnkToken};
    for (const auto& [t, c] : kept) {
      if (static_cast<int64_t>(vocab.size()) >= o_.max_vocab) break;
      vocab.push_back(t);
    }
    return vocab;
  }

  // One token per line. If the first two lines are <pad> and <unk>, line i is id i (the format
  // vocab_out writes); otherwise the tokens get ids 2, 3, ... in order.
  static std::vector<std::string> read_vocab(const fs::path& path) {
    const std::string what = "text: vocab_path file";
    const std::string bytes = tlab_ds::read_bytes(path, what, /*text=*/true);
    std::vector<std::string> tokens;
    for (const auto& line : tlab_ds::split_lines(bytes)) tokens.emplace_back(line.text);
    if (tokens.empty())
      throw std::invalid_argument(what + " " + quote(path) +
                                  " is empty; expected one token per line");
    std::vector<std::string> vocab{kPadToken, kUnkToken};
    const bool with_specials =
        tokens.size() >= 2 && tokens[0] == kPadToken && tokens[1] == kUnkToken;
    std::map<std::string, std::size_t> seen;
    for (std::size_t i = with_specials ? 2 : 0; i < tokens.size(); ++i) {
      const std::string where = what + " " + quote(path) + " line " + std::to_string(i + 1);
      if (tokens[i].empty())
        throw std::invalid_argument(where + " is empty; expected one token per line");
      if (tokens[i] == kPadToken || tokens[i] == kUnkToken)
        throw std::invalid_argument(where + " is '" + tokens[i] + "'; expected <pad> and <unk> " +
                                    "only as lines 1 and 2");
      auto [it, fresh] = seen.emplace(tokens[i], i + 1);
      if (!fresh)
        throw std::invalid_argument(where + " repeats the token '" + tokens[i] + "' of line " +
                                    std::to_string(it->second) + "; expected distinct tokens");
      vocab.push_back(tokens[i]);
    }
    return vocab;
  }

  void write_vocab(tlab::Context& ctx, const std::vector<std::string>& vocab) const {
    const fs::path p = ctx.run_dir / o_.vocab_out;
    if (ctx.run_dir.empty())
      throw std::invalid_argument(
          "text: vocab_out is written in the run folder, but there is "
          "none (the Context has no run_dir)");
    std::error_code ec;
    if (p.has_parent_path()) fs::create_directories(p.parent_path(), ec);
    std::string text;
    for (const auto& t : vocab) text += t + '\n';
    try {
      tlab::write_file_atomic(p, text);  // a crash never leaves half a vocabulary
    } catch (const std::runtime_error& e) {
      throw std::invalid_argument("text: cannot write the vocabulary (vocab_out): " +
                                  std::string(e.what()));
    }
    tlab_ds::log_info(
        ctx, "wrote the vocabulary (" + std::to_string(vocab.size()) + " ids) to " + quote(p));
  }

  Options o_;
  std::optional<tlab::WordPiece> wordpiece_;  // tokenize = "wordpiece", loaded in load()
  std::shared_ptr<Spm> spm_;                  // tokenize = "sentencepiece", loaded in load()
  std::optional<tlab::ByteLevelBpe> bpe_;     // tokenize = "bpe", loaded in load()
  int64_t pad_id_ = kPad, unk_id_ = kUnk;     // bpe: the vocabulary's <pad> and <unk>
};

}  // namespace

TLAB_PLUGIN(Text, "text", "1.0.0", "Text classification from label<TAB>text lines (token ids)")
