"""SpQuant-SNN: LIF with a ternary membrane, low-bit weights, membrane-guided pruning.

``spikequant.spquant.neuron`` (QLIF, registered as ``qlif``), ``.pruning`` (channel gates,
sparsity), ``.loss`` (TET), ``.analysis`` (clipping ``r_s``), ``.runner`` (recipes of kind
``spquant``). Cost models live in :mod:`spikequant.cost`.
"""

from .neuron import QLIF, qlif_integer_reference, qlif_step, to_fixed_point

__all__ = ["QLIF", "qlif_integer_reference", "qlif_step", "to_fixed_point"]
