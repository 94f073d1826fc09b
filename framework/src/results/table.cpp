#include "results/table.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "util.hpp"

namespace tlab {
namespace {

// Display width of a cell: UTF-8 code points ("±" is one column).
std::size_t display_width(const std::string& s) { return utf8_width(s); }

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Whether `s` is the text of a non-finite number as tables print them ("nan", "inf", "-inf").
bool is_non_finite_text(const std::string& s) {
  const std::string l = lower(s);
  return l == "nan" || l == "-nan" || l == "+nan" || l == "inf" || l == "+inf" || l == "-inf" ||
         l == "infinity" || l == "+infinity" || l == "-infinity";
}

// Parses `s` as a JSON number when it is written in decimal number syntax:
// [+-]? (digits [. digits*] | . digits) ([eE] [+-]? digits)?. Hex, "0x..", spaces and the like
// stay strings. Integers that fit int64 stay exact.
bool number_json(const std::string& s, nlohmann::json& out) {
  std::size_t i = 0, n = s.size();
  if (i < n && (s[i] == '+' || s[i] == '-')) ++i;
  std::size_t int_digits = 0, frac_digits = 0;
  while (i < n && std::isdigit(static_cast<unsigned char>(s[i]))) ++i, ++int_digits;
  bool integral = true;
  if (i < n && s[i] == '.') {
    integral = false;
    ++i;
    while (i < n && std::isdigit(static_cast<unsigned char>(s[i]))) ++i, ++frac_digits;
  }
  if (int_digits + frac_digits == 0) return false;
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    integral = false;
    ++i;
    if (i < n && (s[i] == '+' || s[i] == '-')) ++i;
    std::size_t exp_digits = 0;
    while (i < n && std::isdigit(static_cast<unsigned char>(s[i]))) ++i, ++exp_digits;
    if (exp_digits == 0) return false;
  }
  if (i != n) return false;
  const char* first = s.data() + (s[0] == '+' ? 1 : 0);
  const char* last = s.data() + n;
  if (integral) {
    int64_t v = 0;
    auto [ptr, ec] = std::from_chars(first, last, v);
    if (ec == std::errc() && ptr == last) {
      out = v;
      return true;
    }
  }
  double d = 0;
  auto [ptr, ec] = std::from_chars(first, last, d);
  if (ec != std::errc() || ptr != last || !std::isfinite(d)) return false;
  out = d;
  return true;
}

void check_shape(const Table& table) {
  for (std::size_t r = 0; r < table.rows.size(); ++r)
    if (table.rows[r].size() != table.header.size())
      throw std::invalid_argument(fmt::format(
          "table '{}': row {} has {} cells but the header has {} columns ({}); every row needs "
          "one cell per column",
          table.title, r + 1, table.rows[r].size(), table.header.size(),
          fmt::join(table.header, ", ")));
  if (!table.numeric.empty() && table.numeric.size() != table.header.size())
    throw std::invalid_argument(
        fmt::format("table '{}': 'numeric' has {} entries but the header has {} columns; give "
                    "one per column or leave it empty",
                    table.title, table.numeric.size(), table.header.size()));
}

bool is_numeric(const Table& table, std::size_t column) {
  return column < table.numeric.size() && table.numeric[column];
}

std::string render_text(const Table& raw) {
  // For a terminal: control characters in any cell (a run name from a hostile database) become
  // visible escapes, so they neither move the cursor nor break the columns.
  Table table = raw;
  for (auto& h : table.header) h = printable(h);
  for (auto& row : table.rows)
    for (auto& cell : row) cell = printable(cell);
  table.title = printable(table.title, /*keep_lines=*/true);
  for (auto& note : table.notes) note = printable(note, /*keep_lines=*/true);
  const std::size_t columns = table.header.size();
  std::vector<std::size_t> width(columns);
  for (std::size_t i = 0; i < columns; ++i) width[i] = display_width(table.header[i]);
  for (const auto& row : table.rows)
    for (std::size_t i = 0; i < columns; ++i) width[i] = std::max(width[i], display_width(row[i]));
  std::string out;
  if (!table.title.empty()) out += table.title + "\n";
  auto line = [&](const std::vector<std::string>& row) {
    std::string text;
    for (std::size_t i = 0; i < columns; ++i) {
      const std::string pad(width[i] - display_width(row[i]), ' ');
      text += is_numeric(table, i) ? pad + row[i] : row[i] + pad;
      if (i + 1 < columns) text += "  ";
    }
    while (!text.empty() && text.back() == ' ') text.pop_back();
    out += text + "\n";
  };
  if (columns > 0) {
    line(table.header);
    std::vector<std::string> rule;
    for (auto w : width) rule.emplace_back(w, '-');
    line(rule);
    for (const auto& row : table.rows) line(row);
  }
  for (const auto& note : table.notes) out += note + "\n";
  return out;
}

std::string render_csv(const Table& table) {
  std::string out;
  auto line = [&](const std::vector<std::string>& row) {
    for (std::size_t i = 0; i < row.size(); ++i) {
      if (i) out += ',';
      out += csv_field(row[i]);
    }
    out += '\n';
  };
  line(table.header);
  for (const auto& row : table.rows) line(row);
  return out;
}

std::string render_json(const Table& table) {
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& row : table.rows) {
    nlohmann::json object = nlohmann::json::object();
    for (std::size_t i = 0; i < row.size(); ++i) {
      nlohmann::json value;
      if (row[i].empty() || is_non_finite_text(row[i]))
        value = nullptr;
      else if (!number_json(row[i], value))
        value = row[i];
      object[table.header[i]] = std::move(value);
    }
    rows.push_back(std::move(object));
  }
  return rows.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

std::string markdown_cell(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '|') {
      out += "\\|";
    } else if (c == '\n') {
      out += "<br>";
    } else if (c != '\r') {
      out += c;
    }
  }
  return out;
}

