#include "util.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <utility>

#include <fmt/format.h>
#include <xxhash.h>

namespace tlab {

std::size_t utf8_sequence_length(std::string_view text, std::size_t i) {
  if (i >= text.size()) return 0;
  const auto c = static_cast<unsigned char>(text[i]);
  const std::size_t len = c < 0x80           ? 1
                          : (c >> 5) == 0x6  ? 2
                          : (c >> 4) == 0xE  ? 3
                          : (c >> 3) == 0x1E ? 4
                                             : 0;
  if (len == 0 || i + len > text.size()) return 0;
  for (std::size_t k = 1; k < len; ++k)
    if ((static_cast<unsigned char>(text[i + k]) >> 6) != 2) return 0;
  const auto c1 = len > 1 ? static_cast<unsigned char>(text[i + 1]) : 0;
  // Overlong forms; surrogates (U+D800..U+DFFF); code points past U+10FFFF.
  if (len == 2 && c < 0xC2) return 0;
  if (len == 3 && ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 >= 0xA0))) return 0;
  if (len == 4 && (c > 0xF4 || (c == 0xF0 && c1 < 0x90) || (c == 0xF4 && c1 >= 0x90))) return 0;
  return len;
}

uint32_t decode_utf8(std::string_view text, std::size_t& i) {
  const std::size_t len = utf8_sequence_length(text, i);
  const auto c = static_cast<unsigned char>(text[i]);
  if (len <= 1) {
    ++i;
    return c;
  }
  uint32_t cp = c & (0x7F >> len);
  for (std::size_t k = 1; k < len; ++k)
    cp = (cp << 6) | (static_cast<unsigned char>(text[i + k]) & 0x3F);
  i += len;
  return cp;
}

std::size_t find_invalid_utf8(std::string_view text) {
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t len = utf8_sequence_length(text, i);
    if (len == 0) return i;
    i += len;
  }
  return std::string_view::npos;
}

namespace {

bool is_control(uint32_t c) { return c < 0x20 || c == 0x7f || (c >= 0x80 && c <= 0x9f); }

}  // namespace

std::string open_files_hint() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY ||
      limit.rlim_cur >= 256)
    return "";
  return fmt::format(
      "; only {} files may be open at once here (ulimit -n): raise the limit to 1024 or more",
      static_cast<unsigned long long>(limit.rlim_cur));
}

std::string system_error_text(int error) {
  std::string text = std::strerror(error);
  if (error == EMFILE || error == ENFILE) text += open_files_hint();
  return text;
}

std::string memory_limit_hint() {
  for (const auto& [resource, name] :
       {std::pair{RLIMIT_AS, "ulimit -v"}, {RLIMIT_DATA, "ulimit -d"}}) {
    rlimit limit{};
    if (getrlimit(resource, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) continue;
    return fmt::format(
        "; this process may use at most {} MiB of memory ({} {}): raise the limit or make the "
        "run smaller",
        static_cast<unsigned long long>(limit.rlim_cur >> 20), name,
        static_cast<unsigned long long>(limit.rlim_cur >> 10));
  }
  return "";
}

std::string printable(std::string_view text, bool keep_lines) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t start = i;
    const std::size_t length = utf8_sequence_length(text, i);
    const uint32_t c = decode_utf8(text, i);
    // An invalid byte (length 0) is kept: it is not a control character in any terminal's eyes
    // as UTF-8, and the C1 range as raw bytes 0x80..0x9f only acts in 8-bit terminals.
    if (length == 0 || !is_control(c) || (keep_lines && (c == '\n' || c == '\t'))) {
      out.append(text.substr(start, i - start));
      continue;
    }
    char buf[12];
    std::snprintf(buf, sizeof buf, c < 0x80 ? "\\x%02x" : "\\u%04x", c);
    out += buf;
  }
  return out;
}

std::string find_control(std::string_view text) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < text.size(); ++n) {
    const std::size_t length = utf8_sequence_length(text, i);
    const uint32_t c = decode_utf8(text, i);
    if (length != 0 && is_control(c))
      return "U+" +
             [&] {
               char buf[8];
               std::snprintf(buf, sizeof buf, "%04X", c);
               return std::string(buf);
             }() +
             " at character " + std::to_string(n + 1);
  }
  return "";
}

