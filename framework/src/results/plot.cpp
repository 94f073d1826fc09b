#include "results/plot.hpp"

#include <png.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <set>
#include <sstream>
#include <utility>

#include <fmt/format.h>

#include "report/report.hpp"
#include "util.hpp"

namespace tlab::plot {
namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr double kCharWidth = 0.6;  // average advance of DejaVu Sans, in em; the PNG font matches
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

// UTF-8 to code points; a broken sequence yields U+FFFD per byte.
std::vector<char32_t> code_points(std::string_view text) {
  std::vector<char32_t> out;
  for (std::size_t i = 0; i < text.size();) {
    auto c = static_cast<unsigned char>(text[i]);
    int len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (len == 0 || i + len > text.size()) {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    char32_t cp = len == 1 ? c : c & (0x7F >> len);
    bool ok = true;
    for (int k = 1; k < len; ++k) {
      auto d = static_cast<unsigned char>(text[i + k]);
      if ((d & 0xC0) != 0x80) ok = false;
      cp = (cp << 6) | (d & 0x3F);
    }
    out.push_back(ok ? cp : 0xFFFD);
    i += ok ? len : 1;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The PNG backend's font: 5 columns x 8 rows per glyph, one byte per column, bit 0 = top row.
// Rows 0-6 stand on the baseline, row 7 is below it (descenders of g j p q y).
constexpr std::array<std::array<uint8_t, 5>, 95> kFont = {{
    {0x00, 0x00, 0x00, 0x00, 0x00},  // ' '
    {0x00, 0x00, 0x5F, 0x00, 0x00},  // !
    {0x00, 0x07, 0x00, 0x07, 0x00},  // "
    {0x14, 0x7F, 0x14, 0x7F, 0x14},  // #
    {0x24, 0x2A, 0x7F, 0x2A, 0x12},  // $
    {0x23, 0x13, 0x08, 0x64, 0x62},  // %
    {0x36, 0x49, 0x55, 0x22, 0x50},  // &
    {0x00, 0x05, 0x03, 0x00, 0x00},  // '
    {0x00, 0x1C, 0x22, 0x41, 0x00},  // (
    {0x00, 0x41, 0x22, 0x1C, 0x00},  // )
    {0x14, 0x08, 0x3E, 0x08, 0x14},  // *
    {0x08, 0x08, 0x3E, 0x08, 0x08},  // +
    {0x00, 0x50, 0x30, 0x00, 0x00},  // ,
    {0x08, 0x08, 0x08, 0x08, 0x08},  // -
    {0x00, 0x60, 0x60, 0x00, 0x00},  // .
    {0x20, 0x10, 0x08, 0x04, 0x02},  // /
    {0x3E, 0x51, 0x49, 0x45, 0x3E},  // 0
    {0x00, 0x42, 0x7F, 0x40, 0x00},  // 1
    {0x42, 0x61, 0x51, 0x49, 0x46},  // 2
    {0x21, 0x41, 0x45, 0x4B, 0x31},  // 3
    {0x18, 0x14, 0x12, 0x7F, 0x10},  // 4
    {0x27, 0x45, 0x45, 0x45, 0x39},  // 5
    {0x3C, 0x4A, 0x49, 0x49, 0x30},  // 6
    {0x01, 0x71, 0x09, 0x05, 0x03},  // 7
    {0x36, 0x49, 0x49, 0x49, 0x36},  // 8
    {0x06, 0x49, 0x49, 0x29, 0x1E},  // 9
    {0x00, 0x36, 0x36, 0x00, 0x00},  // :
    {0x00, 0x56, 0x36, 0x00, 0x00},  // ;
    {0x08, 0x14, 0x22, 0x41, 0x00},  // <
    {0x14, 0x14, 0x14, 0x14, 0x14},  // =
    {0x00, 0x41, 0x22, 0x14, 0x08},  // >
    {0x02, 0x01, 0x51, 0x09, 0x06},  // ?
    {0x32, 0x49, 0x79, 0x41, 0x3E},  // @
    {0x7E, 0x11, 0x11, 0x11, 0x7E},  // A
    {0x7F, 0x49, 0x49, 0x49, 0x36},  // B
    {0x3E, 0x41, 0x41, 0x41, 0x22},  // C
    {0x7F, 0x41, 0x41, 0x22, 0x1C},  // D
    {0x7F, 0x49, 0x49, 0x49, 0x41},  // E
    {0x7F, 0x09, 0x09, 0x09, 0x01},  // F
    {0x3E, 0x41, 0x49, 0x49, 0x7A},  // G
    {0x7F, 0x08, 0x08, 0x08, 0x7F},  // H
    {0x00, 0x41, 0x7F, 0x41, 0x00},  // I
    {0x20, 0x40, 0x41, 0x3F, 0x01},  // J
    {0x7F, 0x08, 0x14, 0x22, 0x41},  // K
    {0x7F, 0x40, 0x40, 0x40, 0x40},  // L
    {0x7F, 0x02, 0x0C, 0x02, 0x7F},  // M
    {0x7F, 0x04, 0x08, 0x10, 0x7F},  // N
    {0x3E, 0x41, 0x41, 0x41, 0x3E},  // O
    {0x7F, 0x09, 0x09, 0x09, 0x06},  // P
    {0x3E, 0x41, 0x51, 0x21, 0x5E},  // Q
    {0x7F, 0x09, 0x19, 0x29, 0x46},  // R
    {0x46, 0x49, 0x49, 0x49, 0x31},  // S
    {0x01, 0x01, 0x7F, 0x01, 0x01},  // T
    {0x3F, 0x40, 0x40, 0x40, 0x3F},  // U
    {0x1F, 0x20, 0x40, 0x20, 0x1F},  // V
    {0x3F, 0x40, 0x38, 0x40, 0x3F},  // W
    {0x63, 0x14, 0x08, 0x14, 0x63},  // X
    {0x07, 0x08, 0x70, 0x08, 0x07},  // Y
    {0x61, 0x51, 0x49, 0x45, 0x43},  // Z
    {0x00, 0x7F, 0x41, 0x41, 0x00},  // [
    {0x02, 0x04, 0x08, 0x10, 0x20},  // backslash
    {0x00, 0x41, 0x41, 0x7F, 0x00},  // ]
    {0x04, 0x02, 0x01, 0x02, 0x04},  // ^
    {0x80, 0x80, 0x80, 0x80, 0x80},  // _
    {0x00, 0x01, 0x02, 0x04, 0x00},  // `
    {0x20, 0x54, 0x54, 0x54, 0x78},  // a
    {0x7F, 0x48, 0x44, 0x44, 0x38},  // b
    {0x38, 0x44, 0x44, 0x44, 0x20},  // c
    {0x38, 0x44, 0x44, 0x48, 0x7F},  // d
    {0x38, 0x54, 0x54, 0x54, 0x18},  // e
    {0x08, 0x7E, 0x09, 0x01, 0x02},  // f
    {0x18, 0xA4, 0xA4, 0xA4, 0x7C},  // g
    {0x7F, 0x08, 0x04, 0x04, 0x78},  // h
    {0x00, 0x44, 0x7D, 0x40, 0x00},  // i
    {0x40, 0x80, 0x84, 0x7D, 0x00},  // j
    {0x7F, 0x10, 0x28, 0x44, 0x00},  // k
    {0x00, 0x41, 0x7F, 0x40, 0x00},  // l
    {0x7C, 0x04, 0x18, 0x04, 0x78},  // m
    {0x7C, 0x08, 0x04, 0x04, 0x78},  // n
    {0x38, 0x44, 0x44, 0x44, 0x38},  // o
    {0xFC, 0x24, 0x24, 0x24, 0x18},  // p
    {0x18, 0x24, 0x24, 0x24, 0xFC},  // q
    {0x7C, 0x08, 0x04, 0x04, 0x08},  // r
    {0x48, 0x54, 0x54, 0x54, 0x20},  // s
    {0x04, 0x3F, 0x44, 0x40, 0x20},  // t
    {0x3C, 0x40, 0x40, 0x20, 0x7C},  // u
    {0x1C, 0x20, 0x40, 0x20, 0x1C},  // v
    {0x3C, 0x40, 0x30, 0x40, 0x3C},  // w
    {0x44, 0x28, 0x10, 0x28, 0x44},  // x
    {0x1C, 0xA0, 0xA0, 0xA0, 0x7C},  // y
    {0x44, 0x64, 0x54, 0x4C, 0x44},  // z
    {0x00, 0x08, 0x36, 0x41, 0x00},  // {
    {0x00, 0x00, 0x7F, 0x00, 0x00},  // |
    {0x00, 0x41, 0x36, 0x08, 0x00},  // }
    {0x08, 0x04, 0x08, 0x10, 0x08},  // ~
}};
constexpr std::array<uint8_t, 5> kPlusMinus = {0x44, 0x44, 0x5F, 0x44, 0x44};

const std::array<uint8_t, 5>& glyph(char32_t c) {
  if (c >= 32 && c < 127) return kFont[c - 32];
  if (c == 0xB1) return kPlusMinus;
  if (c == 0xA0) return kFont[0];  // no-break space
  return kFont['?' - 32];
}

// ---------------------------------------------------------------------------------------------
// The rasterizer: non-zero-winding polygon fill with exact horizontal coverage and kSub
// sub-scanlines per pixel row (anti-aliasing), alpha-blended onto an RGB buffer.

constexpr int kSub = 5;

struct Edge {
  double x0, y0, x1, y1;  // y0 < y1
  int dir;                // +1 downwards in the original contour, -1 upwards
  double x_at(double y) const { return x0 + (y - y0) * (x1 - x0) / (y1 - y0); }
};

class Canvas {
 public:
  Canvas(int width, int height, Color background) {
    image_.width = width;
    image_.height = height;
    image_.rgb.resize(static_cast<std::size_t>(width) * height * 3);
    for (std::size_t i = 0; i < image_.rgb.size(); i += 3) {
      image_.rgb[i] = background.r;
      image_.rgb[i + 1] = background.g;
      image_.rgb[i + 2] = background.b;
    }
    coverage_.assign(width + 2, 0.f);
  }

  Image take() { return std::move(image_); }

  void blend(int x, int y, Color c, double a) {
    if (x < 0 || y < 0 || x >= image_.width || y >= image_.height || a <= 0) return;
    a = std::min(a, 1.0);
    uint8_t* p = &image_.rgb[(static_cast<std::size_t>(y) * image_.width + x) * 3];
    p[0] = static_cast<uint8_t>(std::lround(p[0] * (1 - a) + c.r * a));
    p[1] = static_cast<uint8_t>(std::lround(p[1] * (1 - a) + c.g * a));
    p[2] = static_cast<uint8_t>(std::lround(p[2] * (1 - a) + c.b * a));
  }

  void box(int x0, int y0, int w, int h, Color c) {
    for (int y = y0; y < y0 + h; ++y)
      for (int x = x0; x < x0 + w; ++x) blend(x, y, c, 1);
  }

  /// Fills the union (non-zero winding) of `contours`, in pixel coordinates.
  void fill(const std::vector<std::vector<Point>>& contours, Color color, double opacity) {
    std::vector<Edge> edges;
    double ymin = 1e300, ymax = -1e300;
    for (const auto& contour : contours) {
      for (std::size_t i = 0; i < contour.size(); ++i) {
        const Point& a = contour[i];
        const Point& b = contour[(i + 1) % contour.size()];
        if (!finite(a) || !finite(b) || a.y == b.y) continue;
        if (a.y < b.y)
          edges.push_back({a.x, a.y, b.x, b.y, 1});
        else
          edges.push_back({b.x, b.y, a.x, a.y, -1});
        ymin = std::min({ymin, a.y, b.y});
        ymax = std::max({ymax, a.y, b.y});
      }
    }
    if (edges.empty()) return;
    std::sort(edges.begin(), edges.end(), [](const Edge& a, const Edge& b) { return a.y0 < b.y0; });
    const int row0 = std::max(0, static_cast<int>(std::floor(ymin)));
    const int row1 = std::min(image_.height - 1, static_cast<int>(std::ceil(ymax)));
    std::size_t next = 0;
    std::vector<const Edge*> active;
    std::vector<std::pair<double, int>> crossings;
    for (int row = row0; row <= row1; ++row) {
      while (next < edges.size() && edges[next].y0 < row + 1) active.push_back(&edges[next++]);
      active.erase(
          std::remove_if(active.begin(), active.end(), [&](const Edge* e) { return e->y1 <= row; }),
          active.end());
      if (active.empty()) continue;
      int lo = image_.width, hi = -1;
      for (int s = 0; s < kSub; ++s) {
        const double y = row + (s + 0.5) / kSub;
        crossings.clear();
        for (const Edge* e : active)
          if (e->y0 <= y && y < e->y1) crossings.emplace_back(e->x_at(y), e->dir);
        std::sort(crossings.begin(), crossings.end());
        int winding = 0;
        double start = 0;
        for (const auto& [x, dir] : crossings) {
          const int before = winding;
          winding += dir;
          if (before == 0 && winding != 0) start = x;
          if (before != 0 && winding == 0) span(start, x, 1.0 / kSub, lo, hi);
        }
      }
      for (int x = lo; x <= hi; ++x) {
        blend(x, row, color, coverage_[x] * opacity);
        coverage_[x] = 0;
      }
    }
  }

 private:
  void span(double xa, double xb, double weight, int& lo, int& hi) {
    xa = std::max(xa, 0.0);
    xb = std::min(xb, static_cast<double>(image_.width));
    if (xb <= xa) return;
    const int ia = static_cast<int>(std::floor(xa));
    const int ib = std::min(static_cast<int>(std::floor(xb)), image_.width - 1);
    lo = std::min(lo, ia);
    hi = std::max(hi, ib);
    if (ia == ib) {
      coverage_[ia] += static_cast<float>((xb - xa) * weight);
      return;
    }
    coverage_[ia] += static_cast<float>((ia + 1 - xa) * weight);
    for (int i = ia + 1; i < ib; ++i) coverage_[i] += static_cast<float>(weight);
    coverage_[ib] += static_cast<float>(std::max(0.0, xb - ib) * weight);
  }

  Image image_;
  std::vector<float> coverage_;
};

double signed_area(const std::vector<Point>& c) {
  double a = 0;
  for (std::size_t i = 0; i < c.size(); ++i) {
    const Point& p = c[i];
    const Point& q = c[(i + 1) % c.size()];
    a += p.x * q.y - q.x * p.y;
  }
  return a / 2;
}

// Contours of one stroked piece: a quad per segment and a disc at each interior vertex, all
// with the same orientation so that the non-zero fill is their union.
void stroke_contours(const std::vector<Point>& pts, double half,
                     std::vector<std::vector<Point>>& out) {
  auto add = [&](std::vector<Point> c) {
    if (signed_area(c) < 0) std::reverse(c.begin(), c.end());
    out.push_back(std::move(c));
  };
  for (std::size_t i = 0; i + 1 < pts.size(); ++i) {
    const Point a = pts[i], b = pts[i + 1];
    const double dx = b.x - a.x, dy = b.y - a.y, len = std::hypot(dx, dy);
    if (len < 1e-9) continue;
    const double nx = -dy / len * half, ny = dx / len * half;
    add({{a.x + nx, a.y + ny}, {b.x + nx, b.y + ny}, {b.x - nx, b.y - ny}, {a.x - nx, a.y - ny}});
    if (i + 2 < pts.size()) {
      std::vector<Point> disc;
      constexpr int kSides = 12;
      for (int k = 0; k < kSides; ++k) {
        const double t = 2 * kPi * k / kSides;
        disc.push_back({b.x + half * std::cos(t), b.y + half * std::sin(t)});
      }
      add(std::move(disc));
    }
  }
}

// Splits a polyline into its dashes (`dash` = on, off, on, off ... lengths).
std::vector<std::vector<Point>> dash_pieces(const std::vector<Point>& pts,
                                            const std::vector<double>& dash) {
  double total = 0;
  for (double d : dash) total += std::max(d, 0.0);
  if (dash.empty() || total <= 0) return {pts};
  std::vector<std::vector<Point>> pieces;
  std::size_t index = 0;
  double left = std::max(dash[0], 1e-6);
  bool on = true;
  std::vector<Point> current = {pts.front()};
  for (std::size_t i = 0; i + 1 < pts.size(); ++i) {
    Point a = pts[i];
    const Point b = pts[i + 1];
    double len = std::hypot(b.x - a.x, b.y - a.y);
    while (len > 0) {
      const double step = std::min(len, left);
      const double t = step / len;
      const Point p{a.x + (b.x - a.x) * t, a.y + (b.y - a.y) * t};
      if (on) current.push_back(p);
      a = p;
      len -= step;
      left -= step;
      if (left <= 1e-12) {
        if (on && current.size() > 1) pieces.push_back(current);
        on = !on;
        index = (index + 1) % dash.size();
        left = std::max(dash[index], 1e-6);
        current = {a};
      }
    }
  }
  if (on && current.size() > 1) pieces.push_back(current);
  return pieces;
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

// `text` shortened with "..." to fit `max_width` at `size`.
std::string fit(const std::string& text, double size, double max_width) {
  if (text_width(text, size) <= max_width) return text;
  const auto keep = static_cast<std::size_t>(std::max(0.0, max_width / (kCharWidth * size) - 3));
  std::string out;
  std::size_t count = 0;
  for (std::size_t i = 0; i < text.size() && count < keep; ++count) {
    auto c = static_cast<unsigned char>(text[i]);
    std::size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : 4;
    out += text.substr(i, len);
    i += len;
  }
  return out + "...";
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
    double lw = text_width(legend_title, kLabelSize);
    for (const auto& e : legend) lw = std::max(lw, 30 + text_width(e.label, kLabelSize));
    f.legend_width = std::min(lw, w * 0.35);
    f.right = w - f.legend_width - 24;
    f.legend_x = f.right + 16;
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
  if (!title.empty())
    scene.items.push_back([&] {
      Text t = text((f.left + f.right) / 2, 26, fit(title, kTitleSize, w - 20), kTitleSize,
                    Anchor::Middle);
      t.bold = true;
      return t;
    }());
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
      Text t = text(f.legend_x, y + 10, fit(legend_title, kLabelSize, f.legend_width), kLabelSize);
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

std::string value_text(const ParamValue& v) { return param_text(v); }

using ParamMap = std::map<std::string, std::string>;

ParamMap param_map(const RunSummaryRow& r) {
  ParamMap m;
  for (const auto& p : r.params) m[p.key] = value_text(p.value);
  return m;
}

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

std::string display_key(const std::string& key) {
  const std::string suffix = ".plugin";
  if (key.size() > suffix.size() &&
      key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0)
    return key.substr(0, key.size() - suffix.size());
  return key;
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
  for (const auto* r : runs) maps.push_back(param_map(*r));
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

// Keys (other than seed and `skip`) whose values differ inside some group: the group's mean
// pools over them.
std::vector<std::string> pooled_keys(const std::vector<RunGroup>& groups,
                                     const std::vector<std::string>& skip) {
  std::set<std::string> pooled;
  for (const auto& g : groups)
    for (const auto& k : config_keys_of(g.runs, skip)) pooled.insert(k);
  return {pooled.begin(), pooled.end()};
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

// The legend names the keys once; entries show the values ("finetune, usps").
std::string legend_title(const std::vector<std::string>& keys) {
  std::vector<std::string> shown;
  for (const auto& k : keys) shown.push_back(display_key(k));
  return join(shown, ", ");
}

std::string when_text() {
  const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", &tm);
  return buf;
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

double text_width(std::string_view text, double size) {
  return static_cast<double>(code_points(text).size()) * kCharWidth * size;
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
      if (!std::isfinite(t->x) || !std::isfinite(t->y) || t->text.empty()) continue;
      const char* anchor = t->anchor == Anchor::Start    ? "start"
                           : t->anchor == Anchor::Middle ? "middle"
                                                         : "end";
      out += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"{}\" fill=\"{}\" text-anchor=\"{}\"",
                         num(t->x), num(t->y), num(t->size), t->color.hex(), anchor);
      if (t->bold) out += " font-weight=\"bold\"";
      if (t->vertical) out += fmt::format(" transform=\"rotate(-90 {} {})\"", num(t->x), num(t->y));
      out += ">" + escape_html(t->text) + "</text>\n";
    }
  }
  out += "</svg>\n";
  return out;
}

Color Image::at(int x, int y) const {
  if (x < 0 || y < 0 || x >= width || y >= height)
    throw PlotError(fmt::format("pixel ({}, {}) is outside the {}x{} image", x, y, width, height));
  const uint8_t* p = &rgb[(static_cast<std::size_t>(y) * width + x) * 3];
  return {p[0], p[1], p[2]};
}

Image rasterize(const Scene& scene, double scale) {
  if (!(scale > 0) || scale > 16)
    throw PlotError(fmt::format("PNG scale {} is out of range; expected 0 < scale <= 16", scale));
  const int width = std::max(1, static_cast<int>(std::lround(scene.width * scale)));
  const int height = std::max(1, static_cast<int>(std::lround(scene.height * scale)));
  Canvas canvas(width, height, scene.background);
  auto scaled = [&](std::vector<Point> pts) {
    std::vector<Point> out;
    for (auto& p : pts)
      if (finite(p)) out.push_back({p.x * scale, p.y * scale});
    return out;
  };
  for (const auto& item : scene.items) {
    if (const auto* l = std::get_if<Polyline>(&item)) {
      auto pts = scaled(l->points);
      if (pts.size() < 2) continue;
      std::vector<double> dash;
      for (double d : l->dash) dash.push_back(d * scale);
      const double half = std::max(l->width * scale, 1.0) / 2;
      std::vector<std::vector<Point>> contours;
      for (const auto& piece : dash_pieces(pts, dash)) stroke_contours(piece, half, contours);
      canvas.fill(contours, l->color, l->opacity);
    } else if (const auto* p = std::get_if<Polygon>(&item)) {
      auto pts = scaled(p->points);
      if (pts.size() >= 3) canvas.fill({pts}, p->color, p->opacity);
    } else if (const auto* r = std::get_if<Rect>(&item)) {
      auto pts = scaled(
          {{r->x, r->y}, {r->x + r->w, r->y}, {r->x + r->w, r->y + r->h}, {r->x, r->y + r->h}});
      if (pts.size() == 4) canvas.fill({pts}, r->color, r->opacity);
    } else if (const auto* t = std::get_if<Text>(&item)) {
      if (!std::isfinite(t->x) || !std::isfinite(t->y)) continue;
      const auto cps = code_points(t->text);
      const int px = std::max(1, static_cast<int>(std::lround(t->size * scale / 10)));
      const int advance = 6 * px;
      const int w = static_cast<int>(cps.size()) * advance - px;
      const int shift = t->anchor == Anchor::Start ? 0 : t->anchor == Anchor::Middle ? w / 2 : w;
      const int X = static_cast<int>(std::lround(t->x * scale));
      const int Y = static_cast<int>(std::lround(t->y * scale));
      for (std::size_t i = 0; i < cps.size(); ++i) {
        const auto& g = glyph(cps[i]);
        for (int col = 0; col < 5; ++col)
          for (int row = 0; row < 8; ++row) {
            if (!(g[col] >> row & 1)) continue;
            for (int b = 0; b <= (t->bold ? 1 : 0); ++b) {
              const int u =
                  static_cast<int>(i) * advance + col * px - shift + b * std::max(1, px / 2);
              const int v = (row - 7) * px;  // row 7 sits just below the baseline
              if (t->vertical)
                canvas.box(X + v, Y - u - px, px, px, t->color);
              else
                canvas.box(X + u, Y + v, px, px, t->color);
            }
          }
      }
    }
  }
  return canvas.take();
}

std::vector<uint8_t> encode_png(const Image& image) {
  if (image.width <= 0 || image.height <= 0 ||
      image.rgb.size() != static_cast<std::size_t>(image.width) * image.height * 3)
    throw PlotError(fmt::format(
        "cannot encode a {}x{} image holding {} bytes as PNG (expected {})", image.width,
        image.height, image.rgb.size(),
        static_cast<std::size_t>(std::max(0, image.width)) * std::max(0, image.height) * 3));
  png_image png;
  std::memset(&png, 0, sizeof png);
  png.version = PNG_IMAGE_VERSION;
  png.width = static_cast<png_uint_32>(image.width);
  png.height = static_cast<png_uint_32>(image.height);
  png.format = PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&png, nullptr, &size, 0, image.rgb.data(), 0, nullptr))
    throw PlotError(std::string("libpng could not size the PNG: ") + png.message);
  std::vector<uint8_t> bytes(size);
  if (!png_image_write_to_memory(&png, bytes.data(), &size, 0, image.rgb.data(), 0, nullptr))
    throw PlotError(std::string("libpng could not encode the PNG: ") + png.message);
  bytes.resize(size);
  png_image_free(&png);
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
    if (any) legend.push_back({s.label, series_color(i), dash_for(i), band, false});
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
      if (pts.size() == 1) {  // a lone point: a small square marker
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
  if (name == "step") return XAxis::Step;
  if (name == "epoch") return XAxis::Epoch;
  throw PlotError(fmt::format("unknown x axis '{}'; expected 'step' or 'epoch'", name));
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

std::vector<std::string> config_keys(const std::vector<RunSummaryRow>& runs,
                                     const std::vector<std::string>& exclude) {
  std::vector<const RunSummaryRow*> ptrs;
  for (const auto& r : runs) ptrs.push_back(&r);
  return config_keys_of(ptrs, exclude);
}

std::vector<RunGroup> group_runs(const std::vector<const RunSummaryRow*>& runs,
                                 const std::vector<std::string>& keys) {
  std::map<std::vector<std::string>, std::vector<const RunSummaryRow*>> by_values;
  for (const auto* r : runs) {
    const auto m = param_map(*r);
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

  LineChart chart;
  chart.title = options.title.empty() ? default_title(options.metric, keys) : options.title;
  chart.x_label = options.x == XAxis::Step ? "step" : "epoch";
  chart.y_label = options.metric;
  chart.legend_title = legend_title(keys);
  chart.integer_x = true;
  std::set<std::string> names;
  std::vector<int64_t> nonfinite_runs, missing_runs;
  std::size_t nonfinite = 0, with_metric = 0;
  for (const auto& g : groups) {
    std::map<double, std::vector<double>> at;  // x -> one finite value per run
    std::size_t members = 0;
    for (const auto* r : g.runs) {
      std::map<double, double> last;  // a run's last value at each x
      auto it = histories.find(r->id);
      if (it != histories.end())
        for (const auto& m : it->second) {
          names.insert(m.name);
          if (m.name != options.metric) continue;
          last[static_cast<double>(options.x == XAxis::Step ? m.step : m.epoch)] = m.value;
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
    const auto m = param_map(r);
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
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (out) out.write(text.data(), static_cast<std::streamsize>(text.size()));
  out.close();
  if (!out)
    throw PlotError(
        fmt::format("cannot write '{}': {}; check that the folder exists and is "
                    "writable",
                    path.string(), std::strerror(errno)));
}

void write_scene(const Scene& scene, const std::filesystem::path& path, double png_scale) {
  if (format_for_path(path) == FileFormat::Svg) {
    write_text_file(path, to_svg(scene));
    return;
  }
  const auto bytes = encode_png(rasterize(scene, png_scale));
  write_text_file(path, std::string(bytes.begin(), bytes.end()));
}

// ---------------------------------------------------------------------------------------------
// The HTML report

namespace {

const char* kReportStyle = R"(
body{font-family:"DejaVu Sans",Verdana,Arial,sans-serif;color:#222;background:#fff;
  margin:24px auto;max-width:1320px;padding:0 16px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:14px;margin:12px 0 4px}
.meta{color:#555;font-size:13px;margin:0 0 8px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th[aria-sort=ascending]::after{content:" \25B2"}
table.sortable th[aria-sort=descending]::after{content:" \25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.best{font-weight:bold}
td.reason{white-space:pre-wrap;font-family:"DejaVu Sans Mono",monospace;font-size:12px;
  max-width:760px}
.badge{display:inline-block;padding:1px 8px;border-radius:9px;color:#fff;font-size:12px}
.figs{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:0;border:1px solid #eee;padding:8px;max-width:100%}
figure svg{max-width:100%;height:auto;display:block}
figcaption,.note{color:#555;font-size:12px;margin:2px 0}
.empty{color:#777;font-style:italic}
footer{margin-top:32px;color:#777;font-size:12px}
)";

const char* kReportScript = R"(
(function () {
  function key(cell) {
    var v = cell.getAttribute('data-v');
    if (v === null) v = cell.textContent.trim();
    var n = Number(v);
    return v !== '' && isFinite(n) ? {num: true, v: n} : {num: false, v: v.toLowerCase()};
  }
  var tables = document.querySelectorAll('table.sortable');
  Array.prototype.forEach.call(tables, function (table) {
    if (!table.tHead || !table.tBodies.length) return;
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th) {
      th.title = 'Click to sort';
      th.addEventListener('click', function () {
        var col = th.cellIndex;
        var asc = th.getAttribute('aria-sort') !== 'ascending';
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a.cells[col]), y = key(b.cells[col]), c;
          if (x.num && y.num) c = x.v - y.v;
          else if (x.num !== y.num) c = x.num ? -1 : 1;
          else c = x.v < y.v ? -1 : x.v > y.v ? 1 : 0;
          return asc ? c : -c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
})();
)";

std::string status_color(const std::string& status) {
  if (status == "finished") return "#009E73";
  if (status == "failed" || status == "crashed" || status == "oom") return "#D55E00";
  if (status == "diverged") return "#B8860B";
  if (status == "killed" || status == "timeout" || status == "lost" || status == "cancelled" ||
      status == "node_fail")
    return "#CC79A7";
  if (status == "running" || status == "queued") return "#0072B2";
  return "#777777";
}

std::string badge(const std::string& status) {
  return fmt::format("<span class=\"badge\" style=\"background:{}\">{}</span>",
                     status_color(status), escape_html(status));
}

std::string html_number(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return fmt::format("{:.4f}", v);
}

// The summaries shown in the comparison table: the main ones first, then the others.
std::vector<std::string> table_metrics(const std::vector<const RunSummaryRow*>& runs) {
  std::set<std::string> present;
  for (const auto* r : runs)
    for (const auto& [k, v] : r->summaries) present.insert(k);
  std::vector<std::string> out;
  for (const char* m : {"target/test/acc", "target/val/acc", "target/test/loss", "target/val/loss",
                        "source/val/acc", "source/test/acc", "run/wall_seconds"})
    if (present.erase(m)) out.push_back(m);
  for (const auto& m : present)
    if (out.size() < 8) out.push_back(m);
  return out;
}

void comparison_section(std::string& html, const std::vector<RunSummaryRow>& runs) {
  html += "<h2>Comparison: mean ± standard error over seeds</h2>\n";
  std::vector<const RunSummaryRow*> finished;
  for (const auto& r : runs)
    if (r.status == "finished") finished.push_back(&r);
  if (finished.empty()) {
    html += "<p class=\"empty\">No finished runs to compare.</p>\n";
    return;
  }
  const auto keys = config_keys_of(finished, {});
  const auto groups = group_runs(finished, keys);
  const auto metrics = table_metrics(finished);
  struct Cell {
    MeanSe m;
    std::size_t skipped = 0;
  };
  std::vector<std::vector<Cell>> cells(groups.size(), std::vector<Cell>(metrics.size()));
  std::size_t skipped = 0;
  for (std::size_t g = 0; g < groups.size(); ++g)
    for (std::size_t j = 0; j < metrics.size(); ++j) {
      std::vector<double> values;
      for (const auto* r : groups[g].runs)
        for (const auto& [k, v] : r->summaries)
          if (k == metrics[j]) {
            if (std::isfinite(v))
              values.push_back(v);
            else
              ++cells[g][j].skipped;
          }
      cells[g][j].m = mean_se(values);
      skipped += cells[g][j].skipped;
    }
  // Best mean per column: highest accuracy, lowest loss (only with two groups or more).
  std::vector<int> best(metrics.size(), -1);
  for (std::size_t j = 0; j < metrics.size() && groups.size() > 1; ++j) {
    const bool higher = metrics[j].find("acc") != std::string::npos;
    const bool lower = metrics[j].find("loss") != std::string::npos;
    if (!higher && !lower) continue;
    for (std::size_t g = 0; g < groups.size(); ++g) {
      if (cells[g][j].m.n == 0) continue;
      if (best[j] < 0 || (higher ? cells[g][j].m.mean > cells[best[j]][j].m.mean
                                 : cells[g][j].m.mean < cells[best[j]][j].m.mean))
        best[j] = static_cast<int>(g);
    }
  }
  html += "<table class=\"sortable\" id=\"comparison\"><thead><tr>";
  if (keys.empty()) html += "<th>configuration</th>";
  for (const auto& k : keys) html += "<th>" + escape_html(display_key(k)) + "</th>";
  for (const auto& m : metrics) html += "<th>" + escape_html(m) + "</th>";
  html += "<th>runs</th><th>seeds</th></tr></thead>\n<tbody>\n";
  for (std::size_t g = 0; g < groups.size(); ++g) {
    html += "<tr>";
    if (keys.empty()) html += "<td>all runs</td>";
    for (const auto& v : groups[g].values) html += "<td>" + escape_html(v) + "</td>";
    for (std::size_t j = 0; j < metrics.size(); ++j) {
      const Cell& c = cells[g][j];
      const std::string cls = best[j] == static_cast<int>(g) ? "num best" : "num";
      if (c.m.n == 0) {
        html += fmt::format("<td class=\"{}\">{}</td>", cls, c.skipped ? "NaN/Inf" : "n/a");
        continue;
      }
      std::string shown =
          c.m.n == 1 ? html_number(c.m.mean) : html_number(c.m.mean) + " ± " + html_number(c.m.se);
      if (c.skipped) shown += fmt::format(" ({} NaN/Inf skipped)", c.skipped);
      html += fmt::format("<td class=\"{}\" data-v=\"{}\">{}</td>", cls,
                          fmt::format("{:.17g}", c.m.mean), escape_html(shown));
    }
    std::vector<std::string> seeds;
    for (const auto* r : groups[g].runs) seeds.push_back(std::to_string(r->seed));
    html += fmt::format("<td class=\"num\">{}</td><td>{}</td></tr>\n", groups[g].runs.size(),
                        escape_html(join(seeds, ", ")));
  }
  html += "</tbody></table>\n";
  html +=
      "<p class=\"note\">Finished runs only, grouped by the parameters that differ between "
      "them (seed excepted); n = 1 shows the value alone. Click a column to sort.";
  if (skipped) html += fmt::format(" {} NaN/Inf value(s) were left out of the means.", skipped);
  const auto pooled = pooled_keys(groups, {});
  if (!pooled.empty())
    html += " Some rows average runs that differ in " + escape_html(join(pooled, ", ")) + ".";
  html += "</p>\n";
}

std::string figure(const Scene& scene, const std::vector<std::string>& notes) {
  std::string html = "<figure>\n" + to_svg(scene);
  for (const auto& n : notes) html += "<figcaption>" + escape_html(n) + "</figcaption>\n";
  return html + "</figure>\n";
}

}  // namespace

std::string html_report(const std::vector<RunSummaryRow>& runs, const Histories& histories,
                        const ReportOptions& options) {
  std::string html =
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
      "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
      "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">\n";
  html += "<title>" + escape_html(options.title) + "</title>\n";
  html += std::string("<style>") + kReportStyle + "</style>\n</head>\n<body>\n";
  html += "<h1>" + escape_html(options.title) + "</h1>\n<p class=\"meta\">";
  html += fmt::format("{} run(s)", runs.size());
  if (!options.source.empty()) html += " from <code>" + escape_html(options.source) + "</code>";
  if (!options.where.empty()) html += ", where <code>" + escape_html(options.where) + "</code>";
  html += "; generated " + when_text() + " by tlab " + escape_html(TLAB_VERSION) + "</p>\n";

  // Runs by status.
  std::map<std::string, std::size_t> by_status;
  for (const auto& r : runs) ++by_status[r.status];
  html += "<h2>Runs by status</h2>\n";
  if (runs.empty()) {
    html += "<p class=\"empty\">No runs match.</p>\n";
  } else {
    html += "<table id=\"status\"><thead><tr><th>status</th><th>runs</th></tr></thead><tbody>\n";
    for (const auto& [status, count] : by_status)
      html += fmt::format("<tr><td>{}</td><td class=\"num\">{}</td></tr>\n", badge(status), count);
    html += fmt::format("<tr><th>all</th><th class=\"num\">{}</th></tr>\n", runs.size());
    html += "</tbody></table>\n";
  }

  comparison_section(html, runs);

  // Learning curves.
  html += "<h2>Learning curves</h2>\n";
  std::string figs;
  for (const auto& metric : options.curve_metrics) {
    bool present = false;
    for (const auto& r : runs) {
      auto it = histories.find(r.id);
      if (r.status != "finished" || it == histories.end()) continue;
      for (const auto& m : it->second) present = present || m.name == metric;
    }
    if (!present) continue;
    CurveOptions curve;
    curve.metric = metric;
    curve.x = XAxis::Epoch;
    try {
      LineChart chart = learning_curves(runs, histories, curve);
      auto notes = with_caption(chart.caption, chart.notes);
      chart.caption.clear();
      chart.notes.clear();
      figs += figure(line_chart(chart, {560, 360}), notes);
    } catch (const PlotError& e) {
      figs += "<p class=\"empty\">" + escape_html(metric) + ": " + escape_html(e.what()) + "</p>\n";
    }
  }
  html += figs.empty() ? "<p class=\"empty\">No metric histories of finished runs to plot.</p>\n"
                       : "<div class=\"figs\">\n" + figs + "</div>\n";

  // Bar chart of the main summary.
  html += "<h2>Final results</h2>\n";
  std::vector<const RunSummaryRow*> finished;
  for (const auto& r : runs)
    if (r.status == "finished") finished.push_back(&r);
  const auto metrics = table_metrics(finished);
  if (metrics.empty()) {
    html += "<p class=\"empty\">No summaries of finished runs to plot.</p>\n";
  } else {
    BarOptions bars;
    bars.metric = metrics.front();
    const auto keys = config_keys_of(finished, {});
    // Along x: the target (or source) setting when it varies, the methods as bars.
    for (const char* prefix : {"target.", "source."}) {
      for (const auto& k : keys)
        if (bars.x_key.empty() && k.rfind(prefix, 0) == 0) bars.x_key = k;
    }
    try {
      BarChart chart = summary_bars(runs, bars);
      auto notes = with_caption(chart.caption, chart.notes);
      chart.caption.clear();
      chart.notes.clear();
      html += "<div class=\"figs\">\n" + figure(bar_chart(chart, {900, 420}), notes) + "</div>\n";
    } catch (const PlotError& e) {
      html += "<p class=\"empty\">" + escape_html(e.what()) + "</p>\n";
    }
  }

  // Runs that did not finish.
  html += "<h2>Runs that did not finish</h2>\n";
  std::vector<const RunSummaryRow*> failed;
  for (const auto& r : runs)
    if (r.status != "finished" && r.status != "running" && r.status != "queued")
      failed.push_back(&r);
  if (failed.empty()) {
    html += "<p class=\"empty\">None: every run finished or is still queued or running.</p>\n";
  } else {
    const auto keys = config_keys(runs, {});
    html +=
        "<table class=\"sortable\" id=\"failed\"><thead><tr><th>id</th><th>name</th>"
        "<th>status</th><th>seed</th><th>configuration</th><th>ended</th><th>reason</th>"
        "</tr></thead>\n<tbody>\n";
    for (const auto* r : failed) {
      const auto params = param_map(*r);
      std::vector<std::string> config;  // "strategy=dann, target.variant=usps"
      for (const auto& k : keys) {
        auto it = params.find(k);
        if (it != params.end()) config.push_back(display_key(k) + "=" + it->second);
      }
      html += fmt::format(
          "<tr><td class=\"num\">{}</td><td>{}</td><td data-v=\"{}\">{}</td>"
          "<td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"reason\">{}</td></tr>\n",
          r->id, escape_html(r->name), escape_html(r->status), badge(r->status), r->seed,
          escape_html(join(config, ", ")), escape_html(r->ended_at),
          escape_html(r->reason.empty() ? "(no reason recorded)" : r->reason));
    }
    html += "</tbody></table>\n";
  }
  html +=
      "<footer>Self-contained: no external files, fonts or scripts. Generated by "
      "<code>tlab results report</code>.</footer>\n";
  html += std::string("<script>") + kReportScript + "</script>\n</body>\n</html>\n";
  return html;
}

std::string html_report(Store& store, const std::vector<RunSummaryRow>& runs,
                        const ReportOptions& options) {
  Histories histories;
  for (const auto& r : runs) histories[r.id] = store.metrics(r.id);
  return html_report(runs, histories, options);
}

}  // namespace tlab::plot
