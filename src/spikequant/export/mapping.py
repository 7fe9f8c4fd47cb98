r"""Parameter mapping between spikequant's discrete-time neurons and NIR's continuous-time ones.

NIR describes neurons by ODEs; a simulator integrates them with some step ``dt``, and forward
Euler is the discretisation assumed here. spikequant's neurons are the discrete updates below, so
the export chooses the NIR parameters whose Euler step is *exactly* that update:

* NIR IF  ``dv/dt = R I``                     -> ``v[t] = v[t-1] + dt R I[t]``.
  spikequant IF ``H = V + x``: ``R = 1 / dt``.
* NIR LIF ``tau dv/dt = (v_leak - v) + R I``
  -> ``v[t] = (1 - dt/tau) v[t-1] + (dt/tau)(v_leak + R I)``.
  spikequant LIF ``H = beta V + x`` with ``beta = 1 - 1/tau_sq``: ``tau = dt tau_sq``,
  ``v_leak = 0`` and ``R = tau_sq`` (the input enters unscaled); with ``decay_input=True``
  (``H = beta V + (1 - beta) x``) ``R = 1``.

Firing: spikequant fires on ``H >= V_th``, NIR on ``v > v_threshold``. The export writes
``v_threshold = nextafter(V_th, -inf)`` in float32, the largest float32 below ``V_th``; for every
float32 membrane value ``v > nextafter(V_th, -inf)`` holds exactly when ``v >= V_th``, so the two
rules agree bit for bit. The import applies the inverse ``nextafter(v_threshold, +inf)``.

Reset: NIR 1.0.8's IF/LIF reset *to* ``v_reset`` (hard reset); that is spikequant's ``Zero``.
The soft reset ``V = H - V_th z`` (``Subtract``, the default of IF and the definition of ATIF-u)
has no NIR parameter: it is refused unless the caller opts into a ``spikequant_reset: subtract``
annotation in the node metadata (read back by :func:`~spikequant.export.from_nir`, ignored by
other NIR tools, which would run the neuron with a hard reset).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConversionError

RESET_KEY = "spikequant_reset"
SOFT_RESET = "subtract"
READOUT_MEAN = "mean_over_time"  # graph metadata "readout": the network ended with MeanOverTime


def strict_threshold(threshold: np.ndarray) -> np.ndarray:
    """``V_th -> nextafter(V_th, -inf)`` (float32): NIR's ``v > thr`` == sq's ``v >= V_th``."""
    th = np.asarray(threshold, dtype=np.float32)
    return np.nextafter(th, np.float32(-np.inf)).astype(np.float32)


def inclusive_threshold(v_threshold: np.ndarray) -> np.ndarray:
    """Inverse of :func:`strict_threshold`: ``nextafter(v_threshold, +inf)`` (float32)."""
    th = np.asarray(v_threshold, dtype=np.float32)
    return np.nextafter(th, np.float32(np.inf)).astype(np.float32)


def if_resistance(dt: float) -> float:
    """``R`` of NIR's IF whose Euler step adds the input unscaled: ``R = 1/dt``."""
    return 1.0 / dt


def lif_to_nir(tau_steps: float, decay_input: bool, dt: float) -> tuple[float, float]:
    """spikequant LIF ``(tau_sq, decay_input)`` -> NIR ``(tau, R)`` (with ``v_leak = 0``)."""
    return dt * tau_steps, (1.0 if decay_input else tau_steps)


def lif_from_nir(tau: float, r: float, dt: float, where: str) -> tuple[float, bool, float]:
    """NIR LIF ``(tau, R)`` -> spikequant ``(tau_sq, decay_input, input_gain)``.

    The Euler step of NIR's LIF multiplies the input by ``dt R / tau = R / tau_sq``. When that is
    1 the input enters unscaled (``decay_input=False``); when ``R == 1`` it is SpikingJelly's
    ``decay_input=True``; any other gain is returned so the caller can put a scale before the
    neuron.
    """
    tau_steps = tau / dt
    if not tau_steps >= 1.0:
        raise ConversionError(
            f"NIR node {where!r}: LIF tau = {tau} is shorter than the step dt = {dt}; a spikequant "
            "LIF needs tau/dt >= 1 (decay 1 - dt/tau in [0, 1))"
        )
    if np.isclose(r, tau_steps, rtol=1e-6, atol=0.0):
        return tau_steps, False, 1.0
    if np.isclose(r, 1.0, rtol=1e-6, atol=0.0):
        return tau_steps, True, 1.0
    return tau_steps, False, r / tau_steps


def uniform_value(values: np.ndarray, name: str, where: str) -> float:
    """The single value of a parameter array that spikequant stores as one number per layer."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    if flat.size == 0:
        raise ConversionError(f"NIR node {where!r}: parameter {name} is empty")
    if not np.all(flat == flat[0]):
        raise ConversionError(
            f"NIR node {where!r}: {name} varies across neurons (from {flat.min():g} to "
            f"{flat.max():g}); spikequant keeps one {name} per layer"
        )
    return float(flat[0])


def layer_or_channel(values: np.ndarray, name: str, where: str) -> torch.Tensor:
    """Reduce a per-neuron array ``[C, ...]`` to a per-layer (0-d) or per-channel ``[C]`` tensor."""
    arr = np.asarray(values, dtype=np.float32)
    flat = arr.reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        return torch.tensor(flat[0])
    per_channel = arr.reshape(arr.shape[0], -1) if arr.ndim >= 1 else arr.reshape(1, 1)
    if np.all(per_channel == per_channel[:, :1]):
        return torch.from_numpy(per_channel[:, 0].copy())
    raise ConversionError(
        f"NIR node {where!r}: {name} differs between neurons of the same channel; spikequant "
        "supports per-layer or per-channel values only"
    )
