#pragma once
// A table of strings and its renderings: aligned text for the terminal, CSV, JSON, Markdown and
// LaTeX. Every `tlab results` command that prints a table builds one of these.

#include <string>
#include <vector>

namespace tlab {

struct Table {
  std::string title;                           ///< Printed above text/markdown; LaTeX caption.
  std::vector<std::string> header;             ///< Column names.
  std::vector<std::vector<std::string>> rows;  ///< Each row has header.size() cells.
  std::vector<bool> numeric;                   ///< Per column: right-aligned (may be empty).
  std::vector<std::string> notes;              ///< Lines printed under the table.
};

enum class TableFormat { Text, Csv, Json, Markdown, Latex };

/// Parses "table" (or "text"), "csv", "json", "markdown" (or "md") and "latex"; throws
/// std::invalid_argument naming the value and the choices.
TableFormat parse_table_format(const std::string& name);

/// One CSV field (RFC 4180): as it is, or in double quotes with quotes doubled when it holds a
/// comma, a quote or a line break.
std::string csv_field(const std::string& s);

/// Renders `table`. JSON: an array of objects keyed by the header (cells that parse as finite
/// numbers become numbers). CSV: RFC 4180 quoting. LaTeX: a booktabs tabular with special
/// characters escaped. Text: columns aligned, numeric ones to the right.
std::string render(const Table& table, TableFormat format);

}  // namespace tlab
