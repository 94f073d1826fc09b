#include "run/heartbeat.hpp"

#include <cstdlib>

namespace tlab {

double heartbeat_interval() {
  if (const char* v = std::getenv("TLAB_HEARTBEAT_SECONDS")) {
    char* end = nullptr;
    double s = std::strtod(v, &end);
    if (end != v && s > 0) return s;
  }
  return 10.0;
}

}  // namespace tlab
