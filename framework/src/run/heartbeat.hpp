#pragma once
// How often a running run proves it is alive (the `heartbeat_at` column of its row). Shared by
// the runs that beat (run/executor.cpp) and everything that judges a run lost without one
// (the sweep supervisor, the SLURM sweep state), which needs no LibTorch.

namespace tlab {

/// Seconds between a running child's heartbeats: TLAB_HEARTBEAT_SECONDS, default 10. A run is
/// stale after three intervals without one.
double heartbeat_interval();

}  // namespace tlab
