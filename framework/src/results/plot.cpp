// One file (~1,200 lines) because every chart is one scene drawn twice: the layout (axes, ticks,
// legend, text measured with cairo) is shared by the SVG writer and the cairo PNG renderer, so
// that both show the same picture; the data side (learning curves, bars) builds that scene.
// The HTML report is in report_html.cpp.
#include "results/plot.hpp"
#include "results/cairo_library.hpp"
#include "tlab/sdk/files.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <set>
#include <utility>

#include <fmt/format.h>

#include "results/stats.hpp"
#include "util.hpp"

namespace tlab::plot {
namespace {

constexpr double kPi = 3.14159265358979323846;
const Color kText{34, 34, 34};
const Color kMuted{85, 85, 85};
const Color kGrid{230, 230, 230};
const Color kAxis{68, 68, 68};

// Numbers in SVG attributes: two decimals at most, no trailing zeros, never "-0".
std::string num(double v) {
  std::string s = fmt::format("{:.2f}", v);
  while (!s.empty() && s.back() == '0') s.pop_back();
  if (!s.empty() && s.back() == '.') s.pop_back();
  if (s == "-0") s = "0";
  return s;
}

bool finite(const Point& p) { return std::isfinite(p.x) && std::isfinite(p.y); }

// A font size both backends can draw; other texts are left out of both.
bool drawable_size(double size) { return std::isfinite(size) && size > 0; }

// `text` with every byte that does not start valid UTF-8 replaced by U+FFFD: cairo refuses
// invalid UTF-8 (and then draws nothing more), and the SVG must show what the PNG shows.
std::string valid_utf8(std::string_view text) {
  if (find_invalid_utf8(text) == std::string_view::npos) return std::string(text);
  std::string out;
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t len = utf8_sequence_length(text, i);
    if (len == 0) {
      out += "\xEF\xBF\xBD";
      ++i;
    } else {
      out.append(text.substr(i, len));
      i += len;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// cairo: one font setup for measuring and drawing

using SurfacePtr = std::unique_ptr<cairo_surface_t, decltype(Cairo::surface_destroy)>;
using ContextPtr = std::unique_ptr<cairo_t, decltype(Cairo::destroy)>;
using FontOptionsPtr = std::unique_ptr<cairo_font_options_t, decltype(Cairo::font_options_destroy)>;

// Unhinted outlines and metrics: a text's advance is then its size times a constant, so the
// widths measured for layout hold at every PNG scale (hinting would round them to whole device
// pixels). Grey anti-aliasing, never sub-pixel colour fringes.
void set_font(cairo_t* cr, double size, bool bold) {
  static const FontOptionsPtr options = [] {
    FontOptionsPtr o(cairo().font_options_create(), cairo().font_options_destroy);
    cairo().font_options_set_antialias(o.get(), CAIRO_ANTIALIAS_GRAY);
    cairo().font_options_set_hint_style(o.get(), CAIRO_HINT_STYLE_NONE);
    cairo().font_options_set_hint_metrics(o.get(), CAIRO_HINT_METRICS_OFF);
    return o;
  }();
  cairo().select_font_face(cr, kFontFamily, CAIRO_FONT_SLANT_NORMAL,
                           bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
  cairo().set_font_size(cr, size);
  cairo().set_font_options(cr, options.get());
}

// A context on a 1x1 surface, for measuring text (one per thread: cairo contexts are not
// thread-safe).
cairo_t* measuring_context() {
  thread_local const SurfacePtr surface(cairo().image_surface_create(CAIRO_FORMAT_A8, 1, 1),
                                        cairo().surface_destroy);
  thread_local const ContextPtr cr(cairo().create(surface.get()), cairo().destroy);
  return cr.get();
}

void set_color(cairo_t* cr, Color c, double opacity) {
  cairo().set_source_rgba(cr, c.r / 255.0, c.g / 255.0, c.b / 255.0, std::clamp(opacity, 0.0, 1.0));
}

// A polyline made of horizontal and vertical segments (gridlines, ticks, axes) is moved by less
// than half a device pixel so that its edges fall on pixel boundaries: crisp, not a blurred
// two-pixel grey line. Other polylines come back as they are.
std::vector<Point> snapped(cairo_t* cr, const std::vector<Point>& pts, double width) {
  for (std::size_t i = 1; i < pts.size(); ++i)
    if (pts[i].x != pts[i - 1].x && pts[i].y != pts[i - 1].y) return pts;
  double sx = 1, sy = 1, zero = 0;  // device pixels per scene unit along x and y
  cairo().user_to_device_distance(cr, &sx, &zero);
  zero = 0;
  cairo().user_to_device_distance(cr, &zero, &sy);
  const double w = std::max(1.0, std::round(width * sx));  // the line's width in pixels
  // The centre nearest to `v` of a line `w` pixels wide whose edges are on pixel boundaries.
  auto snap = [w](double v, double scale) {
    return (std::round(v * scale - w / 2) + w / 2) / scale;
  };
  std::vector<Point> out = pts;
  for (std::size_t i = 0; i < pts.size(); ++i) {
    const bool on_vertical =
        (i > 0 && pts[i].x == pts[i - 1].x) || (i + 1 < pts.size() && pts[i].x == pts[i + 1].x);
    const bool on_horizontal =
        (i > 0 && pts[i].y == pts[i - 1].y) || (i + 1 < pts.size() && pts[i].y == pts[i + 1].y);
    if (on_vertical) out[i].x = snap(pts[i].x, sx);
    if (on_horizontal) out[i].y = snap(pts[i].y, sy);
  }
  return out;
}

void draw_item(cairo_t* cr, const Item& item) {
  if (const auto* l = std::get_if<Polyline>(&item)) {
    std::vector<Point> pts;
    for (const auto& p : l->points)
      if (finite(p)) pts.push_back(p);
    if (pts.size() < 2) return;
    pts = snapped(cr, pts, l->width);
    cairo().new_path(cr);
    for (const auto& p : pts) cairo().line_to(cr, p.x, p.y);
    cairo().set_line_width(cr, l->width);
    cairo().set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
    cairo().set_line_cap(cr, CAIRO_LINE_CAP_BUTT);
    cairo().set_dash(cr, l->dash.data(), static_cast<int>(l->dash.size()), 0);
    set_color(cr, l->color, l->opacity);
    // One operation: a translucent line is not darker where it crosses itself, as in SVG.
    cairo().stroke(cr);
  } else if (const auto* p = std::get_if<Polygon>(&item)) {
    cairo().new_path(cr);
    int n = 0;
    for (const auto& q : p->points)
      if (finite(q)) {
        cairo().line_to(cr, q.x, q.y);
        ++n;
      }
    if (n < 3) return;
    cairo().close_path(cr);
    cairo().set_fill_rule(cr, CAIRO_FILL_RULE_WINDING);
    set_color(cr, p->color, p->opacity);
    cairo().fill(cr);
  } else if (const auto* r = std::get_if<Rect>(&item)) {
    if (!std::isfinite(r->x) || !std::isfinite(r->y) || !std::isfinite(r->w) ||
        !std::isfinite(r->h))
      return;
    cairo().new_path(cr);
    cairo().rectangle(cr, r->x, r->y, r->w, r->h);
    set_color(cr, r->color, r->opacity);
    cairo().fill(cr);
  } else if (const auto* t = std::get_if<Text>(&item)) {
    if (!std::isfinite(t->x) || !std::isfinite(t->y) || !drawable_size(t->size) || t->text.empty())
      return;
    const std::string s = valid_utf8(t->text);
    set_font(cr, t->size, t->bold);
    cairo_text_extents_t e;
    cairo().text_extents(cr, s.c_str(), &e);
    const double shift = t->anchor == Anchor::Start    ? 0
                         : t->anchor == Anchor::Middle ? e.x_advance / 2
                                                       : e.x_advance;
    cairo().save(cr);
    cairo().translate(cr, t->x, t->y);
    if (t->vertical) cairo().rotate(cr, -kPi / 2);
    cairo().new_path(cr);
    cairo().move_to(cr, -shift, 0);
    set_color(cr, t->color, 1);
    cairo().show_text(cr, s.c_str());
    cairo().restore(cr);
  }
}

cairo_status_t append_bytes(void* closure, const unsigned char* data, unsigned int length) {
  auto* out = static_cast<std::vector<uint8_t>*>(closure);
  out->insert(out->end(), data, data + length);
  return CAIRO_STATUS_SUCCESS;
}

// ---------------------------------------------------------------------------------------------
// Chart layout helpers

double round_step(double raw) {
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / mag;
  return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
}

std::string tick_label(double v, double step) {
  if (std::abs(v) < step * 1e-9) v = 0;
  const double mag = std::max(std::abs(v), step);
  std::string s;
  if (mag >= 1e9 || step < 1e-4) {
    // Scientific, with just enough mantissa digits to tell ticks one step apart.
    const int digits = static_cast<int>(std::floor(std::log10(mag) + 1e-9)) -
                       static_cast<int>(std::floor(std::log10(step) + 1e-9));
    s = fmt::format("{:.{}e}", v, std::max(0, digits));
  } else {
    const int decimals = step >= 1 ? 0 : static_cast<int>(std::ceil(-std::log10(step) - 1e-9));
    s = fmt::format("{:.{}f}", v, decimals);
  }
  if (s == "-0") s = "0";
  return s;
}

// `text` shortened with an ellipsis to fit `max_width` at `size` (whole characters kept).
std::string fit(const std::string& text, double size, double max_width, bool bold = false) {
  const std::string s = valid_utf8(text);
  if (text_width(s, size, bold) <= max_width) return s;
  const std::string ellipsis = "\u2026";
  std::vector<std::size_t> ends;  // byte offset after each character
  for (std::size_t i = 0; i < s.size();) {
    i += std::max<std::size_t>(1, utf8_sequence_length(s, i));
    ends.push_back(i);
  }
  // The longest prefix that fits with the ellipsis (the width grows with the prefix).
  std::size_t lo = 0, hi = ends.size();
  while (lo < hi) {
    const std::size_t mid = (lo + hi + 1) / 2;
    if (text_width(s.substr(0, ends[mid - 1]) + ellipsis, size, bold) <= max_width)
      lo = mid;
    else
      hi = mid - 1;
  }
  return (lo == 0 ? std::string() : s.substr(0, ends[lo - 1])) + ellipsis;
}

Text text(double x, double y, std::string s, double size, Anchor anchor = Anchor::Start,
          Color color = kText) {
  Text t;
  t.x = x;
  t.y = y;
  t.text = std::move(s);
  t.size = size;
  t.anchor = anchor;
  t.color = color;
  return t;
}

Polyline line(std::vector<Point> pts, Color color, double width) {
  Polyline l;
  l.points = std::move(pts);
  l.color = color;
  l.width = width;
  return l;
}

// The plot area and everything around it that both chart kinds share.
struct Frame {
  double left = 0, top = 0, right = 0, bottom = 0;
  double legend_x = 0, legend_width = 0;
  Ticks y;
  double map_y(double v) const { return bottom - (v - y.lo) / (y.hi - y.lo) * (bottom - top); }
};

struct LegendEntry {
  std::string label;
  Color color;
  std::vector<double> dash;
  bool band = false;  // line charts: a band swatch under the line
  bool box = false;   // bar charts: a filled square
};

constexpr double kTickSize = 11, kLabelSize = 12, kTitleSize = 15, kNoteSize = 11;
constexpr double kNoteLine = 14, kLegendLine = 18;
constexpr double kMargin = 10;  // kept free around the figure's edge

Frame layout(Scene& scene, const std::string& title, const std::string& x_label,
             const std::string& y_label, const Ticks& y_ticks,
             const std::vector<std::string>& notes, const std::string& legend_title,
             const std::vector<LegendEntry>& legend) {
  Frame f;
  f.y = y_ticks;
  const double w = scene.width, h = scene.height;
  double tick_width = 0;
  for (const auto& l : y_ticks.labels) tick_width = std::max(tick_width, text_width(l, kTickSize));
  f.left = 12 + (y_label.empty() ? 0 : 20) + tick_width + 8;
  f.top = title.empty() ? 16 : 42;
  f.bottom = h - 26 - (x_label.empty() ? 0 : 20) - notes.size() * kNoteLine - 6;
  if (legend.size() > 1 || !legend_title.empty()) {
    double lw = text_width(legend_title, kLabelSize, true);
    for (const auto& e : legend) lw = std::max(lw, 30 + text_width(e.label, kLabelSize));
    f.legend_width = std::min(lw, w * 0.35);
    f.legend_x = w - 2 * kMargin - f.legend_width;
    f.right = f.legend_x - 16;
  } else {
    f.right = w - 20;
  }
  if (f.right - f.left < 40 || f.bottom - f.top < 40)
    throw PlotError(fmt::format(
        "a {}x{} figure leaves no room for the plot area (labels and notes take it all); "
        "use a larger --width/--height",
        scene.width, scene.height));

  // Gridlines, axes, tick labels.
  for (std::size_t i = 0; i < y_ticks.values.size(); ++i) {
    const double y = f.map_y(y_ticks.values[i]);
    scene.items.push_back(line({{f.left, y}, {f.right, y}}, kGrid, 1));
    scene.items.push_back(line({{f.left - 4, y}, {f.left, y}}, kAxis, 1));
    scene.items.push_back(
        text(f.left - 7, y + kTickSize * 0.35, y_ticks.labels[i], kTickSize, Anchor::End));
  }
  if (!title.empty()) {
    // Centred over the plot area, but moved (not clipped) to stay inside the figure: with a
    // legend on the right, the plot area's centre is left of the figure's.
    Text t = text(0, 26, fit(title, kTitleSize, w - 2 * kMargin, true), kTitleSize, Anchor::Middle);
    t.bold = true;
    const double half = text_width(t.text, kTitleSize, true) / 2;
    t.x = std::clamp((f.left + f.right) / 2, kMargin + half,
                     std::max(kMargin + half, w - kMargin - half));
    scene.items.push_back(t);
  }
  if (!x_label.empty())
    scene.items.push_back(text((f.left + f.right) / 2, f.bottom + 40,
                               fit(x_label, kLabelSize, f.right - f.left), kLabelSize,
                               Anchor::Middle));
  if (!y_label.empty()) {
    Text t = text(12 + kLabelSize * 0.8, (f.top + f.bottom) / 2,
                  fit(y_label, kLabelSize, f.bottom - f.top), kLabelSize, Anchor::Middle);
    t.vertical = true;
    scene.items.push_back(t);
  }
  for (std::size_t i = 0; i < notes.size(); ++i)
    scene.items.push_back(text(12, h - 10 - (notes.size() - 1 - i) * kNoteLine,
                               fit(notes[i], kNoteSize, w - 24), kNoteSize, Anchor::Start, kMuted));

  // Legend.
  double y = f.top + 4;
  if (f.legend_width > 0) {
    if (!legend_title.empty()) {
      Text t =
          text(f.legend_x, y + 10, fit(legend_title, kLabelSize, f.legend_width, true), kLabelSize);
      t.bold = true;
      scene.items.push_back(t);
      y += kLegendLine + 2;
    }
    for (const auto& e : legend) {
      if (y + kLegendLine > h - 10) break;
      const double cy = y + 6;
      if (e.box) {
        scene.items.push_back(Rect{f.legend_x + 5, cy - 6, 12, 12, e.color, 1});
      } else {
        if (e.band) scene.items.push_back(Rect{f.legend_x, cy - 5, 22, 10, e.color, 0.2});
        Polyline l = line({{f.legend_x, cy}, {f.legend_x + 22, cy}}, e.color, 2);
        l.dash = e.dash;
        scene.items.push_back(l);
      }
      scene.items.push_back(text(f.legend_x + 30, cy + kLabelSize * 0.35,
                                 fit(e.label, kLabelSize, f.legend_width - 30), kLabelSize));
      y += kLegendLine;
    }
  }
  return f;
}

std::vector<std::string> with_caption(const std::string& caption,
                                      const std::vector<std::string>& notes) {
  std::vector<std::string> lines;
  if (!caption.empty()) lines.push_back(caption);
  lines.insert(lines.end(), notes.begin(), notes.end());
  return lines;
}

void axes_lines(Scene& scene, const Frame& f) {
  scene.items.push_back(line({{f.left, f.top}, {f.left, f.bottom}, {f.right, f.bottom}}, kAxis, 1));
}

// ---------------------------------------------------------------------------------------------
// Runs, params and groups

using ParamMap = std::map<std::string, std::string>;

bool parse_number(const std::string& s, double& out) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  out = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size() && errno == 0;
}

// Numbers by value before text; text in byte order.
bool natural_less(const std::string& a, const std::string& b) {
  double x = 0, y = 0;
  const bool nx = parse_number(a, x), ny = parse_number(b, y);
  if (nx && ny && x != y) return x < y;
  if (nx != ny) return nx;
  return a < b;
}

std::vector<std::string> varying(const std::vector<const RunSummaryRow*>& runs,
                                 const std::vector<ParamMap>& maps) {
  std::map<std::string, std::set<std::string>> values;
  std::map<std::string, std::size_t> present;
  for (const auto& m : maps)
    for (const auto& [k, v] : m) {
      values[k].insert(v);
      ++present[k];
    }
  std::vector<std::string> keys;
  for (const auto& [k, vs] : values)
    if (vs.size() > 1 || present[k] != runs.size()) keys.push_back(k);
  return keys;
}

std::vector<std::string> config_keys_of(const std::vector<const RunSummaryRow*>& runs,
                                        const std::vector<std::string>& exclude) {
  std::vector<ParamMap> maps;
  for (const auto* r : runs) maps.push_back(param_texts(*r));
  const auto vary = varying(runs, maps);
  auto excluded = [&](const std::string& k) {
    return k == "seed" || std::find(exclude.begin(), exclude.end(), k) != exclude.end();
  };
  std::vector<std::string> keys;
  for (const auto& k : vary) {
    if (excluded(k)) continue;
    const auto dot = k.find('.');
    if (dot == std::string::npos || k.substr(dot + 1) == "plugin") {
      keys.push_back(k);
      continue;
    }
    // An option of a plugin that varies distinguishes runs only where it varies among the runs
    // of one plugin.
    const std::string plugin_key = k.substr(0, dot) + ".plugin";
    if (std::find(vary.begin(), vary.end(), plugin_key) == vary.end()) {
      keys.push_back(k);
      continue;
    }
    std::map<std::string, std::set<std::string>> per_plugin;
    for (const auto& m : maps) {
      auto p = m.find(plugin_key);
      auto v = m.find(k);
      per_plugin[p == m.end() ? "" : p->second].insert(v == m.end() ? "\x01" : v->second);
    }
    for (const auto& [plugin, values] : per_plugin)
      if (values.size() > 1) {
        keys.push_back(k);
        break;
      }
  }
  return keys;
}

std::vector<const RunSummaryRow*> select_status(const std::vector<RunSummaryRow>& runs,
                                                bool include_unfinished, std::size_t& left_out) {
  std::vector<const RunSummaryRow*> out;
  left_out = 0;
  for (const auto& r : runs) {
    if (include_unfinished || r.status == "finished")
      out.push_back(&r);
    else
      ++left_out;
  }
  return out;
}

void check_keys(const std::vector<const RunSummaryRow*>& runs, const std::vector<std::string>& keys,
                const std::string& option) {
  std::set<std::string> all;
  for (const auto* r : runs)
    for (const auto& p : r->params) all.insert(p.key);
  for (const auto& k : keys) {
    if (all.count(k)) continue;
    std::vector<std::string> names(all.begin(), all.end());
    const std::string hint = did_you_mean(nearest(k, names));
    throw PlotError(fmt::format(
        "{} names '{}', a param no selected run has{}; params of the runs: {}", option, k,
        hint.empty() ? "" : " (" + hint + ")", names.empty() ? "(none)" : join(names, ", ")));
  }
}

std::string id_list(std::vector<int64_t> ids) {
  std::sort(ids.begin(), ids.end());
  std::vector<std::string> parts;
  for (std::size_t i = 0; i < ids.size() && i < 8; ++i) parts.push_back(std::to_string(ids[i]));
  if (ids.size() > 8) parts.push_back(fmt::format("... ({} in all)", ids.size()));
  return join(parts, ", ");
}

std::string pooled_note(const std::vector<std::string>& pooled, const std::string& option) {
  return fmt::format("averaged over runs that differ in {} (add to {} to separate them)",
                     join(pooled, ", "), option);
}

std::string default_title(const std::string& metric, const std::vector<std::string>& keys) {
  if (keys.empty()) return metric;
  std::vector<std::string> shown;
  for (const auto& k : keys) shown.push_back(display_key(k));
  return metric + " by " + join(shown, ", ");
}

// A run's rows of one metric, split at the start of its target stage: the first step at which
// the run logs a `target/` metric (every stage counts its epochs from 0; the target stage is
// the runner's last). A run that logs no `target/` metric has all its rows before it.
struct RunRows {
  std::vector<const MetricRow*> before, target;
};

RunRows split_at_target_stage(const std::vector<MetricRow>& history, const std::string& metric) {
  int64_t start = std::numeric_limits<int64_t>::max();
  for (const auto& m : history)
    if (m.name.rfind("target/", 0) == 0) start = std::min(start, m.step);
  RunRows out;
  for (const auto& m : history)
    if (m.name == metric) (m.step >= start ? out.target : out.before).push_back(&m);
  return out;
}

// The legend names the keys once; entries show the values ("finetune, usps").
std::string legend_title(const std::vector<std::string>& keys) {
  std::vector<std::string> shown;
  for (const auto& k : keys) shown.push_back(display_key(k));
  return join(shown, ", ");
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Colours, escaping

std::string Color::hex() const { return fmt::format("#{:02x}{:02x}{:02x}", r, g, b); }

const std::vector<Color>& palette() {
  static const std::vector<Color> colors = {
      {0x00, 0x72, 0xB2},  // blue
      {0xE6, 0x9F, 0x00},  // orange
      {0x00, 0x9E, 0x73},  // bluish green
      {0xD5, 0x5E, 0x00},  // vermillion
      {0xCC, 0x79, 0xA7},  // reddish purple
      {0x56, 0xB4, 0xE9},  // sky blue
      {0xF0, 0xE4, 0x42},  // yellow
      {0x00, 0x00, 0x00},  // black
  };
  return colors;
}

Color series_color(std::size_t index) { return palette()[index % palette().size()]; }

std::vector<double> dash_for(std::size_t index) {
  switch ((index / palette().size()) % 3) {
    case 0:
      return {};
    case 1:
      return {7, 4};
    default:
      return {2, 3};
  }
}

std::string escape_html(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        // Control characters other than tab/newline are not allowed in XML 1.0.
        if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n' && c != '\r')
          out += "\xEF\xBF\xBD";  // U+FFFD
        else
          out += c;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Scene backends

double text_width(std::string_view text, double size, bool bold) {
  if (text.empty() || !drawable_size(size)) return 0;
  cairo_t* cr = measuring_context();
  set_font(cr, size, bold);
  cairo_text_extents_t e;
  cairo().text_extents(cr, valid_utf8(text).c_str(), &e);
  return e.x_advance;
}

std::string to_svg(const Scene& scene) {
  std::string out = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" "
      "viewBox=\"0 0 {0} {1}\" role=\"img\" "
      "font-family=\"DejaVu Sans, Verdana, Arial, sans-serif\">\n",
      scene.width, scene.height);
  if (!scene.title.empty()) out += "<title>" + escape_html(scene.title) + "</title>\n";
  out += fmt::format("<rect x=\"0\" y=\"0\" width=\"{}\" height=\"{}\" fill=\"{}\"/>\n",
                     scene.width, scene.height, scene.background.hex());
  auto points = [](const std::vector<Point>& pts) {
    std::string s;
    for (const auto& p : pts) {
      if (!finite(p)) continue;
      if (!s.empty()) s += ' ';
      s += num(p.x) + "," + num(p.y);
    }
    return s;
  };
  auto opacity = [](const char* attr, double o) {
    return o < 1 ? fmt::format(" {}=\"{}\"", attr, num(std::max(o, 0.0))) : std::string();
  };
  for (const auto& item : scene.items) {
    if (const auto* l = std::get_if<Polyline>(&item)) {
      const std::string pts = points(l->points);
      if (pts.find(' ') == std::string::npos) continue;  // fewer than two points
      std::string dash;
      if (!l->dash.empty()) {
        std::vector<std::string> parts;
        for (double d : l->dash) parts.push_back(num(d));
        dash = " stroke-dasharray=\"" + join(parts, " ") + "\"";
      }
      out += fmt::format(
          "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"{}\" "
          "stroke-linejoin=\"round\"{}{}/>\n",
          pts, l->color.hex(), num(l->width), opacity("stroke-opacity", l->opacity), dash);
    } else if (const auto* p = std::get_if<Polygon>(&item)) {
      const std::string pts = points(p->points);
      if (pts.empty()) continue;
      out += fmt::format("<polygon points=\"{}\" fill=\"{}\"{}/>\n", pts, p->color.hex(),
                         opacity("fill-opacity", p->opacity));
    } else if (const auto* r = std::get_if<Rect>(&item)) {
      if (!std::isfinite(r->x) || !std::isfinite(r->y) || !std::isfinite(r->w) ||
          !std::isfinite(r->h))
        continue;
      out += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"{}/>\n",
                         num(std::min(r->x, r->x + r->w)), num(std::min(r->y, r->y + r->h)),
                         num(std::abs(r->w)), num(std::abs(r->h)), r->color.hex(),
                         opacity("fill-opacity", r->opacity));
    } else if (const auto* t = std::get_if<Text>(&item)) {
      if (!std::isfinite(t->x) || !std::isfinite(t->y) || !drawable_size(t->size) ||
          t->text.empty())
        continue;
      const char* anchor = t->anchor == Anchor::Start    ? "start"
                           : t->anchor == Anchor::Middle ? "middle"
                                                         : "end";
      out += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"{}\" fill=\"{}\" text-anchor=\"{}\"",
                         num(t->x), num(t->y), num(t->size), t->color.hex(), anchor);
      if (t->bold) out += " font-weight=\"bold\"";
      if (t->vertical) out += fmt::format(" transform=\"rotate(-90 {} {})\"", num(t->x), num(t->y));
      out += ">" + escape_html(valid_utf8(t->text)) + "</text>\n";
    }
  }
  out += "</svg>\n";
  return out;
}

std::vector<uint8_t> render_png(const Scene& scene, double scale) {
  if (!(scale > 0) || scale > 16)
    throw PlotError(fmt::format("PNG scale {} is out of range; expected 0 < scale <= 16", scale));
  if (scene.width <= 0 || scene.height <= 0)
    throw PlotError(fmt::format(
        "cannot draw a {}x{} figure: expected a positive width and height (--width, --height)",
        scene.width, scene.height));
  const int width = std::max(1, static_cast<int>(std::lround(scene.width * scale)));
  const int height = std::max(1, static_cast<int>(std::lround(scene.height * scale)));
  const SurfacePtr surface(cairo().image_surface_create(CAIRO_FORMAT_RGB24, width, height),
                           cairo().surface_destroy);
  if (cairo().surface_status(surface.get()) != CAIRO_STATUS_SUCCESS)
    throw PlotError(fmt::format(
        "cairo cannot make a {}x{} pixel image for a {}x{} figure at scale {}: {}; use a "
        "smaller --scale, --width or --height (at most 32767 pixels a side)",
        width, height, scene.width, scene.height, scale,
        cairo().status_to_string(cairo().surface_status(surface.get()))));
  const ContextPtr cr(cairo().create(surface.get()), cairo().destroy);
  cairo().scale(cr.get(), static_cast<double>(width) / scene.width,
                static_cast<double>(height) / scene.height);
  set_color(cr.get(), scene.background, 1);
  cairo().paint(cr.get());
  for (const auto& item : scene.items) draw_item(cr.get(), item);
  cairo().surface_flush(surface.get());
  std::vector<uint8_t> bytes;
  cairo_status_t status = cairo().status(cr.get());
  if (status == CAIRO_STATUS_SUCCESS)
    status = cairo().surface_write_to_png_stream(surface.get(), append_bytes, &bytes);
  if (status != CAIRO_STATUS_SUCCESS)
    throw PlotError(fmt::format("cairo cannot draw the {}x{} figure '{}' as PNG: {}", scene.width,
                                scene.height, scene.title, cairo().status_to_string(status)));
  return bytes;
}

// ---------------------------------------------------------------------------------------------
// Ticks

Ticks nice_ticks(double lo, double hi, int target, bool integer) {
  if (!std::isfinite(lo) || !std::isfinite(hi))
    throw PlotError(
        fmt::format("cannot make axis ticks for the range [{}, {}]: both ends must be "
                    "finite numbers",
                    lo, hi));
  if (lo > hi) std::swap(lo, hi);
  target = std::max(target, 2);
  if (hi - lo <= 1e-12 * std::max(1.0, std::abs(lo))) {
    const double pad = integer ? 1.0 : lo == 0 ? 1.0 : std::abs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  double step = round_step((hi - lo) / (target - 1));
  if (integer) step = std::max(step, 1.0);
  Ticks t;
  const double k0 = std::floor(lo / step + 1e-9), k1 = std::ceil(hi / step - 1e-9);
  t.step = step;
  t.lo = k0 * step;
  t.hi = k1 * step;
  for (double k = k0; k <= k1 + 0.5; k += 1) {
    t.values.push_back(k * step);
    t.labels.push_back(tick_label(k * step, step));
  }
  return t;
}

// ---------------------------------------------------------------------------------------------
// Charts

Scene line_chart(const LineChart& chart, Size size) {
  Scene scene;
  scene.width = size.width;
  scene.height = size.height;
  scene.title = chart.title;
  double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;
  std::vector<LegendEntry> legend;
  for (std::size_t i = 0; i < chart.series.size(); ++i) {
    const auto& s = chart.series[i];
    const bool band = s.lo.size() == s.x.size() && s.hi.size() == s.x.size();
    bool any = false;
    for (std::size_t j = 0; j < s.x.size() && j < s.y.size(); ++j) {
      if (!std::isfinite(s.x[j]) || !std::isfinite(s.y[j])) continue;
      any = true;
      x0 = std::min(x0, s.x[j]);
      x1 = std::max(x1, s.x[j]);
      y0 = std::min(y0, s.y[j]);
      y1 = std::max(y1, s.y[j]);
      if (band && std::isfinite(s.lo[j]) && std::isfinite(s.hi[j])) {
        y0 = std::min(y0, s.lo[j]);
        y1 = std::max(y1, s.hi[j]);
      }
    }
    if (any)
      legend.push_back({s.label, series_color(i), s.markers ? std::vector<double>{} : dash_for(i),
                        band, s.markers});
  }
  if (legend.empty())
    throw PlotError(fmt::format("nothing to plot in '{}': no series has a finite point",
                                chart.title.empty() ? chart.y_label : chart.title));
  const Ticks xt = nice_ticks(x0, x1, 7, chart.integer_x);
  const Ticks yt = nice_ticks(y0, y1, 6);
  Frame f = layout(scene, chart.title, chart.x_label, chart.y_label, yt,
                   with_caption(chart.caption, chart.notes), chart.legend_title, legend);
  auto map_x = [&](double v) {
    return f.left + (v - xt.lo) / (xt.hi - xt.lo) * (f.right - f.left);
  };
  for (std::size_t i = 0; i < xt.values.size(); ++i) {
    const double x = map_x(xt.values[i]);
    scene.items.push_back(line({{x, f.top}, {x, f.bottom}}, kGrid, 1));
    scene.items.push_back(line({{x, f.bottom}, {x, f.bottom + 4}}, kAxis, 1));
    scene.items.push_back(
        text(x, f.bottom + 6 + kTickSize, xt.labels[i], kTickSize, Anchor::Middle));
  }
  axes_lines(scene, f);
  // Bands first, so that every line is drawn over every band.
  for (std::size_t i = 0; i < chart.series.size(); ++i) {
    const auto& s = chart.series[i];
    if (s.lo.size() != s.x.size() || s.hi.size() != s.x.size()) continue;
    std::vector<Point> upper, lower;
    auto flush = [&] {
      if (upper.size() >= 2) {
        Polygon p;
        p.points = upper;
        p.points.insert(p.points.end(), lower.rbegin(), lower.rend());
        p.color = series_color(i);
        p.opacity = 0.2;
        scene.items.push_back(p);
      }
      upper.clear();
      lower.clear();
    };
    for (std::size_t j = 0; j < s.x.size() && j < s.y.size(); ++j) {
      if (!std::isfinite(s.x[j]) || !std::isfinite(s.lo[j]) || !std::isfinite(s.hi[j])) {
        flush();
        continue;
      }
      upper.push_back({map_x(s.x[j]), f.map_y(s.hi[j])});
      lower.push_back({map_x(s.x[j]), f.map_y(s.lo[j])});
    }
    flush();
  }
  for (std::size_t i = 0; i < chart.series.size(); ++i) {
    const auto& s = chart.series[i];
    std::vector<Point> pts;
    auto flush = [&] {
      if (s.markers) {  // a scatter: a marker per point (a circle-like octagon), no line
        const bool square = i >= palette().size();  // the palette's next round: squares
        for (const auto& q : pts) {
          if (square) {
            scene.items.push_back(Rect{q.x - 3.5, q.y - 3.5, 7, 7, series_color(i), 0.85});
            continue;
          }
          Polygon m;
          for (int k = 0; k < 8; ++k)
            m.points.push_back({q.x + 4 * std::cos(k * 0.785398163397448 + 0.3927),
                                q.y + 4 * std::sin(k * 0.785398163397448 + 0.3927)});
          m.color = series_color(i);
          m.opacity = 0.85;
          scene.items.push_back(m);
        }
      } else if (pts.size() == 1) {  // a lone point: a small square marker
        scene.items.push_back(Rect{pts[0].x - 3, pts[0].y - 3, 6, 6, series_color(i), 1});
      } else if (pts.size() > 1) {
        Polyline l = line(pts, series_color(i), 2);
        l.dash = dash_for(i);
        scene.items.push_back(l);
      }
      pts.clear();
    };
    for (std::size_t j = 0; j < s.x.size() && j < s.y.size(); ++j) {
      if (!std::isfinite(s.x[j]) || !std::isfinite(s.y[j])) {
        flush();
        continue;
      }
      pts.push_back({map_x(s.x[j]), f.map_y(s.y[j])});
    }
    flush();
  }
  return scene;
}

Scene bar_chart(const BarChart& chart, Size size) {
  Scene scene;
  scene.width = size.width;
  scene.height = size.height;
  scene.title = chart.title;
  double y0 = 0, y1 = 0;
  bool any = false;
  for (const auto& row : chart.values)
    for (const auto& v : row) {
      if (v.n == 0 || !std::isfinite(v.mean)) continue;
      any = true;
      y0 = std::min(y0, v.mean);
      y1 = std::max(y1, v.mean);
      if (std::isfinite(v.lo) && std::isfinite(v.hi)) {
        y0 = std::min(y0, v.lo);
        y1 = std::max(y1, v.hi);
      }
    }
  if (!any || chart.categories.empty() || chart.groups.empty())
    throw PlotError(fmt::format("nothing to plot in '{}': no bar has a finite value",
                                chart.title.empty() ? chart.y_label : chart.title));
  std::vector<LegendEntry> legend;
  for (std::size_t g = 0; g < chart.groups.size(); ++g)
    legend.push_back({chart.groups[g], series_color(g), {}, false, true});
  const Ticks yt = nice_ticks(y0, y1, 6);
  Frame f = layout(scene, chart.title, chart.x_label, chart.y_label, yt,
                   with_caption(chart.caption, chart.notes), chart.legend_title, legend);
  const double slot = (f.right - f.left) / chart.categories.size();
  const double bar = std::min(slot * 0.8 / chart.groups.size(), 90.0);
  const double inset = (slot - bar * chart.groups.size()) / 2;  // centres the bars in the slot
  for (std::size_t c = 0; c < chart.categories.size(); ++c) {
    const double cx = f.left + slot * (c + 0.5);
    scene.items.push_back(text(cx, f.bottom + 6 + kTickSize,
                               fit(chart.categories[c], kTickSize, slot - 4), kTickSize,
                               Anchor::Middle));
    for (std::size_t g = 0; g < chart.groups.size() && g < chart.values.size(); ++g) {
      if (c >= chart.values[g].size()) continue;
      const BarValue& v = chart.values[g][c];
      if (v.n == 0 || !std::isfinite(v.mean)) continue;
      const double x = f.left + slot * c + inset + g * bar;
      const double top = f.map_y(std::max(v.mean, 0.0)), base = f.map_y(std::min(v.mean, 0.0));
      scene.items.push_back(
          Rect{x + 1, top, std::max(bar - 2, 1.0), base - top, series_color(g), 1});
      if (v.n > 1 && std::isfinite(v.lo) && std::isfinite(v.hi) && v.hi > v.lo) {
        const double mx = x + bar / 2, cap = std::min(bar * 0.3, 8.0);
        const double ylo = f.map_y(v.lo), yhi = f.map_y(v.hi);
        scene.items.push_back(line({{mx, ylo}, {mx, yhi}}, kText, 1.5));
        scene.items.push_back(line({{mx - cap, ylo}, {mx + cap, ylo}}, kText, 1.5));
        scene.items.push_back(line({{mx - cap, yhi}, {mx + cap, yhi}}, kText, 1.5));
      }
    }
  }
  axes_lines(scene, f);
  if (yt.lo < 0)
    scene.items.push_back(line({{f.left, f.map_y(0)}, {f.right, f.map_y(0)}}, kAxis, 1));
  return scene;
}

// ---------------------------------------------------------------------------------------------
// From the results store

XAxis parse_x_axis(const std::string& name) {
  if (name == "epoch") return XAxis::Epoch;
  if (name == "step") return XAxis::Step;
  throw PlotError(fmt::format(
      "unknown x axis '{}'; expected 'epoch' (of the target stage) or 'step' (global)", name));
}

Band parse_band(const std::string& name) {
  if (name == "se") return Band::StdErr;
  if (name == "minmax") return Band::MinMax;
  if (name == "none") return Band::None;
  throw PlotError(
      fmt::format("unknown band '{}'; expected 'se' (± standard error), 'minmax' or "
                  "'none'",
                  name));
}

std::string display_key(const std::string& key) {
  const std::string suffix = ".plugin";
  if (key.size() > suffix.size() &&
      key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0)
    return key.substr(0, key.size() - suffix.size());
  return key;
}

std::map<std::string, std::string> param_texts(const RunSummaryRow& run) {
  std::map<std::string, std::string> m;
  for (const auto& p : run.params) m[p.key] = param_text(p.value);
  return m;
}

std::vector<std::string> config_keys(const std::vector<RunSummaryRow>& runs,
                                     const std::vector<std::string>& exclude) {
  std::vector<const RunSummaryRow*> ptrs;
  for (const auto& r : runs) ptrs.push_back(&r);
  return config_keys_of(ptrs, exclude);
}

std::vector<std::string> config_keys(const std::vector<const RunSummaryRow*>& runs,
                                     const std::vector<std::string>& exclude) {
  return config_keys_of(runs, exclude);
}

std::vector<std::string> pooled_keys(const std::vector<RunGroup>& groups,
                                     const std::vector<std::string>& skip) {
  std::set<std::string> pooled;
  for (const auto& g : groups)
    for (const auto& k : config_keys_of(g.runs, skip)) pooled.insert(k);
  return {pooled.begin(), pooled.end()};
}

std::vector<RunGroup> group_runs(const std::vector<const RunSummaryRow*>& runs,
                                 const std::vector<std::string>& keys) {
  std::map<std::vector<std::string>, std::vector<const RunSummaryRow*>> by_values;
  for (const auto* r : runs) {
    const auto m = param_texts(*r);
    std::vector<std::string> values;
    for (const auto& k : keys) {
      auto it = m.find(k);
      values.push_back(it == m.end() ? "" : it->second);
    }
    by_values[values].push_back(r);
  }
  std::vector<RunGroup> groups;
  for (auto& [values, members] : by_values) {
    RunGroup g;
    g.values = values;
    g.runs = members;
    std::vector<std::string> parts;
    for (const auto& v : values) parts.push_back(v.empty() ? "-" : v);
    g.label = keys.empty()                            ? "all runs"
              : keys.size() == 1 && values[0].empty() ? "(none)"
                                                      : join(parts, ", ");
    groups.push_back(std::move(g));
  }
  std::sort(groups.begin(), groups.end(), [](const RunGroup& a, const RunGroup& b) {
    for (std::size_t i = 0; i < a.values.size(); ++i) {
      if (natural_less(a.values[i], b.values[i])) return true;
      if (natural_less(b.values[i], a.values[i])) return false;
    }
    return false;
  });
  return groups;
}

LineChart learning_curves(const std::vector<RunSummaryRow>& runs, const Histories& histories,
                          const CurveOptions& options) {
  std::size_t left_out = 0;
  const auto selected = select_status(runs, options.include_unfinished, left_out);
  if (selected.empty())
    throw PlotError(fmt::format(
        "no runs to plot: {} run(s) selected, none of them finished; check --where, or pass "
        "--include-unfinished to plot runs that did not finish",
        runs.size()));
  check_keys(selected, options.group_by, "--group-by");
  const auto keys = options.group_by.empty() ? config_keys_of(selected, {}) : options.group_by;
  const auto groups = group_runs(selected, keys);

  // The rows of the metric each run contributes: with XAxis::Epoch those of its target stage,
  // or, when no run logs the metric there, those from before it.
  std::set<std::string> names;
  std::map<int64_t, RunRows> rows;
  bool any_in_target = false;
  for (const auto* r : selected) {
    auto it = histories.find(r->id);
    if (it == histories.end()) continue;
    for (const auto& m : it->second) names.insert(m.name);
    RunRows split = split_at_target_stage(it->second, options.metric);
    any_in_target = any_in_target || !split.target.empty();
    rows.emplace(r->id, std::move(split));
  }
  const bool before_target = options.x == XAxis::Epoch && !any_in_target;

  LineChart chart;
  chart.title = options.title.empty() ? default_title(options.metric, keys) : options.title;
  chart.x_label = options.x == XAxis::Step ? "step"
                  : before_target          ? "epoch (of the stage before the target stage)"
                                           : "epoch (of the target stage)";
  chart.y_label = options.metric;
  chart.legend_title = legend_title(keys);
  chart.integer_x = true;
  std::vector<int64_t> nonfinite_runs, missing_runs, before_only_runs;
  std::size_t nonfinite = 0, with_metric = 0;
  for (const auto& g : groups) {
    std::map<double, std::vector<double>> at;  // x -> one finite value per run
    std::size_t members = 0;
    for (const auto* r : g.runs) {
      std::map<double, double> last;  // a run's last value at each x
      auto it = rows.find(r->id);
      if (it != rows.end()) {
        const RunRows& split = it->second;
        std::vector<const MetricRow*> used = before_target ? split.before : split.target;
        if (options.x == XAxis::Step)
          used.insert(used.begin(), split.before.begin(), split.before.end());
        for (const auto* m : used)
          last[static_cast<double>(options.x == XAxis::Step ? m->step : m->epoch)] = m->value;
        if (last.empty() && !split.before.empty()) {
          before_only_runs.push_back(r->id);
          continue;
        }
      }
      if (last.empty()) {
        missing_runs.push_back(r->id);
        continue;
      }
      ++members;
      bool bad = false;
      for (const auto& [x, v] : last) {
        if (std::isfinite(v)) {
          at[x].push_back(v);
        } else {
          ++nonfinite;
          bad = true;
        }
      }
      if (bad) nonfinite_runs.push_back(r->id);
    }
    if (members == 0) continue;
    with_metric += members;
    Series s;
    s.label = fmt::format("{} (n={})", g.label, members);
    for (const auto& [x, values] : at) {
      const MeanSe m = mean_se(values);
      s.x.push_back(x);
      s.y.push_back(m.mean);
      if (options.band == Band::StdErr) {
        s.lo.push_back(m.mean - m.se);
        s.hi.push_back(m.mean + m.se);
      } else if (options.band == Band::MinMax) {
        s.lo.push_back(*std::min_element(values.begin(), values.end()));
        s.hi.push_back(*std::max_element(values.begin(), values.end()));
      }
    }
    chart.series.push_back(std::move(s));
  }
  if (with_metric == 0) {
    std::vector<std::string> known(names.begin(), names.end());
    const std::string hint = did_you_mean(nearest(options.metric, known));
    throw PlotError(fmt::format(
        "no metric history '{}' in the {} selected run(s){}; metrics recorded there: {}",
        options.metric, selected.size(), hint.empty() ? "" : " (" + hint + ")",
        known.empty() ? "(none)" : join(known, ", ")));
  }
  chart.caption =
      (options.band == Band::StdErr   ? "line: mean over runs (seeds); band: ± 1 standard error"
       : options.band == Band::MinMax ? "line: mean over runs (seeds); band: min to max"
                                      : "line: mean over runs (seeds)");
  if (nonfinite)
    chart.notes.push_back(fmt::format("skipped {} NaN/Inf value(s) of {} (runs {})", nonfinite,
                                      options.metric, id_list(nonfinite_runs)));
  if (!missing_runs.empty())
    chart.notes.push_back(fmt::format("{} run(s) without a {} history: {}", missing_runs.size(),
                                      options.metric, id_list(missing_runs)));
  if (!before_only_runs.empty())
    chart.notes.push_back(fmt::format(
        "{} run(s) log {} only before their target stage and are left out: {} (--x step "
        "plots whole histories)",
        before_only_runs.size(), options.metric, id_list(before_only_runs)));
  if (left_out)
    chart.notes.push_back(fmt::format(
        "{} run(s) that did not finish are left out (--include-unfinished plots them)", left_out));
  const auto pooled = pooled_keys(groups, {});
  if (!pooled.empty()) chart.notes.push_back(pooled_note(pooled, "--group-by"));
  return chart;
}

BarChart summary_bars(const std::vector<RunSummaryRow>& runs, const BarOptions& options) {
  std::size_t left_out = 0;
  const auto selected = select_status(runs, options.include_unfinished, left_out);
  if (selected.empty())
    throw PlotError(fmt::format(
        "no runs to plot: {} run(s) selected, none of them finished; check --where, or pass "
        "--include-unfinished",
        runs.size()));
  if (!options.x_key.empty()) check_keys(selected, {options.x_key}, "--x");
  check_keys(selected, options.group_by, "--group-by");
  std::vector<std::string> keys = options.group_by;
  if (keys.empty()) keys = config_keys_of(selected, {options.x_key});
  keys.erase(std::remove(keys.begin(), keys.end(), options.x_key), keys.end());
  const auto groups = group_runs(selected, keys);

  BarChart chart;
  chart.title =
      options.title.empty()
          ? default_title(options.metric,
                          options.x_key.empty() ? keys : std::vector<std::string>{options.x_key})
          : options.title;
  chart.x_label = options.x_key.empty() ? "" : display_key(options.x_key);
  chart.y_label = options.metric;
  chart.legend_title = legend_title(keys);
  // Categories: the x key's values, in natural order.
  std::vector<std::string> categories;
  auto category_of = [&](const RunSummaryRow& r) -> std::string {
    if (options.x_key.empty()) return "all runs";
    const auto m = param_texts(r);
    auto it = m.find(options.x_key);
    return it == m.end() ? "(none)" : it->second;
  };
  for (const auto* r : selected) {
    const std::string c = category_of(*r);
    if (std::find(categories.begin(), categories.end(), c) == categories.end())
      categories.push_back(c);
  }
  std::sort(categories.begin(), categories.end(), natural_less);
  chart.categories = categories;

  std::set<std::string> names;
  std::vector<int64_t> nonfinite_runs, missing_runs;
  std::size_t with_metric = 0;
  std::vector<RunGroup> cells;  // for the pooling note: one group per (group, category)
  for (const auto& g : groups) {
    chart.groups.push_back(g.label);
    std::vector<BarValue> row(categories.size());
    std::vector<std::vector<double>> values(categories.size());
    std::vector<RunGroup> cell(categories.size());
    for (const auto* r : g.runs) {
      const auto c = static_cast<std::size_t>(
          std::find(categories.begin(), categories.end(), category_of(*r)) - categories.begin());
      cell[c].runs.push_back(r);
      bool found = false;
      for (const auto& [name, v] : r->summaries) {
        names.insert(name);
        if (name != options.metric) continue;
        found = true;
        if (std::isfinite(v))
          values[c].push_back(v);
        else
          nonfinite_runs.push_back(r->id);
      }
      if (found)
        ++with_metric;
      else
        missing_runs.push_back(r->id);
    }
    for (std::size_t c = 0; c < categories.size(); ++c) {
      if (values[c].empty()) continue;
      const MeanSe m = mean_se(values[c]);
      row[c] = {m.mean, m.mean - m.se, m.mean + m.se, m.n};
    }
    chart.values.push_back(std::move(row));
    for (auto& c : cell)
      if (!c.runs.empty()) cells.push_back(std::move(c));
  }
  if (with_metric == 0) {
    std::vector<std::string> known(names.begin(), names.end());
    const std::string hint = did_you_mean(nearest(options.metric, known));
    throw PlotError(
        fmt::format("no summary '{}' in the {} selected run(s){}; summaries recorded there: {}",
                    options.metric, selected.size(), hint.empty() ? "" : " (" + hint + ")",
                    known.empty() ? "(none)" : join(known, ", ")));
  }
  chart.caption = "bars: mean over runs (seeds); error bars: ± 1 standard error";
  if (!nonfinite_runs.empty())
    chart.notes.push_back(fmt::format("skipped {} NaN/Inf value(s) of {} (runs {})",
                                      nonfinite_runs.size(), options.metric,
                                      id_list(nonfinite_runs)));
  if (!missing_runs.empty())
    chart.notes.push_back(fmt::format("{} run(s) without a {} summary: {}", missing_runs.size(),
                                      options.metric, id_list(missing_runs)));
  if (left_out)
    chart.notes.push_back(fmt::format(
        "{} run(s) that did not finish are left out (--include-unfinished counts them)", left_out));
  std::vector<std::string> skip = {options.x_key};
  const auto pooled = pooled_keys(cells, skip);
  if (!pooled.empty()) chart.notes.push_back(pooled_note(pooled, "--group-by"));
  return chart;
}

// ---------------------------------------------------------------------------------------------
// Files

FileFormat format_for_path(const std::filesystem::path& path) {
  std::string ext = path.extension().string();
  std::string lower = ext;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (lower == ".svg") return FileFormat::Svg;
  if (lower == ".png") return FileFormat::Png;
  throw PlotError(fmt::format(
      "cannot tell the image format of '{}' from its extension {}; expected .svg or .png "
      "(e.g. --output curves.png)",
      path.string(), ext.empty() ? "(none)" : "'" + ext + "'"));
}

void write_text_file(const std::filesystem::path& path, const std::string& text) {
  std::error_code ec;
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), ec);
  if (ec)
    throw PlotError(fmt::format("cannot create the folder '{}' for '{}': {}",
                                path.parent_path().string(), path.string(), ec.message()));
  try {
    write_file_atomic(path, text);  // a reader (a browser reloading) never sees half a file
  } catch (const std::runtime_error& e) {
    throw PlotError(e.what());
  }
}

void write_scene(const Scene& scene, const std::filesystem::path& path, double png_scale) {
  if (format_for_path(path) == FileFormat::Svg) {
    write_text_file(path, to_svg(scene));
    return;
  }
  const auto bytes = render_png(scene, png_scale);
  write_text_file(path, std::string(bytes.begin(), bytes.end()));
}

}  // namespace tlab::plot
