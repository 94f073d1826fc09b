#pragma once
/// \file mlm.hpp
/// Masked-language-model pre-training (Devlin et al. 2019, "BERT", sec. 3.1 "Task #1: Masked
/// LM" and appendix A.1), as Hugging Face's DataCollatorForLanguageModeling and BertForMaskedLM
/// compute it, for a strategy's prepare(): the backbone learns from unlabelled text of the
/// source, of the target (task-adaptive pre-training, Gururangan et al. 2020) or of both,
/// before the supervised stages.
///
/// - Masking: each token that is not special ([PAD], [UNK], [CLS], [SEP], [MASK]) is chosen
///   with probability `mlm_probability` (0.15); a chosen token becomes [MASK] with probability
///   0.8, a random token of the vocabulary with 0.1, and stays with 0.1; the loss is the
///   cross-entropy of the model's prediction of the original token at the chosen positions only.
///   With mlm_whole_word, whole words are chosen instead (whole_word_choice), then masked alike.
/// - Head: BertOnlyMLMHead under its names (`cls.predictions.transform.dense`,
///   `cls.predictions.transform.LayerNorm`, `cls.predictions.bias`), its decoder tied to the
///   backbone's input embedding (`embeddings.word_embeddings.weight` for bert): logits =
///   LayerNorm(gelu(dense(h))) E^T + bias. The head is temporary: only the backbone is kept.
/// - The token states h are read at a tap of the backbone (BackboneNet::tap; by default the
///   last layer group's), which must carry N x L x H: the bert backbone's layer taps do.
/// - Differences from Hugging Face: the backbone derives its attention mask from the masked
///   ids, so a random replacement that happens to be the padding id (probability about
///   0.015 / vocabulary size per token) is not attended.
/// - The head starts fresh, or from a checkpoint's (load_mlm_head: the bert backbone with
///   mlm_head = true loads BertForMaskedLM's cls.predictions.* or RobertaForMaskedLM's
///   lm_head.* with the encoder), as continued pre-training on domain text does.
///
/// Example (a strategy that pre-trains with MLM, then lets the runner fine-tune on the target):
/// \code
///   struct MyOptions { tlab::MlmOptions mlm; };
///   static tlab::Schema schema() { return tlab::SchemaFor<MyOptions>().include(&MyOptions::mlm); }
///   void prepare(tlab::Session& s) override { tlab::pretrain_mlm(s, o_.mlm); }
/// \endcode

#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "tlab/sdk/bpe.hpp"
#include "tlab/sdk/check.hpp"
#include "tlab/sdk/params.hpp"
#include "tlab/sdk/strategy.hpp"
#include "tlab/sdk/wordpiece.hpp"