std::size_t utf8_width(std::string_view text) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < text.size(); ++n) decode_utf8(text, i);
  return n;
}

std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::vector<std::string> nearest(const std::string& word, const std::vector<std::string>& options) {
  // Accept up to a third of the word's length in edits (at least 2), or a shared prefix/suffix
  // relation such as "lr" vs "train.lr".
  std::size_t limit = std::max<std::size_t>(2, word.size() / 3);
  std::vector<std::pair<std::size_t, std::string>> scored;
  for (const auto& o : options) {
    std::size_t d = edit_distance(word, o);
    bool contains = word.size() >= 2 && (o.find(word) != std::string::npos ||
                                         (o.size() >= 2 && word.find(o) != std::string::npos));
    if (d <= limit || contains) scored.emplace_back(contains ? std::min(d, limit) : d, o);
  }
  std::stable_sort(scored.begin(), scored.end(),
                   [](const auto& x, const auto& y) { return x.first < y.first; });
  std::vector<std::string> out;
  for (const auto& s : scored) {
    if (out.size() == 3) break;
    if (std::find(out.begin(), out.end(), s.second) == out.end()) out.push_back(s.second);
  }
  return out;
}

std::string did_you_mean(const std::vector<std::string>& near) {
  if (near.empty()) return "";
  return "did you mean " + join(near, " or ", "'") + "?";
}

std::string join(const std::vector<std::string>& items, const std::string& sep,
                 const std::string& quote) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) out += sep;
    out += quote + items[i] + quote;
  }
  return out;
}

std::string hash_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(fmt::format("cannot read '{}' to hash it", path.string()));
  XXH3_state_t* state = XXH3_createState();
  XXH3_64bits_reset(state);
  std::array<char, 1 << 16> buf;
  while (in) {
    in.read(buf.data(), buf.size());
    XXH3_64bits_update(state, buf.data(), static_cast<std::size_t>(in.gcount()));
  }
  XXH64_hash_t h = XXH3_64bits_digest(state);
  XXH3_freeState(state);
  return fmt::format("{:016x}", h);
}

std::string hash_string(const std::string& text) {
  return fmt::format("{:016x}", XXH3_64bits(text.data(), text.size()));
}

std::filesystem::path executable_dir() {
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::filesystem::current_path() : exe.parent_path();
}

std::string host_name() {
  std::array<char, 256> buf{};
  if (gethostname(buf.data(), buf.size() - 1) != 0) return "unknown";
  return buf.data();
}

std::string boot_id() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string id;
  std::getline(in, id);
  return id;
}

int64_t process_start_ticks(int64_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (pid <= 0 || !std::getline(in, stat)) return -1;
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses; fields follow the last ')'.
  const auto close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream fields(stat.substr(close + 1));
  std::string field;
  for (int i = 3; i <= 22 && fields >> field; ++i)
    if (i == 22) return std::stoll(field);
  return -1;
}

namespace {
// Runs a command and returns its stdout; `ok` is false if it failed.
std::string capture(const std::string& cmd, bool& ok) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) {
    ok = false;
    return out;
  }
  std::array<char, 4096> buf;
  while (std::size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  ok = pclose(p) == 0;
  return out;
}

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}
}  // namespace

GitState git_state(const std::filesystem::path& dir) {
  GitState g;
  bool ok = false;
  std::string base = "git -C " + shell_quote(dir.string()) + " ";
  std::string commit = capture(base + "rev-parse HEAD 2>/dev/null", ok);
  if (!ok) return g;
  while (!commit.empty() && (commit.back() == '\n' || commit.back() == '\r')) commit.pop_back();
  g.commit = commit;
  std::string status = capture(base + "status --porcelain --untracked-files=no 2>/dev/null", ok);
  g.dirty = ok ? (status.empty() ? 0 : 1) : -1;
  return g;
}

}  // namespace tlab
