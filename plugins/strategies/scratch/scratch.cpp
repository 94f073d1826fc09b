// scratch: the no-transfer baseline. The backbone keeps its random initialisation and the
// whole model trains on the target's labelled examples only; every hook is the runner's default.
#include "tlab/sdk/strategy.hpp"

class Scratch : public tlab::Strategy {};

TLAB_PLUGIN(Scratch, "scratch", "1.0.0", "Train on target labels from random init (baseline)")
