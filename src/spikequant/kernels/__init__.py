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
compiler), :func:`available` is False, ``backend="auto"`` silently uses the reference loop and
``backend="fused"`` raises :class:`~spikequant.errors.ConfigError` with the reason.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import platform
import threading
import warnings
from typing import Any

import torch

from ..errors import ConfigError

_SOURCE = pathlib.Path(__file__).with_name("neuron_kernels.cpp")
_SURROGATE_KINDS = {"sigmoid": 0, "triangle": 1, "atan": 2, "rectangle": 3}
_lock = threading.Lock()
_extension: Any = None
_load_error: str | None = None


def cache_root() -> pathlib.Path:
    """Root of the compiled-kernel cache: ``$SPIKEQUANT_CACHE`` or ``~/.cache/spikequant``."""
    root = os.environ.get("SPIKEQUANT_CACHE")
    return pathlib.Path(root) if root else pathlib.Path.home() / ".cache" / "spikequant"


def cache_dir() -> pathlib.Path:
    """Where compiled kernels live, keyed by source, torch version and CPU (``-march=native``)."""
    base = cache_root()
    key = hashlib.sha256()
    key.update(_SOURCE.read_bytes())
    key.update(torch.__version__.encode())
    key.update(platform.machine().encode())
    key.update(cpu_model().encode())
    return base / "kernels" / key.hexdigest()[:16]


def cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags")):
                return line
    except OSError:
        pass
    return platform.processor()


_NAME = "spikequant_neuron_kernels"


def import_built_extension(build_dir: pathlib.Path, name: str = _NAME) -> Any:
    """Import an already compiled extension ``name`` from ``build_dir`` directly, or None (no
    ninja check: the directory name already encodes the source, torch version and CPU)."""
    import importlib.machinery
    import importlib.util

    path = build_dir / f"{name}.so"
    if not path.is_file():
        return None
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, str(path), loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def _compile() -> Any:
    build_dir = cache_dir()
    try:
        built = import_built_extension(build_dir)
    except ImportError:
        built = None
    if built is not None:
        return built
    from torch.utils import cpp_extension

    build_dir.mkdir(parents=True, exist_ok=True)
    flags = ["-O3", "-fopenmp", "-ffp-contract=off", "-fno-math-errno"]
    if platform.machine() in ("x86_64", "AMD64"):
        flags.append("-march=native")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cpp_extension.load(
            name=_NAME,
            sources=[str(_SOURCE)],
            extra_cflags=flags,
            extra_ldflags=["-fopenmp"],
            build_directory=str(build_dir),
            verbose=False,
        )


def load_extension() -> Any:
    """Compile (first call only; cached on disk) and return the extension, or None on failure."""
    global _extension, _load_error
    if _extension is not None or _load_error is not None:
        return _extension
    with _lock:
        if _extension is None and _load_error is None:
            if os.environ.get("SPIKEQUANT_DISABLE_KERNELS"):
                _load_error = "disabled by SPIKEQUANT_DISABLE_KERNELS"
            else:
                try:
                    _extension = _compile()
                except Exception as exc:  # no compiler, no ninja, broken toolchain
                    lines = str(exc).strip().splitlines() or [""]
                    _load_error = f"{type(exc).__name__}: {lines[-1]}"
    return _extension


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
    load_extension()
    return _load_error


class _Spec:
    """Everything about a neuron's configuration that the kernel needs, besides tensors."""

    __slots__ = (
        "a",
        "b",
        "hard",
        "v_reset",
        "detach",
        "kind",
        "alpha",
        "c1",
        "c2",
        "per_sample",
        "inner",
        "th_rows",
    )

    def __init__(self, *, a, b, hard, v_reset, detach, surrogate, per_sample, inner, th_rows):
        self.a, self.b, self.hard, self.v_reset, self.detach = a, b, hard, v_reset, detach
        self.per_sample, self.inner, self.th_rows = per_sample, inner, th_rows
        self.kind = _SURROGATE_KINDS[surrogate.kind]
        alpha = float(surrogate.alpha)
        self.alpha = alpha
        # The reference evaluates these constants in Python floats and then rounds them to the
        # tensor dtype; the kernel receives the same doubles and rounds them the same way.
        if surrogate.kind == "triangle":
            g = 1.0 / alpha
            self.c1, self.c2 = g, g**2
        elif surrogate.kind == "atan":
            self.c1, self.c2 = 3.141592653589793 / 2 * alpha, alpha / 2
        elif surrogate.kind == "rectangle":
            self.c1, self.c2 = 0.5 / alpha, 0.0
        else:
            self.c1, self.c2 = 0.0, 0.0


