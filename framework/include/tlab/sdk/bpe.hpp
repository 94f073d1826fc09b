#pragma once
/// \file bpe.hpp
/// Byte-level BPE, the tokenizer of GPT-2 (Radford et al. 2019, sec. 2.2) and RoBERTa (Liu et
/// al. 2019), as OpenAI's encoder.py and Hugging Face's RobertaTokenizer compute it, from the
/// model's vocab.json ({"token": id}) and merges.txt ("first second" per line, by rank):
/// 1. the text is split by GPT-2's pattern
///    's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
///    (contractions, words and numbers with their leading space, other symbols, whitespace);
/// 2. each piece's UTF-8 bytes become printable characters (bytes_to_unicode: a space is "Ġ");
/// 3. merges apply, lowest rank first, until none applies; the symbols are the tokens.
/// encode() adds RoBERTa's <s> ... </s>, truncates (keeping </s>) and pads with <pad>.
///
///   tlab::ByteLevelBpe bpe = tlab::ByteLevelBpe::from_files("vocab.json", "merges.txt");
///   bpe.tokenize("Hello world");           // "Hello", "Ġworld"
///   bpe.encode("Hello world", 8);          // <s> Hello Ġworld </s> <pad> ...
///
/// Differences from Hugging Face: special tokens written in the text ("<mask>") are not split
/// out, they are ordinary text; add_prefix_space is false (RoBERTa's default). Unicode classes
/// come from utf8proc (tlab/sdk/unicode.hpp).
#include <nlohmann/json.hpp>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "tlab/sdk/unicode.hpp"

namespace tlab {

class ByteLevelBpe {
 public:
  /// Reads the model's vocab.json and merges.txt. Throws std::invalid_argument naming the file
  /// (and the line of merges.txt): unreadable, not a JSON object of token -> id, ids not 0..N-1
  /// or repeated, a merge line that is not two symbols.
  static ByteLevelBpe from_files(const std::string& vocab_json, const std::string& merges_txt) {
    ByteLevelBpe b;
    b.vocab_path_ = vocab_json;
    b.tokens_ = read_vocab(vocab_json);
    for (std::size_t i = 0; i < b.tokens_.size(); ++i)
      b.ids_.emplace(b.tokens_[i], static_cast<int64_t>(i));
    std::ifstream min(merges_txt, std::ios::binary);
    if (!min)
      throw std::invalid_argument("bpe: cannot read the merges '" + merges_txt +
                                  "'; expected the model's merges.txt");
    std::string line;
    int64_t number = 0, rank = 0;
    while (std::getline(min, line)) {
      ++number;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty() || (number == 1 && line.rfind("#version", 0) == 0)) continue;
      const std::size_t space = line.find(' ');
      const std::string where = "bpe: '" + merges_txt + "' line " + std::to_string(number);
      if (!utf8::valid(line))
        throw std::invalid_argument(where + " is not UTF-8 text; expected the model's merges.txt");
      if (space == std::string::npos || space == 0 || space + 1 == line.size() ||
          line.find(' ', space + 1) != std::string::npos)
        throw std::invalid_argument(where + " is '" + utf8::preview(line) +
                                    "'; expected two symbols separated by one space");
      b.ranks_[line] = static_cast<int>(rank++);  // a repeated merge: its last rank, as encoder.py
    }
    if (b.ranks_.empty())
      throw std::invalid_argument("bpe: '" + merges_txt +
                                  "' has no merges; expected the model's merges.txt");
    for (int byte = 0; byte < 256; ++byte) b.bytes_[byte] = byte_symbol(byte);
    return b;
  }

