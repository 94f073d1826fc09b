// libtlab_spm: a C interface to Google's SentencePiece for the text dataset, loaded with
// RTLD_DEEPBIND. Debian's libsentencepiece embeds protobuf-lite 3.14 and exports it; in a process
// where LibTorch has loaded libprotobuf 3.21, its protobuf calls would bind to that one and fail
// the version check at the first model load. Deep binding makes this library and its
// dependencies resolve their own symbols first (docs/models.md, "text").
#include <sentencepiece_processor.h>

#include <cstdio>
#include <string>
#include <vector>

namespace {
using Processor = sentencepiece::SentencePieceProcessor;
void say(char* err, std::size_t n, const std::string& what) {
  if (err && n) std::snprintf(err, n, "%s", what.c_str());
}
}  // namespace

extern "C" {

__attribute__((visibility("default"))) void* tlab_spm_load(const char* path, char* err,
                                                           std::size_t n) {
  try {
    auto* p = new Processor();
    const auto status = p->Load(path);
    if (!status.ok()) {
      say(err, n, status.ToString());
      delete p;
      return nullptr;
    }
    return p;
  } catch (const std::exception& e) {
    say(err, n, e.what());
    return nullptr;
  }
}

__attribute__((visibility("default"))) void tlab_spm_free(void* p) {
  delete static_cast<Processor*>(p);
}

__attribute__((visibility("default"))) int tlab_spm_size(void* p) {
  return static_cast<Processor*>(p)->GetPieceSize();
}

__attribute__((visibility("default"))) int tlab_spm_pad_id(void* p) {
  return static_cast<Processor*>(p)->pad_id();
}

__attribute__((visibility("default"))) int tlab_spm_unk_id(void* p) {
  return static_cast<Processor*>(p)->unk_id();
}

// The piece of `id` into `out` (NUL-terminated); its length, or -1 when it does not fit.
__attribute__((visibility("default"))) int tlab_spm_piece(void* p, int id, char* out,
                                                          std::size_t n) {
  const std::string& piece = static_cast<Processor*>(p)->IdToPiece(id);
  if (piece.size() + 1 > n) return -1;
  piece.copy(out, piece.size());
  out[piece.size()] = '\0';
  return static_cast<int>(piece.size());
}

// The ids of `text` into `ids` (at most `cap`); how many there are (may exceed cap), or -1 with
// the error in `err`.
__attribute__((visibility("default"))) int tlab_spm_encode(void* p, const char* text, int* ids,
                                                           int cap, char* err, std::size_t n) {
  std::vector<int> out;
  const auto status = static_cast<Processor*>(p)->Encode(text, &out);
  if (!status.ok()) {
    say(err, n, status.ToString());
    return -1;
  }
  for (int i = 0; i < cap && i < static_cast<int>(out.size()); ++i)
    ids[i] = out[static_cast<std::size_t>(i)];
  return static_cast<int>(out.size());
}
}
