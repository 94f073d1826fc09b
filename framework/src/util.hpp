#pragma once
// Small host utilities shared by several concerns.

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace tlab {

/// Levenshtein distance between two strings.
std::size_t edit_distance(const std::string& a, const std::string& b);

/// The candidates closest to `word` (at most 3, within a distance that scales with its length),
/// for "did you mean" hints; empty when nothing is close.
std::vector<std::string> nearest(const std::string& word, const std::vector<std::string>& options);

/// "did you mean 'x'?" / "did you mean 'x' or 'y'?" / "" when `near` is empty.
std::string did_you_mean(const std::vector<std::string>& near);

/// Joins `items` with `sep`, each wrapped in `quote`.
std::string join(const std::vector<std::string>& items, const std::string& sep,
                 const std::string& quote = "");

/// xxh3-64 of a file's bytes, as 16 hex digits. Throws std::runtime_error if it cannot be read.
std::string hash_file(const std::filesystem::path& path);

/// xxh3-64 of a string, as 16 hex digits.
std::string hash_string(const std::string& text);

/// Folder holding the running executable (from /proc/self/exe).
std::filesystem::path executable_dir();

/// The machine's host name.
std::string host_name();

/// This boot of the machine (/proc/sys/kernel/random/boot_id); "" when unknown.
std::string boot_id();

/// When process `pid` started, in clock ticks since boot (/proc/PID/stat field 22); -1 when the
/// process does not exist. With the boot id it tells a process from a later one with its pid.
int64_t process_start_ticks(int64_t pid);

/// Git commit of the working tree at `dir` and whether it has uncommitted changes
/// (`dirty` = -1 and commit "" when `dir` is not in a git work tree or git is missing).
struct GitState {
  std::string commit;
  int dirty = -1;
};
GitState git_state(const std::filesystem::path& dir);

}  // namespace tlab
