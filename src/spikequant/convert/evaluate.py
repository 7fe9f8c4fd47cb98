"""Accuracy of converted SNNs against timesteps, and the report files (JSON, Markdown, PNG)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from ..io import DEFAULT_REPORTS, command_header, command_line, results_dir, write_json, write_text
from .methods import convert
from .network import SpikingNetwork, compare_codes, merge_agreements


@torch.no_grad()
def ann_accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500
) -> float:
    """Fraction (0..1) of ``x`` whose argmax of ``model(x)`` equals ``y``."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
    return correct / max(len(x), 1)


@torch.no_grad()
def accuracy_vs_timesteps(
    snn: SpikingNetwork,
    x: torch.Tensor,
    y: torch.Tensor,
    timesteps: Sequence[int],
    batch_size: int = 500,
    exact_model: nn.Module | None = None,
) -> list[dict]:
    """Per T: accuracy (fraction, 0..1), spikes per neuron over the T steps, and per neuron per
    step.

    With ``exact_model`` (the QAT ANN of a ``calif`` network), every batch's integer activations
    at the largest T are also compared with the ANN's, with no extra simulation; the summed
    counts land in ``snn.info["calif_exactness"]``."""
    steps = sorted({int(t) for t in timesteps})
    agreement = None
    correct = dict.fromkeys(steps, 0)
    spikes = dict.fromkeys(steps, 0.0)
    neurons = 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        out = snn.simulate(xb, steps)
        for t in steps:
            correct[t] += int((out[t]["logits"].argmax(1) == yb).sum())
            spikes[t] += out[t]["spikes"]
        neurons += out[steps[0]]["neurons"] * len(xb)
        if exact_model is not None and snn.method == "calif":
            # simulate() runs T in ascending order, so the codes held are those of the largest T
            agreement = merge_agreements(agreement, compare_codes(exact_model, snn, xb, steps[-1]))
    if agreement is not None:
        snn.info["calif_exactness"] = agreement
    rows = []
    for t in steps:
        per_neuron = spikes[t] / max(neurons, 1)
        rows.append(
            {
                "T": t,
                "accuracy": correct[t] / max(len(x), 1),
                "spikes_per_neuron": per_neuron,
                "theta": per_neuron / t,
            }
        )
    return rows


# "within 1 point": one percentage point, as a fraction of accuracy
ONE_POINT = 0.01


def first_within(rows: list[dict], reference: float, tolerance: float = ONE_POINT) -> int | None:
    """Smallest T whose accuracy (fraction) is within ``tolerance`` of ``reference`` (None if
    never); the default is one percentage point."""
    for row in rows:
        if row["accuracy"] >= reference - tolerance:
            return row["T"]
    return None


def settled_within(rows: list[dict], reference: float, tolerance: float = ONE_POINT) -> int | None:
    """Smallest T from which every larger T of the sweep stays within ``tolerance`` of
    ``reference`` (None if the last T is not within). Unlike :func:`first_within` it ignores a
    transient that touches the band and falls out again."""
    settled = None
    for row in reversed(rows):
        if row["accuracy"] < reference - tolerance:
            break
        settled = row["T"]
    return settled


def method_variants(methods: Sequence, options: dict | None = None) -> list[tuple[str, str, dict]]:
    """``(label, method, convert options)`` for each entry of ``methods``: a method name, or a
    mapping ``{"label": ..., "method": ..., **options}`` (a variant). ``options[method]`` holds the
    options shared by every entry of that method; a variant's own options override them."""
    options = options or {}
    variants, labels = [], set()
    for entry in methods:
        if isinstance(entry, str):
            label, method, own = entry, entry, {}
        elif isinstance(entry, dict) and isinstance(entry.get("method"), str):
            own = {k: v for k, v in entry.items() if k not in ("label", "method")}
            method = entry["method"]
            label = str(entry.get("label", method))
        else:
            raise ConfigError(
                f"a conversion method is a name or a mapping with 'method', got {entry!r}"
            )
        if label in labels:
            raise ConfigError(f"two conversion variants are labelled {label!r}")
        labels.add(label)
        variants.append((label, method, {**options.get(method, {}), **own}))
    return variants


def compare_methods(
    model: nn.Module,
    methods: Sequence[str],
    x_train,
    x_test,
    y_test,
    timesteps: Sequence[int],
    *,
    options: dict | None = None,
    calibration_size: int = 512,
) -> dict:
    """Convert ``model`` with each method (or labelled variant, see :func:`method_variants`) and
    sweep T; returns the JSON-able report, keyed by label. Accuracies and ``gap_to_ann`` are
    fractions (0..1); "within 1 point" means within 0.01 of the ANN's accuracy."""
    variants = method_variants(methods, options)
    ann_acc = ann_accuracy(model, x_test, y_test)
    report = {
        "ann_accuracy": ann_acc,
        "timesteps": sorted({int(t) for t in timesteps}),
        "test_samples": len(x_test),
        "methods": {},
    }
    for label, method, opts in variants:
        snn = convert(model, method, x_train[:calibration_size], **opts)
        rows = accuracy_vs_timesteps(
            snn, x_test, y_test, timesteps, exact_model=model if method == "calif" else None
        )
        if "calif_exactness" in snn.info:
            report["calif_exactness"] = snn.info["calif_exactness"]
        for row in rows:
            row["gap_to_ann"] = row["accuracy"] - ann_acc
        entry = {
            "method": method,
            "options": {k: v for k, v in opts.items() if k != "architecture"},
            "rows": rows,
            "within_1_point_at_T": first_within(rows, ann_acc),
            "settled_within_1_point_at_T": settled_within(rows, ann_acc),
        }
        if "sin" in snn.info:
            entry["sin"] = snn.info["sin"]
            entry["preset"] = snn.info.get("preset")
        report["methods"][label] = entry
    return report


