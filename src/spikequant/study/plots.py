"""The plots a study declares (``plots:``): their data from the report, drawn with matplotlib.

:func:`plot_data` is pure (no matplotlib): it turns a plot's spec and the report's runs into
series, which the report's JSON keeps. A row's point is the mean over seeds of ``y`` (times its
scale) with the sample std as error bar; its x is ``x.values[row]`` or the mean of the row field
``x.field``. ``marks`` are rows drawn as labelled horizontal lines instead of points (a
reference that has no place on the x axis, like a float32 membrane on an axis of bits). An
analysis plot draws the series each analysis of that kind brings, one per analysed row.

:func:`draw_plot` draws the data on an Agg figure and returns what the axes hold, read back from
the drawn artists, so a test compares the picture's data with the report's, not with itself.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from .report import _number, field_value, mean_std


def _row_stat(report: dict, row: str, field: str) -> tuple[float, float] | None:
    values = [v for v in (field_value(r, field) for r in report["runs"] if r["row"] == row)
              if _number(v)]  # fmt: skip
    return mean_std(values) if values else None


def _rows_data(report: dict, spec: dict) -> dict:
    rows, y, x = report["study"]["rows"], spec["y"], spec["x"]
    points, missing = [], []
    for row in spec["rows"]:
        stat = _row_stat(report, row, y["field"])
        if x is None:
            xv = rows[row]["label"]
        elif x["values"] is not None:
            xv = x["values"][row]
        else:
            xstat = _row_stat(report, row, x["field"])
            xv = None if xstat is None else xstat[0]
        if stat is None or xv is None:
            missing.append(row)
            continue
        points.append((xv, y["scale"] * stat[0], y["scale"] * stat[1], row))
    if x is not None:
        points.sort(key=lambda p: p[0])
    marks = []
    for row in spec["marks"]:
        stat = _row_stat(report, row, y["field"])
        if stat is None:
            missing.append(row)
            continue
        marks.append({"label": rows[row]["label"], "row": row,
                      "y": y["scale"] * stat[0], "yerr": y["scale"] * stat[1]})  # fmt: skip
    series = {
        "label": spec["label"],
        "rows": [p[3] for p in points],
        "x": [p[0] for p in points],
        "y": [p[1] for p in points],
        "yerr": [p[2] for p in points],
    }
    return {
        "x_label": None if x is None else x["label"],
        "y_label": y["label"],
        "series": [series] if points else [],
        "marks": marks,
        "missing": missing,
    }


def _analysis_data(report: dict, spec: dict) -> dict:
    from .plugins import ANALYSES

    study = report["study"]
    series, marks, labels = [], [], None
    for a in study["analyses"]:
        if a["kind"] != spec["analysis"]:
            continue
        drawn = ANALYSES[a["kind"]][2](report["analyses"][f"{a['kind']}:{a['row']}"])
        labels = drawn["x_label"], drawn["y_label"]
        label = study["rows"][a["row"]]["label"]
        series.append({"label": label, "rows": [a["row"]] * len(drawn["x"]), "x": drawn["x"],
                       "y": drawn["y"], "yerr": [0.0] * len(drawn["y"])})  # fmt: skip
        if drawn.get("reference") is not None:
            ref = drawn["reference"]
            marks.append({"label": f"{label}: {ref['label']}", "row": a["row"], "y": ref["y"],
                          "yerr": 0.0, "series": len(series) - 1})  # fmt: skip
    x_label, y_label = labels or ("x", "y")
    return {"x_label": x_label, "y_label": y_label, "series": series, "marks": marks,
            "missing": []}  # fmt: skip


def plot_file(report: dict, name: str) -> str:
    """The PNG's file name, next to the report's ``<stem>.json``: ``<stem>_<name>.png``."""
    return f"{report['stem']}_{name}.png"


def plot_data(report: dict, spec: dict) -> dict:
    """What the plot shows, as JSON: ``series`` (label, rows, x, y, yerr) and ``marks``."""
    data = _analysis_data(report, spec) if spec["analysis"] else _rows_data(report, spec)
    return {"name": spec["name"], "title": spec["title"], "kind": spec["kind"],
            "file": plot_file(report, spec["name"]), **data}  # fmt: skip


def draw_plot(data: dict):
    """The figure of :func:`plot_data`'s ``data`` and what its axes hold, read back from the
    artists: ``{"series": [{"label", "x", "y"}], "marks": [{"label", "y"}]}``."""
    from .._optional import require

    figure = require("matplotlib.figure", "the plots of a study report").Figure
    fig = figure(figsize=(7, 4))
    ax = fig.add_subplot()
    drawn: dict[str, list] = {"series": [], "marks": []}
    for i, s in enumerate(data["series"]):
        color = f"C{i % 10}"
        yerr = s["yerr"] if any(s["yerr"]) else None
        if data["kind"] == "bar":
            labels = [str(x) for x in s["x"]]
            bars = ax.bar(range(len(labels)), s["y"], yerr=yerr, color=color, label=s["label"])
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
            heights = [float(b.get_height()) for b in bars.patches]
            drawn["series"].append({"label": s["label"], "x": labels, "y": heights})
            continue
        line = ax.errorbar(s["x"], s["y"], yerr=yerr, color=color, marker="o", ms=4,
                           capsize=3, label=s["label"])[0]  # fmt: skip
        drawn["series"].append({"label": s["label"],
                                "x": [float(v) for v in line.get_xdata()],
                                "y": [float(v) for v in line.get_ydata()]})  # fmt: skip
    styles = ["--", ":", "-."]
    for i, m in enumerate(data["marks"]):
        linked = m.get("series")
        color = f"C{linked % 10}" if linked is not None else f"C{(len(data['series']) + i) % 10}"
        style = ":" if linked is not None else styles[i % len(styles)]
        line = ax.axhline(m["y"], color=color, ls=style, lw=1.2, label=m["label"])
        drawn["marks"].append({"label": m["label"], "y": float(line.get_ydata()[0])})
    ax.set_title(data["title"], fontsize=10)
    if data["x_label"]:
        ax.set_xlabel(data["x_label"])
    ax.set_ylabel(data["y_label"])
    ax.grid(alpha=0.3)
    if drawn["series"] or drawn["marks"]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig, drawn


def write_plots(report: dict, out_dir: Path) -> dict[str, Any]:
    """Every plot of the report as a PNG in ``out_dir``; ``{name: (path, drawn)}``."""
    from ..io import atomic_write_bytes

    written = {}
    for name, data in (report.get("plots") or {}).items():
        fig, drawn = draw_plot(data)
        buffer = io.BytesIO()
        # no timestamps in the file: the same report draws the same bytes
        fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
        path = atomic_write_bytes(Path(out_dir) / data["file"], buffer.getvalue())
        written[name] = (path, drawn)
    return written
