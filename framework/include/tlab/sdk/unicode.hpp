#pragma once
/// \file unicode.hpp
/// UTF-8 and Unicode character classes for the SDK's tokenizers (wordpiece.hpp, bpe.hpp), from
/// utf8proc (Debian's libutf8proc-dev; tlab::sdk links it).
#include <utf8proc.h>

#include <string>

namespace tlab::utf8 {

/// Whether `s` is well-formed UTF-8.
inline bool valid(const std::string& s) {
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(s.data());
  utf8proc_ssize_t left = static_cast<utf8proc_ssize_t>(s.size());
  while (left > 0) {
    utf8proc_int32_t c;
    const utf8proc_ssize_t n = utf8proc_iterate(p, left, &c);
    if (n < 0) return false;
    p += n;
    left -= n;
  }
  return true;
}

/// The code points of `s` (up to its first malformed sequence).
inline std::u32string decode(const std::string& s) {
  std::u32string out;
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(s.data());
  utf8proc_ssize_t left = static_cast<utf8proc_ssize_t>(s.size());
  while (left > 0) {
    utf8proc_int32_t c;
    const utf8proc_ssize_t n = utf8proc_iterate(p, left, &c);
    if (n < 0) break;
    out.push_back(static_cast<char32_t>(c));
    p += n;
    left -= n;
  }
  return out;
}

/// UTF-8 of code points.
inline std::string encode(const std::u32string& s) {
  std::string out;
  utf8proc_uint8_t buf[4];
  for (char32_t c : s) {
    const utf8proc_ssize_t n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(c), buf);
    out.append(reinterpret_cast<const char*>(buf), static_cast<std::size_t>(n));
  }
  return out;
}

/// The first 40 bytes of `s` for a message, bytes outside printable ASCII as \xNN.
inline std::string preview(const std::string& s) {
  std::string out;
  for (unsigned char c : s.substr(0, 40))
    out += c >= 0x20 && c < 0x7f
               ? std::string(1, static_cast<char>(c))
               : "\\x" + std::string(1, "0123456789abcdef"[c >> 4]) + "0123456789abcdef"[c & 15];
  return out + (s.size() > 40 ? "..." : "");
}

/// The Unicode general category of `c`.
inline utf8proc_category_t category(char32_t c) {
  return utf8proc_category(static_cast<utf8proc_int32_t>(c));
}

/// \p{L}: a letter (Lu, Ll, Lt, Lm, Lo).
inline bool is_letter(char32_t c) {
  const auto k = category(c);
  return k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO;
}

/// \p{N}: a number (Nd, Nl, No).
inline bool is_number(char32_t c) {
  const auto k = category(c);
  return k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO;
}

/// Unicode's White_Space property (what \s matches in a Unicode regular expression).
inline bool is_white_space(char32_t c) {
  return (c >= 0x9 && c <= 0xd) || c == 0x20 || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f ||
         c == 0x3000;
}

}  // namespace tlab::utf8
