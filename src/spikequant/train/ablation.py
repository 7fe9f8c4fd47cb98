"""The ATIF ablation at laptop scale: fixed threshold vs ATIF-u vs ATIF-nu vs the ANN, T = 4.

The four bundled recipes ``mnist-fixed``, ``mnist-atif-u``, ``mnist-atif-nu`` and ``mnist-ann``
share everything (data, model, optimiser, schedule, epochs, seed) except the activation, so the
rows differ only in how the neurons quantize. Each is trained for every seed; the table reports
the mean (and spread) of the final test accuracy, theta (mean spikes per neuron per timestep) and
spikes per neuron over the T = 4 window, like the ATIF paper's Table 3.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import torch

from ..config import load_recipe
from ..io import write_json, write_text
from ..pipeline import load_run_model as load_model
from ..pipeline import run as run_recipe
from .recipe import validate_recipe
from .trainer import resolve_checkpoint

ROWS = (
    ("mnist-fixed", "fixed V_th = 1 (IF)"),
    ("mnist-atif-u", "ATIF-u (trainable V_th)"),
    ("mnist-atif-nu", "ATIF-nu (trainable levels)"),
    ("mnist-ann", "ANN (ReLU)"),
)
SPIKING = ("mnist-fixed", "mnist-atif-u", "mnist-atif-nu")


def trained_thresholds(model: torch.nn.Module) -> dict[str, Any]:
    """Per neuron layer: ``V_th`` (IF/ATIF-u) or the levels ``p_1 > ... > p_T`` (ATIF-nu)."""
    from ..neurons import IF, ATIFnu

    out: dict[str, Any] = {}
    for name, module in model.named_modules():
        if isinstance(module, ATIFnu):
            out[name] = [
                round(float(v), 4)
                for v in module.levels.detach().reshape(module.timesteps, -1).mean(1)
            ]
        elif isinstance(module, IF):
            out[name] = round(float(module.threshold.detach().mean()), 4)
    return out


def _same_recipe(out_dir: Path, cfg: dict) -> bool:
    import json

    from ..checkpoint import load_checkpoint
    from ..errors import CheckpointError

    try:
        _, meta = load_checkpoint(resolve_checkpoint(out_dir))
    except CheckpointError:
        return False
    return meta.get("recipe") == json.loads(json.dumps(cfg))


def _finished_result(out_dir: Path, cfg: dict) -> dict | None:
    """The final metrics a completed run of this recipe wrote (``metrics.json``), so that
    collecting finished runs costs no re-evaluation; ``None`` if the run is not complete."""
    import json

    from .trainer import LATEST

    metrics, latest = Path(out_dir) / "metrics.json", Path(out_dir) / LATEST
    try:
        # a metrics file older than the newest checkpoint belongs to an earlier run
        if metrics.stat().st_mtime < latest.stat().st_mtime:
            return None
        if json.loads(latest.read_text()).get("epoch") != cfg["train"]["epochs"]:
            return None
        result = json.loads(metrics.read_text())
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    if not isinstance(result, dict) or result.get("epochs") != cfg["train"]["epochs"]:
        return None
    return result if "test_accuracy" in result and "samples" in result else None


def _train_size(cfg: dict) -> int:
    from ..data import get_dataset

    n = len(get_dataset(cfg["data"]["name"], "train", root=cfg["data"]["root"]))
    subset = cfg["data"].get("train_subset")
    return min(n, subset) if subset else n


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def run_ablation(
    *,
    seeds: list[int] = (0,),
    overrides: list[str] | None = None,
    runs_dir: Path = Path("runs/ablation"),
    progress: bool = True,
    log=print,
    resume: bool = False,
) -> dict[str, Any]:
    """Train the four rows for every seed; return the summary (also see :func:`write_ablation`).

    With ``resume``, a run folder whose checkpoint was made from the identical recipe is
    continued (or, if complete, only evaluated) instead of trained again."""
    rows: dict[str, dict] = {}
    summary_sizes: dict[str, int] = {}
    for recipe, label in ROWS:
        runs = []
        for seed in seeds:
            cfg = validate_recipe(load_recipe(recipe, [*(overrides or []), f"seed={seed}"]))
            out_dir = Path(runs_dir) / f"{recipe}-seed{seed}"
            log(f"training {label}, seed {seed} -> {out_dir}")
            reuse = resume and _same_recipe(out_dir, cfg)
            result = _finished_result(out_dir, cfg) if reuse else None
            if result is None:
                result = run_recipe(cfg, out_dir=out_dir, progress=progress, resume=reuse)
            model, _ = load_model(resolve_checkpoint(out_dir))
            summary_sizes["test"] = result["samples"]
            summary_sizes["train"] = _train_size(cfg)
            runs.append(
                {
                    "seed": seed,
                    "test_accuracy": result["test_accuracy"],
                    "theta": result["theta"],
                    "spikes_per_neuron": result["spikes_per_neuron"],
                    "synops": result["synops"],
                    "train_seconds": result["train_seconds"],
                    "thresholds": trained_thresholds(model),
                }
            )
            log(
                f"  test accuracy {100 * result['test_accuracy']:.2f} %"
                + (f", theta {result['theta']:.4f}" if result["theta"] is not None else "")
            )
        acc_mean, acc_std = _mean_std([r["test_accuracy"] for r in runs])
        spiking = runs[0]["theta"] is not None
        rows[recipe] = {
            "label": label,
            "timesteps": cfg["model"]["timesteps"],
            "accuracy_mean": acc_mean,
            "accuracy_std": acc_std,
            "theta_mean": _mean_std([r["theta"] for r in runs])[0] if spiking else None,
            "spikes_per_neuron_mean": _mean_std([r["spikes_per_neuron"] for r in runs])[0]
            if spiking
            else None,
            "runs": runs,
        }
    checks = compute_checks(rows)
    base = validate_recipe(load_recipe("mnist-fixed", overrides or []))
    setup = {
        "dataset": base["data"]["name"],
        "model": base["model"]["name"],
        "model_kwargs": base["model"].get("kwargs", {}),
        "epochs": base["train"]["epochs"],
        "optim": base["optim"],
        "schedule": base["schedule"],
        "seeds": list(seeds),
        "overrides": list(overrides or []),
        "timesteps": 4,
        "train_samples": summary_sizes["train"],
        "test_samples": summary_sizes["test"],
    }
    return {"setup": setup, "rows": rows, "checks": checks}


def paired_difference(rows: dict[str, dict], name: str, base: str = "mnist-fixed") -> dict:
    """Per-seed accuracy difference ``d_s = acc(name, s) - acc(base, s)`` in points.

    Both rows of one seed start from the same weights and see the same batch order, so the pair
    differs only in the neuron; pairing removes the seed-to-seed spread that both rows share.
    ``resolved`` is the 95 % paired t-test: the interval ``mean +- t_{0.975, n-1} std / sqrt(n)``
    excludes 0 (never with a single seed)."""
    base_by_seed = {r["seed"]: r["test_accuracy"] for r in rows[base]["runs"]}
    return paired_stats(
        [
            100 * (r["test_accuracy"] - base_by_seed[r["seed"]])
            for r in rows[name]["runs"]
            if r["seed"] in base_by_seed
        ]
    )


def paired_stats(diffs: list[float]) -> dict:
    """Mean, std, wins/losses and the 95 % t-interval of paired differences (in points)."""
    n = len(diffs)
    mean = statistics.fmean(diffs) if diffs else 0.0
    std = statistics.stdev(diffs) if n > 1 else 0.0
    half_width = None
    if n > 1:
        from scipy.stats import t as student_t

        half_width = float(student_t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return {
        "points_per_seed": diffs,
        "mean_points": mean,
        "std_points": std,
        "seeds": n,
        "wins": sum(d > 0 for d in diffs),
        "losses": sum(d < 0 for d in diffs),
        "ci95_half_width_points": half_width,
        "resolved": half_width is not None and abs(mean) > half_width,
    }


def compute_checks(rows: dict[str, dict]) -> dict[str, Any]:
    """The issue's checks on the mean accuracies, with each margin set against the seed spread
    (a margin smaller than the two rows' summed standard deviations is not a resolved win) and
    against the paired per-seed differences (:func:`paired_difference`)."""
    acc = {k: r["accuracy_mean"] for k, r in rows.items()}
    std = {k: r["accuracy_std"] for k, r in rows.items()}
    best = max(SPIKING, key=lambda r: acc[r])
    checks: dict[str, Any] = {}
    for name, key in (("mnist-atif-u", "atif_u"), ("mnist-atif-nu", "atif_nu")):
        margin = acc[name] - acc["mnist-fixed"]
        checks[f"{key}_beats_fixed"] = margin > 0
        checks[f"{key}_margin_points"] = 100 * margin
        checks[f"{key}_margin_exceeds_seed_spread"] = margin > std[name] + std["mnist-fixed"]
        paired = paired_difference(rows, name)
        checks[f"{key}_paired"] = paired
        checks[f"{key}_beats_fixed_resolved"] = paired["resolved"] and paired["mean_points"] > 0
    gap = 100 * (acc["mnist-ann"] - acc[best])
    checks.update(
        best_spiking=best,
        best_spiking_gap_to_ann_points=gap,
        best_spiking_within_2_points_of_ann=gap <= 2.0,
    )
    return checks


def ablation_markdown(summary: dict[str, Any]) -> str:
    s = summary["setup"]
    seeds = s["seeds"]
    lines = [
        "# ATIF ablation on the bundled MNIST digits (T = 4)",
        "",
        f"Dataset `{s['dataset']}` ({s['train_samples']} train / {s['test_samples']} test), "
        f"model `{s['model']}` "
        f"{s['model_kwargs']}, {s['epochs']} epochs, optimiser {s['optim']['name']} lr "
        f"{s['optim']['lr']}, {s['schedule']['name']} schedule, seeds {seeds}"
        + (f", overrides {s['overrides']}" if s["overrides"] else "")
        + ".",
        "Written by `spikequant ablation`. Accuracy: mean"
        + (" +- std over seeds" if len(seeds) > 1 else "")
        + f" of the final test accuracy (one test image = {100 / s['test_samples']:.2f} points).",
        "",
        "| neuron | T | test accuracy % | theta (spikes/neuron/step) | spikes/neuron "
        "| thresholds (per layer) |",
        "|---|---|---|---|---|---|",
    ]
    for row in summary["rows"].values():
        acc = f"{100 * row['accuracy_mean']:.2f}"
        if len(seeds) > 1:
            acc += f" +- {100 * row['accuracy_std']:.2f}"
        theta = "-" if row["theta_mean"] is None else f"{row['theta_mean']:.4f}"
        spn = (
            "-" if row["spikes_per_neuron_mean"] is None else f"{row['spikes_per_neuron_mean']:.3f}"
        )
        th = row["runs"][0]["thresholds"]
        th_text = (
            "; ".join(
                (f"{v:.3f}" if isinstance(v, float) else "p=" + "/".join(f"{x:.3f}" for x in v))
                for v in th.values()
            )
            or "-"
        )
        lines.append(
            f"| {row['label']} | {row['timesteps']} | {acc} | {theta} | {spn} | {th_text} |"
        )
    c = summary["checks"]
    lines += [
        "",
        *(
            f"- {label} beats the fixed threshold: **{c[f'{key}_beats_fixed']}** "
            f"({c[f'{key}_margin_points']:+.2f} points"
            + (
                ""
                if len(seeds) < 2
                else "; larger than the summed seed std"
                if c[f"{key}_margin_exceeds_seed_spread"]
                else "; within the summed seed std: not resolved by these runs"
            )
            + ")"
            + _paired_text(c.get(f"{key}_paired"))
            for key, label in (("atif_u", "ATIF-u"), ("atif_nu", "ATIF-nu"))
        ),
        f"- ANN accuracy minus best spiking row ({c['best_spiking']}): "
        f"{c['best_spiking_gap_to_ann_points']:.2f} points (within 2 points: "
        f"**{c['best_spiking_within_2_points_of_ann']}**)",
        "",
    ]
    return "\n".join(lines)


def _paired_text(paired: dict | None) -> str:
    if not paired or paired["seeds"] < 2:
        return ""
    verdict = "resolved" if paired["resolved"] else "not resolved"
    return (
        f"; paired by seed {paired['mean_points']:+.2f} +- {paired['std_points']:.2f} points, "
        f"{paired['wins']} wins / {paired['losses']} losses in {paired['seeds']} seeds, 95 % "
        f"interval +-{paired['ci95_half_width_points']:.2f}: {verdict}"
    )


def rerender(path: Path) -> dict[str, Any]:
    """Load a saved summary and recompute its checks from the rows (no training)."""
    import json

    from ..errors import ConfigError

    try:
        summary = json.loads(Path(path).read_text())
        summary["checks"] = compute_checks(summary["rows"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is not an atif_ablation.json summary: {exc}") from None
    return summary


def write_ablation(
    summary: dict[str, Any], out_dir: Path, setting: str | None = None
) -> tuple[Path, Path]:
    """``atif_ablation.{json,md}``, or ``atif_ablation_<setting>.{json,md}`` for a sweep setting."""
    out_dir = Path(out_dir)
    stem = "atif_ablation" if setting is None else f"atif_ablation_{setting}"
    json_path = write_json(out_dir / f"{stem}.json", summary)
    md_path = write_text(out_dir / f"{stem}.md", ablation_markdown(summary))
    return json_path, md_path


# ----------------------------------------------------------------------------- settings sweep

# Each setting fixes every axis it is about with absolute overrides, so that its rows do not
# change meaning when the bundled recipes change. The axes are the ones that decide whether a
# trainable threshold can matter: BN in front of each neuron (it sets the scale a uniform
# threshold would learn), weight decay (weights can no longer rescale for free), the optimiser
# (the paper's SGD lr 0.08 vs Adam), the training budget and the width.
ADAM = ["optim.name=adam", "optim.lr=0.002", "optim.weight_decay=0.0"]
SGD = ["optim.name=sgd", "optim.lr=0.08", "optim.momentum=0.9"]
DEFAULT_SHAPE = ["model.kwargs.norm=true", "train.epochs=5"]
SWEEP: tuple[tuple[str, str, list[str]], ...] = (
    ("adam", "BN, Adam lr 2e-3, no weight decay, 5 epochs", [*ADAM, *DEFAULT_SHAPE]),
    (
        "no-bn",
        "no BN (conv/linear with bias), Adam lr 2e-3, 5 epochs",
        [*ADAM, "model.kwargs.norm=false", "train.epochs=5"],
    ),
    (
        "no-bn-wd",
        "no BN, Adam lr 2e-3 with weight decay 5e-4, 5 epochs",
        ["optim.name=adam", "optim.lr=0.002", "optim.weight_decay=0.0005"]
        + ["model.kwargs.norm=false", "train.epochs=5"],
    ),
    (
        "sgd",
        "BN, the paper's optimiser: SGD lr 0.08 momentum 0.9, no weight decay, 5 epochs",
        [*SGD, "optim.weight_decay=0.0", *DEFAULT_SHAPE],
    ),
    (
        "sgd-wd",
        "BN, SGD lr 0.08 momentum 0.9, weight decay 5e-4 (our CIFAR ATIF recipes), 5 epochs",
        [*SGD, "optim.weight_decay=0.0005", *DEFAULT_SHAPE],
    ),
    (
        "adam-short",
        "BN, Adam lr 2e-3, 2 epochs (smaller budget)",
        [*ADAM, "model.kwargs.norm=true", "train.epochs=2"],
    ),
    (
        "adam-narrow",
        "BN, Adam lr 2e-3, 5 epochs, widths 8/16 and hidden 32 (smaller network)",
        [*ADAM, *DEFAULT_SHAPE, "model.kwargs.widths=[8,16]", "model.kwargs.hidden=32"],
    ),
    (
        "resnet8",
        "residual net: ResNet-8 (width 16, stem pool 2x2, BN), the sgd-wd optimiser, 5 epochs; "
        "across a shortcut the ratio of two layers' thresholds is a real parameter",
        [*SGD, "optim.weight_decay=0.0005", "train.epochs=5", "model.name=resnet8_kws",
         "model.kwargs={num_classes: 10, input_size: [28, 28], stem_pool: [2, 2], width: 16}"],
    ),
)
SWEEP_NAMES = tuple(name for name, _, _ in SWEEP)


def sweep_settings(names: list[str] | None = None) -> list[tuple[str, str, list[str]]]:
    """The named settings of :data:`SWEEP` (all by default), in the sweep's order."""
    from ..errors import ConfigError

    if not names:
        return list(SWEEP)
    unknown = [n for n in names if n not in SWEEP_NAMES]
    if unknown:
        raise ConfigError(
            f"unknown sweep setting(s) {', '.join(unknown)}; known: {', '.join(SWEEP_NAMES)}"
        )
    return [s for s in SWEEP if s[0] in names]


def run_sweep(
    *,
    seeds: list[int],
    settings: list[str] | None = None,
    overrides: list[str] | None = None,
    runs_dir: Path = Path("runs/ablation-sweep"),
    progress: bool = True,
    log=print,
    resume: bool = False,
) -> dict[str, Any]:
    """The ablation (all four rows, every seed) under each setting of :data:`SWEEP`.

    ``overrides`` are applied after each setting's own (e.g. a data subset for a quick test)."""
    out: dict[str, Any] = {"seeds": list(seeds), "overrides": list(overrides or []), "settings": []}
    for name, description, setting_overrides in sweep_settings(settings):
        log(f"== setting {name}: {description}")
        summary = run_ablation(
            seeds=seeds,
            overrides=[*setting_overrides, *(overrides or [])],
            runs_dir=Path(runs_dir) / name,
            progress=progress,
            log=log,
            resume=resume,
        )
        out["settings"].append(
            {
                "name": name,
                "description": description,
                "overrides": setting_overrides,
                "summary": summary,
            }
        )
    out["pooled"] = pooled_differences(out["settings"])
    return out


def pooled_differences(settings: list[dict]) -> dict[str, dict]:
    """All per-seed ATIF-minus-fixed differences of all settings in one sample: does the
    trainable threshold help on average over the settings tried, rather than in one of them?"""
    return {
        key: paired_stats(
            [
                d
                for setting in settings
                for d in setting["summary"]["checks"][f"{key}_paired"]["points_per_seed"]
            ]
        )
        for key in ("atif_u", "atif_nu")
    }


def _acc_text(row: dict) -> str:
    return f"{100 * row['accuracy_mean']:.2f} +- {100 * row['accuracy_std']:.2f}"


def _diff_text(paired: dict) -> str:
    text = f"{paired['mean_points']:+.2f} +- {paired['std_points']:.2f} ({paired['wins']}/"
    text += f"{paired['seeds']})"
    return f"**{text}**" if paired["resolved"] else text


def sweep_markdown(sweep: dict[str, Any]) -> str:
    seeds = sweep["seeds"]
    lines = [
        "# ATIF ablation under several training settings (bundled MNIST digits, T = 4)",
        "",
        "Written by `spikequant ablation --sweep"
        + (f" --seeds {','.join(map(str, seeds))}" if seeds else "")
        + "`"
        + (f" with overrides {sweep['overrides']}" if sweep["overrides"] else "")
        + ". Each setting trains the four rows (fixed V_th = 1, ATIF-u, ATIF-nu, ANN) from "
        "the same initial weights and batch order per seed; only the neuron differs. Accuracy: "
        "mean +- std over seeds, in %. ATIF minus fixed: the per-seed (paired) difference in "
        "points, mean +- std (wins of the trainable threshold / seeds); **bold** when the 95 % "
        "paired t-interval excludes 0.",
        "",
        "| setting | fixed V_th = 1 | ATIF-u | ATIF-nu | ANN | ATIF-u - fixed | ATIF-nu - fixed "
        "| ANN - best spiking | s/run (fixed) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for setting in sweep["settings"]:
        rows = setting["summary"]["rows"]
        checks = setting["summary"]["checks"]
        seconds = statistics.fmean(r["train_seconds"] for r in rows["mnist-fixed"]["runs"])
        lines.append(
            f"| `{setting['name']}` | {_acc_text(rows['mnist-fixed'])} "
            f"| {_acc_text(rows['mnist-atif-u'])} | {_acc_text(rows['mnist-atif-nu'])} "
            f"| {_acc_text(rows['mnist-ann'])} | {_diff_text(checks['atif_u_paired'])} "
            f"| {_diff_text(checks['atif_nu_paired'])} "
            f"| {checks['best_spiking_gap_to_ann_points']:.2f} | {seconds:.0f} |"
        )
    pooled = sweep.get("pooled") or pooled_differences(sweep["settings"])
    lines += ["", "All settings pooled (every seed of every setting is one pair):", ""]
    for key, label in (("atif_u", "ATIF-u"), ("atif_nu", "ATIF-nu")):
        p = pooled[key]
        if p["seeds"] < 2:
            continue
        lines.append(
            f"- {label} - fixed: {p['mean_points']:+.2f} +- {p['std_points']:.2f} points over "
            f"{p['seeds']} pairs ({p['wins']} wins, {p['losses']} losses, "
            f"{p['seeds'] - p['wins'] - p['losses']} ties); 95 % interval of the mean "
            f"+-{p['ci95_half_width_points']:.2f}: "
            + ("resolved" if p["resolved"] else "not resolved")
        )
    lines += ["", "Settings (overrides applied to all four recipes):", ""]
    for setting in sweep["settings"]:
        lines.append(
            f"- `{setting['name']}`: {setting['description']} "
            f"(`{' '.join('--set ' + o for o in setting['overrides'])}`)"
        )
    lines += ["", "Trained thresholds (seed of the first run; per layer):", ""]
    for setting in sweep["settings"]:
        rows = setting["summary"]["rows"]
        u = rows["mnist-atif-u"]["runs"][0]["thresholds"]
        nu = rows["mnist-atif-nu"]["runs"][0]["thresholds"]
        lines.append(
            f"- `{setting['name']}`: ATIF-u "
            + ", ".join(f"{v:.3f}" for v in u.values())
            + "; ATIF-nu p1 "
            + ", ".join(f"{v[0]:.3f}" for v in nu.values())
        )
    lines.append("")
    return "\n".join(lines)


def write_sweep(sweep: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    json_path = write_json(out_dir / "atif_ablation_sweep.json", sweep)
    md_path = write_text(out_dir / "atif_ablation_sweep.md", sweep_markdown(sweep))
    return json_path, md_path
