"""Temporal coding: time-to-first-spike (TTFS) networks of non-leaky neurons with exact gradients.

Spec: ``ttfs.md``; paper: Zhou et al., "Temporal-coded deep spiking neural network with easy
training and robust performance" (building on Mostafa 2018). Everything runs on ``z = exp(t)``:
a layer's output is ``z_out = sum_{i in C} w_i z_i / (sum_{i in C} w_i - 1)`` over the causal
set ``C``. Importing this package registers the models ``ttfs_fc``, ``ttfs_scnn``,
``ttfs_vgg16`` and ``ttfs_googlenet``.
"""

from .layers import (
    TTFSAvgPool2d,
    TTFSConcat,
    TTFSConv2d,
    TTFSEncoder,
    TTFSFlatten,
    TTFSGlobalPool2d,
    TTFSLinear,
    TTFSMaxPool2d,
    init_weights,
    quantize_ste,
    quantize_symmetric,
    set_weight_bits,
    ttfs_weighted_layers,
)
from .loss import clip_row_normalised, l2_penalty, ttfs_data_loss, ttfs_loss, weight_sum_penalty
from .models import TTFSNet, ttfs_fc, ttfs_googlenet, ttfs_inception, ttfs_scnn, ttfs_vgg16
from .solver import DEFAULT_Z_MAX, CausalSetSolve, solve_spike_times

__all__ = [
    "DEFAULT_Z_MAX",
    "CausalSetSolve",
    "TTFSAvgPool2d",
    "TTFSConcat",
    "TTFSConv2d",
    "TTFSEncoder",
    "TTFSFlatten",
    "TTFSGlobalPool2d",
    "TTFSLinear",
    "TTFSMaxPool2d",
    "TTFSNet",
    "clip_row_normalised",
    "l2_penalty",
    "init_weights",
    "quantize_ste",
    "quantize_symmetric",
    "set_weight_bits",
    "solve_spike_times",
    "ttfs_data_loss",
    "ttfs_fc",
    "ttfs_googlenet",
    "ttfs_inception",
    "ttfs_loss",
    "ttfs_scnn",
    "ttfs_vgg16",
    "ttfs_weighted_layers",
    "weight_sum_penalty",
]
