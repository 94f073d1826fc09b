#pragma once
/// \file torch.hpp
/// The LibTorch a plugin commonly needs, in one include (every SDK header includes it): tensors,
/// modules and containers, the common layers (Linear, Conv1d/2d, BatchNorm, LayerNorm, Dropout,
/// Embedding, activations, pooling), losses and functional forms (`torch::nn::functional`,
/// alias `F` below is yours to define), initialisation, and autograd functions. Everything else
/// (optimisers, serialisation, TorchScript) is included by the plugin that needs it, e.g.
/// `#include <torch/optim/sgd.h>`: each extra LibTorch header costs compile time.
///
/// Example (no include beyond the SDK):
/// \code
///   class MyHead : public tlab::Adapter {
///     torch::nn::Linear fc_{nullptr};
///     ...
///   };
/// \endcode

#include <torch/autograd.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/dropout.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/functional/normalization.h>
#include <torch/nn/init.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/modules/pooling.h>
#include <torch/types.h>