class _FusedIntegrateFire(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, v0, threshold, spike_value, spec: _Spec):
        th2d = threshold.reshape(spec.th_rows, -1).contiguous()
        sv = None if spike_value is None else spike_value.reshape(-1).contiguous()
        # Inside forward grad mode is off; needs_input_grad tells whether backward will run.
        save = any(ctx.needs_input_grad[:4])
        # An unused final membrane then arrives as None instead of a materialised zero tensor.
        ctx.set_materialize_grads(False)
        out, v_final = _extension.forward(
            x,
            v0,
            th2d,
            sv,
            spec.a,
            spec.b,
            spec.hard,
            spec.v_reset,
            spec.per_sample,
            spec.inner,
        )
        if save:
            # Backward recomputes h from x and v0 (tensors that exist anyway) instead of keeping
            # a [T, ...] copy of it.
            ctx.save_for_backward(x, v0, th2d, sv)
            ctx.spec = spec
            ctx.th_shape = threshold.shape
            ctx.sv_shape = None if spike_value is None else spike_value.shape
        return out, v_final

    @staticmethod
    def backward(ctx, grad_out, grad_v_final):
        x, v0, th2d, sv = ctx.saved_tensors
        spec: _Spec = ctx.spec
        need_x, need_v0, need_th, need_sv = ctx.needs_input_grad[:4]
        need_sv = bool(need_sv and sv is not None)
        grad_x, grad_v0, grad_th, grad_sv = _extension.backward(
            None if grad_out is None else _in_layout(grad_out, x),
            None if grad_v_final is None else _in_layout(grad_v_final, v0),
            x,
            v0,
            th2d,
            sv,
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
            bool(need_v0),
            bool(need_th),
            need_sv,
        )
        return (
            grad_x if need_x else None,
            grad_v0 if need_v0 else None,
            grad_th.reshape(ctx.th_shape) if need_th else None,
            grad_sv.reshape(ctx.sv_shape) if need_sv else None,
            None,
        )


