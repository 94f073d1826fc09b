#pragma once
// Small host utilities shared by several concerns.

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace tlab {

// --- UTF-8: the one decoder of the host. Strict (RFC 3629): stray continuation bytes, truncated
// sequences, overlong forms, surrogates and code points past U+10FFFF are invalid.

/// Length in bytes (1 to 4) of the valid UTF-8 sequence that starts at `text[i]`, or 0 when the
/// bytes there are not valid UTF-8 (also when `i` is past the end).
std::size_t utf8_sequence_length(std::string_view text, std::size_t i);

/// The code point that starts at `text[i]`, and advances `i` past it. A byte that does not start
/// a valid sequence comes back as itself (0x80..0xFF) and `i` advances by one, so that a loop
/// over invalid text still ends and still counts every byte.
uint32_t decode_utf8(std::string_view text, std::size_t& i);

/// Byte offset of the first byte of `text` that is not valid UTF-8; npos when it is all valid.
std::size_t find_invalid_utf8(std::string_view text);

/// Number of characters (code points; an invalid byte counts as one), e.g. a cell's display
/// width in a table of text ("±" is one column).
std::size_t utf8_width(std::string_view text);

/// `text` safe to print to a terminal: control characters (C0, DEL, C1: U+0080..U+009F), which
/// could move the cursor, clear the screen or retitle the window, become visible escapes
/// (`\x1b`, `\u009b`); with `keep_lines`, line breaks and tabs stay. Everything else, invalid
/// UTF-8 included, is kept as it is. Values read from a results database are printed through it.
std::string printable(std::string_view text, bool keep_lines = false);

/// The first control character of `text` (see printable; line breaks and tabs included), as
/// "U+001B at character 3"; "" when there is none. For refusing names that reach a terminal.
std::string find_control(std::string_view text);

/// When the limit on open files (RLIMIT_NOFILE, `ulimit -n`) is too low for a run (below 256):
/// "; only N files may be open at once here (ulimit -n): raise the limit to 1024 or more"; else
/// "". Appended to errors that a lack of file descriptors may have caused.
std::string open_files_hint();

/// strerror(error), plus open_files_hint() when `error` is EMFILE or ENFILE.
std::string system_error_text(int error);

/// When this process's memory is capped (RLIMIT_AS, `ulimit -v`, or RLIMIT_DATA): "; this
/// process may use at most N MiB of memory (ulimit -v K): raise the limit or make the run
/// smaller"; else "". Appended to out-of-memory errors, so that a limit is not taken for a
/// lack of RAM.
std::string memory_limit_hint();

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
