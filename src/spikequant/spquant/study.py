"""The laptop-scale SpQuant study: FP SNN vs Quant-SNN vs SpQuant-SNN on the bundled MNIST digits.

Trains the three recipes ``spquant-mnist-fp``, ``spquant-mnist-quant`` and
``spquant-mnist-spquant`` (the last fine-tuned from the Quant-SNN run, the paper's order), runs the
inference-only clipping analysis on the FP SNN and the binary-membrane ablation on the quantized
ones, and writes ``spquant_study.json`` and ``spquant_study.md`` to the results folder.

Checks (issue 6): Quant-SNN within 2 points of the FP SNN; SpQuant-SNN within 3 points and with
>= 3x fewer measured SynOps (effective: spike-driven accumulates onto non-masked outputs).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from ..config import load_recipe
from ..data import get_dataset
from ..io import write_json, write_text
from ..train.trainer import evaluate
from .analysis import clipping_sweep, set_membrane_clip
from .runner import load_spquant_model, run_recipe

RECIPES = {
    "fp": "spquant-mnist-fp",
    "quant": "spquant-mnist-quant",
    "spquant": "spquant-mnist-spquant",
}
LABELS = {
    "fp": "FP SNN (32-bit W, FP32 U)",
    "quant": "Quant-SNN (2-bit W, ternary U)",
    "spquant": "SpQuant-SNN (+ 35 % spatial, channel gates)",
}
CLIPS = (-5.0, -4.0, -3.0, -2.0, -1.0)


def run_study(
    *,
    out_dir: Path,
    work_dir: Path,
    epochs: int | None = None,
    finetune_epochs: int | None = None,
    train_subset: int | None = None,
    test_subset: int | None = None,
    progress: bool = True,
    log=print,
) -> dict:
    overrides_common = []
    if train_subset:
        overrides_common.append(f"data.train_subset={train_subset}")
    if test_subset:
        overrides_common.append(f"data.test_subset={test_subset}")
    runs = {}
    for key in ("fp", "quant", "spquant"):
        overrides = list(overrides_common)
        if key != "spquant" and epochs:
            overrides.append(f"train.epochs={epochs}")
        if key == "spquant":
            if finetune_epochs:
                overrides.append(f"train.epochs={finetune_epochs}")
            overrides.append(f"spquant.init_from={work_dir / 'quant'}")
        cfg = load_recipe(RECIPES[key], overrides)
        log(f"[spquant-study] training {LABELS[key]} ({RECIPES[key]})")
        # resume=True: a finished run is only re-evaluated, an interrupted one continues
        runs[key] = run_recipe(cfg, out_dir=work_dir / key, progress=progress, resume=True)
        log(f"[spquant-study] {key}: test accuracy {100 * runs[key]['test_accuracy']:.2f} %")

    test = get_dataset("mnist5k", "test")
    if test_subset and isinstance(test, TensorDataset):
        test = TensorDataset(*(t[:test_subset] for t in test.tensors))
    clipping = clipping_study(work_dir / "fp", test)

    fp, quant, spq = runs["fp"], runs["quant"], runs["spquant"]
    # accuracies are counts / N: round so that 0.968 - 0.948 is 2.0 points, not 2.0000000000000142
    fp_acc = 100 * fp["test_accuracy"]
    quant_drop = round(fp_acc - 100 * quant["test_accuracy"], 9)
    spq_drop = round(fp_acc - 100 * spq["test_accuracy"], 9)
    synops_ratio = fp["effective_synops"] / max(spq["effective_synops"], 1e-12)
    checks = {
        "quant_within_2_points": {"drop_points": quant_drop, "pass": quant_drop <= 2.0},
        "spquant_within_3_points": {"drop_points": spq_drop, "pass": spq_drop <= 3.0},
        "spquant_synops_3x_fewer": {"ratio": synops_ratio, "pass": synops_ratio >= 3.0},
    }
    rows = {key: _row(run) for key, run in runs.items()}
    report = {
        "dataset": "mnist5k",
        "rows": rows,
        "checks": checks,
        "clipping": clipping,
        "recipes": RECIPES,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "spquant_study.json", report)
    write_text(out_dir / "spquant_study.md", _markdown(report))
    return report


def _row(run: dict) -> dict:
    return {
        "test_accuracy": run["test_accuracy"],
        "binary_membrane_accuracy": run.get("binary_membrane_accuracy"),
        "memory_mb": run["memory_mb"],
        "effective_synops": run["effective_synops"],
        "spike_synops": run["spike_synops"],
        "first_layer_macs": run["first_layer_macs"],
        "spatial_sparsity": run["spatial_sparsity"],
        "channel_sparsity": run["channel_sparsity"],
        "theta": run["theta"],
        "layer_sparsity": run["layer_sparsity"],
        "dense_flops_per_step": run["dense_flops_per_step"],
        "sparse_flops_per_step": run["sparse_flops_per_step"],
        "epochs": run["epochs"],
        "train_seconds": run["train_seconds"],
        "weight_bits": run["spquant"]["weight_bits"],
        "membrane": run["model"]["kwargs"]["neuron_kwargs"].get("membrane", "ternary"),
    }


@torch.no_grad()
def clipping_study(fp_run: Path, test) -> dict:
    """r_s per layer for c in -5..-1 on 256 test digits, and the FP SNN's accuracy when its
    stored membrane is clipped at c (inference only, no fine-tuning)."""
    model, _ = load_spquant_model(fp_run)
    x = (
        test.tensors[0][:256]
        if isinstance(test, TensorDataset)
        else torch.stack([test[i][0] for i in range(min(256, len(test)))])
    )
    sweep = clipping_sweep(model, x, CLIPS)
    accuracy = {}
    for c in (None, *CLIPS):
        set_membrane_clip(model, c)
        accuracy["none" if c is None else str(c)] = evaluate(model, test)["accuracy"]
    set_membrane_clip(model, None)
    return {"r_s": sweep, "accuracy_with_clip": accuracy}


def _markdown(report: dict) -> str:
    rows = report["rows"]
    lines = [
        "# SpQuant-SNN laptop study (mnist5k, cnn_digits, T = 4)",
        "",
        "Written by `spikequant spquant-study`. SynOps: spike-driven accumulates per sample onto",
        "outputs that are not masked (first layer excluded: its analog input makes MACs).",
        "",
        "| model | accuracy % | binary-membrane acc % | memory MB (W / U / total) | SynOps | "
        "S_p | S_c | dense / sparse MACs per step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, r in rows.items():
        mb = r["memory_mb"]
        binary = (
            "-"
            if r["binary_membrane_accuracy"] is None
            else f"{100 * r['binary_membrane_accuracy']:.2f}"
        )
        lines.append(
            f"| {LABELS[key]} | {100 * r['test_accuracy']:.2f} | {binary} | "
            f"{mb['weights']:.4f} / {mb['membrane']:.4f} / {mb['total']:.4f} | "
            f"{r['effective_synops']:,.0f} | {r['spatial_sparsity']:.3f} | "
            f"{r['channel_sparsity']:.3f} | "
            f"{r['dense_flops_per_step']:,.0f} / {r['sparse_flops_per_step']:,.0f} |"
        )
    lines += [
        "",
        "S_p and S_c above are weighted by neurons over all spiking conv layers; per layer "
        "(SpQuant-SNN):",
        "",
    ]
    for name, layer in rows["spquant"]["layer_sparsity"].items():
        lines.append(f"- `{name}`: S_p {layer['spatial']:.3f}, S_c {layer['channel']:.3f}")
    lines += ["", "## Checks", ""]
    for name, c in report["checks"].items():
        value = c.get("drop_points", c.get("ratio"))
        lines.append(f"- {name}: {value:.3f} -> {'PASS' if c['pass'] else 'FAIL'}")
    clip = report["clipping"]
    lines += [
        "",
        "## Clipping analysis on the FP SNN (inference only)",
        "",
        "Cells: r_s (fraction of the neurons below c after step 1 that fire later, mean over",
        "t = 2..T) and, in brackets, that silent fraction of the layer (r_s is 0 when no neuron",
        "is below c).",
        "",
        "| c | accuracy % | " + " | ".join(f"r_s {name}" for name in clip["r_s"]) + " |",
        "|---|---|" + "---|" * len(clip["r_s"]),
    ]
    for c in CLIPS:
        cells = []
        for layer in clip["r_s"].values():
            entry = layer["clips"].get(c, layer["clips"].get(str(c)))  # str keys after JSON
            cells.append(f"{entry['r_s']:.4f} ({entry['silent_fraction']:.4f})")
        rs = " | ".join(cells)
        lines.append(f"| {c:g} | {100 * clip['accuracy_with_clip'][str(c)]:.2f} | {rs} |")
    lines.append(
        f"| none | {100 * clip['accuracy_with_clip']['none']:.2f} |" + " |" * len(clip["r_s"])
    )
    return "\n".join(lines) + "\n"


__all__ = ["run_study", "clipping_study"]
