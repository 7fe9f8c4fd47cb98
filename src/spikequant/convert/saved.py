"""Converted networks as run folders: :func:`save_converted` writes one, :func:`load_converted`
rebuilds it (``spikequant.pipeline.load_run_model`` calls it for a run whose method is
``conversion``), so ``spikequant eval``/``export``/``deploy`` take it like any other run.

The run folder is written by :mod:`spikequant.runfolder` (one epoch folder, SHA-256 of every file,
``latest.json``, atomic writes, the writer lock). Its ``model.safetensors`` holds

* ``ann.<name>``: the state dict of the source ANN (as its training method rebuilds it);
* ``scales.<layer>``: the calibrated scale ``lambda`` of each activation (``rate``, ``msat``);
* ``network.<name>``: the tensors of the spiking stages (thresholds, MSAT scales; not ``calif``,
  whose thresholds and leaks are derived from the QAT weights at every call);

and ``meta.json`` says ``method: conversion``, the conversion method, its options, ``timesteps``,
the MSAT preset and spike confidence, and the source run's model, dataset and recipe. Loading
rebuilds the ANN, runs the method's prepare, replace and finalize stages without calibration
data, and puts the saved tensors back: the loaded network gives the saved one's logits bit for
bit.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from .methods import create_method
from .network import SpikingNetwork

CONVERSION_METHOD = "conversion"  # the ``method`` of a converted run's metadata
_SOURCE_KEYS = ("method", "kind", "model", "recipe", "dataset", "method_options", "epoch", "name")


def is_converted(meta: dict) -> bool:
    """Whether checkpoint metadata ``meta`` belongs to a converted network."""
    from ..pipeline import run_method_name

    return isinstance(meta, dict) and run_method_name(meta) == CONVERSION_METHOD


# Why the other back ends refuse a converted network, per conversion method (one line each).
NIR_REFUSALS = {
    "msat": "MSAT's multi-stage adaptive-threshold neurons (and spike confidence) have no NIR "
    "primitive",
    "calif": "Ca-LIF's calcium-gated bipolar neurons, ISI input coding and rounding phase have no "
    "NIR primitive",
}
RUNTIME_REFUSALS = {
    "rate": "the integer runtime needs integer weight levels and thresholds; a rate conversion "
    "keeps float weights and calibrated float thresholds",
    "msat": "MSAT's adaptive thresholds (exp/sigmoid of the membrane every step) have no integer "
    "form in the runtime",
}  # calif runs are lowered (spikequant.runtime.lower_calif)


def refusal(meta: dict, table: dict[str, str], command: str) -> str:
    """The one line with which ``command`` refuses the converted run of metadata ``meta``."""
    method = (meta.get("conversion") or {}).get("method")
    reason = table.get(method, f"it has no form for a {method!r} conversion")
    return f"{command} cannot take this converted network: {reason}"


def _json_safe(value: Any) -> Any:
    """``value`` with whatever JSON cannot hold (tensors, NaN) dropped."""
    if isinstance(value, dict):
        pairs = ((str(k), _json_safe(v)) for k, v in value.items())
        return {k: v for k, v in pairs if v is not _DROP}
    if isinstance(value, (list, tuple)):
        return [v for v in (_json_safe(v) for v in value) if v is not _DROP]
    if isinstance(value, float) and not math.isfinite(value):
        return _DROP
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return _DROP


_DROP = object()


def converted_state(net: SpikingNetwork, source_model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors of a converted run (module docstring)."""
    state = {f"ann.{k}": v for k, v in source_model.state_dict().items()}
    for layer, scale in (net.statistics or {}).get("scales", {}).items():
        state[f"scales.{layer}"] = torch.as_tensor(scale)
    if net.method != "calif":
        for name, stage in net.stages().items():
            for key, value in stage.state_dict().items():
                state[f"network.{name}.{key}"] = value
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def converted_meta(net: SpikingNetwork, source_meta: dict) -> dict:
    """The metadata of a converted run: the conversion and the source run it came from."""
    if net.options is None:
        raise ConfigError(
            "only a network made by spikequant.convert.convert (or a registered method) can be "
            "saved: it records the method's options"
        )
    if not isinstance(net.timesteps, int) or net.timesteps < 1:
        raise ConfigError(f"set the network's timesteps before saving it, got {net.timesteps!r}")
    if is_converted(source_meta):
        raise ConfigError("the source run is already a spiking network (a converted run)")
    confidence = {
        name: float(stage.neuron.confidence)
        for name, stage in net.stages().items()
        if getattr(getattr(stage, "neuron", None), "confidence", None) is not None
    }
    conversion = {
        "method": net.method,
        "options": _json_safe(dataclasses.asdict(net.options)),
        "timesteps": int(net.timesteps),
        "preset": (net.statistics or {}).get("preset"),
        "confidence": confidence,
        "seed": net.seed,
        "max_input_spikes": net.max_input_spikes,
        "info": _json_safe({k: v for k, v in net.info.items() if k != "scales"}),
    }
    source = {k: source_meta[k] for k in _SOURCE_KEYS if k in source_meta}
    return {
        "method": CONVERSION_METHOD,
        "model": source_meta.get("model"),
        "dataset": source_meta.get("dataset"),
        "recipe": source_meta.get("recipe"),
        "conversion": conversion,
        "source": json.loads(json.dumps(source)),
    }


