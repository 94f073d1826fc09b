#pragma once
// Merging results databases written on different machines (`tlab results merge`).
//
// Runs keep every column (uuid, host, pid, timestamps, config ...); only their id changes: each
// merged run gets a fresh id in the output and its rows in every table that refers to runs
// (params, metrics, summaries, run_plugins) follow it. A run whose uuid the output already holds
// is a duplicate: it is skipped and counted, never copied twice.
//
// A missing output is created as a copy of the first input with SQLite's backup API (a
// consistent snapshot, even while another process writes to the input), never by copying the
// file. Every further input is merged with ATTACH (read-only) and INSERT ... SELECT in one
// BEGIN IMMEDIATE transaction: an input is merged whole or not at all.

#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

namespace tlab {

/// A merge refused before anything was written: an input that is not a TransferLab results
/// database, has another schema version, or is the output itself. The message names the file
/// and the fix.
class MergeError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// A run found in both the output and an input (same uuid) whose copies differ: the output's
/// copy is kept. Typically one database was copied while the run was still going.
struct DifferingDuplicate {
  std::string uuid;
  int64_t input_id = 0;   ///< Its id in the input.
  int64_t output_id = 0;  ///< Its id in the output (the copy that is kept).
  std::string what;       ///< What differs: "status 'finished' vs 'running', 120 vs 80 metrics".
};

/// What merging one input did.
struct MergeInputReport {
  std::filesystem::path input;
  bool created_output = false;     ///< The output did not exist and was made as a copy of it.
  int64_t runs_merged = 0;         ///< Runs added to the output.
  int64_t duplicates_skipped = 0;  ///< Runs whose uuid the output already held.
  int64_t rows_copied = 0;  ///< Rows added to tables that refer to runs (params, metrics ...).
  std::vector<DifferingDuplicate> differing;  ///< Skipped duplicates whose copies differ.
};

/// What `merge_databases` did, one entry per input in the order given.
struct MergeReport {
  std::filesystem::path output;
  bool created = false;     ///< The output did not exist before.
  int64_t output_runs = 0;  ///< Runs in the output after the merge.
  std::vector<MergeInputReport> inputs;
};

/// Merges `inputs` into `output` (created when missing), in order. Every input is checked
/// before anything is written (MergeError: not an SQLite file, not a TransferLab results
/// database, a schema version other than Store::kSchemaVersion, the same file as `output`);
/// the output is opened as a Store (created, or migrated when older). A failure while merging
/// (disk full, a lock held past every retry) throws StoreError; inputs merged before it stay
/// merged, the failing one leaves no trace.
MergeReport merge_databases(const std::vector<std::filesystem::path>& inputs,
                            const std::filesystem::path& output);

}  // namespace tlab
