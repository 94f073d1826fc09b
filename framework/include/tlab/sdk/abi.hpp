#pragma once
/// \file abi.hpp
/// The ABI stamp: the first thing the loader reads from a plugin library, before it trusts any
/// C++ type in it. It is a plain C struct with a fixed layout that never changes across SDK
/// versions (new fields may only be appended, `size` tells how many there are).

#include <cstdint>

#include <torch/version.h>

/// Version of the SDK's binary interface. Bump it whenever a type that crosses between host and
/// plugin changes layout or a virtual function is added, removed or reordered: every plugin must
/// then be rebuilt. A test checks it (tests/abi/: the layout of every such type per version).
#define TLAB_SDK_ABI_VERSION 4

/// First 8 bytes of every stamp: "TLABPLUG" read as a little-endian integer.
#define TLAB_ABI_MAGIC 0x47554C5042414C54ULL

#if defined(__clang__)
#define TLAB_COMPILER_ID "clang"
#define TLAB_COMPILER_MAJOR __clang_major__
#elif defined(__GNUC__)
#define TLAB_COMPILER_ID "gcc"
#define TLAB_COMPILER_MAJOR __GNUC__
#else
#define TLAB_COMPILER_ID "unknown"
#define TLAB_COMPILER_MAJOR 0
#endif

#ifndef _GLIBCXX_USE_CXX11_ABI
#define TLAB_CXX11_ABI 0
#else
#define TLAB_CXX11_ABI _GLIBCXX_USE_CXX11_ABI
#endif

extern "C" {
/// The ABI stamp exported by every plugin as the C symbol `tlab_abi_stamp`.
struct TlabAbiStamp {
  uint64_t magic;          ///< Always TLAB_ABI_MAGIC.
  uint32_t size;           ///< sizeof(TlabAbiStamp) of the SDK that built the plugin.
  uint32_t sdk_abi;        ///< TLAB_SDK_ABI_VERSION the plugin was built with.
  char torch_version[32];  ///< LibTorch's TORCH_VERSION string, e.g. "1.13.1".
  int32_t cxx11_abi;       ///< _GLIBCXX_USE_CXX11_ABI (1 on Debian and PyTorch 2.x wheels).
  int32_t compiler_major;  ///< Major version of the compiler.
  char compiler[16];       ///< "gcc" or "clang".
};
}

namespace tlab {

/// The stamp of the code being compiled right now: what a plugin exports, and what the host
/// compares it with. Constant-initialised, so reading it runs no code of the plugin.
constexpr TlabAbiStamp kAbiStamp{TLAB_ABI_MAGIC,  sizeof(TlabAbiStamp), TLAB_SDK_ABI_VERSION,
                                 TORCH_VERSION,   TLAB_CXX11_ABI,       TLAB_COMPILER_MAJOR,
                                 TLAB_COMPILER_ID};

}  // namespace tlab