def _t_or_never(value) -> str:
    return str(value) if value is not None else "never (in range)"


def markdown_table(report: dict, title: str) -> str:
    methods = list(report["methods"])
    compact = len(methods) > 3  # many variants: accuracy only, or the table gets unreadable
    lines = [
        f"# {title}",
        "",
        f"ANN test accuracy: {100 * report['ann_accuracy']:.2f} % "
        f"({report['test_samples']} test images)",
        "",
    ]
    if compact:
        header = "| T | " + " | ".join(f"{m} acc (%)" for m in methods) + " |"
        lines += [header, "|" + "---|" * (1 + len(methods))]
    else:
        header = (
            "| T | "
            + " | ".join(f"{m} acc (%) | {m} gap (points) | {m} spikes/neuron" for m in methods)
            + " |"
        )
        lines += [header, "|" + "---|" * (1 + 3 * len(methods))]
    for i, t in enumerate(report["timesteps"]):
        cells = []
        for m in methods:
            row = report["methods"][m]["rows"][i]
            cells.append(f"{100 * row['accuracy']:.2f}")
            if not compact:
                cells += [f"{100 * row['gap_to_ann']:+.2f}", f"{row['spikes_per_neuron']:.3f}"]
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| method | options | first T within 1 point | within 1 point from T on |",
        "|---|---|---|---|",
    ]
    for m in methods:
        entry = report["methods"][m]
        opts = ", ".join(f"{k}={v}" for k, v in entry.get("options", {}).items()) or "defaults"
        lines.append(
            f"| {m} | {entry.get('method', m)}: {opts} | "
            f"{_t_or_never(entry['within_1_point_at_T'])} | "
            f"{_t_or_never(entry.get('settled_within_1_point_at_T'))} |"
        )
    lines.append("")
    for m in methods:
        at = report["methods"][m]["within_1_point_at_T"]
        lines.append(f"- {m}: within 1 point of the ANN first at T = {_t_or_never(at)}")
        for layer, s in report["methods"][m].get("sin", {}).items():
            lines.append(
                f"  - SIN {layer}: {s['sin_neurons']} of {s['fired_neurons']} fired neurons "
                f"(ratio {s['sin_ratio']:.4f}, ANS {s['ans']:.4f}, "
                f"confidence p = {s['confidence']:.4f})"
            )
    if "calif_exactness" in report:
        ex = report["calif_exactness"]
        lines += [
            "",
            f"## Ca-LIF vs quantized ANN at T = {ex['T']} (input spike budget K = "
            f"{ex['input_spike_budget']})",
            "",
            "| layer | integer activations | mismatches (ISI-decoded input) "
            "| mismatches (original input) |",
            "|---|---|---|---|",
        ]
        for layer, v in ex["layers"].items():
            lines.append(
                f"| {layer} | {v['neurons']} | {v['mismatch_vs_decoded_input']} | "
                f"{v['mismatch_vs_original_input']} |"
            )
    return "\n".join(lines) + "\n"


def plot_report(report: dict, path: Path, title: str) -> Path:
    from .._optional import pyplot

    plt = pyplot("the conversion report's plot")

    ann = 100 * report["ann_accuracy"]  # plotted in percent
    colors = plt.get_cmap("tab20" if len(report["methods"]) > 10 else "tab10").colors
    # right panel: the band "within 1 point of the ANN" where the latency check is decided
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, zoom in zip(axes, (False, True), strict=True):
        for i, (method, entry) in enumerate(report["methods"].items()):
            ts = [r["T"] for r in entry["rows"]]
            acc = [100 * r["accuracy"] for r in entry["rows"]]
            ax.plot(ts, acc, marker="o", ms=3, color=colors[i % len(colors)], label=method)
        ax.axhline(ann, color="k", ls="--", lw=1, label="ANN")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("timesteps T")
        ax.grid(alpha=0.3)
        if zoom:
            ax.axhspan(ann - 1.0, ann, color="0.85", zorder=0, label="within 1 point")
            ax.set_ylim(ann - 4.0, ann + 0.5)
            last = max(report["timesteps"])
            if last > 16:
                ax.set_xlim(8, last * 1.1)
            ax.set_title("near the ANN")
        else:
            ax.set_ylabel("test accuracy (%)")
            ax.set_title(title)
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(
    report: dict, stem: str, out: str | Path | None = None, title: str | None = None
) -> dict[str, str]:
    folder = results_dir(out, DEFAULT_REPORTS)
    title = title or stem
    paths = {
        "json": folder / f"{stem}.json",
        "markdown": folder / f"{stem}.md",
        "png": folder / f"{stem}.png",
    }
    write_json(paths["json"], _finite({"command": command_line(), **report}))
    write_text(paths["markdown"], command_header() + markdown_table(report, title))
    plot_report(report, paths["png"], title)
    return {k: str(v) for k, v in paths.items()}


def _finite(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj
