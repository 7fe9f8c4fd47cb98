"""A self-contained HTML page comparing training runs (``spikequant report RUN [RUN ...]``).

Everything comes from the run folders (:mod:`spikequant.runfolder`): ``metrics.json`` (final
metrics with the epoch history), or ``metrics.jsonl`` for a run that has not finished yet, and
``run.json`` (recipe). Plots are drawn with matplotlib (object API, no global pyplot state) and
embedded as base64 PNG (matplotlib is the ``plots`` extra; without it the command says so in one
line), so the page is one file with no external reference. Each plot is a
``<figure class="plot" data-plot="NAME">``; a plot for which no run has data is left out and
listed under "Not shown".

Plots:

* ``loss``, ``accuracy``: train and test curves per epoch;
* ``accuracy_vs_T``: accuracy against the number of timesteps T of conversion sweeps
  (``metrics.json["conversion"]``: ``{method: [{T, accuracy}, ...]}``);
* ``firing_rates``: final per-layer firing rates (spikes per neuron per timestep);
* ``thresholds``: mean trained threshold per layer and epoch (the ``v_th`` of epoch records);
* ``synops``: synaptic operations per sample next to the dense MACs of the same network.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._optional import require
from ..errors import ConfigError, RunFolderError

PLOTS = ("loss", "accuracy", "accuracy_vs_T", "firing_rates", "thresholds", "synops")


@dataclass
class Run:
    folder: Path
    label: str
    metrics: dict[str, Any]
    history: list[dict] = field(default_factory=list)
    recipe: dict[str, Any] = field(default_factory=dict)
    finished: bool = True


def load_run(folder: str | Path) -> Run:
    """Read one run folder; a folder with neither ``metrics.json`` nor ``metrics.jsonl`` is a
    one-line :class:`RunFolderError`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RunFolderError(f"{folder} is not a run folder (no such folder)")
    metrics_path, log_path = folder / "metrics.json", folder / "metrics.jsonl"
    metrics: dict[str, Any] = {}
    history: list[dict] = []
    finished = metrics_path.is_file()
    try:
        if finished:
            metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
            if not isinstance(metrics, dict):
                raise ValueError("not a JSON object")
            history = metrics.get("history") or []
        if log_path.is_file() and (not history or not finished):
            lines = log_path.read_text(encoding="utf-8").splitlines()
            history = [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"{folder}: unreadable metrics ({exc})") from None
    if not finished and not history:
        raise RunFolderError(
            f"{folder} is not a run folder with results (no metrics.json or metrics.jsonl)"
        )
    recipe: dict[str, Any] = {}
    run_file = folder / "run.json"
    if run_file.is_file():
        try:
            recipe = json.loads(run_file.read_text(encoding="utf-8")).get("recipe") or {}
        except (OSError, ValueError, AttributeError):
            recipe = {}
    label = str(metrics.get("name") or recipe.get("name") or folder.name)
    return Run(
        folder, label, metrics, [r for r in history if isinstance(r, dict)], recipe, finished
    )


def load_runs(folders: list[str | Path]) -> list[Run]:
    runs = [load_run(f) for f in folders]
    labels = [r.label for r in runs]
    for run in runs:  # two runs of one recipe: tell them apart by folder
        if labels.count(run.label) > 1:
            run.label = f"{run.label} ({run.folder.name})"
    return runs


# ----------------------------------------------------------------------------- plots


def _matplotlib():
    return require("matplotlib.figure", "spikequant report").Figure


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _numbers(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for i, record in enumerate(history, start=1):
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            xs.append(int(record.get("epoch", i)))
            ys.append(float(value))
    return xs, ys


def _epoch_axis(ax) -> None:
    ticker = require("matplotlib.ticker", "spikequant report")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))


def _curves(runs: list[Run], keys: dict[str, str], ylabel: str, scale: float = 1.0):
    Figure = _matplotlib()
    fig = Figure(figsize=(7, 3.6))
    ax = fig.add_subplot()
    drawn = 0
    for index, run in enumerate(runs):
        color = f"C{index % 10}"
        for key, style in keys.items():
            xs, ys = _numbers(run.history, key)
            if xs:
                ax.plot(
                    xs,
                    [scale * y for y in ys],
                    style,
                    color=color,
                    marker="o",
                    ms=3,
                    label=f"{run.label}: {key}",
                )
                drawn += 1
    if not drawn:
        return None
    _epoch_axis(ax)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def plot_loss(runs):
    return _curves(runs, {"train_loss": "-", "test_loss": "--"}, "cross-entropy loss")


