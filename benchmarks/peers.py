"""The same spiking layers built in spikequant and in the peer libraries (when installed).

Every adapter maps a time-first input ``[T, B, ...]`` to spikes ``[T, B, ...]`` and forgets its
state at the start of each call, with equal neuron parameters:

* LIF: ``tau = 2`` (decay 0.5) with the input decayed too (``H = 0.5 V + 0.5 x``, SpikingJelly's
  and Norse's convention), threshold 1, hard reset to 0.
* IF: ``H = V + x``, threshold 1, hard reset to 0 (the default of all three peers).

Conventions that differ and how they are matched:
SpikingJelly fires on ``>=`` like spikequant; snnTorch and Norse fire on ``>`` (ties have
probability ~0 for continuous inputs). snnTorch applies the reset one step late by default:
``reset_delay=False`` here. snnTorch has no ``decay_input``: its LIF receives ``0.5 x``, scaled
once outside the timed region (``input_scale``). Norse's box LIF integrates
``v + dt tau_inv (x - v)`` with ``dt tau_inv = 0.5``. Surrogates: sigmoid(4) in spikequant,
SpikingJelly and snnTorch; Norse has no sigmoid and uses its SuperSpike (alpha 4).
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

import spikequant
from spikequant.neurons import IF, LIF, reset_state
from spikequant.surrogate import Sigmoid

LIBRARIES = ("spikequant", "spikingjelly", "snntorch", "norse")


def version(lib: str) -> str | None:
    try:
        return importlib.metadata.version(lib)
    except importlib.metadata.PackageNotFoundError:
        return None


def available(lib: str) -> tuple[bool, str]:
    """(usable, reason) for a library: it must import under the installed torch."""
    if lib == "spikequant":
        return True, spikequant.__version__ if hasattr(spikequant, "__version__") else "dev"
    module = {
        "spikingjelly": "spikingjelly.activation_based.neuron",
        "snntorch": "snntorch",
        "norse": "norse.torch",
    }[lib]
    try:
        importlib.import_module(module)
    except Exception as exc:  # missing package or broken install: report, do not fail
        return False, f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    return True, version(lib) or "?"


@dataclass
class Layer:
    """A multi-step spiking layer and how the benchmark feeds it."""

    module: nn.Module
    run: Callable[[torch.Tensor], torch.Tensor]  # x[T, B, ...] -> spikes[T, B, ...]
    input_scale: float = 1.0  # multiply the workload input by this once, outside the timing


# ---------------------------------------------------------------------------------- spikequant
def _spikequant(kind: str, backend: str = "fused") -> Layer:
    if kind == "lif":
        neuron = LIF(
            tau=2.0,
            decay_input=True,
            threshold=1.0,
            reset="zero",
            surrogate=Sigmoid(4.0),
            backend=backend,
        )
    else:
        neuron = IF(threshold=1.0, reset="zero", surrogate=Sigmoid(4.0), backend=backend)

    def run(x):
        reset_state(neuron)
        return neuron(x)

    return Layer(neuron, run)


# -------------------------------------------------------------------------------- SpikingJelly
#: SpikingJelly 2.x: the module holding each node's choice among its CUDA implementations.
_SJ_SELECTIONS = {"lif": "spikingjelly._ops.lif", "if": "spikingjelly._ops.if_"}
#: the CUDA implementations SpikingJelly 2.x chooses among (its environment variables' values)
SJ2_CUDA_BACKENDS = ("cuda", "triton", "torch")


def _pin_sj2_backend(kind: str, backend: str) -> Callable[[torch.Tensor], None]:
    """SpikingJelly 2.x picks one CUDA implementation per process (``SJ_LIF_CUDA_IMPLEMENTATION``
    / ``SJ_IF_CUDA_IMPLEMENTATION``, read at import, default: the first that loads of cuda,
    triton, torch). To run several side by side, each layer gets its own selection state and
    installs it when its forward starts; it stays installed for the backward that follows (the
    benchmark runs one library's forward and backward at a time, never interleaved)."""
    if backend not in SJ2_CUDA_BACKENDS:
        raise ValueError(
            f"SpikingJelly {version('spikingjelly')} has no {backend!r} backend "
            f"(its CUDA implementations: {', '.join(SJ2_CUDA_BACKENDS)})"
        )
    selection = importlib.import_module(_SJ_SELECTIONS[kind])._selection
    own = {"_requested": backend, "_selections": {}, "_compiled_selections": {}}
    if not all(hasattr(selection, attr) for attr in own):
        raise RuntimeError(
            f"SpikingJelly {version('spikingjelly')}: unknown way to choose its "
            "CUDA implementation per layer"
        )

    def pin(x: torch.Tensor) -> None:
        if x.device.type != "cuda":
            if backend != "torch":
                raise RuntimeError(
                    f"SpikingJelly's {backend} backend needs a CUDA tensor (on "
                    f"{x.device.type} it runs its CPU implementation)"
                )
            return
        for attr, value in own.items():
            setattr(selection, attr, value)

    return pin


def sj_implementation(kind: str, device: torch.device) -> str | None:
    """The CUDA implementation SpikingJelly 2.x ran last for ``kind`` on ``device`` (after a
    layer's call: the one pinned for it), or None (older SpikingJelly, a CPU device)."""
    if device.type != "cuda":
        return None
    try:
        selection = importlib.import_module(_SJ_SELECTIONS[kind])._selection
        return selection.diagnostics(device)["implementation"]
    except (ImportError, AttributeError, RuntimeError):
        return None


def _spikingjelly(kind: str, backend: str = "torch") -> Layer:
    """``backend``: SpikingJelly's multi-step implementation. Releases up to 0.0.0.0.15 take it as
    the node's ``backend`` argument ("torch", or "cupy" on GPUs); 2.x has no such argument
    and chooses per process among "cuda", "triton" and "torch" on CUDA tensors (pinned per layer
    here, see ``_pin_sj2_backend``) and runs its CPU implementation on CPU tensors."""
    import inspect

    from spikingjelly.activation_based import functional, neuron, surrogate

    cls = neuron.LIFNode if kind == "lif" else neuron.IFNode
    options = dict(
        v_threshold=1.0, v_reset=0.0, surrogate_function=surrogate.Sigmoid(alpha=4.0), step_mode="m"
    )
    if kind == "lif":
        options.update(tau=2.0, decay_input=True)
    pin = None
    if "backend" in inspect.signature(cls.__init__).parameters:
        node = cls(**options, backend=backend)
    else:
        pin = _pin_sj2_backend(kind, backend)
        node = cls(**options)

    def run(x):
        if pin is not None:
            pin(x)
        functional.reset_net(node)
        return node(x)

    return Layer(node, run)


# ------------------------------------------------------------------------------------ snnTorch
class _SnnTorchSequence(nn.Module):
    """snnTorch's usual multi-step pattern: a Python loop over time and a stack."""

    def __init__(self, beta: float, input_scale: float | None = None):
        super().__init__()
        import snntorch
        from snntorch import surrogate

        self.lif = snntorch.Leaky(
            beta=beta,
            threshold=1.0,
            spike_grad=surrogate.sigmoid(slope=4),
            reset_mechanism="zero",
            reset_delay=False,
        )
        self.input_scale = input_scale

    def forward(self, x):
        mem = self.lif.init_leaky()
        spikes = []
        for x_t in x.unbind(0):
            if self.input_scale is not None:
                x_t = x_t * self.input_scale
            spk, mem = self.lif(x_t, mem)
            spikes.append(spk)
        return torch.stack(spikes)


def _snntorch(kind: str, scale_inside: bool = False) -> Layer:
    beta = 0.5 if kind == "lif" else 1.0
    scale = 0.5 if kind == "lif" else 1.0
    inside = scale if (scale_inside and kind == "lif") else None
    module = _SnnTorchSequence(beta, input_scale=inside)
    return Layer(module, module, input_scale=1.0 if scale_inside else scale)


# --------------------------------------------------------------------------------------- Norse
class _NorseSequence(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        import norse.torch as nt

        if kind == "lif":
            p = nt.LIFBoxParameters(
                tau_mem_inv=torch.as_tensor(0.5),
                v_th=torch.as_tensor(1.0),
                v_reset=torch.as_tensor(0.0),
                method="super",
                alpha=torch.as_tensor(4.0),
            )
            self.layer = nt.Lift(nt.LIFBoxCell(p, dt=1.0))
        else:
            p = nt.IAFParameters(
                v_th=torch.as_tensor(1.0),
                v_reset=torch.as_tensor(0.0),
                method="super",
                alpha=torch.as_tensor(4.0),
            )
            self.layer = nt.IAF(p)

    def forward(self, x):
        out = self.layer(x)
        return out[0] if isinstance(out, tuple) else out


def _norse(kind: str) -> Layer:
    module = _NorseSequence(kind)
    return Layer(module, module)


def make_layer(lib: str, kind: str, **kwargs) -> Layer:
    """The ``kind`` ("lif" or "if") layer of ``lib``; raises ImportError if not installed."""
    factory = {
        "spikequant": _spikequant,
        "spikingjelly": _spikingjelly,
        "snntorch": _snntorch,
        "norse": _norse,
    }[lib]
    return factory(kind, **kwargs)


def make_neuron_module(lib: str, **kwargs) -> nn.Module:
    """A LIF module ``[T, B, ...] -> [T, B, ...]`` for use inside a network (resets per call)."""
    if lib == "snntorch":
        return _SnnTorchSequence(0.5, input_scale=0.5)
    layer = make_layer(lib, "lif", **kwargs)
    return _Resetting(layer)


class _Resetting(nn.Module):
    def __init__(self, layer: Layer):
        super().__init__()
        self.inner = layer.module
        self._run = layer.run

    def forward(self, x):
        return self._run(x)
