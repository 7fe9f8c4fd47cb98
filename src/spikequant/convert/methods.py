"""Conversion methods as registered recipes of four stages (in the manner of SpikingJelly's
``ann2snn`` converter):

1. ``prepare``: take the ANN form of the model (a zoo model built with ``neuron="relu"`` is
   turned into its static ANN by ``ann_form()``), trace it with ``torch.fx``, refuse what cannot
   be converted (max pooling, unknown operations), fold BatchNorm into the weights;
2. ``calibrate``: activation statistics on calibration images (the scale ``lambda`` per layer or
   per channel; nothing for ``calif``, whose scales come from quantization-aware training);
3. ``replace``: ANN activations -> spiking neurons (IF, MSAT or Ca-LIF);
4. ``finalize``: wrap into a :class:`~spikequant.convert.network.SpikingNetwork` (MSAT: measure the
   spikes of inactivated neurons and set the spike confidence).

Each method is a small class registered by name with a frozen options dataclass; the CLI builds
its flags from the dataclass fields (``metadata["help"]``, ``metadata["flag"]``,
``metadata["choices"]``). ``convert(model, "msat", images, confidence=False)`` is the one-call
form; ``create_method("msat", confidence=False)`` gives the method object with its stages.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import ClassVar

import torch
import torch.fx as fx
from torch import nn

from ..errors import ConfigError
from ..options import Options, option
from ..quant.qat import QuantReLU
from ..registry import Registry
from .graph import ADD_FUNCTIONS, activation_nodes, calibrate, prepare, validate
from .msat import ARCHITECTURE_PRESETS, PRESETS
from .network import (
    SpikingNetwork,
    _batches,
    replace_calif,
    replace_msat,
    replace_rate,
    sin_statistics,
)

CONVERSION_METHODS = Registry("conversion method")


@dataclasses.dataclass(frozen=True)
class CalibratedOptions(Options):
    """Options of the methods whose thresholds come from calibration data (rate, msat)."""

    calibration_method: str = option(
        "max",
        help="threshold calibration: the maximum ANN activation or a percentile of the positive "
        "ones",
        flag="--calibration",
        choices=("max", "percentile"),
    )
    percentile: float = option(
        99.9, above=0, high=100, help="percentile for --calibration percentile"
    )
    per_channel: bool = option(False, help="one threshold per channel instead of per layer")
    initial_membrane: float = option(
        0.0, low=0, below=1, help="membrane at t = 0 as a fraction of the threshold (0: classic)"
    )
    batch_size: int = option(256, low=1, help="calibration batch size")


@dataclasses.dataclass(frozen=True)
class RateOptions(CalibratedOptions):
    """Options of ``rate`` conversion (IF neurons, soft reset, threshold balancing)."""


@dataclasses.dataclass(frozen=True)
class MSATOptions(CalibratedOptions):
    """Options of ``msat`` conversion (multi-stage adaptive threshold, spike confidence)."""

    preset: str | None = option(
        None,
        help="MSAT hyperparameters (Table 2 row); default: by architecture, resnet20 for residual "
        "nets, else vgg16",
        choices=(None, *PRESETS),
    )
    architecture: str | None = option(None, help="model name used to choose the preset")
    confidence: bool = option(True, help="spike confidence on the last spiking layer")
    confidence_steps: int = option(
        16, low=0, help="steps E during which spikes pass the confidence filter"
    )
    reset_filtered: bool = option(True, help="reset with the filtered spike (paper) or the raw one")
    det_delta: str = option(
        "input",
        help="DET on the input current or the membrane change",
        choices=("input", "membrane"),
    )
    adaptation: str = option(
        "both",
        help="threshold dynamics: DTT and DET (paper), one of them, or a fixed scaled threshold "
        "(ablation)",
        choices=("both", "dtt", "det", "fixed"),
    )
    fixed_fraction: float = option(1.0, help="threshold f * V_th for --adaptation fixed")
    units: str = option(
        "normalised",
        help="threshold dynamics in normalised or real units",
        choices=("normalised", "real"),
    )
    seed: int = option(0, help="seed of the spike-confidence filter")


@dataclasses.dataclass(frozen=True)
class CaLIFOptions(Options):
    """Options of ``calif`` conversion (quantized ANN -> Ca-LIF, exact)."""

    tie: str = option(
        "up",
        help="rounding of a membrane exactly at Vth/2 (the QAT rounds half up)",
        choices=("up", "down"),
    )


def make_options(options_class: type, options=None, **overrides):
    """``options_class`` from an instance, a mapping and/or keyword overrides (unknown keys are a
    :class:`ConfigError` naming the known ones)."""
    if isinstance(options, options_class):
        base = dataclasses.asdict(options)
    elif isinstance(options, Mapping) or options is None:
        base = dict(options or {})
    else:
        raise ConfigError(
            f"options must be a {options_class.__name__} or a mapping, got {options!r}"
        )
    values = {**base, **overrides}
    known = [f.name for f in dataclasses.fields(options_class)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for {options_class.__name__}; "
            f"known: {', '.join(known)}"
        )
    return options_class(**values)


class ConversionMethod:
    """Base of the registered methods: ``convert`` runs prepare -> calibrate -> replace ->
    finalize. Subclasses set ``name`` and ``Options`` and override the stages."""

    name: ClassVar[str] = ""
    Options: ClassVar[type] = CaLIFOptions

    def __init__(self, options=None, **overrides) -> None:
        self.options = make_options(self.Options, options, **overrides)

    def prepare(self, model: nn.Module) -> fx.GraphModule:
        return prepare(ann_form(model))

    def calibrate(self, graph: fx.GraphModule, data: torch.Tensor | None) -> dict:
        return {}

    def replace(self, graph: fx.GraphModule, statistics: dict) -> fx.GraphModule:
        raise NotImplementedError

    def finalize(
        self, graph: fx.GraphModule, ann: fx.GraphModule, statistics: dict, data
    ) -> SpikingNetwork:
        graph.recompile()
        return SpikingNetwork(graph, self.name, {"method": self.name, **statistics})

    def convert(
        self,
        model: nn.Module,
        calibration: torch.Tensor | None = None,
        *,
        timesteps: int | None = None,
    ) -> SpikingNetwork:
        ann = self.prepare(model)
        statistics = self.calibrate(ann, calibration)
        return self._build(ann, statistics, calibration, timesteps)

    def rebuild(
        self, model: nn.Module, statistics: dict, *, timesteps: int | None = None
    ) -> SpikingNetwork:
        """The converted network of ``model`` from saved calibration ``statistics`` (what
        :meth:`calibrate` returned), without calibration data: prepare, replace, finalize.
        Whatever finalize measures on data (MSAT's spike confidence) is left to the caller."""
        return self._build(self.prepare(model), statistics, None, timesteps)

    def _build(self, ann, statistics, calibration, timesteps) -> SpikingNetwork:
        graph = self.replace(copy.deepcopy(ann), statistics)
        # the new neurons are made on the CPU: put them where the ANN lives
        device = next((p.device for p in ann.parameters()), None)
        if device is not None:
            graph.to(device)
        snn = self.finalize(graph, ann, statistics, calibration)
        snn.options = self.options
        snn.statistics = statistics
        snn.timesteps = timesteps
        return snn


def register_method(cls: type[ConversionMethod]) -> type[ConversionMethod]:
    """Class decorator: register a :class:`ConversionMethod` under ``cls.name``."""
    if not cls.name or not dataclasses.is_dataclass(cls.Options):
        raise ConfigError("a conversion method needs a name and an Options dataclass")
    return CONVERSION_METHODS.register(cls.name)(cls)


def ann_form(model: nn.Module) -> nn.Module:
    """The static ANN ``[B, ...] -> [B, classes]`` of ``model``: zoo models (``SpikingModel`` with
    ``neuron="relu"``) through their ``ann_form()``, anything else unchanged."""
    form = getattr(model, "ann_form", None)
    return form() if callable(form) else model


def has_residual_add(graph: fx.GraphModule) -> bool:
    return any(
        (n.op == "call_function" and n.target in ADD_FUNCTIONS)
        or (n.op == "call_method" and n.target == "add")
        for n in graph.graph.nodes
    )


class _Calibrated(ConversionMethod):
    def calibrate(self, graph: fx.GraphModule, data: torch.Tensor | None) -> dict:
        o = self.options
        batches = list(_batches(data, o.batch_size)) if data is not None else []
        needs_data = any(
            not isinstance(graph.get_submodule(n.target), (QuantReLU, nn.ReLU6, nn.Hardtanh))
            for n in activation_nodes(graph)
        )
        if needs_data and not batches:
            raise ConfigError(f"{self.name} conversion needs calibration data for its ReLU layers")
        scales = calibrate(
            graph,
            batches,
            method=o.calibration_method,
            percentile=o.percentile,
            per_channel=o.per_channel,
        )
        return {"scales": scales}

    def info(self, statistics: dict) -> dict:
        o = self.options
        return {
            "method": self.name,
            "calibration": o.calibration_method,
            "per_channel": o.per_channel,
            "initial_membrane": float(o.initial_membrane),
            "scales": {k: v.tolist() for k, v in statistics["scales"].items()},
        }


@register_method
class RateConversion(_Calibrated):
    """rate: IF neurons with soft reset, threshold = calibrated scale (threshold balancing)."""

    name = "rate"
    Options = RateOptions

    def replace(self, graph, statistics):
        return replace_rate(
            graph, statistics["scales"], initial_membrane=self.options.initial_membrane
        )

    def finalize(self, graph, ann, statistics, data):
        graph.recompile()
        return SpikingNetwork(graph, self.name, self.info(statistics))


@register_method
class MSATConversion(_Calibrated):
    """msat: multi-stage adaptive threshold neurons with spike confidence (Wang et al.)."""

    name = "msat"
    Options = MSATOptions

    def preset(self, graph: fx.GraphModule) -> str:
        o = self.options
        if o.preset:
            return o.preset
        if o.architecture in ARCHITECTURE_PRESETS:
            return ARCHITECTURE_PRESETS[o.architecture]
        return "resnet20" if has_residual_add(graph) else "vgg16"

    def calibrate(self, graph, data):
        return {**super().calibrate(graph, data), "preset": self.preset(graph)}

    def replace(self, graph, statistics):
        o = self.options
        return replace_msat(
            graph,
            statistics["scales"],
            preset=statistics["preset"],
            generator=torch.Generator().manual_seed(o.seed),
            det_delta=o.det_delta,
            adaptation=o.adaptation,
            fixed_fraction=o.fixed_fraction,
            confidence_steps=o.confidence_steps,
            reset_filtered=o.reset_filtered,
            initial_membrane=o.initial_membrane,
            units=o.units,
        )

    def finalize(self, graph, ann, statistics, data):
        o = self.options
        graph.recompile()
        info = {**self.info(statistics), "preset": statistics["preset"], "units": o.units}
        snn = SpikingNetwork(graph, self.name, info)
        snn.seed = o.seed
        if data is not None and len(data):
            sin = sin_statistics(snn, ann, data, steps=o.confidence_steps, batch_size=o.batch_size)
            snn.info["sin"] = sin
            if o.confidence and sin:
                last = list(sin)[-1]
                snn.stages()[last].neuron.confidence = sin[last]["confidence"]
                snn.info["confidence_layer"] = last
        return snn


@register_method
class CaLIFConversion(ConversionMethod):
    """calif: quantized ANN (QAT) -> calcium-gated bipolar LIF neurons, exact at T = 2^bits."""

    name = "calif"
    Options = CaLIFOptions

    def prepare(self, model):
        # no BN folding or dequantization: the QAT network is taken exactly as trained
        return validate(ann_form(model))

    def replace(self, graph, statistics):
        return replace_calif(graph, tie=self.options.tie)


def list_methods() -> list[str]:
    """Names of the registered conversion methods, sorted."""
    return CONVERSION_METHODS.names()


def method_class(name: str) -> type[ConversionMethod]:
    """The registered conversion method class ``name`` (ConfigError naming the known ones)."""
    if name not in CONVERSION_METHODS:
        raise ConfigError(f"unknown conversion method {name!r}; known: {', '.join(list_methods())}")
    return CONVERSION_METHODS.get(name)


def create_method(name: str, options=None, **overrides) -> ConversionMethod:
    """The registered method ``name`` with its options (an Options instance, a mapping and/or
    keyword overrides)."""
    return method_class(name)(options, **overrides)


def convert(
    model: nn.Module,
    method: str = "rate",
    calibration: torch.Tensor | None = None,
    *,
    options=None,
    timesteps: int | None = None,
    **overrides,
) -> SpikingNetwork:
    """Convert an ANN (``[B, ...] -> [B, classes]``, or a zoo model built with ``neuron="relu"``)
    into a :class:`SpikingNetwork` with the registered ``method``.

    ``calibration`` (training images) is required by ``rate`` and ``msat`` unless every activation
    is clipped/quantized; ``calif`` needs none (its scales come from QAT). Options are the fields
    of the method's ``Options`` dataclass (:class:`RateOptions`, :class:`MSATOptions`,
    :class:`CaLIFOptions`). ``timesteps`` sets the T that the network's ``forward`` runs.
    """
    return create_method(method, options, **overrides).convert(
        model, calibration, timesteps=timesteps
    )