def plot_accuracy(runs):
    return _curves(runs, {"train_accuracy": "-", "test_accuracy": "--"}, "accuracy (%)", 100.0)


def conversion_rows(run: Run) -> dict[str, list[tuple[int, float]]]:
    """``{method: [(T, accuracy %), ...]}`` from ``metrics.json["conversion"]``."""
    found = {}
    conversion = run.metrics.get("conversion")
    if isinstance(conversion, dict):
        for method, rows in conversion.items():
            points = [
                (int(r["T"]), float(r["accuracy"]))
                for r in rows or []
                if isinstance(r, dict) and "T" in r and "accuracy" in r
            ]
            if points:
                found[str(method)] = sorted(points)
    return found


def plot_accuracy_vs_t(runs):
    Figure = _matplotlib()
    fig = Figure(figsize=(7, 3.6))
    ax = fig.add_subplot()
    drawn = 0
    for run in runs:
        for method, points in conversion_rows(run).items():
            ax.plot(
                [t for t, _ in points],
                [a for _, a in points],
                marker="o",
                ms=3,
                label=f"{run.label}: {method}",
            )
            drawn += 1
    if not drawn:
        return None
    ax.set_xscale("log", base=2)
    ax.set_xlabel("timesteps T")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def _grouped_bars(runs, values_of, ylabel: str, log: bool = False):
    """One group of bars per key, one bar per run."""
    per_run = [(run, values_of(run)) for run in runs]
    per_run = [(run, values) for run, values in per_run if values]
    if not per_run:
        return None
    keys: list[str] = []
    for _, values in per_run:
        keys += [k for k in values if k not in keys]
    Figure = _matplotlib()
    fig = Figure(figsize=(max(5.0, 0.9 * len(keys) * max(1, len(per_run)) + 2), 3.6))
    ax = fig.add_subplot()
    width = 0.8 / len(per_run)
    for index, (run, values) in enumerate(per_run):
        xs = [i + index * width for i, k in enumerate(keys) if k in values]
        ys = [values[k] for k in keys if k in values]
        ax.bar(xs, ys, width=width, label=run.label, color=f"C{runs.index(run) % 10}")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(keys))])
    ax.set_xticklabels(keys, rotation=30, ha="right", fontsize=7)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    return fig


def _firing_rates(run: Run) -> dict[str, float]:
    rates = run.metrics.get("firing_rates")
    if not isinstance(rates, dict):
        return {}
    return {str(k): float(v) for k, v in rates.items() if isinstance(v, (int, float))}


def plot_firing_rates(runs):
    return _grouped_bars(runs, _firing_rates, "firing rate (spikes / neuron / step)")


def _synops(run: Run) -> dict[str, float]:
    values = {}
    for key in ("synops", "dense_macs"):
        value = run.metrics.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            values["SynOps / sample" if key == "synops" else "dense MACs / sample"] = float(value)
    return values if "SynOps / sample" in values else {}


def plot_synops(runs):
    return _grouped_bars(runs, _synops, "operations per sample", log=True)


def plot_thresholds(runs):
    Figure = _matplotlib()
    fig = Figure(figsize=(7, 3.6))
    ax = fig.add_subplot()
    drawn = 0
    for index, run in enumerate(runs):
        layers: list[str] = []
        for record in run.history:
            layers += [k for k in record.get("v_th") or {} if k not in layers]
        styles = ["-", "--", ":", "-."]
        for j, layer in enumerate(layers):
            points = [
                (int(r.get("epoch", i)), float(r["v_th"][layer]))
                for i, r in enumerate(run.history, start=1)
                if isinstance(r.get("v_th"), dict) and layer in r["v_th"]
            ]
            ax.plot(
                [e for e, _ in points],
                [v for _, v in points],
                styles[j % 4],
                color=f"C{index % 10}",
                marker="o",
                ms=3,
                label=f"{run.label}: {layer}",
            )
            drawn += 1
    if not drawn:
        return None
    _epoch_axis(ax)
    ax.set_ylabel("mean threshold V_th")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


