#pragma once
// safetensors (https://github.com/huggingface/safetensors), the weights format of Hugging Face and
// timm: an 8-byte little-endian header length N, N bytes of JSON
//   {"__metadata__": {"k": "v"}, "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0,
//   24]}}
// then the tensors' bytes, little-endian, row-major, offsets relative to the end of the header.
// Reading checks everything against the file before trusting it: the header length against the
// file size, every dtype, every shape against its byte range, and that the byte ranges cover
// the data exactly (no gap, no overlap). Errors name the file, the tensor and the fix.

#include <cstdint>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

namespace tlab::weights {

/// A weights file that cannot be read or written; the message names the file and what is wrong.
class WeightsError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Named tensors in file order (by offset when read).
using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

/// Reads every tensor of a safetensors file (CPU, contiguous). `metadata`, when given, receives
/// the `__metadata__` strings. Supported dtypes: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL.
NamedTensors read_safetensors(const std::filesystem::path& path,
                              std::map<std::string, std::string>* metadata = nullptr);

/// Writes `tensors` (any device; copied to CPU, contiguous) with optional `metadata`. Names must
/// be unique and not `__metadata__`. Written to a temporary file and renamed: a reader never sees
/// half a file.
void write_safetensors(const std::filesystem::path& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace tlab::weights
