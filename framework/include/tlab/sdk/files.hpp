#pragma once
/// \file files.hpp
/// Durable atomic file writes, for the host and for plugins (e.g. a cache entry). A reader sees
/// the old file or the new one, whole, never half of one; and once the call returns, the new
/// content survives a crash or a power cut. The steps: a temporary file in the same folder
/// (a rename is atomic only within one filesystem), write, fsync the file, rename it over the
/// target, fsync the folder (which makes the rename itself durable).
///
/// Example:
/// \code
///   tlab::write_file_atomic(dir / "summary.json", text);
///   tlab::write_file_atomic_with(dir / "features.pt",
///                                [&](const std::filesystem::path& temporary) {
///                                  torch::save(features, temporary.string());
///                                });
/// \endcode

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace tlab {

namespace detail {

/// "cannot write 'PATH': WHY; check that its folder exists and is writable" (and has space).
inline std::runtime_error file_write_error(const std::filesystem::path& path, int error) {
  return std::runtime_error("cannot write '" + path.string() + "': " + std::strerror(error) +
                            "; check that its folder exists, is writable and has free space");
}

/// Creates a new temporary file next to `path` (O_EXCL: never one that exists), open for writing.
/// Its name is "<name>.tmp-<pid>-<n>": unique among processes and threads, and recognisable.
inline int create_temporary(const std::filesystem::path& path, std::filesystem::path& temporary) {
  static std::atomic<uint64_t> counter{0};
  const auto clock =
      static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  for (int attempt = 0;; ++attempt) {
    temporary = path;
    temporary += ".tmp-" + std::to_string(::getpid()) + "-" +
                 std::to_string((clock + counter.fetch_add(1)) % 1000000007ULL);
    const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0 || errno != EEXIST || attempt >= 100) return fd;
  }
}

/// fsync(2) of an open file, retried when interrupted.
inline int sync_fd(int fd) {
  int rc;
  do rc = ::fsync(fd);
  while (rc != 0 && errno == EINTR);
  return rc;
}

}  // namespace detail

/// Makes the renames and new links in `folder` ("" for the current folder) durable: fsync(2) of
/// the folder. Filesystems that cannot sync a folder (EINVAL) are accepted: there is nothing more
/// to do on them. Throws std::runtime_error naming the folder.
inline void sync_folder(const std::filesystem::path& folder) {
  const std::filesystem::path dir = folder.empty() ? std::filesystem::path(".") : folder;
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  const int rc = fd < 0 ? -1 : detail::sync_fd(fd);
  const int error = errno;
  if (fd >= 0) ::close(fd);
  if (rc != 0 && error != EINVAL)
    throw std::runtime_error("cannot sync the folder '" + dir.string() +
                             "' (which makes a new file in it durable): " + std::strerror(error));
}

namespace detail {

/// Syncs the written `temporary`, renames it to `path` and syncs the folder; removes the
/// temporary file on failure.
inline void commit_temporary(const std::filesystem::path& temporary,
                             const std::filesystem::path& path) {
  std::error_code ignored;
  const int fd = ::open(temporary.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || sync_fd(fd) != 0) {
    const int error = errno;
    if (fd >= 0) ::close(fd);
    std::filesystem::remove(temporary, ignored);
    throw file_write_error(path, error);
  }
  ::close(fd);
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    const int error = errno;
    std::filesystem::remove(temporary, ignored);
    throw file_write_error(path, error);
  }
  sync_folder(path.parent_path());
}

}  // namespace detail

/// Replaces `path` with `bytes`, durably and atomically (see the file comment). The folder must
/// exist. Throws std::runtime_error naming `path` and the reason; the old file, if any, is then
/// unchanged and no temporary file is left behind.
inline void write_file_atomic(const std::filesystem::path& path, std::string_view bytes) {
  std::filesystem::path temporary;
  const int fd = detail::create_temporary(path, temporary);
  if (fd < 0) throw detail::file_write_error(path, errno);
  for (std::size_t done = 0; done < bytes.size();) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int error = errno;
      ::close(fd);
      std::error_code ignored;
      std::filesystem::remove(temporary, ignored);
      throw detail::file_write_error(path, error);
    }
    done += static_cast<std::size_t>(n);
  }
  if (::close(fd) != 0) {  // a network filesystem may report a failed write only here
    const int error = errno;
    std::error_code ignored;
    std::filesystem::remove(temporary, ignored);
    throw detail::file_write_error(path, error);
  }
  detail::commit_temporary(temporary, path);
}

/// Replaces `path` with what `write` writes to the temporary file whose path it is given (for
/// libraries that write to a path, such as torch::save, or for large files written in parts),
/// durably and atomically. An exception from `write` removes the temporary file and propagates;
/// the other failures throw std::runtime_error naming `path`, as write_file_atomic does.
inline void write_file_atomic_with(
    const std::filesystem::path& path,
    const std::function<void(const std::filesystem::path& temporary)>& write) {
  std::filesystem::path temporary;
  const int fd = detail::create_temporary(path, temporary);
  if (fd < 0) throw detail::file_write_error(path, errno);
  ::close(fd);  // the name is reserved; `write` opens it again (and truncates it)
  try {
    write(temporary);
  } catch (...) {
    std::error_code ignored;
    std::filesystem::remove(temporary, ignored);
    throw;
  }
  detail::commit_temporary(temporary, path);
}

}  // namespace tlab
