#pragma once
/// \file sdk.hpp
/// Everything a plugin may include, in one header. See docs/writing-plugins.md.
#include "tlab/sdk/abi.hpp"
#include "tlab/sdk/adaptation.hpp"
#include "tlab/sdk/check.hpp"
#include "tlab/sdk/context.hpp"
#include "tlab/sdk/data.hpp"
#include "tlab/sdk/files.hpp"
#include "tlab/sdk/mode.hpp"
#include "tlab/sdk/model.hpp"
#include "tlab/sdk/params.hpp"
#include "tlab/sdk/plugin.hpp"
#include "tlab/sdk/random.hpp"
#include "tlab/sdk/sampler.hpp"
#include "tlab/sdk/source.hpp"
#include "tlab/sdk/strategy.hpp"
#include "tlab/sdk/torch.hpp"