  /// The tokens of a vocab.json in id order (ids 0..N-1, each once). Throws
  /// std::invalid_argument naming the file: unreadable, not a JSON object of token -> id, ids
  /// not 0..N-1 or repeated.
  static std::vector<std::string> read_vocab(const std::string& vocab_json) {
    std::ifstream vin(vocab_json, std::ios::binary);
    if (!vin)
      throw std::invalid_argument("bpe: cannot read the vocabulary '" + vocab_json +
                                  "'; expected the model's vocab.json");
    nlohmann::json v;
    try {
      v = nlohmann::json::parse(vin);
    } catch (const nlohmann::json::parse_error& e) {
      throw std::invalid_argument("bpe: '" + vocab_json + "' is not JSON (byte " +
                                  std::to_string(e.byte) +
                                  "); expected the model's vocab.json, {\"token\": id, ...}");
    }
    if (!v.is_object() || v.empty())
      throw std::invalid_argument("bpe: '" + vocab_json +
                                  "' is not a JSON object of tokens; expected the model's "
                                  "vocab.json, {\"token\": id, ...}");
    std::vector<std::string> tokens(v.size());
    std::vector<bool> seen(v.size(), false);
    for (const auto& [token, id] : v.items()) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
          id.get<int64_t>() >= static_cast<int64_t>(v.size()))
        throw std::invalid_argument(
            "bpe: '" + vocab_json + "' gives the token \"" + utf8::preview(token) + "\" the id " +
            id.dump() + "; expected ids 0.." + std::to_string(v.size() - 1) + ", one per token");
      const auto i = id.get<std::size_t>();
      if (seen[i])
        throw std::invalid_argument("bpe: '" + vocab_json + "' gives the id " + std::to_string(i) +
                                    " to both \"" + utf8::preview(tokens[i]) + "\" and \"" +
                                    utf8::preview(token) + "\"; expected one token per id");
      seen[i] = true;
      tokens[i] = token;
    }
    return tokens;
  }

  int64_t size() const { return static_cast<int64_t>(tokens_.size()); }
  /// The id of `token`, or -1.
  int64_t id(const std::string& token) const {
    auto it = ids_.find(token);
    return it == ids_.end() ? -1 : it->second;
  }
  const std::string& token(int64_t id) const { return tokens_.at(static_cast<std::size_t>(id)); }

  /// Step 1: the pieces of `text` by GPT-2's pattern (UTF-8, before the byte mapping). Throws
  /// std::invalid_argument if `text` is not UTF-8.
  static std::vector<std::string> pre_tokenize(const std::string& text) {
    if (!utf8::valid(text))
      throw std::invalid_argument("bpe: the text is not valid UTF-8: " + utf8::preview(text));
    const std::u32string s = utf8::decode(text);
    const std::size_t n = s.size();
    auto other = [](char32_t c) {
      return !utf8::is_white_space(c) && !utf8::is_letter(c) && !utf8::is_number(c);
    };
    std::vector<std::string> out;
    std::size_t i = 0;
    while (i < n) {
      std::size_t end = i;
      const char32_t c = s[i];
      if (c == U'\'' && i + 1 < n) {  // 's|'t|'re|'ve|'m|'ll|'d (case-sensitive)
        const char32_t a = s[i + 1], b = i + 2 < n ? s[i + 2] : 0;
        if (a == U's' || a == U't' || a == U'm' || a == U'd')
          end = i + 2;
        else if ((a == U'r' && b == U'e') || (a == U'v' && b == U'e') || (a == U'l' && b == U'l'))
          end = i + 3;
      }
      if (end == i) {
        // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: one class, after an optional space.
        const std::size_t k = (c == U' ' && i + 1 < n) ? i + 1 : i;
        for (auto cls : {+[](char32_t x) { return utf8::is_letter(x); },
                         +[](char32_t x) { return utf8::is_number(x); }}) {
          if (end == i && cls(s[k])) {
            end = k;
            while (end < n && cls(s[end])) ++end;
          }
        }
        if (end == i && other(s[k])) {
          end = k;
          while (end < n && other(s[end])) ++end;
        }
      }
      if (end == i) {  // whitespace: `\s+(?!\S)`, else `\s+`
        std::size_t run = i;
        while (run < n && utf8::is_white_space(s[run])) ++run;
        end = (run < n && run - i >= 2) ? run - 1 : run;
        if (end == i) end = i + 1;  // (cannot happen: every character is in one class)
      }
      out.push_back(utf8::encode(s.substr(i, end - i)));
      i = end;
    }
    return out;
  }

  /// Steps 1-3: the tokens of `text`.
  std::vector<std::string> tokenize(const std::string& text) const {
    std::vector<std::string> out;
    for (const std::string& piece : pre_tokenize(text)) {
      std::vector<std::string> symbols;
      for (unsigned char byte : piece) symbols.push_back(bytes_[byte]);
      for (std::string& t : merge(std::move(symbols))) out.push_back(std::move(t));
    }
    return out;
  }

  /// <s> tokens </s> as ids (a token outside the vocabulary is <unk>), cut so that </s> stays
  /// and padded with <pad> to `max_length` (>= 2).
  std::vector<int64_t> encode(const std::string& text, int64_t max_length) const {
    if (max_length < 2)
      throw std::invalid_argument("bpe: max_length " + std::to_string(max_length) +
                                  " leaves no room for <s> and </s>; expected >= 2");
    const int64_t bos = special("<s>"), eos = special("</s>"), pad = special("<pad>");
    std::vector<int64_t> ids = {bos};
    for (const std::string& t : tokenize(text)) {
      if (static_cast<int64_t>(ids.size()) + 1 >= max_length) break;
      const int64_t i = id(t);
      ids.push_back(i >= 0 ? i : special("<unk>"));
    }
    ids.push_back(eos);
    while (static_cast<int64_t>(ids.size()) < max_length) ids.push_back(pad);
    return ids;
  }

  /// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the others (space,
  /// controls, ...) map to U+0100 onwards in byte order; as UTF-8.
  static std::string byte_symbol(int byte) {
    auto printable = [](int b) {
      return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    };
    if (printable(byte)) return utf8::encode(std::u32string(1, static_cast<char32_t>(byte)));
    int shifted = 0;
    for (int b = 0; b < byte; ++b) shifted += !printable(b);
    return utf8::encode(std::u32string(1, static_cast<char32_t>(256 + shifted)));
  }

 private:
  // GPT-2's bpe(): merge the lowest-ranked adjacent pair, all its occurrences left to right,
  // until no adjacent pair has a rank.
  std::vector<std::string> merge(std::vector<std::string> word) const {
    while (word.size() > 1) {
      int best = INT_MAX;
      std::size_t at = 0;
      for (std::size_t i = 0; i + 1 < word.size(); ++i) {
        auto it = ranks_.find(word[i] + " " + word[i + 1]);
        if (it != ranks_.end() && it->second < best) {
          best = it->second;
          at = i;
        }
      }
      if (best == INT_MAX) break;
      const std::string first = word[at], second = word[at + 1];
      std::vector<std::string> merged;
      for (std::size_t i = 0; i < word.size();) {
        if (i + 1 < word.size() && word[i] == first && word[i + 1] == second) {
          merged.push_back(first + second);
          i += 2;
        } else {
          merged.push_back(word[i++]);
        }
      }
      word = std::move(merged);
    }
    return word;
  }
  int64_t special(const char* token) const {
    const int64_t i = id(token);
    if (i < 0)
      throw std::invalid_argument("bpe: the vocabulary '" + vocab_path_ + "' has no " + token +
                                  " token, which encoding a sequence needs (RoBERTa's "
                                  "vocab.json has <s> <pad> </s> <unk>)");
    return i;
  }

  std::string vocab_path_;
  std::vector<std::string> tokens_;
  std::unordered_map<std::string, int64_t> ids_;
  std::unordered_map<std::string, int> ranks_;  // "first second" -> rank
  std::string bytes_[256];
};

}  // namespace tlab