PLOTTERS = {
    "loss": (plot_loss, "Loss per epoch", "solid: train, dashed: test"),
    "accuracy": (plot_accuracy, "Accuracy per epoch", "solid: train, dashed: test"),
    "accuracy_vs_T": (
        plot_accuracy_vs_t,
        "Accuracy against timesteps T",
        "conversion sweeps recorded in metrics.json",
    ),
    "firing_rates": (
        plot_firing_rates,
        "Firing rate per layer",
        "final test pass: spikes per neuron per timestep",
    ),
    "thresholds": (
        plot_thresholds,
        "Threshold evolution",
        "mean trained V_th per layer at the end of each epoch",
    ),
    "synops": (
        plot_synops,
        "Synaptic operations",
        "SynOps per sample (spike-driven accumulates) against the dense MACs of the "
        "same network; log scale",
    ),
}


# ----------------------------------------------------------------------------- page


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary_rows(run: Run) -> dict[str, str]:
    m = run.metrics
    recipe_model = run.recipe.get("model") or {}
    model = m.get("model")
    model_name = model.get("name") if isinstance(model, dict) else model or recipe_model.get("name")
    last = run.history[-1] if run.history else {}
    accuracy = m.get("test_accuracy", last.get("test_accuracy"))
    return {
        "run": run.label,
        "folder": str(run.folder),
        "method": _fmt(m.get("method") or (run.recipe.get("method") or {}).get("name")),
        "dataset": _fmt(m.get("dataset") or (run.recipe.get("data") or {}).get("name")),
        "model": _fmt(model_name),
        "T": _fmt(m.get("timesteps") or recipe_model.get("timesteps")),
        "epochs": _fmt(m.get("epochs") or (last.get("epoch") if last else None)),
        "test accuracy (%)": _fmt(100 * accuracy if isinstance(accuracy, (int, float)) else None),
        "theta": _fmt(m.get("theta")),
        "SynOps / sample": _fmt(m.get("synops")),
        "status": "finished" if run.finished else "in progress (metrics.jsonl)",
    }


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1100px; }
table { border-collapse: collapse; font-size: 0.85em; margin-bottom: 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
th { background: #f0f0f0; }
figure.plot { margin: 1.5em 0; }
figure.plot img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #555; }
"""


def render_html(runs: list[Run]) -> tuple[str, list[str]]:
    """The page, and the names of the plots it holds."""
    summaries = [summary_rows(r) for r in runs]
    columns = list(summaries[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(s[c])}</td>" for c in columns) + "</tr>"
        for s in summaries
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>spikequant report: {html.escape(', '.join(r.label for r in runs))}</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>spikequant run report</h1>",
        f'<table id="summary"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>',
    ]
    shown, missing = [], []
    for name, (plot, title, caption) in PLOTTERS.items():
        fig = plot(runs)
        if fig is None:
            missing.append(title)
            continue
        shown.append(name)
        parts += [
            f'<figure class="plot" data-plot="{name}" id="plot-{name}">',
            f"<h2>{html.escape(title)}</h2>",
            f'<img alt="{html.escape(title)}" src="data:image/png;base64,{_png(fig)}">',
            f"<figcaption>{html.escape(caption)}</figcaption></figure>",
        ]
    if missing:
        parts.append(
            '<p id="not-shown">Not shown (no run records the data): '
            + html.escape(", ".join(missing))
            + "</p>"
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n", shown


def write_report(folders: list[str | Path], out: str | Path | None = None) -> tuple[Path, list]:
    """Render the runs in ``folders`` to ``out`` (default: ``FIRST_RUN/report.html``)."""
    from ..io import write_text

    if not folders:
        raise ConfigError("report needs at least one run folder")
    runs = load_runs(list(folders))
    page, shown = render_html(runs)
    path = Path(out) if out is not None else runs[0].folder / "report.html"
    write_text(path, page)
    return path, shown
