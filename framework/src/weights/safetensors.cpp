#include "weights/safetensors.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tlab/sdk/files.hpp"
#include "util.hpp"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors stores little-endian bytes; this reader copies them as they are");

namespace fs = std::filesystem;

namespace tlab::weights {
namespace {

constexpr uint64_t kMaxHeader = 100'000'000;  // the reference implementation's limit

struct DType {
  const char* name;
  torch::ScalarType type;
  int64_t size;
};

constexpr DType kTypes[] = {{"F64", torch::kDouble, 8}, {"F32", torch::kFloat, 4},
                            {"F16", torch::kHalf, 2},   {"BF16", torch::kBFloat16, 2},
                            {"I64", torch::kLong, 8},   {"I32", torch::kInt, 4},
                            {"I16", torch::kShort, 2},  {"I8", torch::kChar, 1},
                            {"U8", torch::kByte, 1},    {"BOOL", torch::kBool, 1}};

std::string dtype_names() {
  std::vector<std::string> names;
  for (const auto& t : kTypes) names.emplace_back(t.name);
  return join(names, ", ");
}

const DType* find_dtype(const std::string& name) {
  for (const auto& t : kTypes)
    if (name == t.name) return &t;
  return nullptr;
}

const DType* find_dtype(torch::ScalarType type) {
  for (const auto& t : kTypes)
    if (type == t.type) return &t;
  return nullptr;
}

struct Entry {
  std::string name;
  const DType* dtype = nullptr;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};

std::string shape_text(const std::vector<int64_t>& shape) {
  std::vector<std::string> dims;
  for (int64_t d : shape) dims.push_back(std::to_string(d));
  return "[" + join(dims, ", ") + "]";
}

}  // namespace

NamedTensors read_safetensors(const fs::path& path, std::map<std::string, std::string>* metadata) {
  const std::string file = path.string();
  std::error_code ec;
  const uint64_t size = fs::file_size(path, ec);
  if (ec) throw WeightsError(fmt::format("cannot read weights file '{}': {}", file, ec.message()));
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw WeightsError(fmt::format("cannot open weights file '{}': {}", file, strerror(errno)));
  if (size < 8)
    throw WeightsError(fmt::format(
        "'{}' is {} bytes: too short for a safetensors file (an 8-byte header length, then the "
        "header); it is truncated or not safetensors",
        file, size));
  unsigned char length_bytes[8];
  in.read(reinterpret_cast<char*>(length_bytes), 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | length_bytes[i];
  if (n > kMaxHeader)
    throw WeightsError(fmt::format(
        "'{}' declares a header of {} bytes, above safetensors' limit of {} bytes: it is not a "
        "safetensors file (a PyTorch .pt/.pth file? convert it with safetensors.torch.save_file)",
        file, n, kMaxHeader));
  if (n > size - 8)
    throw WeightsError(fmt::format(
        "'{}' declares a header of {} bytes but only {} bytes follow: the file is truncated", file,
        n, size - 8));
  std::string header(n, '\0');
  in.read(header.data(), static_cast<std::streamsize>(n));
  const auto json = nlohmann::json::parse(header, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object())
    throw WeightsError(fmt::format(
        "'{}': the header is not a JSON object: the file is corrupted or not safetensors", file));
  const uint64_t data_size = size - 8 - n;

  std::vector<Entry> entries;
  for (const auto& [key, value] : json.items()) {
    if (key == "__metadata__") {
      if (!value.is_object())
        throw WeightsError(fmt::format("'{}': __metadata__ must be an object of strings", file));
      for (const auto& [k, v] : value.items()) {
        if (!v.is_string())
          throw WeightsError(fmt::format("'{}': __metadata__ value '{}' is not a string", file, k));
        if (metadata) (*metadata)[k] = v.get<std::string>();
      }
      continue;
    }
    auto bad = [&](const std::string& what) {
      return WeightsError(fmt::format("'{}': tensor '{}' {}", file, key, what));
    };
    if (!value.is_object() || !value.contains("dtype") || !value.contains("shape") ||
        !value.contains("data_offsets"))
      throw bad("needs \"dtype\", \"shape\" and \"data_offsets\"");
    Entry e;
    e.name = key;
    if (!value["dtype"].is_string()) throw bad("has a dtype that is not a string");
    const std::string dtype = value["dtype"].get<std::string>();
    e.dtype = find_dtype(dtype);
    if (!e.dtype) throw bad(fmt::format("has dtype '{}'; supported: {}", dtype, dtype_names()));
    if (!value["shape"].is_array()) throw bad("has a shape that is not a list");
    uint64_t numel = 1;
    for (const auto& d : value["shape"]) {
      if (!d.is_number_unsigned()) throw bad("has a shape with a dimension that is not >= 0");
      const uint64_t dim = d.get<uint64_t>();
      if (dim > 0 && numel > std::numeric_limits<uint64_t>::max() / 16 / dim)
        throw bad("has a shape too large to be real");
      numel *= dim;
      e.shape.push_back(static_cast<int64_t>(dim));
    }
    const auto& offsets = value["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned())
      throw bad("needs data_offsets [begin, end] with two integers >= 0");
    e.begin = offsets[0].get<uint64_t>();
    e.end = offsets[1].get<uint64_t>();
    if (e.end < e.begin)
      throw bad(fmt::format("has data_offsets [{}, {}]: end before begin", e.begin, e.end));
    const uint64_t bytes = numel * static_cast<uint64_t>(e.dtype->size);
    if (e.end - e.begin != bytes)
      throw bad(fmt::format(
          "has shape {} and dtype {} ({} bytes) but data_offsets [{}, {}] hold {} bytes: the "
          "header is inconsistent",
          shape_text(e.shape), dtype, bytes, e.begin, e.end, e.end - e.begin));
    if (e.end > data_size)
      throw bad(fmt::format(
          "ends at byte {} of the data, but the file holds {} bytes of data: the file is "
          "truncated",
          e.end, data_size));
    entries.push_back(std::move(e));
  }
  // The byte ranges must tile the data: no overlap, no gap, nothing after the last tensor.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin < b.begin || (a.begin == b.begin && a.end < b.end);
  });
  uint64_t at = 0;
  const Entry* previous = nullptr;
  for (const Entry& e : entries) {
    if (e.begin < at)
      throw WeightsError(fmt::format("'{}': tensors '{}' and '{}' overlap (bytes {} to {})", file,
                                     previous->name, e.name, e.begin, at));
    if (e.begin > at)
      throw WeightsError(fmt::format(
          "'{}': bytes {} to {} of the data belong to no tensor: the header is inconsistent", file,
          at, e.begin));
    at = e.end;
    previous = &e;
  }
  if (at != data_size)
    throw WeightsError(fmt::format(
        "'{}': {} bytes after the last tensor belong to no tensor: the file is corrupted", file,
        data_size - at));

  NamedTensors out;
  for (const Entry& e : entries) {
    torch::Tensor t = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype->type));
    in.seekg(static_cast<std::streamoff>(8 + n + e.begin));
    in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(e.end - e.begin));
    if (!in)
      throw WeightsError(fmt::format("'{}': cannot read the bytes of tensor '{}'", file, e.name));
    out.emplace_back(e.name, std::move(t));
  }
  return out;
}

