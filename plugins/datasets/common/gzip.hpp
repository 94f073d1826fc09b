#pragma once
// Shared by the file-reading dataset plugins (header only; the plugin links ZLIB::ZLIB): reads a
// file that may be gzip-compressed. zlib's gzread passes uncompressed files through unchanged,
// so one call serves `train-images-idx3-ubyte` and `train-images-idx3-ubyte.gz`.

#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>

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
/// unreadable or a broken gzip stream.
inline std::string read_maybe_gzip(const std::filesystem::path& path, const std::string& what) {
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
    out.append(buf, static_cast<std::size_t>(n));
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
  return out;
}

}  // namespace tlab_ds