std::string render_markdown(const Table& table) {
  std::string out;
  if (!table.title.empty()) out += "**" + markdown_cell(table.title) + "**\n\n";
  if (!table.header.empty()) {
    auto line = [&](const std::vector<std::string>& row) {
      out += "|";
      for (const auto& cell : row) out += " " + markdown_cell(cell) + " |";
      out += "\n";
    };
    line(table.header);
    out += "|";
    for (std::size_t i = 0; i < table.header.size(); ++i)
      out += is_numeric(table, i) ? " ---: |" : " --- |";
    out += "\n";
    for (const auto& row : table.rows) line(row);
  }
  if (!table.notes.empty()) {
    out += "\n";
    for (const auto& note : table.notes) out += markdown_cell(note) + "\n";
  }
  return out;
}

std::string latex_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '\\':
        out += "\\textbackslash{}";
        break;
      case '&':
        out += "\\&";
        break;
      case '%':
        out += "\\%";
        break;
      case '$':
        out += "\\$";
        break;
      case '#':
        out += "\\#";
        break;
      case '_':
        out += "\\_";
        break;
      case '{':
        out += "\\{";
        break;
      case '}':
        out += "\\}";
        break;
      case '~':
        out += "\\textasciitilde{}";
        break;
      case '^':
        out += "\\textasciicircum{}";
        break;
      case '<':
        out += "\\textless{}";
        break;
      case '>':
        out += "\\textgreater{}";
        break;
      case '|':
        out += "\\textbar{}";
        break;
      case '\n':
        out += ' ';
        break;
      case '\r':
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string render_latex(const Table& table) {
  std::string out;
  const bool floating = !table.title.empty();
  if (floating) out += "\\begin{table}[htbp]\n\\centering\n";
  if (floating) out += "\\caption{" + latex_escape(table.title) + "}\n";
  std::string spec;
  for (std::size_t i = 0; i < table.header.size(); ++i) spec += is_numeric(table, i) ? 'r' : 'l';
  out += "\\begin{tabular}{" + spec + "}\n\\toprule\n";
  auto line = [&](const std::vector<std::string>& row) {
    for (std::size_t i = 0; i < row.size(); ++i) {
      if (i) out += " & ";
      out += latex_escape(row[i]);
    }
    out += " \\\\\n";
  };
  line(table.header);
  out += "\\midrule\n";
  for (const auto& row : table.rows) line(row);
  out += "\\bottomrule\n\\end{tabular}\n";
  for (const auto& note : table.notes) out += "\\par{\\footnotesize " + latex_escape(note) + "}\n";
  if (floating) out += "\\end{table}\n";
  return out;
}

}  // namespace

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string quoted = "\"";
  for (char c : s) {
    if (c == '"') quoted += '"';
    quoted += c;
  }
  return quoted + "\"";
}

TableFormat parse_table_format(const std::string& name) {
  const std::string l = lower(name);
  if (l == "table" || l == "text") return TableFormat::Text;
  if (l == "csv") return TableFormat::Csv;
  if (l == "json") return TableFormat::Json;
  if (l == "markdown" || l == "md") return TableFormat::Markdown;
  if (l == "latex") return TableFormat::Latex;
  throw std::invalid_argument(fmt::format(
      "unknown table format '{}'; expected 'text' (or 'table'), 'csv', 'json', 'markdown' "
      "(or 'md') or 'latex'",
      name));
}

std::string render(const Table& table, TableFormat format) {
  check_shape(table);
  switch (format) {
    case TableFormat::Text:
      return render_text(table);
    case TableFormat::Csv:
      return render_csv(table);
    case TableFormat::Json:
      return render_json(table);
    case TableFormat::Markdown:
      return render_markdown(table);
    case TableFormat::Latex:
      return render_latex(table);
  }
  throw std::invalid_argument("render: unknown TableFormat value");
}

}  // namespace tlab
