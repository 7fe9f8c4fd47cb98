"""Quantizers: weights (uniform per-channel, power-of-two), activations (LSQ), membranes.

Import from the submodules (``spikequant.quant.qat``, ``spikequant.quant.pow2``, ...).
"""
