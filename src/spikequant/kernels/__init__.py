r"""Fused multi-step kernels for the integrate-and-fire family (IF, LIF, ATIF-u, ATIF-nu).

The pure step functions in :mod:`spikequant.neurons` are the reference; these kernels compute the
same recurrence over the whole sequence in one C++ pass forward and one backward:

    h_t = a v_{t-1} + b x_t,    z_t = 1[h_t - th_t >= 0],
    v_t = h_t - th_t z_t (soft)  or  h_t (1 - z_t) + v_reset z_t (hard),    out_t = s z_t

(IF: a = b = 1; LIF: a = 1 - 1/tau, b = 1 or 1/tau with ``decay_input``; s = 1, the threshold
for ``scale_output`` or p_1 for ATIF-nu). Backward stores nothing of its own: it keeps the input
``x`` and ``v_0`` and re-runs the recurrence chunk by chunk (in L2) to get ``h`` and the spikes
bit-exactly, which moves less memory than writing and re-reading a ``[T, ...]`` copy of ``h``.

The extension is compiled on first use with ``torch.utils.cpp_extension.load`` (ninja, OpenMP)
into ``$SPIKEQUANT_CACHE`` or ``~/.cache/spikequant/kernels``. When compilation is impossible (no
compiler), :func:`available` is False, ``backend="auto"`` uses the reference loop (saying so once,
with the reason) and an explicit ``backend="cpp"``/``"fused"`` raises
:class:`~spikequant.errors.ConfigError` with the reason.

On CUDA tensors the same recurrence runs as Triton kernels (:mod:`.triton_neuron`). Backends:
``"auto"`` (Triton on CUDA when triton imports, C++ on CPU, else the reference), ``"fused"`` (the
fused kernel of the tensor's device, error if it cannot run), ``"cpp"``, ``"triton"`` (error if it
cannot run) and ``"torch"`` (the reference loop, handled by the neuron). Everything here takes
tensors and plain numbers; the neurons hand over their own parameters.
"""

from __future__ import annotations

import logging
import math
import os
import pathlib
import platform
import sys
from typing import Any

import torch

from ..errors import ConfigError, NonFiniteError, ShapeError
from ..finite import require_finite
from ._common import SURROGATE_KINDS, KernelSpec, kernel_layout
from .build import CompiledExtension, cache_root, cpu_model, import_built_extension  # noqa: F401

_SOURCE = pathlib.Path(__file__).with_name("neuron_kernels.cpp")
_log = logging.getLogger(__name__)


NEURON_EXTENSION = CompiledExtension(
    "spikequant_neuron_kernels",
    subdir="kernels",
    source=_SOURCE,
    cflags=("-O3", "-ffp-contract=off", "-fno-math-errno"),
    openmp=True,
    message="compiling fused kernels once (~1 min)",
)


def load_extension() -> Any:
    """Compile (first call only; cached on disk) and return the extension, or None on failure."""
    return NEURON_EXTENSION.load()


_retained = False


def retain_freed_memory() -> bool:
    """Keep freed heap memory mapped for reuse (glibc ``mallopt``), like a caching allocator.

    Sequence kernels allocate whole ``[T, B, ...]`` tensors (8 MiB for the LIF benchmark). With
    glibc's defaults such blocks are returned to the OS on free and every new one costs fresh page
    faults, which on these VMs takes longer than the kernel itself (perf-notes: 4-6 ms per 8 MiB).
    Raising the trim threshold and serving every block from the heap (no mmap) makes freed
    blocks reusable. Process-wide; the RSS then stays at its peak, as with PyTorch's GPU caching
    allocator. Because it changes the whole process, importing spikequant never does it: the
    ``spikequant`` command and the benchmark opt in; a program using the library calls this
    itself. ``SPIKEQUANT_RETAIN_MEMORY=0`` refuses it. Returns True when the setting was applied.
    """
    global _retained
    if _retained:
        return True
    if os.environ.get("SPIKEQUANT_RETAIN_MEMORY", "1") == "0" or platform.system() != "Linux":
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold, m_mmap_max = -1, -3, -4
        ok = libc.mallopt(m_trim_threshold, 1 << 30) == 1
        ok = libc.mallopt(m_mmap_threshold, 32 << 20) == 1 and ok
        # 32 MiB is the largest mmap threshold glibc accepts; without this, bigger blocks (VGG
        # activations at T = 16) would still be mmapped fresh and page-faulted on every step.
        ok = libc.mallopt(m_mmap_max, 0) == 1 and ok
    except (OSError, AttributeError):
        return False
    _retained = ok
    return ok


def available() -> bool:
    """True when the compiled kernels can be used in this process."""
    return load_extension() is not None


