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


@torch.no_grad()
def spquant_clipping(run_dir: Path, cfg: dict, clips: list[float] | None = None) -> dict:
    """r_s per layer for each c of ``clips`` (default -5..-1) on 256 test samples, and the run's
    accuracy when its stored membrane is clipped at c (inference only, no fine-tuning)."""
    from ..methods.base import recipe_split
    from ..spquant.analysis import clipping_sweep, set_membrane_clip
    from ..spquant.build import load_spquant_model
    from ..train.trainer import evaluate

    clips = tuple(CLIPS if clips is None else clips)
    test = recipe_split(cfg["data"], "test")
    model, _ = load_spquant_model(run_dir)
    x = torch.stack([test[i][0] for i in range(min(256, len(test)))])
    sweep = clipping_sweep(model, x, clips)
    accuracy = {}
    for c in (None, *clips):
        set_membrane_clip(model, c)
        accuracy["none" if c is None else str(c)] = evaluate(model, test)["accuracy"]
    set_membrane_clip(model, None)
    return {"r_s": sweep, "accuracy_with_clip": accuracy}


def _clips_of(result: dict) -> list[float]:
    """The boundaries c of a result, in the order swept (JSON keeps them as strings)."""
    return [float(c) for c in result["accuracy_with_clip"] if c != "none"]


def clipping_markdown(result: dict, where: str) -> list[str]:
    from .report import table_head, table_row

    layers, clips = result["r_s"], _clips_of(result)
    unclipped = 100 * result["accuracy_with_clip"]["none"]
    lines = [
        f"## Clipping analysis on {where} (inference only)",
        "",
        "Accuracy with the stored membrane clipped from below at c; r_s: the fraction of the",
        "neurons below c after step 1 that fire later (mean over t = 2..T; 0 when no neuron is",
        "below c), its largest value over the layers, and the range over the layers of that",
        "silent fraction of the neurons.",
        "",
        *table_head(["c", "accuracy %", "change (points)", "max r_s", "silent fraction"]),
    ]
    for c in clips:
        entries = [_clip_entry(layer, c) for layer in layers.values()]
        acc = 100 * result["accuracy_with_clip"][str(c)]
        silent = [e["silent_fraction"] for e in entries]
        lines.append(table_row([
            f"{c:g}", f"{acc:.2f}", f"{acc - unclipped:+.2f}",
            f"{max(e['r_s'] for e in entries):.4f}", f"{min(silent):.4f} .. {max(silent):.4f}",
        ]))  # fmt: skip
    lines.append(f"| none | {unclipped:.2f} | | | |")
    lines += [
        "",
        "Per layer: the lowest stored membrane u_min, and r_s (silent fraction) at each c.",
        "",
        *table_head(["layer", "u_min", *(f"c = {c:g}" for c in clips)]),
    ]
    for name, layer in layers.items():
        cells = []
        for c in clips:
            entry = _clip_entry(layer, c)
            cells.append(f"{entry['r_s']:.4f} ({entry['silent_fraction']:.4f})")
        lines.append(table_row([name, f"{layer['u_min']:.2f}", *cells]))
    return lines


def _clip_entry(layer: dict, c: float) -> dict:
    return layer["clips"].get(c, layer["clips"].get(str(c)))  # str keys after JSON


def clipping_series(result: dict) -> dict:
    """Accuracy (%) against c, and the unclipped accuracy as the reference."""
    clips = _clips_of(result)
    return {
        "x_label": "clipping boundary c of the stored membrane",
        "y_label": "test accuracy %",
        "x": clips,
        "y": [100 * result["accuracy_with_clip"][str(c)] for c in clips],
        "reference": {"label": "unclipped", "y": 100 * result["accuracy_with_clip"]["none"]},
    }


# kind -> (compute(run_dir, cfg, **options) -> JSON dict, markdown(result, where) -> lines,
#          series(result) -> {x_label, y_label, x, y, reference} for a plot)
ANALYSES = {"spquant-clipping": (spquant_clipping, clipping_markdown, clipping_series)}
