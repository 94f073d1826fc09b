// tlab/sdk/wordpiece.hpp against BERT's tokenizer as Hugging Face's tokenization_bert.py defines
// it (BasicTokenizer + WordpieceTokenizer), rewritten in plain Python below and run by Debian's
// Python on the same table of texts: accents, case, punctuation, CJK, control characters,
// unknown and over-long words.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "test_helpers.hpp"
#include "tlab/sdk/wordpiece.hpp"

namespace fs = std::filesystem;
using ::testing::HasSubstr;

namespace {

// The reference: the algorithm of transformers' BertTokenizer (do_basic_tokenize, Chinese
// characters, strip_accents following do_lower_case), with the vocabulary and texts from files;
// prints each text's pieces joined by spaces, one line per text.
const char* kReference = R"py(
import sys, unicodedata
vocab = {t: i for i, t in enumerate(open(sys.argv[1], encoding="utf-8").read().split("\n")[:-1])}
lower = sys.argv[3] == "1"
def is_ws(c): return c in " \t\n\r" or unicodedata.category(c) == "Zs"
def is_ctrl(c): return c not in "\t\n\r" and unicodedata.category(c).startswith("C")
def is_punc(c):
    cp = ord(c)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126: return True
    return unicodedata.category(c).startswith("P")
def is_cjk(cp):
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or
            0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or
            0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)
def basic(text):
    text = "".join(" " if is_ws(c) else c for c in text
                   if not (ord(c) == 0 or ord(c) == 0xFFFD or is_ctrl(c)))
    text = "".join(" " + c + " " if is_cjk(ord(c)) else c for c in text)
    out = []
    for tok in text.split():
        if lower:
            tok = tok.lower()
            tok = "".join(c for c in unicodedata.normalize("NFD", tok)
                          if unicodedata.category(c) != "Mn")
        words, start = [], True
        for c in tok:
            if is_punc(c):
                words.append([c]); start = True
            else:
                if start: words.append([])
                start = False
                words[-1].append(c)
        out.extend("".join(w) for w in words)
    return " ".join(out).split()
def wordpiece(word):
    chars = list(word)
    if len(chars) > 100: return ["[UNK]"]
    start, pieces = 0, []
    while start < len(chars):
        end, cur = len(chars), None
        while start < end:
            sub = "".join(chars[start:end])
            if start > 0: sub = "##" + sub
            if sub in vocab: cur = sub; break
            end -= 1
        if cur is None: return ["[UNK]"]
        pieces.append(cur); start = end
    return pieces
for line in open(sys.argv[2], encoding="utf-8").read().split("\n")[:-1]:
    text = line.replace("\\t", "\t").replace("\\u0007", "\u0007")
    print(" ".join(p for w in basic(text) for p in wordpiece(w)))
)py";

const std::vector<std::string> kVocab = {
    "[PAD]", "[UNK]",  "[CLS]",  "[SEP]", "[MASK]", "un",   "##aff", "##able", "the",   "hero",
    "##es",  "heroes", "!",      ",",     ".",      "'",    "s",     "cafe",   "naive", "resume",
    "a",     "##b",    "##c",    "中",    "国",     "人",   "ab",    "##bc",   "want",  "##ed",
    "wa",    "run",    "##ning", "-",     "(",      ")",    "?",     "Hero",   "Café",  "é",
    "x",     "##x",    "##y",    "ß",     "über",   "uber", "ü",     "##ber",  "¿",     "que",
    "¡",     "mañana", "manana", "日",    "本",     "##ly", "quick", "quickly"};

// Texts: one per line ("\t" written as \t; a BEL control character as \u0007).
const std::vector<std::string> kTexts = {
    "Unaffable heroes!",
    "The café's résumé, naïve.",
    "UNaffable\\tHERO-es",
    "中国人 want ed wanted running",
    "ab abc abbc a-b-c (x)?",
    "Hello\\u0007 world",
    "Über über ÜBER uber",
    "¿Qué? ¡Mañana!",
    "日本 quickly quick-ly",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxx",  // 102 x: longer than 100 characters
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxx",  // 100: within the limit
    "zebra Hero Café",
    "   ",
};

class WordPieceTest : public ::testing::Test {
 protected:
  fs::path dir_ = tlab::test::temp_dir("wordpiece");
  void TearDown() override { fs::remove_all(dir_); }
  fs::path vocab(const std::vector<std::string>& tokens, const std::string& name = "vocab.txt") {
    std::string text;
    for (const auto& t : tokens) text += t + "\n";
    return tlab::test::write_file(dir_ / name, text);
  }
  std::vector<std::string> reference(bool lower) {
    tlab::test::write_file(dir_ / "ref.py", kReference);
    std::string texts;
    for (const auto& t : kTexts) texts += t + "\n";
    tlab::test::write_file(dir_ / "texts.txt", texts);
    const auto r = tlab::test::shell("/usr/bin/python3 '" + (dir_ / "ref.py").string() + "' '" +
                                     vocab(kVocab).string() + "' '" +
                                     (dir_ / "texts.txt").string() + "' " + (lower ? "1" : "0"));
    EXPECT_EQ(r.code, 0) << r.out;
    std::vector<std::string> lines;
    std::string line;
    for (char c : r.out) {
      if (c == '\n') {
        lines.push_back(line);
        line.clear();
      } else {
        line += c;
      }
    }
    return lines;
  }
  static std::string unescape(std::string t) {
    for (auto [from, to] : {std::pair<std::string, std::string>{"\\t", "\t"}, {"\\u0007", "\a"}})
      for (std::size_t at; (at = t.find(from)) != std::string::npos;)
        t.replace(at, from.size(), to);
    return t;
  }
};