def save_converted(
    net: SpikingNetwork,
    folder: str | Path,
    *,
    source_model: nn.Module,
    source_meta: dict,
    epoch: int | None = None,
) -> Path:
    """Write ``net`` (converted from ``source_model``, the model of a run with checkpoint
    metadata ``source_meta``, as :func:`spikequant.pipeline.load_run_model` returns them) as a
    run folder ``folder``; returns the epoch folder. A folder that already holds a run is
    refused (:class:`~spikequant.errors.RunFolderError`)."""
    from .. import runfolder

    meta = converted_meta(net, source_meta)
    state = converted_state(net, source_model)
    folder = Path(folder)
    runfolder.check_writable(folder)
    with runfolder.RunLock(folder):
        runfolder.prepare(folder, resume=False, overwrite=False)
        runfolder.write_run_file(
            folder,
            {
                "method": CONVERSION_METHOD,
                "conversion": meta["conversion"],
                "source": meta["source"],
            },
        )
        if epoch is None:
            epoch = source_meta.get("epoch") if isinstance(source_meta.get("epoch"), int) else 0
        return runfolder.save_epoch(
            folder, epoch=max(int(epoch), 0), model_state=state, meta=meta, trainer_state={}
        )


def _part(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def load_converted(state: dict[str, torch.Tensor], meta: dict) -> SpikingNetwork:
    """The converted network of a run with tensors ``state`` and metadata ``meta`` (module
    docstring); a part that does not fit is a :class:`~spikequant.errors.CheckpointError`."""
    from ..methods import get_method
    from ..pipeline import run_method_name

    conversion, source = meta.get("conversion"), meta.get("source")
    if not isinstance(conversion, dict) or not isinstance(source, dict):
        raise CheckpointError("a converted run's meta.json needs 'conversion' and 'source'")
    try:
        ann = get_method(run_method_name(source)).rebuild(source)
        ann.load_state_dict(_part(state, "ann."))
        ann.eval()
        method = create_method(conversion["method"], conversion.get("options") or {})
        statistics: dict[str, Any] = {}
        scales = _part(state, "scales.")
        if scales:
            statistics["scales"] = scales
        elif conversion["method"] != "calif":
            raise CheckpointError("the converted run holds no calibrated scales")
        if conversion.get("preset") is not None:
            statistics["preset"] = conversion["preset"]
        net = method.rebuild(ann, statistics, timesteps=int(conversion["timesteps"]))
    except (KeyError, TypeError, ValueError, RuntimeError, ConfigError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"the converted network cannot be rebuilt: {first}") from None
    stages = net.stages()
    for layer, p in (conversion.get("confidence") or {}).items():
        if layer not in stages:
            raise CheckpointError(f"the converted run names an unknown layer {layer!r}")
        stages[layer].neuron.confidence = float(p)
    net.seed = conversion.get("seed")
    net.max_input_spikes = conversion.get("max_input_spikes")
    net.info.update(conversion.get("info") or {})
    own = net.state_dict()
    for key, value in _part(state, "network.").items():
        target = own.get(f"graph_module.{key}")
        if target is None or target.shape != value.shape:
            raise CheckpointError(f"the converted run's tensor network.{key} does not fit")
        with torch.no_grad():
            target.copy_(value)
    return net.eval()
