#pragma once
// BERT's WordPiece tokenizer (Devlin et al. 2019; Hugging Face's BertTokenizer): a vocab.txt
// (one token per line, line i = id i), then for each text: BasicTokenizer (control characters
// dropped, whitespace normalised, each CJK ideograph its own word, lower-casing and accent
// stripping for uncased vocabularies, punctuation split off), then greedy longest-match-first
// word pieces ("##" marks a piece inside a word; a word longer than 100 characters or without a
// segmentation is [UNK]). encode() adds [CLS] ... [SEP], truncates and pads with [PAD].
//
//   tlab::WordPiece wp = tlab::WordPiece::from_file("vocab.txt", /*lower_case=*/true);
//   std::vector<std::string> pieces = wp.tokenize("Unaffable héros!");  // un ##aff ##able ...
//   std::vector<int64_t> ids = wp.encode("Unaffable héros!", 16);        // [CLS] ... [SEP] [PAD]
//
// Unicode (NFD, categories, case) comes from utf8proc (Debian's libutf8proc-dev; tlab::sdk links
// it). One difference from Python's str.lower(): simple case mapping, so a final capital sigma
// becomes σ, not ς, and İ becomes i̇'s simple mapping (i).
#include <utf8proc.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tlab/sdk/unicode.hpp"

