// Tests of the host's one UTF-8 decoder (util.hpp): strict on invalid sequences, and a decode
// loop that never stops on bad bytes.

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "util.hpp"

namespace tlab {
namespace {

std::vector<uint32_t> decode_all(std::string_view text) {
  std::vector<uint32_t> out;
  for (std::size_t i = 0; i < text.size();) out.push_back(decode_utf8(text, i));
  return out;
}

TEST(Utf8, DecodesValidSequencesOfEveryLength) {
  EXPECT_EQ(decode_all("a\xC2\xB1\xE2\x82\xAC\xF0\x9F\x98\x80"),
            (std::vector<uint32_t>{'a', 0xB1, 0x20AC, 0x1F600}));              // a ± € 😀
  EXPECT_EQ(decode_all("\xF4\x8F\xBF\xBF"), std::vector<uint32_t>{0x10FFFF});  // the last one
  EXPECT_EQ(utf8_sequence_length("\xE2\x82\xAC", 0), 3u);
  EXPECT_EQ(find_invalid_utf8("plain ± text"), std::string_view::npos);
  EXPECT_EQ(utf8_width("0.91 ± 0.02"), 11u);
  EXPECT_EQ(utf8_width(""), 0u);
}

TEST(Utf8, RefusesInvalidSequences) {
  struct Case {
    std::string text;
    const char* why;
  };
  const Case invalid[] = {
      {"\x80", "a continuation byte without a lead byte"},
      {"\xC3", "a sequence cut short at the end"},
      {"\xC3(", "a lead byte followed by a non-continuation byte"},
      {"\xC0\xAF", "an overlong two-byte form of '/'"},
      {"\xE0\x80\xAF", "an overlong three-byte form"},
      {"\xF0\x80\x80\xAF", "an overlong four-byte form"},
      {"\xED\xA0\x80", "a UTF-16 surrogate (U+D800)"},
      {"\xF4\x90\x80\x80", "a code point past U+10FFFF"},
      {"\xF8\x88\x80\x80\x80", "a five-byte form"},
      {"\xFF", "a byte that is never UTF-8"},
  };
  for (const auto& c : invalid) {
    EXPECT_EQ(utf8_sequence_length(c.text, 0), 0u) << c.why;
    EXPECT_EQ(find_invalid_utf8("ok " + c.text), 3u) << c.why;
  }
}

TEST(Utf8, AnInvalidByteDecodesAsItselfAndCountsOnce) {
  // "é" cut after its lead byte, then "x": the lead byte stands for itself, "x" is still read.
  EXPECT_EQ(decode_all("\xC3x"), (std::vector<uint32_t>{0xC3, 'x'}));
  EXPECT_EQ(decode_all("\xED\xA0\x80"), (std::vector<uint32_t>{0xED, 0xA0, 0x80}));
  EXPECT_EQ(utf8_width("a\xFF"
                       "b"),
            3u);
  EXPECT_EQ(utf8_sequence_length("abc", 3), 0u);  // past the end
}

}  // namespace
}  // namespace tlab

// Issue 27: what reaches a terminal from a results database shows control characters as text.
TEST(Utf8, PrintableEscapesControlCharactersAndKeepsTheRest) {
  EXPECT_EQ(tlab::printable("a\x1b[31mred\x07"), "a\\x1b[31mred\\x07");
  EXPECT_EQ(tlab::printable("csi \xc2\x9b"
                            "2J"),
            "csi \\u009b2J");  // C1 CSI as UTF-8
  EXPECT_EQ(tlab::printable("two\nlines\tand\x7f"), "two\\x0alines\\x09and\\x7f");
  EXPECT_EQ(tlab::printable("two\nlines\tand", /*keep_lines=*/true), "two\nlines\tand");
  EXPECT_EQ(tlab::printable("caf\xc3\xa9 \xe2\x80\x94 ok"), "caf\xc3\xa9 \xe2\x80\x94 ok");
  EXPECT_EQ(tlab::printable("bad \xff byte"), "bad \xff byte");  // invalid UTF-8 is not a control
  EXPECT_EQ(tlab::find_control("abc"), "");
  EXPECT_EQ(tlab::find_control("\xc3\xa9\x1b"), "U+001B at character 2");
}