namespace tlab {

/// Options of masked-language-model pre-training: a fragment for a strategy's options
/// (SchemaFor::include). A strategy sets its own defaults in its options struct.
struct MlmOptions {
  int64_t mlm_epochs = 10;
  double mlm_lr = 0.0;
  double mlm_probability = 0.15;
  std::string mlm_text = "both";
  std::string mlm_vocab;
  int64_t mlm_mask_id = -1;
  std::vector<int64_t> mlm_special_ids;
  std::string mlm_tap;
  std::string mlm_embedding = "embeddings.word_embeddings.weight";
  double mlm_layer_norm_eps = 1e-12;
  bool mlm_whole_word = false;
  static Schema schema() {
    return SchemaFor<MlmOptions>()
        .field("mlm_epochs", &MlmOptions::mlm_epochs, "epochs of masked-language-model training")
        .range(1, 100000)
        .field("mlm_lr", &MlmOptions::mlm_lr, "its learning rate (0 = train.lr)")
        .range(0, 1000)
        .field("mlm_probability", &MlmOptions::mlm_probability,
               "fraction of the (non-special) tokens chosen for prediction (BERT: 0.15)")
        .range(0.001, 1)
        .field("mlm_text", &MlmOptions::mlm_text,
               "whose inputs it reads: source (train, unlabelled), target (train and the "
               "unlabelled pool: task-adaptive) or both; labels are never used")
        .choices({"source", "target", "both"})
        .field("mlm_vocab", &MlmOptions::mlm_vocab,
               "the model's vocab.txt (BERT: [MASK]'s id, never masked: [PAD] [UNK] [CLS] [SEP] "
               "[MASK]) or vocab.json (RoBERTa: <mask>; <s> <pad> </s> <unk> <mask>); or set "
               "mlm_mask_id and mlm_special_ids")
        .field("mlm_mask_id", &MlmOptions::mlm_mask_id,
               "id of the mask token (without mlm_vocab, e.g. a SentencePiece model's)")
        .range(-1, 1 << 24)
        .field("mlm_special_ids", &MlmOptions::mlm_special_ids,
               "ids never masked (without mlm_vocab: padding, unknown, sequence marks)")
        .range(0, 1 << 24)
        .field("mlm_tap", &MlmOptions::mlm_tap,
               "the backbone's tap with the token states N x L x H (empty = its last layer "
               "group)")
        .field("mlm_embedding", &MlmOptions::mlm_embedding,
               "the backbone's input-embedding parameter (V x H) the decoder is tied to")
        .field("mlm_layer_norm_eps", &MlmOptions::mlm_layer_norm_eps,
               "the head's LayerNorm epsilon (BERT 1e-12, RoBERTa 1e-5)")
        .range(0, 1)
        .field("mlm_whole_word", &MlmOptions::mlm_whole_word,
               "whole-word masking: choose whole words (a piece and its ## continuations; "
               "needs mlm_vocab = a WordPiece vocab.txt)");
  }
};

/// Inputs with masks and the labels of a batch (labels: the original id at the chosen
/// positions, -100 elsewhere, as Hugging Face's collator).
struct MaskedTokens {
  torch::Tensor input;
  torch::Tensor labels;
};

/// The second half of torch_mask_tokens: of the `chosen` positions (bool, like `ids`), 80%
/// become `mask_id`, 10% a random id below `vocab`, 10% stay; labels = the original ids there.
inline MaskedTokens mask_chosen(const torch::Tensor& ids, const torch::Tensor& chosen,
                                int64_t mask_id, int64_t vocab,
                                c10::optional<at::Generator> gen = c10::nullopt) {
  const auto opts = torch::TensorOptions().dtype(torch::kFloat).device(ids.device());
  MaskedTokens m;
  m.labels = ids.masked_fill(chosen.logical_not(), -100);
  const torch::Tensor replaced =
      torch::bernoulli(torch::full(ids.sizes(), 0.8, opts), gen).to(torch::kBool) & chosen;
  m.input = ids.masked_fill(replaced, mask_id);
  const torch::Tensor randomised =
      torch::bernoulli(torch::full(ids.sizes(), 0.5, opts), gen).to(torch::kBool) & chosen &
      replaced.logical_not();
  const torch::Tensor words = torch::randint(vocab, ids.sizes(), gen, ids.options());
  m.input = torch::where(randomised, words, m.input);
  return m;
}

/// DataCollatorForLanguageModeling.torch_mask_tokens: `ids` (int64 N x L), `special` a bool
/// vector over the vocabulary (true = never chosen), random draws from `gen` (on the ids'
/// device; an undefined generator = the device's default).
inline MaskedTokens mask_tokens(const torch::Tensor& ids, double probability, int64_t mask_id,
                                const torch::Tensor& special,
                                c10::optional<at::Generator> gen = c10::nullopt) {
  const auto opts = torch::TensorOptions().dtype(torch::kFloat).device(ids.device());
  torch::Tensor chance = torch::full(ids.sizes(), probability, opts);
  chance.masked_fill_(special.index_select(0, ids.flatten()).view(ids.sizes()), 0.0);
  const torch::Tensor chosen = torch::bernoulli(chance, gen).to(torch::kBool);
  return mask_chosen(ids, chosen, mask_id, special.size(0), gen);
}

/// Whole-word masking's choice (BERT's whole-word-masking models; Hugging Face's
/// DataCollatorForWholeWordMask._whole_word_mask): per sequence, the words (a piece and the
/// continuation pieces after it, `continuation` a bool vector over the vocabulary, e.g. BERT's
/// "##" pieces; special ids are no word) in a random order (`gen`, a CPU generator; undefined =
/// the default), taken whole while they fit round(probability x the sequence's non-special
/// tokens) (at least 1). Returns the chosen positions (bool, on the ids' device); mask_chosen
/// then masks them. Runs on the CPU (one copy of the ids per batch).
inline torch::Tensor whole_word_choice(const torch::Tensor& ids, double probability,
                                       const torch::Tensor& special,
                                       const torch::Tensor& continuation,
                                       c10::optional<at::Generator> gen = c10::nullopt) {
  const torch::Tensor x = ids.to(torch::kCPU).contiguous();
  const torch::Tensor sp = special.to(torch::kCPU).contiguous(),
                      cont = continuation.to(torch::kCPU).contiguous();
  const bool* is_special = sp.data_ptr<bool>();
  const bool* is_cont = cont.data_ptr<bool>();
  torch::Tensor chosen = torch::zeros(x.sizes(), torch::kBool);
  bool* out = chosen.data_ptr<bool>();
  const int64_t n = x.size(0), len = x.size(1);
  const int64_t* px = x.data_ptr<int64_t>();
  for (int64_t r = 0; r < n; ++r) {
    std::vector<std::vector<int64_t>> words;
    int64_t tokens = 0;
    bool in_word = false;
    for (int64_t i = 0; i < len; ++i) {
      const int64_t id = px[r * len + i];
      if (is_special[id]) {
        in_word = false;
        continue;
      }
      ++tokens;
      if (in_word && is_cont[id])
        words.back().push_back(i);
      else
        words.push_back({i});
      in_word = true;
    }
    if (words.empty()) continue;
    const auto want = std::max<int64_t>(
        1, static_cast<int64_t>(std::llround(static_cast<double>(tokens) * probability)));
    const torch::Tensor order =
        torch::randperm(static_cast<int64_t>(words.size()), gen, torch::kLong);
    int64_t taken = 0;
    for (int64_t k = 0; k < order.size(0) && taken < want; ++k) {
      const auto& w = words[static_cast<std::size_t>(order[k].item<int64_t>())];
      if (taken + static_cast<int64_t>(w.size()) > want) continue;
      for (int64_t i : w) out[r * len + i] = true;
      taken += static_cast<int64_t>(w.size());
    }
  }
  return chosen.to(ids.device());
}

/// BertOnlyMLMHead (Hugging Face's names under `cls`): transform = dense, exact GELU,
/// LayerNorm; decoder = the tied input embedding E (V x H, not owned) plus a bias of V.
class MlmHead : public torch::nn::Module {
 public:
  MlmHead(int64_t hidden, torch::Tensor embedding, double layer_norm_eps = 1e-12)
      : embedding_(std::move(embedding)) {
    auto predictions = register_module("predictions", std::make_shared<torch::nn::Module>());
    auto transform = predictions->register_module("transform", std::make_shared<Module>());
    dense_ = transform->register_module("dense", torch::nn::Linear(hidden, hidden));
    norm_ = transform->register_module(
        "LayerNorm",
        torch::nn::LayerNorm(torch::nn::LayerNormOptions({hidden}).eps(layer_norm_eps)));
    bias_ = predictions->register_parameter("bias",
                                            torch::zeros({embedding_.size(0)}, embedding_.dtype()));
  }
  /// Vocabulary scores of token states h (... x H).
  torch::Tensor forward(const torch::Tensor& h) {
    const torch::Tensor t = norm_->forward(torch::gelu(dense_->forward(h)));
    return torch::matmul(t, embedding_.t()) + bias_;
  }
  /// Mean cross-entropy over the chosen positions (labels != -100) of states h (N x L x H);
  /// zero, with a graph, when no position is chosen. Only the chosen positions are decoded.
  torch::Tensor loss(const torch::Tensor& h, const torch::Tensor& labels) {
    const torch::Tensor chosen = labels.ne(-100).flatten();
    const torch::Tensor rows = chosen.nonzero().squeeze(1);
    if (rows.numel() == 0) return h.sum() * 0.0 + bias_.sum() * 0.0;
    const torch::Tensor states = h.reshape({-1, h.size(-1)}).index_select(0, rows);
    return torch::nn::functional::cross_entropy(forward(states),
                                                labels.flatten().index_select(0, rows));
  }