namespace tlab {

class WordPiece {
 public:
  /// Reads `path` (BERT's vocab.txt). Throws std::invalid_argument naming the file and line:
  /// a missing or empty file, a line that is not UTF-8, a token listed twice, no [UNK].
  static WordPiece from_file(const std::string& path, bool lower_case) {
    std::ifstream in(path, std::ios::binary);
    if (!in)
      throw std::invalid_argument("wordpiece: cannot read the vocabulary '" + path +
                                  "'; expected BERT's vocab.txt (one token per line)");
    WordPiece w;
    w.lower_case_ = lower_case;
    std::string line;
    int64_t id = 0;
    while (std::getline(in, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      const std::string where = "wordpiece: '" + path + "' line " + std::to_string(id + 1);
      if (!utf8::valid(line))
        throw std::invalid_argument(where + " is not UTF-8 text; expected one token per line");
      if (line.find('\0') != std::string::npos)
        throw std::invalid_argument(where + " holds a NUL byte: not a vocabulary file");
      if (!w.ids_.emplace(line, id).second)
        throw std::invalid_argument(where + " repeats the token '" + line + "' of line " +
                                    std::to_string(w.ids_.at(line) + 1) + "; each token once");
      w.tokens_.push_back(line);
      ++id;
    }
    if (w.tokens_.empty())
      throw std::invalid_argument("wordpiece: the vocabulary '" + path + "' is empty");
    for (const char* special : {"[UNK]"})
      if (!w.ids_.count(special))
        throw std::invalid_argument("wordpiece: the vocabulary '" + path + "' has no " + special +
                                    " token; expected BERT's vocab.txt");
    return w;
  }

  int64_t size() const { return static_cast<int64_t>(tokens_.size()); }
  /// The id of `token`, or -1.
  int64_t id(const std::string& token) const {
    auto it = ids_.find(token);
    return it == ids_.end() ? -1 : it->second;
  }
  const std::string& token(int64_t id) const { return tokens_.at(static_cast<std::size_t>(id)); }

  /// BasicTokenizer: the words (and punctuation marks, and CJK ideographs) of `text`.
  std::vector<std::string> basic_tokenize(const std::string& text) const {
    if (!utf8::valid(text))
      throw std::invalid_argument("wordpiece: the text is not valid UTF-8: " + utf8::preview(text));
    std::vector<std::string> words;
    std::u32string word;
    auto flush = [&] {
      if (!word.empty()) words.push_back(normalize_word(word));
      word.clear();
    };
    for (char32_t c : utf8::decode(text)) {
      if (c == 0 || c == 0xFFFD || is_control(c)) continue;
      if (is_whitespace(c)) {
        flush();
      } else if (is_cjk(c)) {
        flush();
        words.push_back(utf8::encode(std::u32string(1, c)));
      } else {
        word.push_back(c);
      }
    }
    flush();
    // Lower-casing and accent stripping happened per word; now split off punctuation.
    std::vector<std::string> out;
    for (const auto& w : words) {
      std::u32string piece;
      for (char32_t c : utf8::decode(w)) {
        if (is_punctuation(c)) {
          if (!piece.empty()) out.push_back(utf8::encode(piece));
          piece.clear();
          out.push_back(utf8::encode(std::u32string(1, c)));
        } else {
          piece.push_back(c);
        }
      }
      if (!piece.empty()) out.push_back(utf8::encode(piece));
    }
    return out;
  }

  /// The word pieces of `text` (BasicTokenizer, then greedy longest match).
  std::vector<std::string> tokenize(const std::string& text) const {
    std::vector<std::string> out;
    for (const auto& word : basic_tokenize(text)) {
      const std::u32string chars = utf8::decode(word);
      if (chars.size() > kMaxWordChars) {
        out.push_back("[UNK]");
        continue;
      }
      std::vector<std::string> pieces;
      std::size_t start = 0;
      bool bad = false;
      while (start < chars.size()) {
        std::size_t end = chars.size();
        std::string found;
        while (start < end) {
          std::string sub = utf8::encode(chars.substr(start, end - start));
          if (start > 0) sub = "##" + sub;
          if (ids_.count(sub)) {
            found = std::move(sub);
            break;
          }
          --end;
        }
        if (found.empty()) {
          bad = true;
          break;
        }
        pieces.push_back(std::move(found));
        start = end;
      }
      if (bad)
        out.push_back("[UNK]");
      else
        out.insert(out.end(), pieces.begin(), pieces.end());
    }
    return out;
  }

  /// [CLS] pieces [SEP], cut to `max_length` (the pieces truncated, [SEP] kept) and padded
  /// with [PAD] to it; `max_length` >= 2. Needs [CLS], [SEP] and [PAD] in the vocabulary.
  std::vector<int64_t> encode(const std::string& text, int64_t max_length) const {
    if (max_length < 2)
      throw std::invalid_argument("wordpiece: max_length " + std::to_string(max_length) +
                                  " leaves no room for [CLS] and [SEP]; expected >= 2");
    const int64_t cls = special("[CLS]"), sep = special("[SEP]"), pad = special("[PAD]"),
                  unk = special("[UNK]");
    std::vector<int64_t> ids = {cls};
    for (const auto& piece : tokenize(text)) {
      if (static_cast<int64_t>(ids.size()) + 1 >= max_length) break;
      const int64_t i = id(piece);
      ids.push_back(i < 0 ? unk : i);
    }
    ids.push_back(sep);
    ids.resize(static_cast<std::size_t>(max_length), pad);
    return ids;
  }

  static constexpr std::size_t kMaxWordChars = 100;  ///< longer words are [UNK]

 private:
  int64_t special(const char* token) const {
    const int64_t i = id(token);
    if (i < 0)
      throw std::invalid_argument(std::string("wordpiece: the vocabulary has no ") + token +
                                  " token, which encoding a sequence needs");
    return i;
  }

  static bool is_whitespace(char32_t c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' ||
           utf8::category(c) == UTF8PROC_CATEGORY_ZS;
  }
  static bool is_control(char32_t c) {
    if (c == '\t' || c == '\n' || c == '\r') return false;
    const auto k = utf8::category(c);
    return k == UTF8PROC_CATEGORY_CC || k == UTF8PROC_CATEGORY_CF || k == UTF8PROC_CATEGORY_CN ||
           k == UTF8PROC_CATEGORY_CO || k == UTF8PROC_CATEGORY_CS;
  }
  static bool is_punctuation(char32_t c) {
    if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
        (c >= 123 && c <= 126))
      return true;
    const auto k = utf8::category(c);
    return k >= UTF8PROC_CATEGORY_PC && k <= UTF8PROC_CATEGORY_PO;
  }
  static bool is_cjk(char32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
           (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
           (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
  }
  // An uncased vocabulary's word: lower-cased, then NFD with the combining marks (Mn) dropped.
  std::string normalize_word(const std::u32string& word) const {
    if (!lower_case_) return utf8::encode(word);
    std::u32string lower;
    for (char32_t c : word)
      lower.push_back(static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c))));
    const std::string text = utf8::encode(lower);
    utf8proc_uint8_t* nfd = utf8proc_NFD(reinterpret_cast<const utf8proc_uint8_t*>(text.c_str()));
    if (!nfd) return text;
    std::u32string kept;
    for (char32_t c : utf8::decode(reinterpret_cast<const char*>(nfd)))
      if (utf8::category(c) != UTF8PROC_CATEGORY_MN) kept.push_back(c);
    std::free(nfd);
    return utf8::encode(kept);
  }

  bool lower_case_ = true;
  std::vector<std::string> tokens_;
  std::unordered_map<std::string, int64_t> ids_;
};

}  // namespace tlab
