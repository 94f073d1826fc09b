#pragma once
/// \file sdk.hpp
/// Everything a plugin may include. See docs/writing-plugins.md.
#include "tlab/sdk/abi.hpp"
#include "tlab/sdk/context.hpp"
#include "tlab/sdk/data.hpp"
#include "tlab/sdk/model.hpp"
#include "tlab/sdk/params.hpp"
#include "tlab/sdk/plugin.hpp"
#include "tlab/sdk/strategy.hpp"
