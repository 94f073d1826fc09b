#pragma once
// Plots of results (`tlab results plot`); the HTML report that inlines them is report_html.hpp.
//
// Three layers:
//  1. A Scene: primitives in pixel coordinates (polylines with width and dashes, filled
//     polygons, rects, UTF-8 text), drawn by two backends from the same scene: `to_svg` (SVG
//     text, deterministic) and `render_png` (cairo: anti-aliased, DejaVu Sans through
//     fontconfig). Layout measures text with cairo's metrics of that font (`text_width`), so
//     labels fit in either.
//  2. Charts: `line_chart` (one line per series, optional band) and `bar_chart` (bars per group
//     within categories, with error bars), with nice ticks, gridlines, title, axis labels,
//     legend and notes, in the Okabe-Ito colour-blind-safe palette.
//  3. Results: `learning_curves` (metric history vs the target stage's epoch or the step, runs
//     grouped by their config minus the seed: mean line and a band of ± s.e. or min-max over
//     seeds) and `summary_bars` (mean ± s.e. of a summary metric). NaN and ±Inf values are
//     skipped and counted in a note.
//
// Example:
//   plot::CurveOptions options;
//   options.metric = "target/test/acc";
//   auto chart = plot::learning_curves(runs, histories, options);
//   plot::write_scene(plot::line_chart(chart), "curves.png");

#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "store/store.hpp"