def unavailable_reason() -> str | None:
    """Why the C++ kernels cannot be used (``None`` when they can); tries to build them first."""
    load_extension()
    return NEURON_EXTENSION.error


_fallback_said = False


def _say_fallback_once() -> None:
    """One line, once per process, when ``auto`` falls back because the build failed."""
    global _fallback_said
    error = NEURON_EXTENSION.error
    if _fallback_said or error is None or error.startswith("disabled by"):
        return
    _fallback_said = True
    _log.warning(
        "spikequant: fused C++ kernels unavailable (%s); neurons run the reference loop", error
    )


BACKENDS = ("torch", "auto", "fused", "cpp", "triton")
_CPP_DTYPES = (torch.float32, torch.float64)
_TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _cpp_problem(x: torch.Tensor) -> str | None:
    if x.device.type != "cpu":
        return f"device {x.device.type} (the C++ kernels run on CPU tensors)"
    if x.dtype not in _CPP_DTYPES:
        return f"dtype {x.dtype} (the C++ kernels take float32/float64)"
    if load_extension() is None:
        return f"extension unavailable ({NEURON_EXTENSION.error})"
    return None


def _triton_problem(x: torch.Tensor) -> str | None:
    from . import triton_neuron

    return triton_neuron.problem(x, _TRITON_DTYPES)


def _onnx_exporting() -> bool:
    """ONNX has no fused operator: while exporting, every backend runs the reference step ops."""
    onnx = sys.modules.get("torch.onnx")
    return onnx is not None and onnx.is_in_onnx_export()


def choose_backend(x: torch.Tensor, backend: str) -> str | None:
    """The kernel (``"cpp"`` or ``"triton"``) that runs ``x`` under ``backend``.

    ``"auto"`` returns None when no kernel fits (the caller runs the reference loop); the explicit
    backends raise :class:`ConfigError` saying why they cannot run. During
    :func:`torch.onnx.export` every backend returns None: the export decomposes the neurons into
    their reference ops.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend == "torch" or _onnx_exporting():
        return None
    if backend == "auto":
        if x.device.type == "cuda":
            return "triton" if _triton_problem(x) is None else None
        if x.device.type == "cpu":
            if _cpp_problem(x) is None:
                return "cpp"
            _say_fallback_once()
        return None
    if backend == "fused":
        backend = {"cpu": "cpp", "cuda": "triton"}.get(x.device.type, "")
        if not backend:
            raise ConfigError(f"backend='fused': no fused kernel for device {x.device.type}")
    problem = _cpp_problem(x) if backend == "cpp" else _triton_problem(x)
    if problem is not None:
        raise ConfigError(f"backend={backend!r} cannot run: {problem}")
    return backend


def integrate_fire(
    x_seq: torch.Tensor,
    v0: torch.Tensor,
    threshold: torch.Tensor,
    *,
    surrogate_kind: str,
    alpha: float,
    decay: float = 1.0,
    input_scale: float = 1.0,
    hard_reset: bool = False,
    v_reset: float = 0.0,
    detach_reset: bool = False,
    spike_value: torch.Tensor | None = None,
    per_step_threshold: bool = False,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Run the fused recurrence over ``x_seq[T, B, ...]`` from the membrane ``v0[B, ...]``.

    ``threshold``: 0-d (per layer) or ``[C]`` (per channel, dim 1 of a step); with
    ``per_step_threshold`` one row per step, ``[T]`` or ``[T, C]`` (ATIF-nu). ``spike_value``
    (0-d or ``[C]``, may be the threshold tensor itself) multiplies the emitted spikes.
    ``decay`` is ``a`` and ``input_scale`` is ``b`` in ``h = a v + b x``; ``surrogate_kind`` is
    one of :data:`SURROGATE_KINDS` with sharpness ``alpha``.
    Returns ``(out[T, B, ...], v_T[B, ...])``, differentiable w.r.t. every tensor argument, or None
    when ``backend="auto"`` finds no kernel for this input (then run the reference loop). The
    explicit backends raise :class:`ConfigError` instead.
    """
    if surrogate_kind not in SURROGATE_KINDS:
        if backend == "auto":
            return None
        raise ConfigError(
            f"fused kernels implement the surrogates {sorted(SURROGATE_KINDS)}, "
            f"not {surrogate_kind!r}"
        )
    if x_seq.ndim >= 2 and x_seq.numel() == 0:
        raise ShapeError(f"integrate_fire: empty input of shape {tuple(x_seq.shape)}")
    _check_finite("threshold", threshold)
    if spike_value is not None:
        _check_finite("spike value", spike_value)
    if not all(math.isfinite(float(v)) for v in (decay, input_scale, v_reset, alpha)):
        raise NonFiniteError(
            "integrate_fire: decay, input_scale, v_reset and alpha must be finite, got "
            f"{decay}, {input_scale}, {v_reset}, {alpha}"
        )
    chosen = choose_backend(x_seq, backend)
    if chosen is None:
        return None
    problem, prepared = _prepare(x_seq, v0, threshold, spike_value, per_step_threshold)
    if problem is not None:
        if backend == "auto":
            return None  # the reference loop raises the precise shape error
        raise ConfigError(problem)
    x_seq, v0, threshold, spike_value, per_sample, inner, th_rows = prepared
    spec = KernelSpec(
        a=float(decay),
        b=float(input_scale),
        hard=bool(hard_reset),
        v_reset=float(v_reset),
        detach=bool(detach_reset),
        surrogate_kind=surrogate_kind,
        alpha=alpha,
        per_sample=per_sample,
        inner=inner,
        th_rows=th_rows,
    )
    if chosen == "triton":
        from . import triton_neuron

        return triton_neuron.integrate_fire(x_seq, v0, threshold, spike_value, spec)
    from . import ops

    dtype = x_seq.dtype
    threshold = threshold.to(dtype).reshape(spec.th_rows, -1).contiguous()
    if spike_value is not None:
        spike_value = spike_value.to(dtype).reshape(-1).contiguous()
    if v0.stride() != x_seq[0].stride() or v0.dtype != dtype:
        v0 = torch.empty_like(x_seq[0]).copy_(v0)
    # one operator node (torch.compile / torch.export see it whole); backward recomputes h from
    # x and v0 instead of keeping a [T, ...] copy of it
    return ops.integrate_fire_forward(
        x_seq,
        v0,
        threshold,
        spike_value,
        spec.a,
        spec.b,
        spec.hard,
        spec.v_reset,
        spec.detach,
        spec.kind,
        spec.alpha,
        spec.c1,
        spec.c2,
        spec.per_sample,
        spec.inner,
    )


