"""Stage 3-4 of the converter (replace, finalize) and the converted network's simulator.

A converted network is the traced ANN graph with its activations replaced by single-step spiking
stages; it runs one timestep per graph call (all layers in order, zero delay) and keeps neuron state
between calls. The read-out accumulates the output layer over time and takes the argmax.

The registered methods (:mod:`spikequant.convert.methods`) build it with these replacements:

* ``rate``: IF neurons with soft reset, threshold = calibrated scale ``lambda`` of the layer
  (threshold balancing); each spike carries ``lambda``. Analog input every step; read-out =
  mean over time. Membrane starts at 0 (classic); ``initial_membrane=v0`` starts it at
  ``v0 lambda`` (Bu et al. 2022), for rate and MSAT alike.
* ``msat``: :class:`~spikequant.convert.msat.MSAT` neurons with base threshold ``lambda`` and spike
  confidence on the last spiking layer (p from the SIN statistics of the calibration data).
* ``calif``: a QAT network (QuantInput/QuantConv1d/QuantConv2d/QuantLinear/QuantReLU; any ANN
  through :func:`~spikequant.convert.quantize_for_calif`) to Ca-LIF neurons in real units:
  synapse ``Sw wQ``, a hidden spike worth ``Sy``, ``Vth = Sy``, leak ``lam = -b/T`` (the bias
  current found by probing the graph with all spikes zero), rounding phase after step T,
  read-out ``c Vth + V`` of the output layer (accumulated current plus bias). An input spike is
  worth ``1/K`` (ISI budget ``K = min(T, 255)``), but ``1/K`` has no exact binary form: 255 spikes
  of ``0.75/255`` do not add up to ``0.75``. So the layers fed by the input count input spikes as
  1 and keep their membrane in units of the input step, ``V' = K V``, with ``Vth' = K Sy`` and
  ``lam' = -K b / T``; the step ``1/K`` is applied once, in the threshold. With power-of-two
  scales and T = 2^bits every sum is then exact in float64, so each integer activation equals the
  quantized ANN's ``clamp(round_half_up(z / Sy), 0, qmax)`` of the exact ``z``, half-way values
  included.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ConversionError
from ..neurons import IF, reset_state
from ..neurons.integrate_fire import MembraneState
from ..quant.qat import (
    QuantConv1d,
    QuantConv2d,
    QuantInput,
    QuantLinear,
    QuantReLU,
    avg_pool,
    fake_quant_weight,
)
from .calif import CaLIF, CaPool, IsiEncoder, pixels_from_unit
from .graph import (
    BN_TYPES,
    POOL_TYPES,
    QUANT_WEIGHT_TYPES,
    WEIGHT_TYPES,
    _module,
    _set_module,
    activation_nodes,
    collect_activations,
    plain_layer,
    validate,
)
from .msat import MSAT


class NeuronStage(nn.Module):
    """Single-step wrapper: ``neuron(x[None])[0]`` (then average pooling), counting spikes."""

    def __init__(self, neuron: nn.Module, pool: int = 1) -> None:
        super().__init__()
        self.neuron = neuron
        self.pool = pool
        self.track_neurons = False
        self.clear_counts()

    def clear_counts(self) -> None:
        # a tensor on the network's device (int64: exact counts), read once per read-out
        self.spikes: torch.Tensor | float = 0.0
        self.neurons = 0
        self.per_neuron: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.neuron(x.unsqueeze(0))[0]
        nonzero = out != 0
        self.spikes = self.spikes + nonzero.sum()
        self.neurons = nonzero[0].numel()
        if self.track_neurons:
            fired = nonzero.to(torch.float32)
            self.per_neuron = fired if self.per_neuron is None else self.per_neuron + fired
        return avg_pool(out, self.pool) if self.pool > 1 else out


class PrechargedIF(IF):
    """IF whose membrane starts at ``initial_membrane * V_th`` instead of 0."""

    def __init__(self, threshold: float = 1.0, *, initial_membrane: float = 0.0, **kwargs) -> None:
        super().__init__(threshold, **kwargs)
        if not 0.0 <= float(initial_membrane) < 1.0:
            raise ConfigError(f"initial_membrane must be in [0, 1), got {initial_membrane!r}")
        self.initial_membrane = float(initial_membrane)

    def initial_state(self, x: torch.Tensor) -> MembraneState:
        v0 = self.initial_membrane * self.effective_threshold(x).detach()
        return MembraneState(torch.zeros_like(x) + v0)


class Synapse(nn.Module):
    """Weight layer of a Ca-LIF network; the bias is used only when probing the bias currents."""

    def __init__(self, layer: nn.Conv1d | nn.Conv2d | nn.Linear) -> None:
        super().__init__()
        self.layer = layer
        self.mode = "step"

    def forward(self, x):
        bias = self.layer.bias if self.mode == "probe" else None
        if isinstance(self.layer, (nn.Conv1d, nn.Conv2d)):
            return self.layer._conv_forward(x, self.layer.weight, bias)
        return F.linear(x, self.layer.weight, bias)


class CaBlock(nn.Module):
    """Quantized ReLU as Ca-LIF neurons (``Vth = Sy``, ``qmax``), then optionally the pool neuron;
    emits spikes worth ``Sy``.

    ``input_units`` (set by :func:`replace_calif` for a block fed by the input spikes): its input
    current is in units of the input step ``1/K`` (input spikes count 1), so its threshold and leak
    are scaled by ``K`` in :meth:`set_timesteps` instead of the current by ``1/K``."""

    def __init__(self, step_size: float, qmax: int, pool: int = 1, tie: str = "up") -> None:
        super().__init__()
        self.step_size = float(step_size)
        self.neuron = CaLIF(self.step_size, 0.0, qmax=qmax, tie=tie)
        self.pool_neuron = CaPool(pool, tie=tie) if pool > 1 else None
        self.pool = pool
        self.mode = "step"
        self.input_units = False
        self.bias_current: torch.Tensor | None = None
        self.spikes: torch.Tensor | float = 0.0  # on the network's device, read once per read-out
        self.neurons = 0

    def _sum_pool(self, s):
        return avg_pool(s, self.pool) * (self.pool ** (s.ndim - 2))

    def forward(self, x):
        if self.mode == "probe":
            if self.pool_neuron is not None:
                self.pool_neuron.set_spatial_dims(x.ndim - 2)
            self.bias_current = x[0].detach().clone()
            out = torch.zeros_like(x)
            return self._sum_pool(out) if self.pool_neuron is not None else out
        if self.mode == "step":
            s = self.neuron(x.unsqueeze(0))[0]
            self.spikes = self.spikes + (s != 0).sum()
            self.neurons = s[0].numel()
            if self.pool_neuron is not None:
                s = self.pool_neuron(self._sum_pool(s).unsqueeze(0))[0]
                self.spikes = self.spikes + (s != 0).sum()
                self.neurons += s[0].numel()
            return s * self.step_size
        r = self.neuron.round_phase(x)
        self.spikes = self.spikes + r.abs().sum()
        if self.pool_neuron is not None:
            r = self.pool_neuron.round_phase(self._sum_pool(r))
            self.spikes = self.spikes + r.abs().sum()
        return r * self.step_size

    def set_timesteps(self, timesteps: int, input_levels: int = 1) -> None:
        """Leak ``-b/T`` and ``Vth = Sy``; for an ``input_units`` block both times the number of
        input levels ``K`` (the membrane is then ``K V``, in units of the input step)."""
        if self.bias_current is None:
            raise ConversionError("probe the bias currents before simulating")
        scale = float(input_levels) if self.input_units else 1.0
        # K b and K Sy are exact in float64 (24-bit mantissas times K < 2^16)
        self.neuron.leak = -(self.bias_current * scale) / timesteps
        self.neuron.threshold = torch.tensor(
            self.step_size * scale, dtype=torch.float64, device=self.bias_current.device
        )

    def codes(self) -> tuple[torch.Tensor, torch.Tensor]:
        pre = self.neuron.count
        return pre, (self.pool_neuron.count if self.pool_neuron is not None else pre)


class SpikingNetwork(nn.Module):
    """A converted SNN, an ``nn.Module`` like any other.

    ``forward(x)``: ``x`` is a static batch ``[B, ...]`` (the ANN's input, e.g. ``[B, 1, 28, 28]``
    images in [0, 1]); the network encodes it itself (``rate``/``msat``: the analog input is the
    input current of every step; ``calif``: ISI spikes of the 8-bit pixels) and runs
    ``self.timesteps`` steps. It returns the logits ``[B, classes]``, exactly
    ``simulate(x, [T])[T]["logits"]`` with ``T = self.timesteps``: the output layer's current
    averaged over the T steps (``rate``/``msat``), or the Ca-LIF read-out ``c Vth + V``.

    ``simulate(x, timesteps)`` reads the logits out at several T in one run (the sweeps).
    ``timesteps`` is set at conversion (:func:`~spikequant.convert.convert` with
    ``timesteps=``) or by hand, and saved with the network
    (:func:`~spikequant.convert.save_converted`).

    The MSAT spike-confidence draws restart from ``seed`` at every call, so that one input batch
    always gives the same logits (and a saved network the same as the loaded one).
    """

    def __init__(
        self,
        graph: fx.GraphModule,
        method: str,
        info: dict | None = None,
        *,
        timesteps: int | None = None,
    ) -> None:
        super().__init__()
        self.graph_module = graph
        self.method = method
        self.info = info or {}
        self.timesteps = timesteps
        self.seed: int | None = None  # msat: seed of the spike-confidence draws of every call
        self.max_input_spikes: int | None = None  # calif ISI budget K; None -> min(T, 255)
        # calif: the graph output is a weight layer fed by the input spikes (no hidden layer)
        self.output_in_input_units = method == "calif" and calif_output_in_input_units(graph)
        # set by the conversion method: its options and calibration statistics (saving needs them)
        self.options = None
        self.statistics: dict = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, ...]`` static inputs -> ``[B, classes]`` logits after ``self.timesteps`` steps."""
        if self.timesteps is None:
            raise ConfigError(
                "this converted network has no timesteps: set net.timesteps = T (or convert with "
                "timesteps=T) before calling it"
            )
        return self.simulate(x, [self.timesteps])[self.timesteps]["logits"]

    def _restart_draws(self, device: torch.device) -> None:
        """A fresh generator on ``device`` seeded with ``seed`` for every MSAT neuron."""
        if self.seed is None:
            return
        generator = torch.Generator(device=device).manual_seed(int(self.seed))
        for stage in self.stages().values():
            if isinstance(getattr(stage, "neuron", None), MSAT):
                stage.neuron.generator = generator

    def stages(self) -> dict[str, nn.Module]:
        return {
            name: m
            for name, m in self.graph_module.named_modules()
            if isinstance(m, (NeuronStage, CaBlock))
        }

    def _set_mode(self, mode: str) -> None:
        for m in self.graph_module.modules():
            if isinstance(m, (Synapse, CaBlock)):
                m.mode = mode

    @torch.no_grad()
    def simulate(self, x: torch.Tensor, timesteps: Sequence[int]) -> dict[int, dict]:
        """Run the SNN; returns ``{T: {"logits": [B, classes], "spikes": total, "neurons": n}}``.

        ``rate``/``msat`` run once up to ``max(timesteps)`` and read out at each T; ``calif`` runs
        each T separately (T sets the ISI coding, the leak and the rounding phase)."""
        steps = sorted({int(t) for t in timesteps})
        if not steps or steps[0] < 1:
            raise ConfigError(f"timesteps must be positive integers, got {list(timesteps)!r}")
        if self.method == "calif":
            return {t: self._simulate_calif(x, t) for t in steps}
        self._restart_draws(x.device)
        reset_state(self.graph_module)
        for stage in self.stages().values():
            stage.clear_counts()
        acc = None
        results = {}
        for t in range(1, steps[-1] + 1):
            out = self.graph_module(x)
            acc = out if acc is None else acc + out
            if t in steps:
                results[t] = {"logits": acc / t, **self._spike_totals()}
        return results

    def _spike_totals(self) -> dict:
        stages = self.stages().values()
        return {
            "spikes": float(sum(s.spikes for s in stages)),  # one device sync per read-out
            "neurons": sum(s.neurons for s in stages),
        }

    def _simulate_calif(self, x: torch.Tensor, timesteps: int) -> dict:
        gm = self.graph_module
        budget = self.max_input_spikes or min(timesteps, 255)
        budget = min(budget, timesteps)
        x = x.to(torch.float64)
        reset_state(gm)
        self._set_mode("probe")
        bias_out = gm(torch.zeros_like(x[:1]))
        for block in self.stages().values():
            block.set_timesteps(timesteps, budget)
            block.spikes = 0.0
        reset_state(gm)
        encoder = IsiEncoder(pixels_from_unit(x), timesteps, budget)
        self._set_mode("step")
        acc = torch.zeros_like(bias_out)
        input_spikes = torch.zeros((), dtype=torch.float64, device=x.device)
        for t in range(1, timesteps + 1):
            spikes = encoder.step(t)
            input_spikes = input_spikes + spikes.sum()
            acc = acc + gm(spikes)  # input spikes count 1: input_units blocks scale by K
        if self.output_in_input_units:
            acc = acc / budget
        self._set_mode("round")
        acc = acc + gm(torch.zeros_like(x)) + bias_out
        self._set_mode("step")
        return {"logits": acc, **self._spike_totals(), "input_spikes": float(input_spikes)}

    def codes(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Ca-LIF integer activations (before, after pooling) of the last simulation."""
        return {name: m.codes() for name, m in self.stages().items() if isinstance(m, CaBlock)}


# --------------------------------------------------------------------------- stage 3: replace
def replace_rate(
    gm: fx.GraphModule, scales: dict[str, torch.Tensor], *, initial_membrane: float = 0.0
) -> fx.GraphModule:
    for node in activation_nodes(gm):
        m = gm.get_submodule(node.target)
        scale = scales[node.target]
        neuron = PrechargedIF(
            1.0,
            initial_membrane=initial_membrane,
            num_channels=scale.numel() if scale.ndim else None,
            scale_output=True,
            backend="torch",  # one step per call: a fused multi-step kernel gains nothing
        )
        with torch.no_grad():
            neuron.threshold.copy_(scale)
        _set_module(gm, node.target, NeuronStage(neuron, getattr(m, "pool", 1)))
    return gm


def replace_msat(
    gm: fx.GraphModule,
    scales: dict[str, torch.Tensor],
    *,
    preset: str,
    generator: torch.Generator,
    **msat_kwargs,
) -> fx.GraphModule:
    for node in activation_nodes(gm):
        m = gm.get_submodule(node.target)
        neuron = MSAT(scales[node.target], preset=preset, generator=generator, **msat_kwargs)
        _set_module(gm, node.target, NeuronStage(neuron, getattr(m, "pool", 1)))
    return gm


def signal_sources(gm: fx.GraphModule, is_neuron) -> dict[fx.Node, frozenset[str]]:
    """For every node, which signals reach it: ``"input"`` (the network input, through shape ops
    and weight layers) and/or ``"neuron"`` (the output of a module for which ``is_neuron``)."""
    sources: dict[fx.Node, frozenset[str]] = {}
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            sources[node] = frozenset({"input"})
        elif node.op == "call_module" and is_neuron(gm.get_submodule(node.target)):
            sources[node] = frozenset({"neuron"})
        else:
            sources[node] = frozenset().union(*(sources[n] for n in node.all_input_nodes))
    return sources


def _fed_by(sources: dict, node: fx.Node) -> frozenset[str]:
    return frozenset().union(*(sources[n] for n in node.all_input_nodes))


def calif_output_in_input_units(gm: fx.GraphModule) -> bool:
    """Whether a Ca-LIF graph's output is driven by the input spikes (a network without hidden
    layer); its read-out is then in units of the input step."""
    sources = signal_sources(gm, lambda m: isinstance(m, CaBlock))
    output = next(n for n in gm.graph.nodes if n.op == "output")
    return _fed_by(sources, output) == {"input"}


def _mark_input_units(gm: fx.GraphModule) -> None:
    """Set ``input_units`` on the Ca-LIF blocks fed by the input spikes; refuse a block or output
    fed by both the input and neurons (input and hidden spikes are counted in different units)."""
    sources = signal_sources(gm, lambda m: isinstance(m, CaBlock))
    for node in gm.graph.nodes:
        m = _module(gm, node)
        if not (isinstance(m, CaBlock) or node.op == "output"):
            continue
        fed = _fed_by(sources, node)
        if fed == {"input", "neuron"}:
            where = node.target if m is not None else "the output"
            raise ConversionError(
                f"{where}: calif cannot add the input image to hidden spikes (a skip connection "
                "from the input); start the skip path after the first quantized ReLU"
            )
        if m is not None:
            m.input_units = fed == {"input"}


def replace_calif(gm: fx.GraphModule, *, tie: str = "up") -> fx.GraphModule:
    saw_input = False
    for node in gm.graph.nodes:
        m = _module(gm, node)
        if m is None:
            continue
        if isinstance(m, BN_TYPES):
            raise ConversionError(
                f"{node.target}: calif needs BN folded during QAT (train with the qat runner, or "
                "build the QAT form with spikequant.convert.quantize_for_calif)"
            )
        if isinstance(m, QuantInput):
            saw_input = True
            _set_module(gm, node.target, nn.Identity())
        elif isinstance(m, QUANT_WEIGHT_TYPES):
            _set_module(gm, node.target, Synapse(plain_layer(m)))
        elif isinstance(m, QuantReLU):
            _set_module(gm, node.target, CaBlock(float(m.step_size), m.qmax, m.pool, tie=tie))
        elif isinstance(m, WEIGHT_TYPES + POOL_TYPES + (nn.ReLU, nn.Hardtanh)):
            raise ConversionError(
                f"{node.target}: calif converts quantized networks only (QuantConv1d/QuantConv2d/"
                f"QuantLinear/QuantReLU with pool=...), found {type(m).__name__}; train with "
                "`kind: qat` or build the QAT form with spikequant.convert.quantize_for_calif"
            )
    if not saw_input:
        raise ConversionError("calif needs the 8-bit input quantizer (QuantInput) as first layer")
    _mark_input_units(gm)
    return gm.double()


# --------------------------------------------------------------------------- stage 4: finalize
def _batches(x: torch.Tensor, batch_size: int):
    for i in range(0, len(x), batch_size):
        yield x[i : i + batch_size]


def sin_statistics(
    snn: SpikingNetwork,
    ann_graph: fx.GraphModule,
    x: torch.Tensor,
    *,
    steps: int = 16,
    batch_size: int = 256,
) -> dict[str, dict]:
    """Spikes of inactivated neurons per layer: neurons that fire within the first ``steps`` steps
    although their ANN pre-activation is <= 0. ``p = 1 - SIN / fired`` is the confidence."""
    stages = {n: s for n, s in snn.stages().items() if isinstance(s, NeuronStage)}
    saved = {}
    for name, stage in stages.items():
        saved[name] = stage.neuron.confidence if isinstance(stage.neuron, MSAT) else None
        if isinstance(stage.neuron, MSAT):
            stage.neuron.confidence = None
        stage.track_neurons = True
    totals = {n: {"neurons": 0, "fired": 0, "sin": 0, "sin_spikes": 0.0} for n in stages}
    try:
        for xb in _batches(x, batch_size):
            for stage in stages.values():
                stage.per_neuron = None
            snn.simulate(xb, [steps])
            pre = collect_activations(ann_graph, [xb], inputs=True)
            for name, stage in stages.items():
                fired = stage.per_neuron
                inactive = pre[name] <= 0
                sin = (fired > 0) & inactive
                t = totals[name]
                t["neurons"] += fired.numel()
                t["fired"] += int((fired > 0).sum())
                t["sin"] += int(sin.sum())
                t["sin_spikes"] += float(fired[inactive].sum())
    finally:
        for name, stage in stages.items():
            stage.track_neurons = False
            stage.per_neuron = None
            if isinstance(stage.neuron, MSAT):
                stage.neuron.confidence = saved[name]
    report = {}
    for name, t in totals.items():
        ratio = t["sin"] / t["fired"] if t["fired"] else 0.0
        report[name] = {
            "sin_neurons": t["sin"],
            "fired_neurons": t["fired"],
            "sin_ratio": ratio,
            "ans": t["sin_spikes"] / max(t["neurons"], 1),
            "confidence": 1.0 - ratio,
        }
    return report


@torch.no_grad()
def _quantized_weight_hook(weight: torch.Tensor, levels: int | None):
    """Forward hook of a weight layer: recompute its output with the given fake-quantized
    ``weight`` (``W x + b``). With ``levels`` (a layer fed by the image ``n / levels``) it computes
    ``(W n) / levels + b`` from the integer pixel counts ``n``, the step ``1/levels`` applied once,
    the exact value wherever the float64 sum can be exact (``1/levels`` has no binary form)."""

    def hook(layer, args, out):
        x = args[0] if levels is None else torch.round(args[0] * levels)
        if isinstance(layer, nn.Linear):
            pre = F.linear(x, weight)
        else:
            pre = layer._conv_forward(x, weight, None)
        if levels is not None:
            pre = pre / levels
        if layer.bias is None:
            return pre
        if isinstance(layer, nn.Linear):
            return pre + layer.bias
        return pre + layer.bias.view(-1, *([1] * (pre.ndim - 2)))

    return hook


def quantized_codes(
    model: nn.Module,
    x: torch.Tensor,
    *,
    decoded_input: torch.Tensor | None = None,
    input_levels: int = QuantInput.levels,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Integer activations (before, after pooling) of every QuantReLU of a QAT model, in float64.

    With ``decoded_input`` the input quantizer is bypassed and the network sees that input instead
    (the ISI-decoded image ``N / K``, ``input_levels = K``), which is what the Ca-LIF network
    receives. The weight layers fed by the image compute ``(W n) / input_levels + b`` from the
    integer counts ``n`` (as the Ca-LIF network does), not ``W (n / input_levels) + b``.

    The integer weights are those of the model in its own precision (``fake_quant_weight`` of the
    float32 parameters, as :func:`replace_calif` takes them): quantizing again in float64 would
    move a weight whose ``w / Sw`` is a float32 tie (e.g. ``78.5``, but ``78.5000042`` in float64)
    to the other integer.
    """
    gm = validate(model).eval()
    weights = {
        name: fake_quant_weight(m.weight, m.bits).detach().double()
        for name, m in gm.named_modules()
        if isinstance(m, (QuantConv1d, QuantConv2d, QuantLinear))
    }
    gm = gm.double()
    codes: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []
    sources = signal_sources(gm, lambda m: isinstance(m, QuantReLU))
    for node in gm.graph.nodes:
        m = _module(gm, node)
        if isinstance(m, (QuantConv1d, QuantConv2d, QuantLinear)):
            levels = input_levels if _fed_by(sources, node) == {"input"} else None
            handles.append(
                m.register_forward_hook(_quantized_weight_hook(weights[node.target], levels))
            )
    for node in activation_nodes(gm):
        m = gm.get_submodule(node.target)
        if isinstance(m, QuantReLU):
            handles.append(
                m.register_forward_hook(
                    lambda mod, args, out, name=node.target: codes.__setitem__(
                        name, mod.codes(args[0])
                    )
                )
            )
    inputs = [m for m in gm.modules() if isinstance(m, QuantInput)]
    try:
        if decoded_input is not None:
            for m in inputs:
                m.enabled = False
        gm(decoded_input.double() if decoded_input is not None else x.double())
    finally:
        for h in handles:
            h.remove()
        for m in inputs:
            m.enabled = True
    return codes