namespace tlab::plot {

/// Input that cannot be plotted (no data, an unknown metric or key, a bad output extension) or
/// an output file that cannot be written. The message names the value, what was expected and
/// the fix.
class PlotError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

// ---------------------------------------------------------------------------------------------
// Colours and escaping

struct Color {
  uint8_t r = 0, g = 0, b = 0;
  /// "#rrggbb".
  std::string hex() const;
  bool operator==(const Color& o) const { return r == o.r && g == o.g && b == o.b; }
  bool operator!=(const Color& o) const { return !(*this == o); }
};

/// Okabe & Ito's colour-blind-safe palette, most distinguishable first: blue, orange, bluish
/// green, vermillion, reddish purple, sky blue, yellow, black.
const std::vector<Color>& palette();

/// Colour of series `index`: the palette, repeated (`dash_for` tells repeats apart).
Color series_color(std::size_t index);

/// Dash pattern of series `index`: solid for the first palette round, then dashed, dotted.
std::vector<double> dash_for(std::size_t index);

/// Escapes & < > " ' for HTML text and attribute values (also valid XML).
std::string escape_html(std::string_view text);

// ---------------------------------------------------------------------------------------------
// Scene

struct Point {
  double x = 0, y = 0;
};

enum class Anchor { Start, Middle, End };

/// An open polyline stroked with `width`; `dash` = on/off lengths (empty: solid). Round joins.
struct Polyline {
  std::vector<Point> points;
  Color color;
  double width = 1;
  double opacity = 1;
  std::vector<double> dash;
};

/// A filled polygon (non-zero winding), e.g. a band between two lines.
struct Polygon {
  std::vector<Point> points;
  Color color;
  double opacity = 1;
};

/// A filled axis-aligned rectangle.
struct Rect {
  double x = 0, y = 0, w = 0, h = 0;
  Color color;
  double opacity = 1;
};

/// One line of text. (x, y) is the start, middle or end of its baseline; `vertical` turns it
/// 90 degrees counter-clockwise (reads upwards) about (x, y).
struct Text {
  double x = 0, y = 0;
  std::string text;  ///< UTF-8 (invalid bytes are drawn as U+FFFD in both backends).
  double size = 12;  ///< Font size in pixels.
  Color color;
  Anchor anchor = Anchor::Start;
  bool vertical = false;
  bool bold = false;
};

using Item = std::variant<Polyline, Polygon, Rect, Text>;

/// What a chart draws, in pixel coordinates (y downwards), drawn in order.
struct Scene {
  int width = 800, height = 480;
  Color background{255, 255, 255};
  std::string title;  ///< The SVG's <title> (accessibility); not drawn.
  std::vector<Item> items;
};

/// The font of every text: DejaVu Sans (tools/setup.sh installs fonts-dejavu-core). cairo finds
/// it through fontconfig; where it is missing, fontconfig's substitute is measured and drawn.
constexpr const char* kFontFamily = "DejaVu Sans";

/// Advance width of `text` at font `size` (pixels) in kFontFamily, bold or regular: cairo's
/// unhinted metrics, the same in every backend and at every PNG scale. Used for layout.
double text_width(std::string_view text, double size, bool bold = false);

/// The scene as a standalone SVG document (no external resources). Non-finite coordinates are
/// left out. The same scene gives the same bytes.
std::string to_svg(const Scene& scene);

/// The scene drawn by cairo at `scale` pixels per scene unit (2 = sharp on high-density
/// screens), as PNG file bytes (8-bit RGB). Throws PlotError for a scale outside (0, 16] or an
/// image cairo cannot make (wider or taller than 32767 pixels).
std::vector<uint8_t> render_png(const Scene& scene, double scale = 2);

// ---------------------------------------------------------------------------------------------
// Axes

/// Tick positions covering [lo, hi] at a "nice" step (1, 2 or 5 times a power of ten).
struct Ticks {
  double lo = 0, hi = 1, step = 1;  ///< The axis range, widened to whole steps.
  std::vector<double> values;
  std::vector<std::string> labels;  ///< Same decimals for all; no "-0".
};

/// About `target` ticks covering [lo, hi]. A zero-width range is widened around its value;
/// `integer` keeps the step at least 1 (steps, epochs). Throws PlotError for non-finite bounds.
Ticks nice_ticks(double lo, double hi, int target = 6, bool integer = false);

// ---------------------------------------------------------------------------------------------
// Charts

/// One line: points (x[i], y[i]) and, when `lo`/`hi` have the same size, a band between them.
struct Series {
  std::string label;
  std::vector<double> x, y, lo, hi;
  bool markers = false;  ///< A scatter: a marker at each point, no line.
};

struct LineChart {
  std::string title, x_label, y_label;
  std::string legend_title;  ///< Shown above the legend entries ("" = none).
  std::vector<Series> series;
  std::string caption;             ///< How to read it ("line: mean ...; band: ..."), drawn first.
  std::vector<std::string> notes;  ///< Printed under the plot (skipped values, pooling, ...).
  bool integer_x = false;          ///< Steps and epochs: ticks at whole numbers.
};

/// One bar: a mean with an error bar from `lo` to `hi` (equal to `mean` for one run).
struct BarValue {
  double mean = std::numeric_limits<double>::quiet_NaN();
  double lo = std::numeric_limits<double>::quiet_NaN();
  double hi = std::numeric_limits<double>::quiet_NaN();
  std::size_t n = 0;  ///< Runs averaged; 0 = no bar.
};

struct BarChart {
  std::string title, x_label, y_label, legend_title;
  std::vector<std::string> categories;        ///< Along x.
  std::vector<std::string> groups;            ///< Bars within each category (legend).
  std::vector<std::vector<BarValue>> values;  ///< values[group][category].
  std::string caption;                        ///< How to read it, drawn first under the plot.
  std::vector<std::string> notes;             ///< What was skipped or pooled.
};

struct Size {
  int width = 800, height = 480;
};

/// Lays out `chart`: axes with nice ticks and gridlines, bands under their lines, a legend on
/// the right, notes at the bottom. Throws PlotError when no series has a finite point.
Scene line_chart(const LineChart& chart, Size size = {});
/// Lays out `chart`: grouped bars from zero, ± error bars, category labels, legend, notes.
/// Throws PlotError when no bar has a value.
Scene bar_chart(const BarChart& chart, Size size = {});

// ---------------------------------------------------------------------------------------------
// Charts from the results store

/// What learning curves are drawn against. Each stage of a run (pre-training on the source, the
/// target stage, ...) counts its epochs from 0, while steps count on across stages.
enum class XAxis {
  /// The epoch (0-based, as stored) of the run's target stage: the stage from the first step at
  /// which the run logs a `target/` metric. Earlier rows of the metric (a fine-tuned run's
  /// pre-training) are left out, so fine-tuned and from-scratch runs both start at epoch 0. When
  /// no selected run logs the metric in its target stage (`source/train/loss` of pre-training),
  /// its rows from before the target stage are drawn against their own epoch.
  Epoch,
  /// The global optimisation step: the whole history, every stage one after another.
  Step,
};
/// "epoch" or "step"; PlotError naming the value and the choices otherwise.
XAxis parse_x_axis(const std::string& name);

enum class Band { StdErr, MinMax, None };
/// "se", "minmax" or "none"; PlotError naming the value and the choices otherwise.
Band parse_band(const std::string& name);

/// The key as shown to people: "strategy" for "strategy.plugin", other keys as they are.
std::string display_key(const std::string& key);

/// A run's params as text (`param_text`), by key.
std::map<std::string, std::string> param_texts(const RunSummaryRow& run);

/// Param keys that tell the runs' configurations apart: the keys whose value differs between
/// runs (or is missing in some), except `seed`, the keys in `exclude`, and options of a varying
/// plugin that are constant for each plugin (e.g. `strategy.alpha` when only one strategy has
/// it). In key order.
std::vector<std::string> config_keys(const std::vector<RunSummaryRow>& runs,
                                     const std::vector<std::string>& exclude = {});
/// As above, for a selection of runs.
std::vector<std::string> config_keys(const std::vector<const RunSummaryRow*>& runs,
                                     const std::vector<std::string>& exclude = {});

/// Runs with the same values of some keys.
struct RunGroup {
  std::vector<std::string> values;  ///< One per key; "" where a run lacks the key.
  std::string label;  ///< The values, ", "-joined ("dann, 0.1"; "-" where absent); "all runs".
  std::vector<const RunSummaryRow*> runs;
};

/// Groups `runs` by `keys`, groups in natural order of their values (numbers by value).
std::vector<RunGroup> group_runs(const std::vector<const RunSummaryRow*>& runs,
                                 const std::vector<std::string>& keys);

/// Keys (other than seed and `skip`) whose values differ between the runs inside some group: the
/// group's mean pools over them. In key order.
std::vector<std::string> pooled_keys(const std::vector<RunGroup>& groups,
                                     const std::vector<std::string>& skip);

/// Every metric row of each run, by run id (`Store::metrics(id)`); other names are ignored.
using Histories = std::map<int64_t, std::vector<MetricRow>>;

struct CurveOptions {
  std::string metric = "target/test/acc";
  XAxis x = XAxis::Epoch;             ///< The target stage's epoch; Step for whole histories.
  std::vector<std::string> group_by;  ///< Empty = config_keys(runs).
  Band band = Band::StdErr;
  bool include_unfinished = false;  ///< Also runs whose status is not "finished".
  std::string title;                ///< "" = "<metric> by <keys>".
};

/// Learning curves of `options.metric`: per group, the mean over its runs at each x (of the
/// runs that have a finite value there) and the band. A run with several values at one x keeps
/// the last. With XAxis::Epoch, a run that logs the metric only before its target stage while
/// others log it in theirs is left out and noted. Throws PlotError when no selected run has the
/// metric (naming the metrics there are) or a --group-by key no run has.
LineChart learning_curves(const std::vector<RunSummaryRow>& runs, const Histories& histories,
                          const CurveOptions& options);

struct BarOptions {
  std::string metric = "target/test/acc";  ///< A summary metric.
  std::string x_key;                       ///< Param key along x; "" = one category.
  std::vector<std::string> group_by;       ///< Empty = config_keys(runs) minus x_key.
  bool include_unfinished = false;
  std::string title;
};

/// Mean ± s.e. of the summary `options.metric` per (x value, group) over the runs there.
/// Throws PlotError when no run has the summary or a key is unknown.
BarChart summary_bars(const std::vector<RunSummaryRow>& runs, const BarOptions& options);

// ---------------------------------------------------------------------------------------------
// Files

enum class FileFormat { Svg, Png };
/// From the extension (.svg or .png, any case); PlotError naming the extension and the choices.
FileFormat format_for_path(const std::filesystem::path& path);

/// Writes `scene` as SVG or PNG (by extension), creating the parent folder. PlotError on failure.
void write_scene(const Scene& scene, const std::filesystem::path& path, double png_scale = 2);

/// Writes `text` to `path` (parent folder created); PlotError naming the path and the reason.
void write_text_file(const std::filesystem::path& path, const std::string& text);

}  // namespace tlab::plot
