// Precompiled header: the LibTorch headers nearly every translation unit needs.
#include <torch/nn.h>
#include <torch/optim.h>
#include <torch/serialize.h>
#include <torch/types.h>
#include <torch/utils.h>
