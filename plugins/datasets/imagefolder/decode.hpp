#pragma once
// PNG (libpng) and JPEG (libjpeg-turbo) decoding from memory to 8-bit pixels, for imagefolder.

#include <cstdint>
#include <string>
#include <vector>

namespace imagefolder {

/// Decoded pixels, row by row, `channels` interleaved bytes per pixel: 1 grey, 2 grey + alpha,
/// 3 RGB, 4 RGBA.
struct Pixels {
  int64_t width = 0, height = 0, channels = 0;
  std::vector<uint8_t> data;
};

/// Whether `bytes` starts with the PNG or the JPEG signature.
bool is_png(const std::string& bytes);
bool is_jpeg(const std::string& bytes);

/// Decodes a PNG (any colour type and bit depth: palettes and transparency are expanded,
/// 16-bit samples keep their high byte). Returns "" or the decoder's reason for failing.
std::string decode_png(const std::string& bytes, Pixels& out);

/// Decodes a baseline or progressive JPEG (grey or colour) to grey or RGB. Returns "" or the
/// decoder's reason for failing; a file that ends early is a failure.
std::string decode_jpeg(const std::string& bytes, Pixels& out);

}  // namespace imagefolder