void write_safetensors(const fs::path& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const std::string file = path.string();
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> names;
  std::vector<torch::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name.empty() || name == "__metadata__" || !names.insert(name).second)
      throw WeightsError(fmt::format(
          "cannot write '{}': tensor name '{}' is empty, reserved or used twice", file, name));
    const DType* dtype = find_dtype(tensor.scalar_type());
    if (!dtype)
      throw WeightsError(fmt::format("cannot write '{}': tensor '{}' has dtype {}; supported: {}",
                                     file, name, c10::toString(tensor.scalar_type()),
                                     dtype_names()));
    torch::Tensor t = tensor.detach().to(torch::kCPU).contiguous();
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * static_cast<uint64_t>(dtype->size);
    header[name] = {{"dtype", dtype->name},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(std::move(t));
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data starts 8-byte aligned
  std::error_code ec;
  if (path.has_parent_path()) fs::create_directories(path.parent_path(), ec);
  try {
    write_file_atomic_with(path, [&](const fs::path& temporary) {
      std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
      unsigned char length[8];
      uint64_t n = text.size();
      for (int i = 0; i < 8; ++i, n >>= 8) length[i] = static_cast<unsigned char>(n & 0xff);
      out.write(reinterpret_cast<const char*>(length), 8);
      out.write(text.data(), static_cast<std::streamsize>(text.size()));
      for (const auto& t : data)
        out.write(static_cast<const char*>(t.data_ptr()),
                  static_cast<std::streamsize>(t.numel() * t.element_size()));
      if (!out.flush())
        throw WeightsError(
            fmt::format("cannot write '{}': {}; check that its folder is writable "
                        "and has free space",
                        file, strerror(errno)));
    });
  } catch (const WeightsError&) {
    throw;
  } catch (const std::runtime_error& e) {
    throw WeightsError(e.what());
  }
}

}  // namespace tlab::weights
