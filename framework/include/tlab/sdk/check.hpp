#pragma once
/// \file check.hpp
/// One line per invariant: `TLAB_CHECK(cond, parts...)` throws std::invalid_argument whose
/// message is the parts streamed together, as LibTorch's TORCH_CHECK does. A message says what
/// failed, the offending value in quotes, what was expected and how to fix it.
///
/// Example:
/// \code
///   TLAB_CHECK(o_.t1 <= o_.t2, "pseudo_label: t2 = ", o_.t2, " is before t1 = ", o_.t1,
///              "; the ramp-up needs t1 <= t2 (e.g. t1 = 2, t2 = 6)");
/// \endcode

#include <sstream>
#include <stdexcept>
#include <string>

namespace tlab {

/// The parts streamed into one string (numbers as `operator<<` prints them: 6 significant digits).
template <class... Parts>
std::string str(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

}  // namespace tlab

/// Throws std::invalid_argument(tlab::str(parts...)) unless `cond` holds. The parts are only
/// evaluated when the check fails.
#define TLAB_CHECK(cond, ...)                                           \
  do {                                                                  \
    if (!(cond)) throw std::invalid_argument(::tlab::str(__VA_ARGS__)); \
  } while (false)
