#pragma once
// cairo, opened on first use (dlopen). `tlab` links no cairo: the commands that draw nothing
// (--version, results list, sweep status, ...) would otherwise load it and the ~18 libraries it
// pulls in (X11, xcb, fontconfig, freetype, pixman, png), about 4 ms at every start on the
// machines we measure on (docs/benchmarks.md, "Commands that do not train").
//
// Example:
//   const Cairo& c = cairo();  // throws PlotError when libcairo.so.2 cannot be loaded
//   cairo_t* cr = c.create(surface);
#include <cairo.h>

namespace tlab::plot {

// The cairo functions tlab uses: X(name) for cairo_<name>.
#define TLAB_CAIRO_FUNCTIONS(X)    \
  X(close_path)                    \
  X(create)                        \
  X(destroy)                       \
  X(fill)                          \
  X(font_options_create)           \
  X(font_options_destroy)          \
  X(font_options_set_antialias)    \
  X(font_options_set_hint_metrics) \
  X(font_options_set_hint_style)   \
  X(image_surface_create)          \
  X(line_to)                       \
  X(move_to)                       \
  X(new_path)                      \
  X(paint)                         \
  X(rectangle)                     \
  X(restore)                       \
  X(rotate)                        \
  X(save)                          \
  X(scale)                         \
  X(select_font_face)              \
  X(set_dash)                      \
  X(set_fill_rule)                 \
  X(set_font_options)              \
  X(set_font_size)                 \
  X(set_line_cap)                  \
  X(set_line_join)                 \
  X(set_line_width)                \
  X(set_source_rgba)               \
  X(show_text)                     \
  X(status)                        \
  X(status_to_string)              \
  X(stroke)                        \
  X(surface_destroy)               \
  X(surface_flush)                 \
  X(surface_status)                \
  X(surface_write_to_png_stream)   \
  X(text_extents)                  \
  X(translate)                     \
  X(user_to_device_distance)

/// cairo's functions, by their names without the `cairo_` prefix.
struct Cairo {
#define TLAB_CAIRO_MEMBER(name) decltype(&::cairo_##name) name = nullptr;
  TLAB_CAIRO_FUNCTIONS(TLAB_CAIRO_MEMBER)
#undef TLAB_CAIRO_MEMBER
};

/// The shared library opened by cairo() ("libcairo.so.2", its soname).
extern const char* const kCairoLibrary;

/// cairo, loaded on the first call (thread-safe). Throws PlotError naming the library, the
/// loader's reason and the fix when it cannot be loaded or lacks a function.
const Cairo& cairo();

}  // namespace tlab::plot
