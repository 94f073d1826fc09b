#include "results/cairo_library.hpp"

#include <dlfcn.h>

#include <string>
#include <type_traits>

#include <fmt/format.h>

#include "results/plot.hpp"

namespace tlab::plot {

const char* const kCairoLibrary = "libcairo.so.2";

namespace {

Cairo load() {
  dlerror();
  // RTLD_LOCAL: its symbols serve only these pointers. Never closed: cairo keeps font caches.
  void* handle = dlopen(kCairoLibrary, RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = dlerror();
    throw PlotError(fmt::format(
        "cannot draw: cairo ({}) could not be loaded: {}; install it (apt install libcairo2, "
        "or tools/setup.sh); the commands that draw nothing still work",
        kCairoLibrary, why != nullptr ? why : "unknown reason"));
  }
  Cairo c;
  auto resolve = [&](auto& function, const char* name) {
    dlerror();
    void* symbol = dlsym(handle, name);
    if (symbol == nullptr)
      throw PlotError(fmt::format(
          "cannot draw: the cairo library {} has no function {} (a cairo older than 1.12?); "
          "install Debian's libcairo2",
          kCairoLibrary, name));
    function = reinterpret_cast<std::remove_reference_t<decltype(function)>>(symbol);
  };
#define TLAB_CAIRO_RESOLVE(name) resolve(c.name, "cairo_" #name);
  TLAB_CAIRO_FUNCTIONS(TLAB_CAIRO_RESOLVE)
#undef TLAB_CAIRO_RESOLVE
  return c;
}

}  // namespace

const Cairo& cairo() {
  static const Cairo loaded = load();  // a failed load throws and is tried again next time
  return loaded;
}

}  // namespace tlab::plot