def _check_finite(what: str, tensor: torch.Tensor) -> None:
    """A NaN/inf threshold makes every comparison false (no spike ever): refuse it. A few values
    per layer; skipped while torch.compile traces (a data-dependent branch cannot be traced)."""
    if torch.compiler.is_compiling() or _onnx_exporting():
        return
    require_finite(
        torch.isfinite(tensor.detach()).all(),
        lambda _: f"integrate_fire: the {what} holds NaN or infinity",
    )


def _prepare(x_seq, v0, threshold, spike_value, per_step_threshold):
    """Check shapes and bring ``x`` into a layout the kernels walk; ``(problem, prepared)``."""
    if x_seq.ndim < 2 or x_seq.numel() == 0:
        return f"input of shape {tuple(x_seq.shape)} (needs [T, B, ...], not empty)", None
    steps, step_shape = x_seq.shape[0], x_seq.shape[1:]
    if tuple(v0.shape) != tuple(step_shape):
        return f"state shape {tuple(v0.shape)} != step shape {tuple(step_shape)}", None
    th_rows = steps if per_step_threshold else 1
    if per_step_threshold and (threshold.ndim < 1 or threshold.shape[0] != steps):
        return f"per-step thresholds need {steps} rows, got {tuple(threshold.shape)}", None
    if threshold.ndim > (2 if per_step_threshold else 1):
        return f"threshold of shape {tuple(threshold.shape)}", None
    channels = threshold.numel() // th_rows
    if spike_value is not None and spike_value.numel() > 1:
        if channels not in (1, spike_value.numel()):
            return "threshold and spike value have different channel counts", None
        if channels == 1:
            # a per-layer threshold with per-channel spike values: expand the threshold
            threshold = threshold.reshape(th_rows, 1).expand(th_rows, spike_value.numel())
        channels = spike_value.numel()
    if channels > 1 and (len(step_shape) < 2 or step_shape[1] != channels):
        return (
            f"per-channel parameters of {channels} channels do not match steps of shape "
            f"{tuple(step_shape)} (channels are dimension 1 of each step)"
        ), None
    x_seq, per_sample, inner = kernel_layout(x_seq, channels)
    return None, (x_seq, v0, threshold, spike_value, per_sample, inner, th_rows)


def fused_integrate_fire(x_seq, v0, threshold, *, surrogate, backend: str = "fused", **params):
    """:func:`integrate_fire` with a surrogate object (its ``kind`` and ``alpha``) and an explicit
    backend (default: the fused kernel of the tensor's device)."""
    return integrate_fire(
        x_seq,
        v0,
        threshold,
        surrogate_kind=getattr(surrogate, "kind", repr(surrogate)),
        alpha=getattr(surrogate, "alpha", 1.0),
        backend=backend,
        **params,
    )