 private:
  torch::Tensor embedding_, bias_;
  torch::nn::Linear dense_{nullptr};
  torch::nn::LayerNorm norm_{nullptr};
};

/// Copies a checkpoint's masked-LM head that the backbone holds (the bert backbone's
/// mlm_head = true) into `head`: Hugging Face's BertForMaskedLM layout
/// (cls.predictions.transform.dense, cls.predictions.transform.LayerNorm, cls.predictions.bias)
/// or RobertaForMaskedLM's (lm_head.dense, lm_head.layer_norm, lm_head.bias). Returns the
/// prefix it came from ("cls.predictions." or "lm_head."), or "" when the backbone holds
/// neither. Throws std::invalid_argument when a layout is partly there or a shape differs.
inline std::string load_mlm_head(MlmHead& head, torch::nn::Module& backbone) {
  const auto mine = head.named_parameters();
  const auto theirs = backbone.named_parameters();
  const std::vector<std::string> ours = {
      "predictions.transform.dense.weight", "predictions.transform.dense.bias",
      "predictions.transform.LayerNorm.weight", "predictions.transform.LayerNorm.bias",
      "predictions.bias"};
  const std::vector<std::pair<std::string, std::vector<std::string>>> layouts = {
      {"cls.predictions.",
       {"cls.predictions.transform.dense.weight", "cls.predictions.transform.dense.bias",
        "cls.predictions.transform.LayerNorm.weight", "cls.predictions.transform.LayerNorm.bias",
        "cls.predictions.bias"}},
      {"lm_head.",
       {"lm_head.dense.weight", "lm_head.dense.bias", "lm_head.layer_norm.weight",
        "lm_head.layer_norm.bias", "lm_head.bias"}}};
  for (const auto& [prefix, names] : layouts) {
    std::string missing;
    int found = 0;
    for (const auto& n : names) {
      if (theirs.find(n))
        ++found;
      else
        missing += (missing.empty() ? "" : ", ") + n;
    }
    if (found == 0) continue;
    TLAB_CHECK(missing.empty(), "the backbone holds part of a masked-LM head (", prefix,
               "*) but not ", missing, "; load the whole head or none");
    torch::NoGradGuard no_grad;
    for (std::size_t i = 0; i < names.size(); ++i) {
      const torch::Tensor& from = *theirs.find(names[i]);
      torch::Tensor to = *mine.find(ours[i]);
      TLAB_CHECK(from.sizes() == to.sizes(), "the backbone's ", names[i], " is ", from.sizes(),
                 " but the masked-LM head needs ", to.sizes(),
                 "; the head's sizes come from the hidden size and the vocabulary");
      to.copy_(from);
    }
    return prefix;
  }
  return "";
}

namespace detail {

/// The inputs of the domains `text` names (training inputs and unlabelled pools; labels unused),
/// as one token-id tensor; `val` gets their validation inputs. (The runner has checked that the
/// domains' examples share one shape.)
inline torch::Tensor mlm_inputs(Session& s, const std::string& text, torch::Tensor* val) {
  const std::string& who = s.context().plugin;
  std::vector<const DomainData*> domains;
  if (text != "target") {
    const DomainData* src = s.source();
    TLAB_CHECK(src, who, ": mlm_text = \"", text,
               "\" reads the source's text, but the experiment has no [source] table; add one, "
               "or set mlm_text = \"target\" (the target's own text)");
    domains.push_back(src);
  }
  if (text != "source") domains.push_back(&s.target());
  std::vector<torch::Tensor> train, held;
  for (const DomainData* d : domains) {
    TLAB_CHECK(!d->train.streamed(), who,
               ": masked-language-model training needs resident token ids; domain '", d->name,
               "' is streamed (raise the dataset's resident_max_mb)");
    const torch::Tensor& x = d->train.x;
    TLAB_CHECK(x.dim() == 2 && x.scalar_type() == torch::kLong, who,
               ": masked-language-model training needs token ids (int64, N x L) from a text "
               "dataset (tokenize = \"wordpiece\", \"bpe\" or \"sentencepiece\"); domain '",
               d->name, "' gives ", x.scalar_type(), " inputs of ", x.dim(), " dimension(s)");
    train.push_back(x);
    if (d->unlabeled.defined() && d->unlabeled.numel() > 0) train.push_back(d->unlabeled);
    if (d->val.x.defined() && d->val.size() > 0 && !d->val.streamed()) held.push_back(d->val.x);
  }
  if (val) *val = held.empty() ? torch::Tensor() : torch::cat(held);
  return torch::cat(train);
}

}  // namespace detail

/// Masked-language-model pre-training of the backbone, for prepare() (before adapters
/// attach): `o.mlm_epochs` epochs at `o.mlm_lr` over the inputs `o.mlm_text` names, shuffled
/// together, with [train]'s optimiser and batch size; once for all the runs that share it
/// (Session::reuse). Metrics mlm/train/loss per epoch, and on the held-out inputs (the
/// domains' validation splits, masked once with a fixed seed) mlm/val/loss and mlm/val/acc
/// (the fraction of chosen tokens predicted exactly).
inline void pretrain_mlm(Session& s, const MlmOptions& o) {
  const std::string& who = s.context().plugin;
  Model& model = s.model();
  torch::Tensor val_ids;
  const torch::Tensor ids = detail::mlm_inputs(s, o.mlm_text, &val_ids);
  // The tied embedding and the vocabulary.
  torch::Tensor embedding;
  std::string matrices;
  for (const auto& p : model.backbone->named_parameters()) {
    if (p.key() == o.mlm_embedding) embedding = p.value();
    if (p.value().dim() == 2) matrices += (matrices.empty() ? "" : ", ") + p.key();
  }
  TLAB_CHECK(embedding.defined() && embedding.dim() == 2, who, ": mlm_embedding = '",
             o.mlm_embedding, "' is not a matrix of the backbone; its matrices are ", matrices,
             "; name its input embedding (vocabulary x hidden)");
  const int64_t vocab = embedding.size(0);
  int64_t mask_id = o.mlm_mask_id;
  std::vector<int64_t> special = o.mlm_special_ids;
  std::vector<int64_t> continuation;  // whole-word masking: ids of "##" pieces
  TLAB_CHECK(!o.mlm_whole_word || (!o.mlm_vocab.empty() && o.mlm_vocab.size() >= 4 &&
                                   o.mlm_vocab.substr(o.mlm_vocab.size() - 4) == ".txt"),
             who,
             ": mlm_whole_word = true finds words by BERT's \"##\" pieces, so it needs "
             "mlm_vocab = the model's WordPiece vocab.txt (got '",
             o.mlm_vocab, "'); byte-level BPE and SentencePiece vocabularies are not supported");
  if (!o.mlm_vocab.empty()) {
    // BERT's vocab.txt or RoBERTa's vocab.json: the mask token and the special ones.
    const bool json =
        o.mlm_vocab.size() >= 5 && o.mlm_vocab.substr(o.mlm_vocab.size() - 5) == ".json";
    std::vector<std::string> tokens;
    try {
      if (json) {
        tokens = ByteLevelBpe::read_vocab(o.mlm_vocab);
      } else {
        const WordPiece wp = WordPiece::from_file(o.mlm_vocab, false);
        for (int64_t i = 0; i < wp.size(); ++i) tokens.push_back(wp.token(i));
      }
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(who + ": mlm_vocab = '" + o.mlm_vocab + "': " + e.what());
    }
    auto id_of = [&](const std::string& t) {
      for (std::size_t i = 0; i < tokens.size(); ++i)
        if (tokens[i] == t) return static_cast<int64_t>(i);
      return int64_t{-1};
    };
    const std::string mask = json ? "<mask>" : "[MASK]";
    TLAB_CHECK(static_cast<int64_t>(tokens.size()) == vocab, who, ": mlm_vocab = '", o.mlm_vocab,
               "' has ", tokens.size(), " tokens but the backbone's ", o.mlm_embedding, " has ",
               vocab, " rows; use the model's own ", json ? "vocab.json" : "vocab.txt",
               " (or set backbone.vocab_size to its size)");
    TLAB_CHECK(o.mlm_mask_id < 0 || o.mlm_mask_id == id_of(mask), who,
               ": mlm_mask_id = ", o.mlm_mask_id, " but mlm_vocab's ", mask, " is ", id_of(mask),
               "; set only one of them");
    mask_id = id_of(mask);
    TLAB_CHECK(mask_id >= 0, who, ": mlm_vocab = '", o.mlm_vocab, "' has no ", mask,
               " token, which masked-language-model training puts in; use a vocabulary with "
               "one, or set mlm_mask_id (and mlm_special_ids) instead");
    const std::vector<std::string> specials =
        json ? std::vector<std::string>{"<s>", "<pad>", "</s>", "<unk>", "<mask>"}
             : std::vector<std::string>{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
    for (const auto& t : specials)
      if (id_of(t) >= 0) special.push_back(id_of(t));
    if (o.mlm_whole_word)
      for (std::size_t i = 0; i < tokens.size(); ++i)
        if (tokens[i].rfind("##", 0) == 0) continuation.push_back(static_cast<int64_t>(i));
  }
  TLAB_CHECK(mask_id >= 0, who,
             ": masked-language-model training needs the mask token's id; set mlm_vocab to the "
             "model's vocab.txt, or mlm_mask_id (and mlm_special_ids: padding and sequence "
             "marks) for another tokenizer");
  TLAB_CHECK(!o.mlm_vocab.empty() || !o.mlm_special_ids.empty(), who, ": mlm_mask_id = ", mask_id,
             " is set but mlm_special_ids is empty, so padding would be masked and predicted; "
             "list the padding id and the sequence marks (e.g. mlm_special_ids = [0, 1, 2, 3] "
             "for a SentencePiece model with pad 0, unk 1, bos 2, eos 3), or set mlm_vocab");
  TLAB_CHECK(mask_id < vocab, who, ": mlm_mask_id = ", mask_id, " is outside the vocabulary of ",
             vocab, " tokens (", o.mlm_embedding, ")");
  special.push_back(mask_id);
  const auto device = s.context().device;
  torch::Tensor is_special = torch::zeros({vocab}, torch::kBool);
  for (int64_t id : special) {
    TLAB_CHECK(id >= 0 && id < vocab, who, ": mlm_special_ids holds ", id,
               ", outside the vocabulary of ", vocab, " tokens; list ids below ", vocab);
    is_special[id] = true;
  }
  is_special = is_special.to(device);
  torch::Tensor is_continuation = torch::zeros({vocab}, torch::kBool);
  for (int64_t id : continuation) is_continuation[id] = true;
  {
    const int64_t low = ids.min().item<int64_t>(), top = ids.max().item<int64_t>();
    TLAB_CHECK(low >= 0 && top < vocab, who, ": the text holds token id ", low < 0 ? low : top,
               " but the backbone's vocabulary has ids 0..", vocab - 1,
               "; tokenise with the model's vocabulary (or set backbone.vocab_size to its size)");
  }
  // The token states, read at the tap while the stage runs (the tap passes them on unchanged).
  std::string tap = o.mlm_tap;
  std::string taps;
  for (const auto& g : model.backbone->layer_groups()) taps += (taps.empty() ? "" : ", ") + g.name;
  if (tap.empty()) tap = model.backbone->layer_groups().back().name;
  auto states = std::make_shared<torch::Tensor>();
  auto active = std::make_shared<bool>(true);
  model.backbone->add_tap(tap, [states, active](const torch::Tensor& h) {
    if (*active) *states = h;
    return h;
  });
  struct MlmTapOff {  // the tap records nothing once pre-training is over
    std::shared_ptr<bool> active;
    std::shared_ptr<torch::Tensor> states;
    ~MlmTapOff() {
      *active = false;
      *states = torch::Tensor();
    }
  } tap_off{active, states};
  auto token_states = [&, states](const torch::Tensor& input) {
    *states = torch::Tensor();
    model.features(input);
    TLAB_CHECK(
        states->defined(), who, ": mlm_tap = '", tap,
        "' is not a tap of the backbone's forward pass; its taps are its layer groups: ", taps);
    TLAB_CHECK(
        states->dim() == 3 && states->size(0) == input.size(0) && states->size(1) == input.size(1),
        who, ": masked-language-model training needs token states N x L x H at tap '", tap,
        "', but it carries ", states->sizes(), " for ", input.sizes(),
        " inputs; use a backbone over token sequences (bert) or another mlm_tap");
    return *states;
  };
  const int64_t hidden = [&] {
    torch::NoGradGuard no_grad;
    return token_states(ids.slice(0, 0, 1)).size(2);
  }();
  TLAB_CHECK(hidden == embedding.size(1), who, ": the token states at tap '", tap, "' are ", hidden,
             " wide but ", o.mlm_embedding, " is ", embedding.sizes(),
             "; the decoder is tied to it, so they must agree");
  auto head = std::make_shared<MlmHead>(hidden, embedding, o.mlm_layer_norm_eps);
  head->to(device);
  std::string from;
  try {
    from = load_mlm_head(*head, *model.backbone);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(who + ": " + e.what());
  }
  s.context().log->info(from.empty() ? "mlm: the masked-LM head starts fresh"
                                     : "mlm: the masked-LM head starts from the backbone's " +
                                           from + "* (its checkpoint's, with backbone.weights)");
  torch::nn::Module pretrained;  // what reuse restores and the stage puts in train/eval mode
  pretrained.register_module("backbone", model.backbone);
  pretrained.register_module("cls", head);

  struct MlmHooks : StageHooks {
    std::function<torch::Tensor(const torch::Tensor&)> token_states;
    std::shared_ptr<MlmHead> head;
    const MlmOptions* o = nullptr;
    int64_t mask_id = 0;
    torch::Tensor special, continuation, val_input, val_labels;
    MaskedTokens mask(const torch::Tensor& ids, c10::optional<at::Generator> gen,
                      const torch::Tensor& is_special) const {
      if (!o->mlm_whole_word) return mask_tokens(ids, o->mlm_probability, mask_id, is_special, gen);
      const torch::Tensor chosen =
          whole_word_choice(ids, o->mlm_probability, is_special, continuation,
                            gen && ids.is_cpu() ? gen : c10::nullopt);
      return mask_chosen(ids, chosen, mask_id, is_special.size(0), gen);
    }
    torch::Tensor loss(Session&, const Batch& b) override {
      const MaskedTokens m = mask(b.x, c10::nullopt, special);
      return head->loss(token_states(m.input), m.labels);
    }
    void on_epoch_end(Session& s, int64_t epoch) override {
      if (!val_input.defined()) return;
      torch::NoGradGuard no_grad;
      s.stage().module->eval();
      double loss_sum = 0;
      int64_t right = 0, chosen = 0;
      for (int64_t i = 0; i < val_input.size(0); i += 256) {
        const torch::Tensor x = val_input.slice(0, i, i + 256),
                            y = val_labels.slice(0, i, i + 256).flatten();
        const torch::Tensor rows = y.ne(-100).nonzero().squeeze(1);
        if (rows.numel() == 0) continue;
        const torch::Tensor h = token_states(x);
        const torch::Tensor scores =
            head->forward(h.reshape({-1, h.size(-1)}).index_select(0, rows));
        const torch::Tensor target = y.index_select(0, rows);
        loss_sum += torch::nn::functional::cross_entropy(
                        scores, target,
                        torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                        .item<double>();
        right += scores.argmax(1).eq(target).sum().item<int64_t>();
        chosen += rows.numel();
      }
      s.stage().module->train();
      if (chosen == 0) return;
      s.context().metrics->log("mlm/val/loss", loss_sum / chosen, s.step(), epoch);
      s.context().metrics->log("mlm/val/acc", static_cast<double>(right) / chosen, s.step(), epoch);
      std::ostringstream line;
      line.precision(4);
      line << std::fixed << "[mlm] epoch " << epoch + 1 << " held-out masked tokens: loss "
           << loss_sum / chosen << ", acc " << static_cast<double>(right) / chosen << " (" << chosen
           << " tokens)";
      s.context().log->info(line.str());
    }
  } hooks;
  hooks.token_states = token_states;
  hooks.head = head;
  hooks.o = &o;
  hooks.mask_id = mask_id;
  hooks.special = is_special;
  hooks.continuation = is_continuation;
  if (val_ids.defined() && val_ids.numel() > 0) {  // masked once, the same every epoch
    auto gen = at::make_generator<at::CPUGeneratorImpl>(0x6d6c6dULL);
    const MaskedTokens m = hooks.mask(val_ids.cpu(), gen, is_special.cpu());
    hooks.val_input = m.input.to(device);
    hooks.val_labels = m.labels.to(device);
  }
  Split text;
  text.x = ids;
  text.y = torch::zeros({ids.size(0)}, ids.options());
  Stage st;
  st.domain = "mlm";
  st.config = s.train_config();
  st.config.epochs = o.mlm_epochs;
  if (o.mlm_lr > 0) st.config.lr = o.mlm_lr;
  st.parameters = pretrained.parameters();
  st.module = &pretrained;
  st.forward = [&](const torch::Tensor& x) { return token_states(x); };  // not evaluated
  st.hooks = &hooks;
  st.train = &text;
  std::ostringstream key;
  key.precision(17);
  key << "mlm_epochs=" << o.mlm_epochs << " mlm_lr=" << st.config.lr
      << " mlm_probability=" << o.mlm_probability << " mlm_text=" << o.mlm_text
      << " mask_id=" << mask_id << " tap=" << tap << " embedding=" << o.mlm_embedding
      << " layer_norm_eps=" << o.mlm_layer_norm_eps << " head_from=" << from
      << " whole_word=" << o.mlm_whole_word << " special=";
  for (int64_t id : special) key << id << ",";
  {  // the text itself: the target's is not otherwise part of reuse's key
    const torch::Tensor host = ids.to(torch::kCPU).contiguous();
    key << " text=" << ids.size(0) << "x" << ids.size(1) << ":"
        << std::hash<std::string_view>{}(std::string_view(static_cast<const char*>(host.data_ptr()),
                                                          static_cast<std::size_t>(host.nbytes())));
  }
  torch::nn::Module backbone_only;
  backbone_only.register_module("backbone", model.backbone);
  s.context().log->info("mlm: masked-language-model training on " + std::to_string(ids.size(0)) +
                        " sequences (" + o.mlm_text + "), vocabulary " + std::to_string(vocab) +
                        ", mask id " + std::to_string(mask_id));
  const bool trained = s.reuse(key.str(), backbone_only, [&] { s.fit(st); });
  s.context().metrics->summary("mlm/pretrain_reused", trained ? 0.0 : 1.0);
}

}  // namespace tlab