def _in_layout(tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``tensor`` with exactly the strides of ``like`` (copied only when they differ)."""
    if tensor.stride() == like.stride():
        return tensor
    return torch.empty_like(like).copy_(tensor)


def _dense_strides(shape, strides) -> bool:
    """True when a tensor of this shape/strides covers its memory without gaps or overlaps."""
    expected = 1
    for size, stride in sorted(zip(shape, strides, strict=False), key=lambda d: d[1]):
        if size == 1:
            continue
        if stride != expected:
            return False
        expected *= size
    return True


def _kernel_layout(x_seq: torch.Tensor, channels: int):
    """Return ``(x, per_sample, inner)`` with x in a layout the kernel walks in memory order.

    Contiguous and channels-last steps are used as they are (time outermost); anything else is
    made contiguous. For per-channel parameters the channel of memory element p of a sample is
    ``(p // inner) % channels``: inner = H*W... when contiguous, 1 when channels-last.
    """
    shape, strides = tuple(x_seq.shape), x_seq.stride()
    step_numel = x_seq[0].numel()
    dense = strides[0] == step_numel and _dense_strides(shape[1:], strides[1:])
    if channels == 1:
        if not dense:
            x_seq = x_seq.contiguous()
        return x_seq, max(1, step_numel), 1
    inner = 1
    for d in shape[3:]:
        inner *= int(d)
    per_sample = channels * inner
    channels_last = dense and (shape[1] == 1 or strides[1] == per_sample) and strides[2] == 1
    if not (x_seq.is_contiguous() or channels_last):
        x_seq = x_seq.contiguous()
    return x_seq, per_sample, inner if x_seq.is_contiguous() else 1


def supports_surrogate(surrogate) -> bool:
    return getattr(surrogate, "kind", None) in _SURROGATE_KINDS and type(surrogate).__module__ == (
        "spikequant.surrogate"
    )


def fused_integrate_fire(
    x_seq: torch.Tensor,
    v0: torch.Tensor,
    threshold: torch.Tensor,
    *,
    surrogate,
    decay: float = 1.0,
    input_scale: float = 1.0,
    hard_reset: bool = False,
    v_reset: float = 0.0,
    detach_reset: bool = False,
    spike_value: torch.Tensor | None = None,
    per_step_threshold: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the fused recurrence over ``x_seq[T, B, ...]`` from the membrane ``v0[B, ...]``.

    ``threshold``: 0-d (per layer) or ``[C]`` (per channel, dim 1 of a step); with
    ``per_step_threshold`` one row per step, ``[T]`` or ``[T, C]`` (ATIF-nu). ``spike_value``
    (0-d or ``[C]``, may be the threshold tensor itself) multiplies the emitted spikes.
    ``decay`` is ``a`` and ``input_scale`` is ``b`` in ``h = a v + b x``.
    Returns ``(out[T, B, ...], v_T[B, ...])``; differentiable w.r.t. every tensor argument.
    Raises :class:`ConfigError` if the extension is unavailable or shapes do not fit.
    """
    if load_extension() is None:
        raise ConfigError(f"fused kernels unavailable: {_load_error}")
    if not supports_surrogate(surrogate):
        raise ConfigError(f"fused kernels support the built-in surrogates, not {surrogate!r}")
    steps, step_shape = x_seq.shape[0], x_seq.shape[1:]
    if tuple(v0.shape) != tuple(step_shape):
        raise ConfigError(f"state shape {tuple(v0.shape)} != step shape {tuple(step_shape)}")
    th_rows = steps if per_step_threshold else 1
    if per_step_threshold and (threshold.ndim < 1 or threshold.shape[0] != steps):
        raise ConfigError(f"per-step thresholds need {steps} rows, got {tuple(threshold.shape)}")
    channels = threshold.numel() // th_rows
    if spike_value is not None and spike_value.numel() > 1:
        if channels not in (1, spike_value.numel()):
            raise ConfigError("threshold and spike value have different channel counts")
        if channels == 1:
            # a per-layer threshold with per-channel spike values: expand the threshold
            threshold = threshold.reshape(th_rows, 1).expand(th_rows, spike_value.numel())
        channels = spike_value.numel()
    if channels > 1 and (len(step_shape) < 2 or step_shape[1] != channels):
        raise ConfigError(
            f"per-channel parameters of {channels} channels do not match steps of shape "
            f"{tuple(step_shape)} (channels are dimension 1 of each step)"
        )
    x_seq, per_sample, inner = _kernel_layout(x_seq, channels)
    if v0.stride() != x_seq[0].stride() or v0.dtype != x_seq.dtype:
        v0 = torch.empty_like(x_seq[0]).copy_(v0)
    spec = _Spec(
        a=float(decay),
        b=float(input_scale),
        hard=bool(hard_reset),
        v_reset=float(v_reset),
        detach=bool(detach_reset),
        surrogate=surrogate,
        per_sample=per_sample,
        inner=inner,
        th_rows=th_rows,
    )
    dtype = x_seq.dtype
    threshold = threshold.to(dtype)
    spike_value = None if spike_value is None else spike_value.to(dtype)
    return _FusedIntegrateFire.apply(x_seq, v0, threshold, spike_value, spec)


def _unsupported(reason: str, required: bool):
    if required:
        raise ConfigError(f"backend='fused' cannot run this neuron: {reason}")
    return None


def try_fused_run(neuron, x_seq: torch.Tensor, state, required: bool = False):
    """Run an IF/LIF/ATIF-u module's sequence with the fused kernel.

    Returns ``(out_seq, new_state)``, or None when the configuration is unsupported (then the
    caller uses the reference loop); with ``required`` it raises :class:`ConfigError` instead.
    """
    from ..neurons.atif_nu import ATIFnu
    from ..neurons.integrate_fire import IF, LIF, MembraneState
    from ..neurons.reset import Subtract, Zero

    if isinstance(neuron, ATIFnu):
        return _try_atif_nu(neuron, x_seq, state, required)
    if not isinstance(neuron, IF):
        return _unsupported(f"{type(neuron).__name__} has no fused kernel", required)
    if x_seq.device.type != "cpu":
        return _unsupported(f"device {x_seq.device.type} (CPU kernels only)", required)
    if x_seq.dtype not in (torch.float32, torch.float64):
        return _unsupported(f"dtype {x_seq.dtype} (float32/float64 only)", required)
    if x_seq.numel() == 0:
        return _unsupported("empty input", required)
    if not supports_surrogate(neuron.surrogate):
        return _unsupported(f"surrogate {neuron.surrogate!r} is not a built-in one", required)
    reset = neuron.reset
    if type(reset) not in (Subtract, Zero):
        return _unsupported(f"reset {reset!r} is not Subtract or Zero", required)
    if not isinstance(state, MembraneState) or state.v.shape != x_seq.shape[1:]:
        return _unsupported("state is not a membrane of the step shape", required)
    if load_extension() is None:
        return _unsupported(f"extension unavailable ({_load_error})", required)
    threshold = neuron.threshold
    if threshold.requires_grad:
        threshold = threshold.clamp(min=neuron.min_threshold)
    if threshold.ndim == 1 and (x_seq.ndim < 3 or x_seq.shape[2] != threshold.shape[0]):
        return _unsupported("per-channel threshold does not match dimension 1 of a step", required)
    if isinstance(neuron, LIF):
        decay = neuron.decay
        input_scale = 1.0 - decay if neuron.decay_input else 1.0
    else:
        decay, input_scale = 1.0, 1.0
    is_zero = isinstance(reset, Zero)
    out, v = fused_integrate_fire(
        x_seq,
        state.v,
        threshold,
        surrogate=neuron.surrogate,
        decay=decay,
        input_scale=input_scale,
        hard_reset=is_zero,
        v_reset=reset.v_reset if is_zero else 0.0,
        detach_reset=reset.detach,
        spike_value=threshold if neuron.scale_output else None,
    )
    return out, MembraneState(v)


def _common_checks(neuron, x_seq: torch.Tensor, required: bool) -> bool:
    reason = None
    if x_seq.device.type != "cpu":
        reason = f"device {x_seq.device.type} (CPU kernels only)"
    elif x_seq.dtype not in (torch.float32, torch.float64):
        reason = f"dtype {x_seq.dtype} (float32/float64 only)"
    elif x_seq.numel() == 0:
        reason = "empty input"
    elif not supports_surrogate(neuron.surrogate):
        reason = f"surrogate {neuron.surrogate!r} is not a built-in one"
    elif load_extension() is None:
        reason = f"extension unavailable ({_load_error})"
    if reason is not None:
        _unsupported(reason, required)
        return False
    return True


def _try_atif_nu(neuron, x_seq: torch.Tensor, state, required: bool):
    """ATIF-nu: per-step thresholds ``V_th(t)`` (rows t0 .. t0+T of its schedule), soft reset,
    spikes carrying ``p_1``."""
    from ..neurons.atif_nu import StepState
    from ..neurons.reset import Subtract

    if not _common_checks(neuron, x_seq, required):
        return None
    if type(neuron.reset) is not Subtract:
        return _unsupported(f"reset {neuron.reset!r}", required)
    if not isinstance(state, StepState) or state.v.shape != x_seq.shape[1:]:
        return _unsupported("state is not an ATIF-nu membrane of the step shape", required)
    steps = x_seq.shape[0]
    if state.t + steps > neuron.timesteps:
        return None  # the reference loop raises the precise ShapeError
    params = neuron.params()
    thresholds = params.step_thresholds[state.t : state.t + steps]
    if thresholds.ndim == 2 and (x_seq.ndim < 3 or x_seq.shape[2] != thresholds.shape[1]):
        return _unsupported("per-channel levels do not match dimension 1 of a step", required)
    out, v = fused_integrate_fire(
        x_seq,
        state.v,
        thresholds,
        surrogate=neuron.surrogate,
        detach_reset=neuron.reset.detach,
        per_step_threshold=True,
        spike_value=params.spike_value if neuron.scale_output else None,
    )
    return out, StepState(v, state.t + steps)
