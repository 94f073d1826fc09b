#pragma once
// Shared by the file-reading dataset plugins (header only): reading whole files with messages
// that name the file and say what went wrong, lines, numbers and logging.

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "tlab/sdk/context.hpp"

namespace tlab_ds {

/// `'path'` for messages.
inline std::string quote(const std::filesystem::path& p) { return "'" + p.string() + "'"; }

/// Throws unless `path` is an existing regular file. `what` says which file, e.g.
/// "idx: train_images file".
inline void require_file(const std::filesystem::path& path, const std::string& what) {
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  if (path.empty()) throw std::invalid_argument(what + " is not set; expected a file path");
  if (!std::filesystem::exists(st))
    throw std::invalid_argument(what + " " + quote(path) + " does not exist");
  if (std::filesystem::is_directory(st))
    throw std::invalid_argument(what + " " + quote(path) + " is a folder; expected a file");
  // A device or a FIFO never ends (/dev/zero, /dev/urandom) or blocks (a FIFO nobody writes):
  // refused before reading.
  if (!std::filesystem::is_regular_file(st)) {
    const char* kind = std::filesystem::is_character_file(st) ? "a character device"
                       : std::filesystem::is_block_file(st)   ? "a block device"
                       : std::filesystem::is_fifo(st)         ? "a FIFO (named pipe)"
                       : std::filesystem::is_socket(st)       ? "a socket"
                                                              : "not a regular file";
    throw std::invalid_argument(what + " " + quote(path) + " is " + kind +
                                "; expected a regular file");
  }
}

/// The bytes of the file at `path`; throws naming the file when it is missing or unreadable.
/// With `text`, a NUL byte ends the reading at once with an error: a text format never holds
/// one, and a huge binary or sparse file is refused after its first megabyte, not after
/// filling the memory.
inline std::string read_bytes(const std::filesystem::path& path, const std::string& what,
                              bool text = false) {
  require_file(path, what);
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw std::invalid_argument(what + " " + quote(path) +
                                " cannot be opened: " + std::strerror(errno));
  std::string bytes;
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (!ec && size < (std::uintmax_t{1} << 32)) bytes.reserve(static_cast<std::size_t>(size));
  std::vector<char> chunk(1 << 20);
  while (in) {
    in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    const auto n = static_cast<std::size_t>(in.gcount());
    if (text) {
      const void* nul = std::memchr(chunk.data(), 0, n);
      if (nul)
        throw std::invalid_argument(
            what + " " + quote(path) + " is not a text file: byte " +
            std::to_string(bytes.size() +
                           static_cast<std::size_t>(static_cast<const char*>(nul) - chunk.data())) +
            " is NUL; expected text (UTF-8)");
    }
    bytes.append(chunk.data(), n);
  }
  if (in.bad())
    throw std::invalid_argument(what + " " + quote(path) +
                                " could not be read: " + std::strerror(errno));
  return bytes;
}

/// One line of a text file with its 1-based number.
struct Line {
  int64_t number;
  std::string_view text;
};

/// The lines of `text` without their end-of-line characters ("\n" or "\r\n"), without a UTF-8
/// byte order mark, and without the empty line after a final newline. Views into `text`.
inline std::vector<Line> split_lines(std::string_view text) {
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
  std::vector<Line> lines;
  int64_t number = 1;
  while (!text.empty()) {
    const std::size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines.push_back({number++, line});
    if (end == std::string_view::npos) break;
    text.remove_prefix(end + 1);
  }
  return lines;
}

inline bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

/// `s` without leading and trailing ASCII whitespace.
inline std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

/// Parses a whole string (spaces around allowed) as a decimal integer.
inline bool parse_int(std::string_view s, int64_t& out) {
  s = trim(s);
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  if (s.empty()) return false;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), out);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

/// Parses a whole string (spaces around allowed) as a finite number, whatever the C locale.
inline bool parse_double(std::string_view s, double& out) {
  s = trim(s);
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  if (s.empty()) return false;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), out);
  return r.ec == std::errc() && r.ptr == s.data() + s.size() && std::isfinite(out);
}

/// Joins strings with ", ", each as 'x', shortened after `max` items.
inline std::string join_quoted(const std::vector<std::string>& items, std::size_t max = 20) {
  std::string out;
  for (std::size_t i = 0; i < items.size() && i < max; ++i)
    out += (i ? ", '" : "'") + items[i] + "'";
  if (items.size() > max) out += ", ... (" + std::to_string(items.size()) + " in all)";
  return out;
}

/// Logs through the host's logger when there is one (a direct caller may give none).
inline void log_info(tlab::Context& ctx, const std::string& msg) {
  if (ctx.log) ctx.log->info(msg);
}
inline void log_warn(tlab::Context& ctx, const std::string& msg) {
  if (ctx.log) ctx.log->warn(msg);
}

}  // namespace tlab_ds
