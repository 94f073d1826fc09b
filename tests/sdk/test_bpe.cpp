// tlab/sdk/bpe.hpp against GPT-2's byte-level BPE as OpenAI's encoder.py defines it (the
// pre-tokenizer pattern run by Python's `regex` module, bytes_to_unicode, bpe()), rewritten in
// tests/fixtures/bpe_reference.py and run by Debian's Python on the same texts with the same
// small model (trained there): contractions, whitespace runs, numbers, accents, combining marks,
// CJK, emoji, control characters, RoBERTa's <s> ... </s>.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "test_helpers.hpp"
#include "tlab/sdk/bpe.hpp"

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

namespace {

const std::vector<std::string> kTexts = {
    "Hello world",
    "I'm sure they'll say it's fine, don't you think? We've, we'd, you're",
    "UPPER'S case 'S and 's alone' 'x ''s",
    "multiple   spaces\tand\ttabs\n\nnewlines  ",
    "  leading and trailing  ",
    " \n x\r\n\ty",
    "numbers 2024, 3.14159 and \u00bd \u00b2 \u2167",
    "Na\u00efve caf\u00e9 r\u00e9sum\u00e9 \u2014 d\u00e9j\u00e0 vu",
    "combining e\u0301 marks",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 and \u4e2d\u6587",
    "emoji \U0001F642\U0001F643 and symbols \u00a9\u00ae\u2122 \u20ac100",
    "punctuation!!! ?!... (brackets) [x] {y} <mask>",
    "non\u00a0breaking\u2003em space\u3000ideographic",
    "\x1c"
    "file separator\x1f unit",
    "the thing there then these thinking",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "a",
    "",
    " ",
};

class Bpe : public ::testing::Test {
 protected:
  void TearDown() override { fs::remove_all(dir_); }
  // The reference's model in dir_ and, for each text, its pieces, tokens and ids.
  std::vector<nlohmann::json> reference(const std::vector<std::string>& texts) {
    tlab::test::write_file(dir_ / "texts.json", nlohmann::json(texts).dump());
    const auto r = tlab::test::shell("/usr/bin/python3 '" + std::string(TLAB_SOURCE_DIR) +
                                     "/tests/fixtures/bpe_reference.py' '" + dir_.string() + "' '" +
                                     (dir_ / "texts.json").string() + "'");
    EXPECT_EQ(r.code, 0) << r.out;
    std::vector<nlohmann::json> out;
    std::istringstream lines(r.out);
    for (std::string line; std::getline(lines, line);) out.push_back(nlohmann::json::parse(line));
    return out;
  }
  tlab::ByteLevelBpe model() {
    return tlab::ByteLevelBpe::from_files((dir_ / "vocab.json").string(),
                                          (dir_ / "merges.txt").string());
  }
  std::string error(const fs::path& vocab, const fs::path& merges) {
    return tlab::test::error_of<std::invalid_argument>(
        [&] { tlab::ByteLevelBpe::from_files(vocab.string(), merges.string()); });
  }
  fs::path dir_ = tlab::test::temp_dir("bpe");
};

bool python_has_regex() {
  return tlab::test::shell("/usr/bin/python3 -c 'import regex'").code == 0;
}

#define SKIP_WITHOUT_REGEX()                                                                  \
  if (!python_has_regex())                                                                    \
  GTEST_SKIP() << "/usr/bin/python3 cannot import regex (GPT-2's pattern): install Debian's " \
                  "python3-regex; tools/setup.sh installs it"

TEST_F(Bpe, PiecesTokensAndIdsEqualGpt2sEncoder) {
  SKIP_WITHOUT_REGEX();
  const auto expected = reference(kTexts);
  ASSERT_EQ(expected.size(), kTexts.size());
  const tlab::ByteLevelBpe bpe = model();
  EXPECT_EQ(bpe.size(), 4 + 256 + 120 + 1);  // specials, bytes, merges, <mask>
  int merged = 0;
  for (std::size_t i = 0; i < kTexts.size(); ++i) {
    const auto& e = expected[i];
    EXPECT_EQ(tlab::ByteLevelBpe::pre_tokenize(kTexts[i]), e["pre"].get<std::vector<std::string>>())
        << "text " << i << ": " << kTexts[i];
    const auto tokens = bpe.tokenize(kTexts[i]);
    EXPECT_EQ(tokens, e["tokens"].get<std::vector<std::string>>()) << "text " << i;
    const auto ids = e["ids"].get<std::vector<int64_t>>();
    EXPECT_EQ(bpe.encode(kTexts[i], static_cast<int64_t>(ids.size())), ids) << "text " << i;
    for (const auto& t : tokens) merged += tlab::utf8::decode(t).size() > 1;
  }
  EXPECT_GT(merged, 20);  // the merges apply: not a byte-for-byte comparison only
}

TEST_F(Bpe, EncodeAddsRobertasMarksTruncatesAndPads) {
  SKIP_WITHOUT_REGEX();
  reference({});
  const tlab::ByteLevelBpe bpe = model();
  EXPECT_THAT(bpe.tokenize("Hello world"),
              ElementsAre("H", "e", "ll", "o", "\u0120w", "o", "r", "l", "d"));
  const int64_t s = bpe.id("<s>"), e = bpe.id("</s>"), pad = bpe.id("<pad>");
  EXPECT_EQ(pad, 1);
  const auto pieces = bpe.tokenize("the best");  // t h e Ġ b e s t, some merged
  ASSERT_GE(pieces.size(), 3u);
  ASSERT_LE(pieces.size(), 5u);
  std::vector<int64_t> want = {s};
  for (const auto& p : pieces) want.push_back(bpe.id(p));
  want.push_back(e);
  while (want.size() < 8) want.push_back(pad);
  EXPECT_EQ(bpe.encode("the best", 8), want);
  // Cut to 4: <s>, the first two tokens, </s>.
  EXPECT_THAT(bpe.encode("the best", 4), ElementsAre(s, want[1], want[2], e));
  EXPECT_THAT(bpe.encode("", 3), ElementsAre(s, e, pad));
  EXPECT_THAT(tlab::test::error_of<std::invalid_argument>([&] { bpe.encode("the", 1); }),
              HasSubstr("bpe: max_length 1 leaves no room for <s> and </s>; expected >= 2"));
  EXPECT_EQ(tlab::ByteLevelBpe::byte_symbol(' '), "\u0120");
  EXPECT_EQ(tlab::ByteLevelBpe::byte_symbol('\n'), "\u010a");
  EXPECT_EQ(tlab::ByteLevelBpe::byte_symbol('A'), "A");
  EXPECT_EQ(tlab::ByteLevelBpe::byte_symbol(0xAD), "\u0143");  // soft hyphen: not printable
}

TEST_F(Bpe, BadFilesAndTextNameTheFileLineAndFix) {
  const fs::path merges = tlab::test::write_file(dir_ / "m.txt", "#version: 0.2\nt h\n");
  auto vocab = [&](const std::string& text) {
    return tlab::test::write_file(dir_ / "v.json", text);
  };
  EXPECT_THAT(error(dir_ / "none.json", merges),
              HasSubstr("bpe: cannot read the vocabulary '" + (dir_ / "none.json").string() +
                        "'; expected the model's vocab.json"));
  EXPECT_THAT(error(vocab("{\"a\": 0,"), merges),
              HasSubstr("v.json' is not JSON (byte 9); expected the model's vocab.json"));
  EXPECT_THAT(error(vocab("[\"a\", \"b\"]"), merges), HasSubstr("is not a JSON object of tokens"));
  EXPECT_THAT(error(vocab("{\"a\": 0, \"b\": 5}"), merges),
              HasSubstr("gives the token \"b\" the id 5; expected ids 0..1, one per token"));
  EXPECT_THAT(error(vocab("{\"a\": 0, \"b\": \"1\"}"), merges),
              HasSubstr("gives the token \"b\" the id \"1\""));
  EXPECT_THAT(error(vocab("{\"a\": 0, \"b\": 0}"), merges),
              HasSubstr("gives the id 0 to both \"a\" and \"b\"; expected one token per id"));
  const fs::path ok = vocab("{\"<s>\": 0, \"t\": 1, \"h\": 2, \"th\": 3}");
  EXPECT_THAT(error(ok, dir_ / "none.txt"), HasSubstr("cannot read the merges"));
  EXPECT_THAT(error(ok, tlab::test::write_file(dir_ / "bad.txt", "#version: 0.2\nt h\nth\n")),
              HasSubstr("bad.txt' line 3 is 'th'; expected two symbols separated by one space"));
  EXPECT_THAT(error(ok, tlab::test::write_file(dir_ / "three.txt", "a b c\n")),
              HasSubstr("three.txt' line 1 is 'a b c'"));
  EXPECT_THAT(error(ok, tlab::test::write_file(dir_ / "bin.txt", "a \xff\n")),
              HasSubstr("bin.txt' line 1 is not UTF-8 text"));
  EXPECT_THAT(error(ok, tlab::test::write_file(dir_ / "empty.txt", "#version: 0.2\n")),
              HasSubstr("has no merges"));
  const auto bpe = tlab::ByteLevelBpe::from_files(ok.string(), merges.string());
  EXPECT_THAT(bpe.tokenize("th"), ElementsAre("th"));
  EXPECT_THAT(tlab::test::error_of<std::invalid_argument>([&] { bpe.tokenize("a\xc3("); }),
              HasSubstr("bpe: the text is not valid UTF-8: a\\xc3("));
  EXPECT_THAT(tlab::test::error_of<std::invalid_argument>([&] { bpe.encode("th", 4); }),
              HasSubstr("v.json' has no </s> token, which encoding a sequence needs"));
}

}  // namespace
