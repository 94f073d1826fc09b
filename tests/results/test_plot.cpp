// Plots and the HTML report: ticks, the SVG and PNG backends (the PNG decoded again with
// cairo's reader), text measured with the font, learning curves (against the target stage's
// epoch) and bar charts from runs, escaping, and the report in a real headless Chromium (exit
// code, a non-trivial screenshot, no console errors).

#include <cairo.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "results/plot.hpp"
#include "results/report_html.hpp"
#include "store/store.hpp"

namespace tlab::plot {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// ---------------------------------------------------------------------------------------------
// Helpers

/// Runs `action`, expecting a PlotError; returns its message.
template <class F>
std::string plot_error(F&& action) {
  try {
    action();
  } catch (const PlotError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected a PlotError, got: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected a PlotError, nothing was thrown";
  return "";
}

bool parses_finite(const std::string& text) {
  if (text.empty()) return false;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  return end == text.c_str() + text.size() && std::isfinite(v);
}

/// A small XML well-formedness check for our SVG: tags balanced and properly nested,
/// attributes quoted, entities known, and every numeric attribute a finite number.
/// Returns "" when fine, else what is wrong.
std::string check_svg(const std::string& svg) {
  static const std::set<std::string> numeric = {
      "x", "y", "width", "height", "font-size", "stroke-width", "fill-opacity", "stroke-opacity"};
  static const std::regex attribute(R"re(^\s+([A-Za-z_:][-A-Za-z0-9_:.]*)="([^"<]*)")re");
  static const std::regex entity(R"(^&(amp|lt|gt|quot|apos|#[0-9]+|#x[0-9a-fA-F]+);)");
  std::vector<std::string> open;
  std::size_t i = 0;
  auto check_text = [&](const std::string& text) -> std::string {
    for (std::size_t k = 0; k < text.size(); ++k) {
      if (text[k] != '&') continue;
      if (!std::regex_search(text.substr(k, 12), entity))
        return "bad entity at: " + text.substr(k, 12);
    }
    return "";
  };
  while (i < svg.size()) {
    const std::size_t lt = svg.find('<', i);
    if (lt == std::string::npos) {
      if (auto e = check_text(svg.substr(i)); !e.empty()) return e;
      break;
    }
    if (auto e = check_text(svg.substr(i, lt - i)); !e.empty()) return e;
    const std::size_t gt = svg.find('>', lt);
    if (gt == std::string::npos) return "unterminated tag at " + std::to_string(lt);
    std::string tag = svg.substr(lt + 1, gt - lt - 1);
    i = gt + 1;
    if (tag.empty()) return "empty tag at " + std::to_string(lt);
    if (tag[0] == '/') {
      const std::string name = tag.substr(1);
      if (open.empty() || open.back() != name)
        return "closing </" + name + "> does not match <" + (open.empty() ? "" : open.back()) + ">";
      open.pop_back();
      continue;
    }
    const bool self_closing = tag.back() == '/';
    if (self_closing) tag.pop_back();
    std::size_t name_end = tag.find_first_of(" \t\n");
    const std::string name = tag.substr(0, name_end);
    if (!std::regex_match(name, std::regex("[A-Za-z][A-Za-z0-9]*"))) return "bad tag name " + name;
    std::string rest = name_end == std::string::npos ? "" : tag.substr(name_end);
    std::set<std::string> seen;
    std::smatch m;
    while (std::regex_search(rest, m, attribute)) {
      const std::string key = m[1], value = m[2];
      if (!seen.insert(key).second) return "attribute " + key + " twice in <" + name + ">";
      if (auto e = check_text(value); !e.empty()) return e;
      if (numeric.count(key) && !parses_finite(value))
        return "attribute " + key + "=\"" + value + "\" of <" + name + "> is not a finite number";
      if (key == "points") {
        std::string p = value;
        for (char& c : p)
          if (c == ',') c = ' ';
        std::istringstream in(p);
        std::string n;
        int count = 0;
        while (in >> n) {
          if (!parses_finite(n)) return "point coordinate '" + n + "' is not a finite number";
          ++count;
        }
        if (count == 0 || count % 2) return "points=\"" + value + "\" is not a list of x,y pairs";
      }
      rest = m.suffix();
    }
    if (rest.find_first_not_of(" \t\n") != std::string::npos)
      return "junk in <" + name + ">: '" + rest + "'";
    if (!self_closing) open.push_back(name);
  }
  if (!open.empty()) return "unclosed <" + open.back() + ">";
  return "";
}

struct Decoded {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;
  Color at(int x, int y) const {
    const uint8_t* p = &rgb[(static_cast<std::size_t>(y) * width + x) * 3];
    return {p[0], p[1], p[2]};
  }
  std::size_t count(Color c) const {
    std::size_t n = 0;
    for (std::size_t i = 0; i + 2 < rgb.size(); i += 3)
      n += rgb[i] == c.r && rgb[i + 1] == c.g && rgb[i + 2] == c.b;
    return n;
  }
};

struct ByteReader {
  const std::vector<uint8_t>* bytes;
  std::size_t at = 0;
};

cairo_status_t read_from(void* closure, unsigned char* data, unsigned int length) {
  auto* r = static_cast<ByteReader*>(closure);
  if (r->at + length > r->bytes->size()) return CAIRO_STATUS_READ_ERROR;
  std::memcpy(data, r->bytes->data() + r->at, length);
  r->at += length;
  return CAIRO_STATUS_SUCCESS;
}

/// Decodes PNG bytes with cairo's PNG reader, as 8-bit RGB (opaque images only).
Decoded decode_png(const std::vector<uint8_t>& bytes) {
  ByteReader reader{&bytes};
  cairo_surface_t* surface = cairo_image_surface_create_from_png_stream(read_from, &reader);
  Decoded out;
  if (cairo_surface_status(surface) != CAIRO_STATUS_SUCCESS) {
    ADD_FAILURE() << "cairo cannot read the PNG: "
                  << cairo_status_to_string(cairo_surface_status(surface));
    cairo_surface_destroy(surface);
    return out;
  }
  out.width = cairo_image_surface_get_width(surface);
  out.height = cairo_image_surface_get_height(surface);
  const int stride = cairo_image_surface_get_stride(surface);
  const unsigned char* data = cairo_image_surface_get_data(surface);
  out.rgb.reserve(static_cast<std::size_t>(out.width) * out.height * 3);
  for (int y = 0; y < out.height; ++y)
    for (int x = 0; x < out.width; ++x) {
      uint32_t px;  // native-endian 0xAARRGGBB
      std::memcpy(&px, data + static_cast<std::size_t>(y) * stride + 4 * x, 4);
      out.rgb.push_back(static_cast<uint8_t>(px >> 16));
      out.rgb.push_back(static_cast<uint8_t>(px >> 8));
      out.rgb.push_back(static_cast<uint8_t>(px));
    }
  cairo_surface_destroy(surface);
  return out;
}

/// Pixels in [x0, x1) x [y0, y1) that are grey (r = g = b) and darker than `below`.
std::size_t grey_pixels(const Decoded& png, int x0, int y0, int x1, int y1, int above, int below) {
  std::size_t n = 0;
  for (int y = y0; y < y1; ++y)
    for (int x = x0; x < x1; ++x) {
      const Color c = png.at(x, y);
      n += c.r == c.g && c.g == c.b && c.r > above && c.r < below;
    }
  return n;
}

std::vector<uint8_t> read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() /
            fmt::format("tlab_plot_{}_{}", getpid(),
                        std::chrono::steady_clock::now().time_since_epoch().count());
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    if (!std::getenv("TLAB_KEEP_TEST_OUTPUT")) fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

RunSummaryRow run_row(int64_t id, const std::string& strategy, const std::string& variant,
                      int64_t seed, double acc, const std::string& status = "finished") {
  RunSummaryRow r;
  r.id = id;
  r.name = "exp";
  r.status = status;
  r.seed = seed;
  r.params = {{"seed", seed, "int"},
              {"strategy.plugin", strategy, "string"},
              {"target.variant", variant, "string"}};
  r.summaries = {{"target/test/acc", acc}};
  return r;
}

std::vector<MetricRow> history(double start, double slope, int epochs,
                               const std::string& name = "target/test/acc") {
  std::vector<MetricRow> rows;
  for (int e = 0; e < epochs; ++e)
    rows.push_back({name, (e + 1) * 10, e, start + slope * e, 1.0 * e});
  return rows;
}

// ---------------------------------------------------------------------------------------------
// Ticks

TEST(PlotTicks, CoverTheRangeAtNiceSteps) {
  const Ticks t = nice_ticks(0, 1);
  EXPECT_DOUBLE_EQ(t.step, 0.2);
  EXPECT_EQ(t.labels, (std::vector<std::string>{"0.0", "0.2", "0.4", "0.6", "0.8", "1.0"}));
  const Ticks u = nice_ticks(0.43, 0.91);
  EXPECT_DOUBLE_EQ(u.step, 0.1);
  EXPECT_NEAR(u.lo, 0.4, 1e-12);
  EXPECT_NEAR(u.hi, 1.0, 1e-12);
  EXPECT_EQ(u.labels.front(), "0.4");
  EXPECT_EQ(u.labels.back(), "1.0");
  const Ticks big = nice_ticks(0, 1234);
  EXPECT_DOUBLE_EQ(big.step, 200);
  EXPECT_EQ(big.labels.back(), "1400");
}

TEST(PlotTicks, IntegerAxesZeroWidthRangesAndNegativeZero) {
  const Ticks epochs = nice_ticks(0, 3, 7, /*integer=*/true);
  EXPECT_DOUBLE_EQ(epochs.step, 1);
  EXPECT_EQ(epochs.labels, (std::vector<std::string>{"0", "1", "2", "3"}));
  const Ticks flat = nice_ticks(0.5, 0.5);
  EXPECT_LT(flat.lo, 0.5);
  EXPECT_GT(flat.hi, 0.5);
  const Ticks zero = nice_ticks(0, 0);
  EXPECT_LT(zero.lo, 0);
  EXPECT_GT(zero.hi, 0);
  const Ticks across = nice_ticks(-0.3, 0.7);
  EXPECT_THAT(across.labels, ::testing::Contains("0.0"));
  EXPECT_THAT(across.labels, Not(::testing::Contains("-0.0")));
  EXPECT_THAT(plot_error([] { nice_ticks(0, kNaN); }), HasSubstr("finite"));
  EXPECT_THAT(plot_error([] { nice_ticks(-kInf, 1); }), HasSubstr("finite"));
}

TEST(PlotTicks, RandomRangesAreCoveredWithFewEvenTicks) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> exponent(-6, 7), unit(-1, 1);
  for (int i = 0; i < 2000; ++i) {
    const double scale = std::pow(10.0, exponent(rng));
    double lo = unit(rng) * scale, hi = unit(rng) * scale;
    if (lo > hi) std::swap(lo, hi);
    const Ticks t = nice_ticks(lo, hi);
    ASSERT_LE(t.lo, lo) << lo << " " << hi;
    ASSERT_GE(t.hi, hi) << lo << " " << hi;
    ASSERT_GE(t.values.size(), 3u) << lo << " " << hi;
    ASSERT_LE(t.values.size(), 12u) << lo << " " << hi;
    ASSERT_EQ(t.values.size(), t.labels.size());
    for (std::size_t k = 1; k < t.values.size(); ++k)
      ASSERT_NEAR(t.values[k] - t.values[k - 1], t.step, t.step * 1e-6);
    for (const auto& l : t.labels) ASSERT_TRUE(parses_finite(l)) << l;
    // Labels are distinct: the decimals are enough to tell ticks apart.
    ASSERT_EQ(std::set<std::string>(t.labels.begin(), t.labels.end()).size(), t.labels.size())
        << lo << " " << hi << ": " << ::testing::PrintToString(t.labels);
  }
}

// ---------------------------------------------------------------------------------------------
// SVG

LineChart sample_line_chart() {
  LineChart chart;
  chart.title = "acc <by> \"strategy\" & 'seed'";
  chart.x_label = "epoch";
  chart.y_label = "target/test/acc";
  chart.legend_title = "strategy";
  chart.integer_x = true;
  for (int s = 0; s < 10; ++s) {  // more series than colours: dashes tell them apart
    Series series;
    series.label = fmt::format("method <{}> & co", s);
    for (int x = 0; x < 20; ++x) {
      series.x.push_back(x);
      series.y.push_back(0.1 * s + 0.02 * x);
      series.lo.push_back(0.1 * s + 0.02 * x - 0.01);
      series.hi.push_back(0.1 * s + 0.02 * x + 0.01);
    }
    series.y[5] = kNaN;  // a gap
    series.hi[7] = kInf;
    chart.series.push_back(series);
  }
  chart.notes = {"skipped 2 NaN/Inf value(s)"};
  return chart;
}

TEST(PlotSvg, LineChartIsWellFormedWithFiniteNumbersAndEscapedText) {
  const std::string svg = to_svg(line_chart(sample_line_chart()));
  EXPECT_EQ(check_svg(svg), "");
  EXPECT_THAT(svg, HasSubstr("<svg xmlns=\"http://www.w3.org/2000/svg\""));
  EXPECT_THAT(svg, HasSubstr("acc &lt;by&gt; &quot;strategy&quot; &amp; &#39;seed&#39;"));
  EXPECT_THAT(svg, HasSubstr("method &lt;3&gt; &amp; co"));
  EXPECT_THAT(svg, Not(HasSubstr("<by>")));
  EXPECT_THAT(svg, Not(HasSubstr("nan")));
  EXPECT_THAT(svg, Not(HasSubstr("inf")));
  EXPECT_THAT(svg, HasSubstr(palette()[0].hex()));
  EXPECT_THAT(svg, HasSubstr("stroke-dasharray"));      // series 8 and 9
  EXPECT_THAT(svg, HasSubstr("fill-opacity=\"0.2\""));  // bands
  EXPECT_THAT(svg, HasSubstr("rotate(-90"));            // the y label
  EXPECT_THAT(svg, HasSubstr("skipped 2 NaN/Inf value(s)"));
}

TEST(PlotSvg, BarChartIsWellFormed) {
  BarChart chart;
  chart.title = "target/test/acc by target.variant";
  chart.x_label = "target.variant";
  chart.y_label = "target/test/acc";
  chart.categories = {"usps", "svhn", "a very long category name that will not fit"};
  chart.groups = {"finetune", "dann", "scratch"};
  chart.values = {{{0.8, 0.78, 0.82, 3}, {0.5, 0.45, 0.55, 3}, {0.2, 0.2, 0.2, 1}},
                  {{0.85, 0.84, 0.86, 3}, {}, {-0.1, -0.15, -0.05, 2}},
                  {{0.4, kNaN, kNaN, 1}, {0.3, 0.25, 0.35, 2}, {0.1, 0.05, 0.15, 2}}};
  const std::string svg = to_svg(bar_chart(chart));
  EXPECT_EQ(check_svg(svg), "");
  // The long category is shortened to its slot, with an ellipsis.
  EXPECT_TRUE(std::regex_search(svg, std::regex(">a very long category[^<]*\u2026</text>")));
  EXPECT_THAT(svg, Not(HasSubstr("will not fit")));
  EXPECT_THAT(svg, HasSubstr(palette()[2].hex()));
}

/// The title of an SVG chart (its bold <text>): x, anchor and content (unescaped: no entities).
struct SvgTitle {
  double x = kNaN;
  std::string anchor, text;
};

SvgTitle svg_title(const std::string& svg) {
  static const std::regex title(
      R"re(<text x="([-0-9.]+)" y="[-0-9.]+" font-size="15" fill="#[0-9a-f]+" )re"
      R"re(text-anchor="([a-z]+)" font-weight="bold">([^<]*)</text>)re");
  std::smatch m;
  if (!std::regex_search(svg, m, title)) return {};
  return {std::stod(m[1]), m[2], m[3]};
}

/// Extent of the title along x, measured with the font the layout uses.
std::pair<double, double> title_extent(const SvgTitle& t) {
  const double w = text_width(t.text, 15, true);
  return t.anchor == "middle" ? std::pair{t.x - w / 2, t.x + w / 2}
         : t.anchor == "end"  ? std::pair{t.x - w, t.x}
                              : std::pair{t.x, t.x + w};
}

TEST(PlotSvg, TitleStaysInsideTheFigureBesideAWideLegend) {
  // The report's size: the legend takes the right third, so the plot area's centre is far left
  // of the figure's; a long title centred there would start left of x = 0.
  LineChart chart;
  chart.title = "target/test/acc by strategy, target.variant, train.lr, backbone";
  chart.legend_title = "strategy, target.variant, train.lr, backbone";
  chart.series.push_back(
      {"importance_weighting, usps, 0.001, resnet18 (n=3)", {0, 1}, {0, 1}, {}, {}});
  chart.series.push_back({"finetune, svhn, 0.01, lenet (n=3)", {0, 1}, {1, 0}, {}, {}});
  for (const Size size : {Size{560, 360}, Size{800, 480}, Size{300, 200}}) {
    const std::string svg = to_svg(line_chart(chart, size));
    const SvgTitle t = svg_title(svg);
    ASSERT_FALSE(t.text.empty()) << svg;
    const auto [left, right] = title_extent(t);
    EXPECT_GE(left, 0) << size.width << ": '" << t.text << "' starts at " << left;
    EXPECT_LE(right, size.width) << size.width << ": '" << t.text << "' ends at " << right;
  }
  // A short title stays centred over the plot area (not the figure).
  chart.title = "acc";
  const SvgTitle t = svg_title(to_svg(line_chart(chart, {800, 480})));
  EXPECT_EQ(t.text, "acc");
  EXPECT_LT(t.x, 400 - 50);
}

TEST(PlotSvg, TheCheckerCatchesBrokenSvg) {
  EXPECT_NE(check_svg("<svg><g></svg>"), "");
  EXPECT_NE(check_svg("<svg><rect x=\"nan\"/></svg>"), "");
  EXPECT_NE(check_svg("<svg><polyline points=\"1,2 3,inf\"/></svg>"), "");
  EXPECT_NE(check_svg("<svg><text>a & b</text></svg>"), "");
  EXPECT_NE(check_svg("<svg x=1/>"), "");
  EXPECT_EQ(check_svg("<svg><text x=\"1\">a &amp; b</text></svg>"), "");
}

TEST(PlotSvg, EmptyChartsAreRefusedWithTheReason) {
  LineChart empty;
  empty.title = "nothing";
  empty.series.push_back({"a", {1, 2}, {kNaN, kNaN}, {}, {}});
  EXPECT_THAT(plot_error([&] { line_chart(empty); }), HasSubstr("no series has a finite point"));
  BarChart bars;
  bars.categories = {"a"};
  bars.groups = {"g"};
  bars.values = {{BarValue{}}};
  EXPECT_THAT(plot_error([&] { bar_chart(bars); }), HasSubstr("no bar has a finite value"));
}

// ---------------------------------------------------------------------------------------------
// PNG

TEST(PlotPng, PrimitivesLandOnTheRightPixels) {
  Scene scene;
  scene.width = 100;
  scene.height = 60;
  const Color blue = palette()[0], vermillion = palette()[3], black{0, 0, 0};
  const Color white{255, 255, 255};
  scene.items.push_back(Polyline{{{10, 20}, {90, 20}}, blue, 4, 1, {}});
  scene.items.push_back(Rect{60, 30, 30, 20, vermillion, 1});
  Text label;
  label.x = 10;
  label.y = 50;
  label.text = "H";
  label.size = 20;
  label.color = black;
  scene.items.push_back(label);
  const Decoded png = decode_png(render_png(scene, 2));
  ASSERT_EQ(png.width, 200);
  ASSERT_EQ(png.height, 120);
  EXPECT_EQ(png.at(0, 0), white);
  EXPECT_EQ(png.at(199, 119), white);
  EXPECT_EQ(png.at(100, 40), blue);  // on the line (y = 20 * 2)
  EXPECT_EQ(png.at(100, 36), blue);  // within its width (4 * 2 / 2 = 4 px each side), crisp
  EXPECT_EQ(png.at(100, 43), blue);
  EXPECT_EQ(png.at(100, 35), white);
  EXPECT_EQ(png.at(100, 44), white);
  EXPECT_EQ(png.at(150, 80), vermillion);  // inside the rect
  EXPECT_EQ(png.at(110, 80), white);
  // The "H" on the baseline y = 100 from x = 20, 20 * 0.73 * 2 = 29 px tall (DejaVu's cap
  // height): black stems, grey anti-aliased edges, nothing above the cap height.
  EXPECT_GT(grey_pixels(png, 20, 68, 60, 101, -1, 1), 150u);
  EXPECT_GT(grey_pixels(png, 20, 68, 60, 101, 0, 255), 5u);
  EXPECT_EQ(grey_pixels(png, 0, 0, 100, 64, -1, 255), 0u);
}

TEST(PlotPng, StrokesAreOneUnionAndBandsBlend) {
  Scene scene;
  scene.width = 100;
  scene.height = 100;
  const Color c = palette()[2];
  // A self-crossing half-transparent stroke: the crossing must not be darker (a union).
  scene.items.push_back(Polyline{{{10, 10}, {90, 90}, {90, 10}, {10, 90}}, c, 6, 0.5, {}});
  // A dashed line along y = 5: both on and off pixels.
  scene.items.push_back(Polyline{{{0, 5}, {100, 5}}, c, 2, 1, {6, 6}});
  const Decoded png = decode_png(render_png(scene, 1));
  const Color crossing = png.at(50, 50), straight = png.at(30, 30);
  EXPECT_EQ(crossing, straight);
  EXPECT_NE(straight, c);                       // half transparent: lighter than c
  EXPECT_NE(straight, (Color{255, 255, 255}));  // but not white
  int on = 0, off = 0;
  for (int x = 0; x < 100; ++x) (png.at(x, 5) == c ? on : off) += 1;
  EXPECT_GT(on, 30);
  EXPECT_GT(off, 30);
}

TEST(PlotPng, NonAsciiTextIsDrawnWithTheFontAntiAliased) {
  LineChart chart;
  chart.title = "Genauigkeit über Epochen: σ ± 1 — Ωμέγα";
  chart.x_label = "Epoche";
  chart.y_label = "Genauigkeit";
  chart.series.push_back({"Feinabstimmung", {0, 1, 2}, {0.2, 0.5, 0.7}, {}, {}});
  const Scene scene = line_chart(chart, {640, 400});
  TempDir dir;
  write_scene(scene, dir.path() / "umlaut.png");
  const Decoded png = decode_png(read_bytes(dir.path() / "umlaut.png"));
  ASSERT_EQ(png.width, 1280);
  ASSERT_EQ(png.height, 800);
  // The title's band (baseline y = 26, 15 px bold: from y = 26 - 15 to 26 + 4, times 2):
  // dark text pixels and anti-aliased grey ones.
  const std::size_t dark = grey_pixels(png, 0, 20, 1280, 62, -1, 80);
  const std::size_t aa = grey_pixels(png, 0, 20, 1280, 62, 80, 230);
  EXPECT_GT(dark, 800u);
  EXPECT_GT(aa, 300u) << "no anti-aliased text edges";

  // A letter outside ASCII is itself, not a stand-in: "ü" differs from "u" and from "?".
  auto one = [](const std::string& s) {
    Scene sc;
    sc.width = 40;
    sc.height = 40;
    Text t;
    t.x = 8;
    t.y = 30;
    t.text = s;
    t.size = 24;
    sc.items.push_back(t);
    return render_png(sc, 1);
  };
  EXPECT_NE(one("ü"), one("u"));
  EXPECT_NE(one("ü"), one("?"));
  EXPECT_NE(one("σ"), one("?"));
}

TEST(PlotPng, InvalidUtf8IsDrawnAsReplacementCharacters) {
  Scene scene;
  scene.width = 60;
  scene.height = 30;
  Text t;
  t.x = 4;
  t.y = 20;
  t.text = std::string(
      "a\xFF\xC3"
      "b");  // a stray byte and a truncated sequence
  t.size = 14;
  scene.items.push_back(t);
  const Decoded png = decode_png(render_png(scene, 1));
  EXPECT_GT(grey_pixels(png, 0, 0, 60, 30, -1, 128), 20u);  // drawn, not refused
  EXPECT_THAT(to_svg(scene), HasSubstr(">a\xEF\xBF\xBD\xEF\xBF\xBD"
                                       "b</text>"));
  EXPECT_DOUBLE_EQ(text_width(t.text, 14), text_width("a\uFFFD\uFFFD"
                                                      "b",
                                                      14));
}

TEST(PlotPng, ErrorsNameTheScaleTheSizeOrCairosReason) {
  Scene scene;
  scene.width = 100;
  scene.height = 60;
  EXPECT_EQ(plot_error([&] { render_png(scene, 0); }),
            "PNG scale 0 is out of range; expected 0 < scale <= 16");
  EXPECT_EQ(plot_error([&] { render_png(scene, 17); }),
            "PNG scale 17 is out of range; expected 0 < scale <= 16");
  Scene empty;
  empty.width = 0;
  EXPECT_EQ(plot_error([&] { render_png(empty, 2); }),
            "cannot draw a 0x480 figure: expected a positive width and height (--width, "
            "--height)");
  Scene wide;
  wide.width = 20000;
  wide.height = 100;
  const std::string big = plot_error([&] { render_png(wide, 2); });
  EXPECT_THAT(big, HasSubstr("cairo cannot make a 40000x200 pixel image for a 20000x100 figure "
                             "at scale 2: "));
  EXPECT_THAT(big, HasSubstr("use a smaller --scale, --width or --height (at most 32767 pixels"));
  Scene bad;
  bad.width = 100;
  bad.height = 60;
  bad.title = "bad dash";
  bad.items.push_back(Polyline{{{0, 5}, {100, 5}}, palette()[0], 2, 1, {-1, 2}});
  EXPECT_THAT(plot_error([&] { render_png(bad, 1); }),
              HasSubstr("cairo cannot draw the 100x60 figure 'bad dash' as PNG: "));
}

// ---------------------------------------------------------------------------------------------
// Text measurement

TEST(PlotText, WidthsComeFromTheFontsMetrics) {
  // Proportional: narrow letters are narrower than wide ones, bold is wider than regular.
  EXPECT_LT(text_width("iiii", 12) * 2, text_width("WWWW", 12));
  EXPECT_GT(text_width("target/test/acc", 15, true), text_width("target/test/acc", 15));
  // Unhinted: the width scales with the size exactly, so layout holds at every PNG scale.
  EXPECT_NEAR(text_width("finetune (n=3)", 24), 2 * text_width("finetune (n=3)", 12), 1e-9);
  // DejaVu Sans: "0" is 0.636 em wide.
  EXPECT_NEAR(text_width("0", 100), 63.6, 0.1);
  EXPECT_NEAR(text_width("ü", 12), text_width("u", 12), 1e-9);
  EXPECT_EQ(text_width("", 12), 0);
  EXPECT_EQ(text_width("abc", 0), 0);
  EXPECT_EQ(text_width("abc", kNaN), 0);
}

TEST(PlotPng, ChartUsesThePaletteOnWhiteAndWritesFiles) {
  TempDir dir;
  const Scene scene = line_chart(sample_line_chart(), {640, 400});
  write_scene(scene, dir.path() / "chart.png");
  write_scene(scene, dir.path() / "sub" / "chart.svg");
  const Decoded png = decode_png(read_bytes(dir.path() / "chart.png"));
  ASSERT_EQ(png.width, 1280);
  ASSERT_EQ(png.height, 800);
  EXPECT_EQ(png.at(0, 0), (Color{255, 255, 255}));
  EXPECT_EQ(png.at(1279, 799), (Color{255, 255, 255}));
  for (std::size_t i = 0; i < 7; ++i)  // black is also the text colour's neighbour; skip it
    EXPECT_GT(png.count(palette()[i]), 50u) << "colour " << palette()[i].hex() << " missing";
  EXPECT_EQ(check_svg(read_text(dir.path() / "sub" / "chart.svg")), "");
}

TEST(PlotPng, OutputFormatComesFromTheExtension) {
  EXPECT_EQ(format_for_path("a/b.svg"), FileFormat::Svg);
  EXPECT_EQ(format_for_path("B.PNG"), FileFormat::Png);
  const std::string e = plot_error([] { format_for_path("plot.jpg"); });
  EXPECT_THAT(e, HasSubstr("'.jpg'"));
  EXPECT_THAT(e, HasSubstr(".svg or .png"));
  EXPECT_THAT(plot_error([] { format_for_path("plot"); }), HasSubstr("(none)"));
}

// ---------------------------------------------------------------------------------------------
// Curves and bars from runs

TEST(PlotCurves, MeanAndStandardErrorOverSeedsPerConfiguration) {
  std::vector<RunSummaryRow> runs = {
      run_row(1, "finetune", "usps", 1, 0.8), run_row(2, "finetune", "usps", 2, 0.9),
      run_row(3, "scratch", "usps", 1, 0.5), run_row(4, "scratch", "usps", 2, 0.6),
      run_row(5, "scratch", "usps", 3, 0.1, "failed")};
  Histories h;
  h[1] = history(0.5, 0.1, 3);
  h[2] = history(0.7, 0.1, 3);
  h[3] = history(0.2, 0.0, 3);
  h[4] = history(0.4, 0.0, 3);
  h[4][1].value = kNaN;  // skipped, noted
  h[5] = history(0.0, 0.0, 3);
  h[3].push_back({"target/train/loss", 10, 0, 1.0, 0});
  CurveOptions options;
  options.metric = "target/test/acc";
  options.x = XAxis::Epoch;
  const LineChart chart = learning_curves(runs, h, options);
  ASSERT_EQ(chart.series.size(), 2u);
  EXPECT_EQ(chart.legend_title, "strategy");
  EXPECT_EQ(chart.x_label, "epoch (of the target stage)");
  EXPECT_EQ(chart.series[0].label, "finetune (n=2)");
  EXPECT_EQ(chart.series[1].label, "scratch (n=2)");
  EXPECT_EQ(chart.series[0].x, (std::vector<double>{0, 1, 2}));
  EXPECT_NEAR(chart.series[0].y[0], 0.6, 1e-12);
  EXPECT_NEAR(chart.series[0].hi[0] - chart.series[0].y[0], 0.1, 1e-12);  // s.e. of {0.5, 0.7}
  EXPECT_NEAR(chart.series[1].y[1], 0.2, 1e-12);  // run 4's NaN left out: only run 3
  EXPECT_NEAR(chart.series[1].lo[1], 0.2, 1e-12);
  const std::string notes = ::testing::PrintToString(chart.notes);
  EXPECT_THAT(notes, HasSubstr("skipped 1 NaN/Inf value(s) of target/test/acc (runs 4)"));
  EXPECT_THAT(notes, HasSubstr("1 run(s) that did not finish are left out"));
  EXPECT_EQ(chart.caption, "line: mean over runs (seeds); band: ± 1 standard error");

  options.x = XAxis::Step;
  options.band = Band::MinMax;
  options.include_unfinished = true;
  const LineChart all = learning_curves(runs, h, options);
  EXPECT_EQ(all.series[1].label, "scratch (n=3)");
  EXPECT_THAT(all.caption, HasSubstr("band: min to max"));
  EXPECT_EQ(all.series[1].x, (std::vector<double>{10, 20, 30}));
  EXPECT_NEAR(all.series[1].lo[0], 0.0, 1e-12);
  EXPECT_NEAR(all.series[1].hi[0], 0.4, 1e-12);
}

/// A run's history as the runner logs it: per stage, per epoch, at the step after the epoch's
/// steps; each stage counts its epochs from 0. `values[name][e]`.
void add_stage(std::vector<MetricRow>& rows, int64_t& step, int64_t steps_per_epoch,
               const std::vector<std::pair<std::string, std::vector<double>>>& values) {
  std::size_t epochs = 0;
  for (const auto& [name, series] : values) epochs = std::max(epochs, series.size());
  for (std::size_t e = 0; e < epochs; ++e) {
    step += steps_per_epoch;
    for (const auto& [name, series] : values)
      if (e < series.size())
        rows.push_back({name, step, static_cast<int64_t>(e), series[e], 1.0 * step});
  }
}

TEST(PlotCurves, DefaultXIsTheTargetStagesEpochSoFineTunedAndScratchRunsLineUp) {
  // Runs 1, 2: fine-tuned (3 epochs of pre-training on the source, 157 steps each, then the
  // target stage, which also evaluates source val); runs 3, 4: from scratch.
  std::vector<RunSummaryRow> runs = {
      run_row(1, "finetune", "usps", 1, 0.7), run_row(2, "finetune", "usps", 2, 0.7),
      run_row(3, "scratch", "usps", 1, 0.6), run_row(4, "scratch", "usps", 2, 0.6)};
  Histories h;
  for (int64_t id : {1, 2}) {
    int64_t step = 0;
    add_stage(h[id], step, 157,
              {{"source/train/loss", {0.3, 0.01, 0.002}}, {"source/val/acc", {0.99, 1.0, 1.0}}});
    add_stage(h[id], step, 2,
              {{"target/train/loss", {4.0, 3.0, 2.0, 1.0}},
               {"target/test/acc", {0.1, 0.3, 0.5, 0.7}},
               {"source/val/acc", {0.8, 0.7, 0.6, 0.5}}});
  }
  for (int64_t id : {3, 4}) {
    int64_t step = 0;
    add_stage(
        h[id], step, 2,
        {{"target/train/loss", {2.0, 1.5, 1.0, 0.5}}, {"target/test/acc", {0.2, 0.3, 0.4, 0.6}}});
  }
  CurveOptions options;  // the default x
  EXPECT_EQ(options.x, XAxis::Epoch);
  LineChart chart = learning_curves(runs, h, options);
  ASSERT_EQ(chart.series.size(), 2u);
  EXPECT_EQ(chart.x_label, "epoch (of the target stage)");
  EXPECT_EQ(chart.series[0].x, (std::vector<double>{0, 1, 2, 3}));  // finetune, not 473...
  EXPECT_EQ(chart.series[1].x, (std::vector<double>{0, 1, 2, 3}));  // scratch
  EXPECT_EQ(chart.series[0].y, (std::vector<double>{0.1, 0.3, 0.5, 0.7}));
  EXPECT_TRUE(chart.notes.empty()) << ::testing::PrintToString(chart.notes);

  // A metric logged in both stages: only the target stage's rows, not pre-training's 0.99.
  options.metric = "source/val/acc";
  chart = learning_curves(runs, h, options);
  ASSERT_EQ(chart.series.size(), 1u);
  EXPECT_EQ(chart.series[0].y, (std::vector<double>{0.8, 0.7, 0.6, 0.5}));
  EXPECT_EQ(chart.notes,
            (std::vector<std::string>{"2 run(s) without a source/val/acc history: 3, 4"}));

  // A metric of pre-training only: against pre-training's epoch, and the axis says so.
  options.metric = "source/train/loss";
  chart = learning_curves(runs, h, options);
  ASSERT_EQ(chart.series.size(), 1u);
  EXPECT_EQ(chart.x_label, "epoch (of the stage before the target stage)");
  EXPECT_EQ(chart.series[0].x, (std::vector<double>{0, 1, 2}));
  EXPECT_NEAR(chart.series[0].y[0], 0.3, 1e-12);

  // ... unless another run logs it in its target stage (multitask's joint stage): then the runs
  // that only have it before are left out, with a note, so the x axis means one thing.
  runs.push_back(run_row(5, "multitask", "usps", 1, 0.7));
  int64_t step = 0;
  add_stage(h[5], step, 2, {{"target/test/acc", {0.2, 0.4}}, {"source/train/loss", {0.9, 0.8}}});
  chart = learning_curves(runs, h, options);
  ASSERT_EQ(chart.series.size(), 1u);
  EXPECT_EQ(chart.series[0].label, "multitask (n=1)");
  EXPECT_EQ(chart.x_label, "epoch (of the target stage)");
  EXPECT_THAT(chart.notes,
              ::testing::Contains("2 run(s) log source/train/loss only before their target "
                                  "stage and are left out: 1, 2 (--x step plots whole "
                                  "histories)"));

  // --x step: whole histories, stages one after another.
  options.metric = "target/test/acc";
  options.x = XAxis::Step;
  chart = learning_curves(runs, h, options);
  EXPECT_EQ(chart.x_label, "step");
  EXPECT_EQ(chart.series[0].x.front(), 473);  // finetune: after 3 x 157 pre-training steps
  options.metric = "source/val/acc";
  chart = learning_curves(runs, h, options);
  EXPECT_EQ(chart.series[0].x.size(), 7u);  // 3 pre-training + 4 target-stage epochs
}

TEST(PlotCurves, XAxisNamesAreEpochOrStep) {
  EXPECT_EQ(parse_x_axis("epoch"), XAxis::Epoch);
  EXPECT_EQ(parse_x_axis("step"), XAxis::Step);
  EXPECT_EQ(plot_error([] { parse_x_axis("steps"); }),
            "unknown x axis 'steps'; expected 'epoch' (of the target stage) or 'step' (global)");
}

TEST(PlotCurves, ExplicitGroupingNotesWhatIsPooled) {
  std::vector<RunSummaryRow> runs = {run_row(1, "finetune", "usps", 1, 0.8),
                                     run_row(2, "finetune", "svhn", 1, 0.9),
                                     run_row(3, "scratch", "usps", 1, 0.5)};
  Histories h;
  for (int64_t id = 1; id <= 3; ++id) h[id] = history(0.1 * id, 0.1, 2);
  CurveOptions options;
  options.group_by = {"strategy.plugin"};
  const LineChart chart = learning_curves(runs, h, options);
  EXPECT_EQ(chart.series.size(), 2u);
  EXPECT_THAT(::testing::PrintToString(chart.notes), HasSubstr("differ in target.variant"));
  options.group_by = {"strategy.plugin", "target.variant"};
  const LineChart both = learning_curves(runs, h, options);
  ASSERT_EQ(both.series.size(), 3u);
  EXPECT_EQ(both.series[0].label, "finetune, svhn (n=1)");
  EXPECT_EQ(both.legend_title, "strategy, target.variant");
}

TEST(PlotCurves, UnknownMetricsAndKeysAreExplained) {
  std::vector<RunSummaryRow> runs = {run_row(1, "finetune", "usps", 1, 0.8)};
  Histories h;
  h[1] = history(0.5, 0.1, 3);
  CurveOptions options;
  options.metric = "target/tset/acc";
  const std::string e = plot_error([&] { learning_curves(runs, h, options); });
  EXPECT_THAT(e, HasSubstr("no metric history 'target/tset/acc'"));
  EXPECT_THAT(e, HasSubstr("did you mean 'target/test/acc'"));
  options.metric = "target/test/acc";
  options.group_by = {"strategy.plugn"};
  const std::string k = plot_error([&] { learning_curves(runs, h, options); });
  EXPECT_THAT(k, HasSubstr("--group-by names 'strategy.plugn'"));
  EXPECT_THAT(k, HasSubstr("did you mean 'strategy.plugin'"));
  runs[0].status = "failed";
  options.group_by.clear();
  EXPECT_THAT(plot_error([&] { learning_curves(runs, h, options); }),
              HasSubstr("--include-unfinished"));
}

TEST(PlotBars, MeanAndStandardErrorPerCategoryAndGroup) {
  std::vector<RunSummaryRow> runs = {
      run_row(1, "finetune", "usps", 1, 0.8), run_row(2, "finetune", "usps", 2, 0.9),
      run_row(3, "scratch", "usps", 1, 0.5),  run_row(4, "scratch", "svhn", 1, kNaN),
      run_row(5, "scratch", "svhn", 2, 0.3),  run_row(6, "finetune", "svhn", 1, 0.6)};
  runs[5].summaries.clear();  // no summary: noted
  BarOptions options;
  options.x_key = "target.variant";
  const BarChart chart = summary_bars(runs, options);
  EXPECT_EQ(chart.categories, (std::vector<std::string>{"svhn", "usps"}));
  EXPECT_EQ(chart.groups, (std::vector<std::string>{"finetune", "scratch"}));
  EXPECT_EQ(chart.legend_title, "strategy");
  EXPECT_EQ(chart.x_label, "target.variant");
  EXPECT_EQ(chart.values[0][0].n, 0u);  // finetune on svhn: no summary
  EXPECT_EQ(chart.values[0][1].n, 2u);
  EXPECT_NEAR(chart.values[0][1].mean, 0.85, 1e-12);
  EXPECT_NEAR(chart.values[0][1].hi, 0.9, 1e-12);
  EXPECT_EQ(chart.values[1][0].n, 1u);  // the NaN skipped
  EXPECT_NEAR(chart.values[1][0].mean, 0.3, 1e-12);
  const std::string notes = ::testing::PrintToString(chart.notes);
  EXPECT_THAT(notes, HasSubstr("skipped 1 NaN/Inf value(s) of target/test/acc (runs 4)"));
  EXPECT_THAT(notes, HasSubstr("1 run(s) without a target/test/acc summary: 6"));
  EXPECT_EQ(check_svg(to_svg(bar_chart(chart))), "");

  options.x_key = "target.varaint";
  EXPECT_THAT(plot_error([&] { summary_bars(runs, options); }),
              HasSubstr("did you mean 'target.variant'"));
  options.x_key = "";
  options.metric = "target/test/acc2";
  EXPECT_THAT(plot_error([&] { summary_bars(runs, options); }),
              HasSubstr("summaries recorded there: target/test/acc"));
}

TEST(PlotCurves, ConfigKeysLeaveOutSeedAndOptionsConstantPerPlugin) {
  auto a = run_row(1, "l2sp", "usps", 1, 0.5);
  a.params.push_back({"strategy.alpha", 0.1, "float"});
  auto b = run_row(2, "finetune", "usps", 2, 0.5);
  EXPECT_EQ(config_keys({a, b}), (std::vector<std::string>{"strategy.plugin"}));
  auto c = run_row(3, "l2sp", "usps", 1, 0.5);
  c.params.push_back({"strategy.alpha", 0.2, "float"});
  EXPECT_EQ(config_keys({a, b, c}),
            (std::vector<std::string>{"strategy.alpha", "strategy.plugin"}));
  EXPECT_EQ(config_keys({a, b, c}, {"strategy.plugin"}),
            (std::vector<std::string>{"strategy.alpha"}));
}

// ---------------------------------------------------------------------------------------------
// HTML

TEST(HtmlEscape, EscapesMarkupQuotesAndControlCharacters) {
  EXPECT_EQ(escape_html("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;");
  EXPECT_EQ(escape_html("plain ± text"), "plain ± text");
  EXPECT_EQ(escape_html(std::string("a\x01z")), "a\xEF\xBF\xBDz");
  EXPECT_EQ(escape_html(""), "");
}

/// A results database with two strategies x two targets x three seeds, finished with metric
/// histories, plus a failed, a diverged and a running run whose texts contain markup.
fs::path build_database(const fs::path& dir) {
  const fs::path db = dir / "results.db";
  Store store(db);
  auto new_run = [](const std::string& strategy, const std::string& variant, int64_t seed) {
    NewRun r;
    r.experiment = "experiments/digits.toml";
    r.name = "digits";
    r.host = "node-1";
    r.device = "cpu";
    r.seed = seed;
    r.config_toml = "seed = 1\n";
    r.config_hash = "00";
    r.params = {{"seed", seed, "int"},
                {"strategy.plugin", strategy, "string"},
                {"target.variant", variant, "string"},
                {"train.lr", 0.01, "float"}};
    return r;
  };
  int index = 0;
  for (const std::string strategy : {"finetune", "scratch"})
    for (const std::string variant : {"usps", "svhn"})
      for (int64_t seed = 1; seed <= 3; ++seed) {
        const int64_t id = store.create_run(new_run(strategy, variant, seed));
        const double base = (strategy == "finetune" ? 0.5 : 0.2) + (variant == "usps" ? 0.2 : 0);
        std::vector<MetricRow> rows;
        for (int e = 0; e < 8; ++e) {
          const double acc = base + 0.03 * e + 0.01 * seed;
          rows.push_back({"target/test/acc", (e + 1) * 50, e, acc, 1.0 * e});
          rows.push_back({"target/val/acc", (e + 1) * 50, e, acc - 0.02, 1.0 * e});
          rows.push_back(
              {"target/train/loss", (e + 1) * 50, e, 2.0 / (e + 1) + 0.05 * seed, 1.0 * e});
          if (strategy == "finetune")
            rows.push_back({"source/train/loss", (e + 1) * 50, e, 1.5 / (e + 1), 1.0 * e});
        }
        if (++index == 2) rows[5].value = kNaN;  // a NaN in one history
        store.write_metrics(id, rows);
        store.write_summaries(id, {{"target/test/acc", base + 0.21 + 0.01 * seed},
                                   {"target/val/acc", base + 0.19},
                                   {"run/wall_seconds", 12.5 + seed}});
        store.finish_run(id, RunStatus::kFinished, "");
      }
  const int64_t failed = store.create_run(new_run("<script>alert('x')</script>", "usps", 4));
  store.write_metrics(failed, {{"target/test/acc", 50, 0, 0.1, 1}});
  store.finish_run(failed, RunStatus::kFailed,
                   "strategy plugin 'faulty' failed in loss: <b>bad</b> & \"worse\"\nline two");
  const int64_t diverged = store.create_run(new_run("scratch", "usps", 5));
  store.write_metrics(diverged, {{"target/train/loss", 50, 0, kInf, 1}});
  store.finish_run(diverged, RunStatus::kDiverged, "mean training loss is inf in target epoch 0");
  store.create_run(new_run("finetune", "svhn", 6));  // still running
  return db;
}

std::string generate_report(const fs::path& db) {
  Store store(db, /*create=*/false);
  const auto runs = store.list_runs();
  ReportOptions options;
  options.title = "Digits <report>";
  options.source = db.string();
  return html_report(store, runs, options);
}

/// Counts of opening and closing tags of `name` in `html`.
std::pair<std::size_t, std::size_t> tag_counts(const std::string& html, const std::string& name) {
  std::size_t open = 0, close = 0;
  const std::regex opening("<" + name + "[\\s>]"), closing("</" + name + ">");
  open = std::distance(std::sregex_iterator(html.begin(), html.end(), opening),
                       std::sregex_iterator());
  close = std::distance(std::sregex_iterator(html.begin(), html.end(), closing),
                        std::sregex_iterator());
  return {open, close};
}

TEST(HtmlReport, IsSelfContainedEscapedAndComplete) {
  TempDir dir;
  const std::string html = generate_report(build_database(dir.path()));
  // Every section.
  for (const char* part :
       {"<h2>Runs by status</h2>", "<h2>Comparison: mean ± standard error over seeds</h2>",
        "<h2>Learning curves</h2>", "<h2>Final results</h2>", "<h2>Runs that did not finish</h2>"})
    EXPECT_THAT(html, HasSubstr(part));
  // Status counts: 12 finished, one each failed, diverged, running.
  EXPECT_THAT(html, HasSubstr(">finished</span></td><td class=\"num\">12</td>"));
  EXPECT_THAT(html, HasSubstr(">running</span></td><td class=\"num\">1</td>"));
  // The comparison: finetune on usps, seeds 1-3: test acc 0.7 + 0.21 + {0.01, 0.02, 0.03}.
  EXPECT_TRUE(
      std::regex_search(html, std::regex("<td>finetune</td><td>usps</td><td class=\"num best\" "
                                         "data-v=\"0\\.9[0-9]+\">0\\.9300 ± 0\\.0058</td>")))
      << html;
  EXPECT_THAT(html, HasSubstr("<td>1, 2, 3</td>"));
  // Four curve plots and one bar chart, each well-formed SVG.
  std::size_t svgs = 0;
  for (std::size_t at = html.find("<svg"); at != std::string::npos;
       at = html.find("<svg", at + 1)) {
    const std::size_t end = html.find("</svg>", at);
    ASSERT_NE(end, std::string::npos);
    const std::string svg = html.substr(at, end + 6 - at);
    EXPECT_EQ(check_svg(svg), "") << "SVG number " << svgs;
    // Its title is inside its viewBox, not clipped at the left beside the legend.
    std::smatch width;
    ASSERT_TRUE(std::regex_search(svg, width, std::regex("viewBox=\"0 0 ([0-9]+) [0-9]+\"")));
    const SvgTitle title = svg_title(svg);
    ASSERT_FALSE(title.text.empty()) << svg;
    const auto [left, right] = title_extent(title);
    EXPECT_GE(left, 0) << title.text;
    EXPECT_LE(right, std::stod(width[1])) << title.text;
    ++svgs;
  }
  EXPECT_EQ(svgs, 5u);
  for (const char* metric :
       {"target/test/acc by", "target/val/acc", "target/train/loss", "source/train/loss"})
    EXPECT_THAT(html, HasSubstr(metric));
  EXPECT_THAT(html, HasSubstr("skipped 1 NaN/Inf value(s)"));
  // Database text is escaped everywhere: the strategy name and the failure reason.
  EXPECT_THAT(html, Not(HasSubstr("<script>alert")));
  EXPECT_THAT(html, Not(HasSubstr("<b>bad</b>")));
  EXPECT_THAT(html, HasSubstr("&lt;b&gt;bad&lt;/b&gt; &amp; &quot;worse&quot;\nline two"));
  EXPECT_THAT(html, HasSubstr("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
  EXPECT_THAT(html, HasSubstr("<title>Digits &lt;report&gt;</title>"));
  EXPECT_THAT(html, HasSubstr("mean training loss is inf in target epoch 0"));
  // Self-contained: nothing loaded from elsewhere.
  EXPECT_FALSE(std::regex_search(html, std::regex(R"((src|href)\s*=)", std::regex::icase)));
  EXPECT_THAT(html, Not(HasSubstr("url(")));
  EXPECT_THAT(html, Not(HasSubstr("@import")));
  EXPECT_THAT(html, Not(HasSubstr("https://")));
  std::string rest = html;
  for (std::size_t at; (at = rest.find("http://")) != std::string::npos;) {
    EXPECT_EQ(rest.compare(at, 26, "http://www.w3.org/2000/svg"), 0) << rest.substr(at, 40);
    rest = rest.substr(at + 7);
  }
  // Balanced structure.
  for (const char* tag : {"html", "head", "body", "table", "thead", "tbody", "tr", "td", "th", "h2",
                          "p", "figure", "div", "script", "style", "svg", "text"}) {
    const auto [open, close] = tag_counts(html, tag);
    EXPECT_EQ(open, close) << "<" << tag << "> opened " << open << " times, closed " << close;
  }
}

TEST(HtmlReport, EmptySelectionStillMakesAPage) {
  const std::string html = html_report(std::vector<RunSummaryRow>{}, Histories{}, {});
  EXPECT_THAT(html, HasSubstr("No runs match."));
  EXPECT_THAT(html, HasSubstr("No finished runs to compare."));
  EXPECT_THAT(html, HasSubstr("</html>"));
}

// ---------------------------------------------------------------------------------------------
// The report in a real browser

/// Path of a headless-capable Chromium: $TLAB_CHROMIUM, else chromium or chromium-browser on
/// PATH; "" when there is none.
std::string find_chromium() {
  if (const char* env = std::getenv("TLAB_CHROMIUM"); env && *env) return env;
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "");
  for (std::string dir; std::getline(dirs, dir, ':');)
    for (const char* name : {"chromium", "chromium-browser"}) {
      const fs::path candidate = fs::path(dir) / name;
      if (access(candidate.c_str(), X_OK) == 0) return candidate.string();
    }
  return "";
}

struct BrowserResult {
  int exit_code = -1;
  std::string log;  // Chromium's stderr (and stdout)
};

/// Loads `html` in headless Chromium and takes a screenshot of the first 1280x2000 pixels.
BrowserResult screenshot(const std::string& chromium, const fs::path& html, const fs::path& png,
                         const fs::path& work) {
  const fs::path log = work / (png.stem().string() + ".log");
  const std::string command = fmt::format(
      "timeout 60 '{}' --headless=new --no-sandbox --disable-gpu --no-first-run "
      "--no-default-browser-check --disable-extensions --hide-scrollbars "
      "--user-data-dir='{}' --enable-logging=stderr --v=0 --screenshot='{}' "
      "--window-size=1280,2000 'file://{}' >'{}' 2>&1",
      chromium, (work / ("profile-" + png.stem().string())).string(), png.string(),
      fs::absolute(html).string(), log.string());
  BrowserResult result;
  const int status = std::system(command.c_str());
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  result.log = read_text(log);
  return result;
}

/// Lines of Chromium's log that report a problem in the page: an uncaught exception, a
/// console message at error level, or (since the report logs nothing at all) any console
/// message. Chromium's own lines (dbus, GPU, sandbox) are not the page's and are ignored.
std::vector<std::string> console_problems(const std::string& log) {
  std::vector<std::string> problems;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);) {
    const bool console = line.find("CONSOLE") != std::string::npos;
    const bool uncaught = line.find("Uncaught") != std::string::npos;
    if (console || uncaught) problems.push_back(line);
  }
  return problems;
}

TEST(ReportBrowser, ChromiumRendersTheReportWithoutConsoleErrors) {
  const std::string chromium = find_chromium();
  if (chromium.empty()) GTEST_SKIP() << "chromium is not installed (tools/setup.sh installs it)";
  TempDir dir;
  const fs::path html = dir.path() / "report.html";
  write_text_file(html, generate_report(build_database(dir.path())));
  const fs::path shot = dir.path() / "report.png";
  const BrowserResult r = screenshot(chromium, html, shot, dir.path());
  ASSERT_EQ(r.exit_code, 0) << "chromium failed:\n" << r.log;
  ASSERT_TRUE(fs::exists(shot)) << "no screenshot; chromium said:\n" << r.log;
  const Decoded png = decode_png(read_bytes(shot));
  ASSERT_EQ(png.width, 1280);
  ASSERT_EQ(png.height, 2000);
  // Non-trivial: many colours (text, plots in the palette), mostly a white page.
  std::set<uint32_t> colors;
  for (std::size_t i = 0; i + 2 < png.rgb.size(); i += 3)
    colors.insert(png.rgb[i] << 16 | png.rgb[i + 1] << 8 | png.rgb[i + 2]);
  EXPECT_GT(colors.size(), 50u) << "the screenshot looks blank";
  EXPECT_EQ(png.at(2, 2), (Color{255, 255, 255}));
  std::size_t palette_pixels = 0;
  for (const auto& c : palette()) palette_pixels += c == Color{0, 0, 0} ? 0 : png.count(c);
  EXPECT_GT(palette_pixels, 500u) << "no plot colours in the screenshot";
  EXPECT_EQ(console_problems(r.log), std::vector<std::string>{}) << "chromium said:\n" << r.log;
}

TEST(ReportBrowser, TheConsoleCheckCatchesAScriptError) {
  const std::string chromium = find_chromium();
  if (chromium.empty()) GTEST_SKIP() << "chromium is not installed (tools/setup.sh installs it)";
  TempDir dir;
  std::string page = generate_report(build_database(dir.path()));
  const std::size_t body_end = page.rfind("</body>");
  ASSERT_NE(body_end, std::string::npos);
  page.insert(body_end,
              "<script>console.error('deliberate'); document.querySelector('#nothing').click();"
              "</script>\n");
  const fs::path html = dir.path() / "broken.html";
  write_text_file(html, page);
  const BrowserResult r = screenshot(chromium, html, dir.path() / "broken.png", dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.log;
  const auto problems = console_problems(r.log);
  ASSERT_EQ(problems.size(), 2u) << r.log;
  EXPECT_THAT(problems[0], HasSubstr("deliberate"));
  EXPECT_THAT(problems[1], HasSubstr("Uncaught TypeError"));
}

}  // namespace
}  // namespace tlab::plot
