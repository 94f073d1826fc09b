#pragma once
// Shared by the file-reading dataset plugins (header only; the plugin links ZLIB::ZLIB): reads a
// file that may be gzip-compressed. zlib's gzread passes uncompressed files through unchanged,
// so one call serves `train-images-idx3-ubyte` and `train-images-idx3-ubyte.gz`.

#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "io.hpp"

namespace tlab_ds {

// gzerror's message without the "<path>: " that zlib puts in front (our messages name the file).
inline std::string gz_reason(gzFile f, const std::filesystem::path& path) {
  int code = 0;
  std::string why = gzerror(f, &code);
  if (code == Z_ERRNO) return std::strerror(errno);
  const std::string prefix = path.string() + ": ";
  if (why.compare(0, prefix.size(), prefix) == 0) why.erase(0, prefix.size());
  return why;
}

/// The (decompressed) bytes of the file at `path`; throws naming the file when it is missing,
/// unreadable or a broken gzip stream. `check_start`, when given, sees the first bytes (at least
/// 64, or the whole file when it is shorter) before the rest is read, and throws to refuse it: a
/// wrong header stops a huge file at once.
inline std::string read_maybe_gzip(const std::filesystem::path& path, const std::string& what,
                                   const std::function<void(std::string_view)>& check_start = {}) {
  require_file(path, what);
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f)
    throw std::invalid_argument(what + " " + quote(path) +
                                " cannot be opened: " + std::strerror(errno));
  gzbuffer(f, 1 << 17);
  std::string out;
  char buf[1 << 16];
  for (;;) {
    const int n = gzread(f, buf, sizeof buf);
    if (n < 0) {
      const std::string why = gz_reason(f, path);
      gzclose(f);
      throw std::invalid_argument(what + " " + quote(path) +
                                  " is a damaged or truncated gzip file: " + why);
    }
    if (n == 0) break;
    const bool checking = check_start && out.size() < 64;
    out.append(buf, static_cast<std::size_t>(n));
    if (checking && out.size() >= 64) {
      try {
        check_start(out);
      } catch (...) {
        gzclose(f);
        throw;
      }
    }
  }
  int code = 0;
  gzerror(f, &code);
  if (code != Z_OK) {
    const std::string why = gz_reason(f, path);
    gzclose(f);
    throw std::invalid_argument(what + " " + quote(path) +
                                " is a damaged or truncated gzip file: " + why);
  }
  gzclose(f);
  if (check_start && out.size() < 64) check_start(out);
  return out;
}

}  // namespace tlab_ds
