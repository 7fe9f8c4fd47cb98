"""What a study can add to its runs' metrics, by name (``collect:`` and ``analyses:`` keys).

A collector reads one finished run folder and returns JSON values stored with that run (it runs
in the process that trained the run). An analysis runs once per study on the first seed's run of
a row, after every run has finished, and brings its own markdown section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def trained_thresholds(run_dir: Path) -> dict[str, Any]:
    """Per neuron layer: ``V_th`` (IF / ATIF-u) or the levels ``p_1 > ... > p_T`` (ATIF-nu),
    averaged over the layer's neurons; an ANN has none."""
    from ..checkpoint import load_model
    from ..neurons import IF, ATIFnu
    from ..train.trainer import resolve_checkpoint

    model, _ = load_model(resolve_checkpoint(run_dir))
    out: dict[str, Any] = {}
    for name, module in model.named_modules():
        if isinstance(module, ATIFnu):
            levels = module.levels.detach().reshape(module.timesteps, -1).mean(1)
            out[name] = [round(float(v), 4) for v in levels]
        elif isinstance(module, IF):
            out[name] = round(float(module.threshold.detach().mean()), 4)
    return out


COLLECTORS = {"trained_thresholds": trained_thresholds}

CLIPS = (-5.0, -4.0, -3.0, -2.0, -1.0)


def _test_set(cfg: dict):
    from torch.utils.data import Subset, TensorDataset

    from ..data import get_dataset

    data = cfg["data"]
    test = get_dataset(data["name"], "test", root=data.get("root"))
    n = data.get("test_subset")
    if not n or n >= len(test):
        return test
    if isinstance(test, TensorDataset):
        return TensorDataset(*(t[:n] for t in test.tensors))
    return Subset(test, range(n))


@torch.no_grad()
def spquant_clipping(run_dir: Path, cfg: dict) -> dict:
    """r_s per layer for c in -5..-1 on 256 test samples, and the run's accuracy when its stored
    membrane is clipped at c (inference only, no fine-tuning)."""
    from ..spquant.analysis import clipping_sweep, set_membrane_clip
    from ..spquant.build import load_spquant_model
    from ..train.trainer import evaluate

    test = _test_set(cfg)
    model, _ = load_spquant_model(run_dir)
    x = torch.stack([test[i][0] for i in range(min(256, len(test)))])
    sweep = clipping_sweep(model, x, CLIPS)
    accuracy = {}
    for c in (None, *CLIPS):
        set_membrane_clip(model, c)
        accuracy["none" if c is None else str(c)] = evaluate(model, test)["accuracy"]
    set_membrane_clip(model, None)
    return {"r_s": sweep, "accuracy_with_clip": accuracy}


def clipping_markdown(result: dict, where: str) -> list[str]:
    from .report import table_head, table_row

    layers = result["r_s"]
    lines = [
        f"## Clipping analysis on {where} (inference only)",
        "",
        "Cells: r_s (fraction of the neurons below c after step 1 that fire later, mean over",
        "t = 2..T) and, in brackets, that silent fraction of the layer (r_s is 0 when no neuron",
        "is below c).",
        "",
        *table_head(["c", "accuracy %", *(f"r_s {name}" for name in layers)]),
    ]
    for c in CLIPS:
        cells = []
        for layer in layers.values():
            entry = layer["clips"].get(c, layer["clips"].get(str(c)))  # str keys after JSON
            cells.append(f"{entry['r_s']:.4f} ({entry['silent_fraction']:.4f})")
        acc = 100 * result["accuracy_with_clip"][str(c)]
        lines.append(table_row([f"{c:g}", f"{acc:.2f}", *cells]))
    acc = 100 * result["accuracy_with_clip"]["none"]
    lines.append(f"| none | {acc:.2f} |" + " |" * len(layers))
    return lines


# kind -> (compute(run_dir, cfg) -> JSON dict, markdown(result, where) -> lines)
ANALYSES = {"spquant-clipping": (spquant_clipping, clipping_markdown)}
