"""Check an export: run the original network and its NIR round trip side by side on real data.

:func:`compare_networks` feeds the same inputs to both and reports the rate-decoded accuracy of
each, how often their predictions agree, the largest logit difference and, layer by layer, the
fraction of (neuron, timestep, sample) spike entries on which they agree. Spikes are compared as
binary events (ATIF-u emits ``V_th z``; its NIR form emits ``z`` and carries ``V_th`` in the next
layer's weights).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._optional import require
from ..errors import ConversionError
from ..neurons import SpikingNeuron, reset_state
from .reference import simulate

nir = require("nir", "NIR export")


def _record_spikes(model: nn.Module) -> tuple[list[list[torch.Tensor]], list]:
    neurons = [m for m in model.modules() if isinstance(m, SpikingNeuron)]
    store: list[list[torch.Tensor]] = [[] for _ in neurons]
    handles = [
        n.register_forward_hook(lambda _m, _i, out, k=k: store[k].append((out != 0).detach()))
        for k, n in enumerate(neurons)
    ]
    return store, handles


@torch.no_grad()
def compare_networks(
    original: nn.Module,
    imported: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    timesteps: int,
    batch_size: int = 250,
    graph: nir.NIRGraph | None = None,
) -> dict[str, Any]:
    """Run ``original`` on static ``inputs [N, ...]`` and ``imported`` on them repeated over
    ``timesteps`` (``[T, N, ...]``, the direct coding the registered models use); compare.

    With ``graph``, also run it through :func:`~spikequant.export.reference.simulate` (NIR's own
    semantics, metadata ignored) and report that simulation's accuracy and agreement under
    ``"nir_semantics"``: what another NIR tool would compute from the file.
    """
    was_training = original.training
    original.eval()
    imported.eval()
    spikes_a, handles_a = _record_spikes(original)
    spikes_b, handles_b = _record_spikes(imported)
    if len(spikes_a) != len(spikes_b):
        for h in handles_a + handles_b:
            h.remove()
        raise ConversionError(
            f"the original has {len(spikes_a)} spiking layers but the import has {len(spikes_b)}"
        )
    logits_a, logits_b, logits_ref = [], [], []
    try:
        for start in range(0, len(inputs), batch_size):
            x = inputs[start : start + batch_size]
            reset_state(original)
            reset_state(imported)
            logits_a.append(original(x).mean(0))
            x_seq = x.unsqueeze(0).expand(timesteps, *x.shape)
            logits_b.append(imported(x_seq).mean(0))
            if graph is not None:
                logits_ref.append(simulate(graph, x_seq).mean(0))
    finally:
        for h in handles_a + handles_b:
            h.remove()
        reset_state(original)
        reset_state(imported)
        original.train(was_training)
    a, b = torch.cat(logits_a), torch.cat(logits_b)
    layers = []
    for sa, sb in zip(spikes_a, spikes_b, strict=True):
        za = torch.cat([s.flatten(1) for s in sa], 1)
        zb = torch.cat([s.flatten(1) for s in sb], 1)
        layers.append(
            {
                "entries": za.numel(),
                "spikes_original": int(za.sum()),
                "spikes_imported": int(zb.sum()),
                "agreement": float((za == zb).double().mean()),
                "differing": int((za != zb).sum()),
                "identical": bool(torch.equal(za, zb)),
            }
        )
    entries = sum(layer["entries"] for layer in layers)
    agreeing = sum(layer["agreement"] * layer["entries"] for layer in layers)
    result: dict[str, Any] = {
        "samples": len(inputs),
        "timesteps": timesteps,
        "prediction_agreement": float((a.argmax(1) == b.argmax(1)).float().mean()),
        "max_abs_logit_difference": float((a - b).abs().max()),
        "spike_agreement": agreeing / max(entries, 1),
        "spikes_identical": all(layer["identical"] for layer in layers),
        "spike_entries": entries,
        "spike_entries_differing": sum(layer["differing"] for layer in layers),
        "layers": layers,
    }
    if labels is not None:
        result["accuracy_original"] = float((a.argmax(1) == labels).float().mean())
        result["accuracy_imported"] = float((b.argmax(1) == labels).float().mean())
    if graph is not None:
        r = torch.cat(logits_ref)
        result["nir_semantics"] = {
            "prediction_agreement": float((a.argmax(1) == r.argmax(1)).float().mean()),
            "max_abs_logit_difference": float((a - r).abs().max()),
        }
        if labels is not None:
            result["nir_semantics"]["accuracy"] = float((r.argmax(1) == labels).float().mean())
    return result