TEST_F(WordPieceTest, PiecesEqualBertsTokenizerUncasedAndCased) {
  for (bool lower : {true, false}) {
    const auto expected = reference(lower);
    ASSERT_EQ(expected.size(), kTexts.size());
    const tlab::WordPiece wp = tlab::WordPiece::from_file(vocab(kVocab).string(), lower);
    for (std::size_t i = 0; i < kTexts.size(); ++i) {
      std::string got;
      for (const auto& p : wp.tokenize(unescape(kTexts[i]))) got += (got.empty() ? "" : " ") + p;
      EXPECT_EQ(got, expected[i]) << (lower ? "uncased" : "cased") << ": " << kTexts[i];
    }
  }
  // Worked by hand from the algorithm, so that the reference itself is checked.
  const tlab::WordPiece uncased = tlab::WordPiece::from_file(vocab(kVocab).string(), true);
  EXPECT_EQ(uncased.tokenize("Unaffable heroes!"),
            (std::vector<std::string>{"un", "##aff", "##able", "heroes", "!"}));
  EXPECT_EQ(uncased.tokenize("中国人"), (std::vector<std::string>{"中", "国", "人"}));
  EXPECT_EQ(uncased.tokenize("The café's"), (std::vector<std::string>{"the", "cafe", "'", "s"}));
  EXPECT_EQ(uncased.tokenize("zebra"), (std::vector<std::string>{"[UNK]"}));
}

TEST_F(WordPieceTest, EncodeAddsClsSepTruncatesAndPads) {
  const tlab::WordPiece wp = tlab::WordPiece::from_file(vocab(kVocab).string(), true);
  EXPECT_EQ(wp.size(), static_cast<int64_t>(kVocab.size()));
  // [CLS]=2 un=5 ##aff=6 ##able=7 heroes=11 !=12 [SEP]=3 [PAD]=0
  EXPECT_EQ(wp.encode("Unaffable heroes!", 9), (std::vector<int64_t>{2, 5, 6, 7, 11, 12, 3, 0, 0}));
  EXPECT_EQ(wp.encode("Unaffable heroes!", 4), (std::vector<int64_t>{2, 5, 6, 3}));
  EXPECT_EQ(wp.encode("zebra", 3), (std::vector<int64_t>{2, 1, 3}));  // [UNK] = 1
  EXPECT_EQ(wp.encode("", 2), (std::vector<int64_t>{2, 3}));
  EXPECT_THAT(tlab::test::error_of<std::invalid_argument>([&] { wp.encode("a", 1); }),
              HasSubstr("max_length 1 leaves no room for [CLS] and [SEP]; expected >= 2"));
}

TEST_F(WordPieceTest, BadInputNamesTheFileAndLine) {
  using tlab::WordPiece;
  auto error = [&](const fs::path& p) {
    return tlab::test::error_of<std::invalid_argument>(
        [&] { WordPiece::from_file(p.string(), true); });
  };
  EXPECT_THAT(error(dir_ / "missing.txt"),
              HasSubstr("cannot read the vocabulary '" + (dir_ / "missing.txt").string() +
                        "'; expected BERT's vocab.txt (one token per line)"));
  EXPECT_THAT(error(tlab::test::write_file(dir_ / "empty.txt", "")), HasSubstr("is empty"));
  EXPECT_THAT(error(vocab({"[PAD]", "[UNK]", "a", "b", "a"}, "dup.txt")),
              HasSubstr("'" + (dir_ / "dup.txt").string() +
                        "' line 5 repeats the token 'a' of line 3; each token once"));
  EXPECT_THAT(error(vocab({"[PAD]", "[UNK]", "ok", "bad\xff\xfe"}, "latin.txt")),
              HasSubstr("line 4 is not UTF-8 text; expected one token per line"));
  EXPECT_THAT(error(vocab({"[PAD]", "a"}, "nounk.txt")),
              HasSubstr("has no [UNK] token; expected BERT's vocab.txt"));
  const WordPiece wp = WordPiece::from_file(vocab(kVocab).string(), true);
  EXPECT_THAT(tlab::test::error_of<std::invalid_argument>([&] { wp.tokenize("caf\xe9"); }),
              HasSubstr("the text is not valid UTF-8: caf\\xe9"));
  const WordPiece bare = WordPiece::from_file(vocab({"[UNK]", "a"}, "bare.txt").string(), true);
  EXPECT_THAT(tlab::test::error_of<std::invalid_argument>([&] { bare.encode("a", 4); }),
              HasSubstr("the vocabulary has no [CLS] token, which encoding a sequence needs"));
}

}  // namespace