@torch.no_grad()
def calif_agreement(model: nn.Module, snn: SpikingNetwork, x: torch.Tensor, timesteps: int) -> dict:
    """Simulate the Ca-LIF SNN for ``timesteps`` and compare every layer's integer activations with
    the quantized ANN, both on the ISI-decoded input (must be exact) and on the original input
    (differs only through the input-coding rounding)."""
    out = snn.simulate(x, [timesteps])[timesteps]
    return {**compare_codes(model, snn, x, timesteps), "logits": out["logits"]}


def compare_codes(model: nn.Module, snn: SpikingNetwork, x: torch.Tensor, timesteps: int) -> dict:
    """Compare the codes the Ca-LIF SNN holds after simulating ``x`` for ``timesteps`` steps."""
    snn_codes = snn.codes()
    budget = min(snn.max_input_spikes or min(timesteps, 255), timesteps)
    on_decoded = quantized_codes(
        model, x, decoded_input=isi_decoded_input(x, timesteps, budget), input_levels=budget
    )
    on_original = quantized_codes(model, x)
    layers = {}
    for name, (pre, post) in snn_codes.items():
        pooled = post is not pre
        layers[name] = {"neurons": int(pre.numel() + (post.numel() if pooled else 0))}
        for key, ref in (("decoded", on_decoded[name]), ("original", on_original[name])):
            bad = (pre != ref[0]).sum() + ((post != ref[1]).sum() if pooled else 0)
            layers[name][f"mismatch_vs_{key}_input"] = int(bad)
    return {"T": timesteps, "input_spike_budget": budget, "layers": layers, "samples": len(x)}


def merge_agreements(total: dict | None, part: dict) -> dict:
    """Sum the per-layer counts of two :func:`compare_codes` results (batches of one test set)."""
    if total is None:
        return part
    for name, counts in part["layers"].items():
        for key, value in counts.items():
            total["layers"][name][key] += value
    total["samples"] += part["samples"]
    return total


def isi_decoded_input(x: torch.Tensor, timesteps: int, budget: int) -> torch.Tensor:
    """What the Ca-LIF input layer delivers: ``floor(K pix / 255) / K``."""
    pix = pixels_from_unit(x)
    return ((budget * pix) // 255).to(torch.float64) / budget
