"""A study's report: per-row summaries over seeds, paired comparisons, checks; JSON + markdown.

Everything is computed from the per-run records stored in the report, so a saved report can be
re-rendered (``--render``) without training and without the study file.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..io import write_json, write_text
from .schema import LIMITS


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def paired_stats(values: list[float]) -> dict:
    """Mean, std, wins/losses and the 95 % t-interval of paired per-seed values.

    ``resolved``: the interval ``mean +- t_{0.975, n-1} std / sqrt(n)`` excludes 0 (never with a
    single seed). Pairing by seed removes the seed-to-seed spread that both rows share."""
    n = len(values)
    mean, std = mean_std(values) if values else (0.0, 0.0)
    half_width = None
    if n > 1:
        from .._optional import require

        student_t = require("scipy.stats", "the paired t-intervals of a study").t

        half_width = float(student_t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return {
        "per_seed": values,
        "mean": mean,
        "std": std,
        "seeds": n,
        "wins": sum(v > 0 for v in values),
        "losses": sum(v < 0 for v in values),
        "ci95_half_width": half_width,
        "resolved": half_width is not None and abs(mean) > half_width,
    }


def field_value(run: dict, field: str) -> Any:
    """``a.b`` looks up ``metrics['a']['b']`` (or the run's collected values); None if absent."""
    node: Any = {**run["metrics"], **run["extras"]}
    for part in field.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def summarise(runs: list[dict], field: str) -> dict | None:
    values = [v for v in (field_value(r, field) for r in runs) if _number(v)]
    if not values:
        return None
    mean, std = mean_std(values)
    return {"mean": mean, "std": std, "values": values}


def compare(report: dict, comparison: dict) -> dict:
    """Per seed, ``scale * (row - base)`` (rounded to 1e-9: accuracies are counts / N, so that
    0.968 - 0.948 is 2.0 points) or ``row / base``; ``base`` given as a list is the one of those
    rows with the highest mean of the field."""
    field, base = comparison["field"], comparison["base"]
    if isinstance(base, list):
        means = {b: (report["summary"][b].get(field) or {"mean": -math.inf})["mean"] for b in base}
        base = max(base, key=lambda b: means[b])
    by_seed = {
        name: {r["seed"]: field_value(r, field) for r in report["runs"] if r["row"] == name}
        for name in (comparison["row"], base)
    }
    values = []
    for seed in report["seeds"]:
        a, b = by_seed[comparison["row"]].get(seed), by_seed[base].get(seed)
        if not (_number(a) and _number(b)):
            continue
        if comparison["op"] == "ratio":
            values.append(a / max(b, 1e-12))
        else:
            values.append(round(comparison["scale"] * (a - b), 9))
    return {**paired_stats(values), "base_row": base}


def check(report: dict, spec: dict) -> dict:
    comp = report["comparisons"][spec["comparison"]]
    mean = round(comp["mean"], 9)
    passes = LIMITS[spec["limit"]]
    ok = comp["seeds"] > 0 and passes(mean, spec["value"])
    if spec["resolved"]:
        ok = ok and comp["resolved"]
    return {
        "comparison": spec["comparison"],
        "mean": mean,
        "std": comp["std"],
        "limit": spec["limit"],
        "value": spec["value"],
        "resolved_required": spec["resolved"],
        "seeds_passing": sum(passes(v, spec["value"]) for v in comp["per_seed"]),
        "seeds": comp["seeds"],
        "pass": ok,
    }


def evaluate_report(report: dict) -> dict:
    """Fill summary, comparisons and checks from the report's runs (in place; returned)."""
    study = report["study"]
    report["summary"] = {
        row: {
            f["field"]: summarise([r for r in report["runs"] if r["row"] == row], f["field"])
            for f in study["summary"]
        }
        for row in study["rows"]
    }
    report["comparisons"] = {c["name"]: compare(report, c) for c in study["comparisons"]}
    report["checks"] = {c["name"]: check(report, c) for c in study["checks"]}
    if study.get("plots"):  # reports of studies without plots keep their keys
        from .plots import plot_data

        report["plots"] = {p["name"]: plot_data(report, p) for p in study["plots"]}
    else:  # a study file whose plots were removed (``study NAME --render``)
        report.pop("plots", None)
    return report


def report_stem(study_name: str, setting: str | None, sweep: bool = False) -> str:
    """File name stem of a study's report: ``atif_ablation``, ``atif_ablation_resnet8``,
    ``atif_ablation_sweep``; distinct for every study and setting."""
    stem = study_name.replace("-", "_")
    return f"{stem}_sweep" if sweep else stem if setting is None else f"{stem}_{setting}"


# ----------------------------------------------------------------------------- markdown


def table_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def table_head(cells: list[str]) -> list[str]:
    """A markdown table's header line and the line under it."""
    return [table_row(cells), "|" + "---|" * len(cells)]


def _fmt(value: float, f: dict) -> str:
    return format(f["scale"] * value, f["format"])


def _cell(stat: dict | None, f: dict, seeds: int) -> str:
    if stat is None:
        return "-"
    text = _fmt(stat["mean"], f)
    return text + (f" +- {_fmt(stat['std'], f)}" if seeds > 1 else "")


def _pm(stat: dict, fmt: str) -> str:
    return f"{format(stat['mean'], fmt)} +- {format(stat['std'], fmt)}"


def _comparison_text(comp: dict, spec: dict) -> str:
    unit = "x" if spec["op"] == "ratio" else ""
    text = f"{_pm(comp, spec['format'])}{unit}"
    if comp["seeds"] < 2:
        return f"{format(comp['mean'], spec['format'])}{unit} (one seed)"
    verdict = "resolved" if comp["resolved"] else "not resolved"
    return (
        f"{text} (per seed {', '.join(format(v, spec['format']) for v in comp['per_seed'])}; "
        f"{comp['wins']} above / {comp['losses']} below 0 in {comp['seeds']} seeds; 95 % "
        f"interval +-{format(comp['ci95_half_width'], spec['format'])}: {verdict})"
    )


def _value_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list):
        return "/".join(_value_text(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k} {_value_text(v)}" for k, v in value.items()) or "-"
    return str(value)


def header_lines(report: dict) -> list[str]:
    lines = [f"Written by `{report['command']}`."]
    if report.get("rendered_by"):
        lines.append(f"Re-rendered (no training) by `{report['rendered_by']}`.")
    if report.get("note"):
        lines.append(report["note"])
    return lines


def _setup_lines(report: dict) -> list[str]:
    study, seeds = report["study"], report["seeds"]
    lines = ["", study["description"], ""] if study["description"] else [""]
    if report.get("setting"):
        s = report["setting"]
        lines.append(f"Setting `{s['name']}`: {s['description']}.")
    lines.append(
        f"Seeds {', '.join(map(str, seeds))}"
        + ("; cells are mean +- sample std over the seeds." if len(seeds) > 1 else ".")
    )
    firsts = {row: next(r for r in report["runs"] if r["row"] == row) for row in study["rows"]}
    common = [o for o in firsts[next(iter(firsts))]["overrides"]
              if all(o in r["overrides"] for r in firsts.values())]  # fmt: skip
    if common:
        lines.append(f"Overrides of every row: `{' '.join(common)}`.")
    lines += ["", "Rows (recipe, own overrides; a stage starts from its seed's run of a row):", ""]
    for row, spec in study["rows"].items():
        own = [o for o in firsts[row]["overrides"] if o not in common]
        init = firsts[row].get("init_from_row")
        lines.append(
            f"- {spec['label']}: `{spec['recipe']}`"
            + (f" `{' '.join(own)}`" if own else "")
            + (f", initialised from its seed's `{init}` run" if init else "")
        )
    return lines


def report_markdown(report: dict) -> str:
    study, seeds = report["study"], report["seeds"]
    title = study["title"] + (
        f" (setting `{report['setting']['name']}`)" if report.get("setting") else ""
    )
    lines = [f"# {title}", "", *header_lines(report), *_setup_lines(report), ""]
    fields = study["summary"]
    lines += table_head(["row", *(f["label"] for f in fields)])
    for row, spec in study["rows"].items():
        cells = [_cell(report["summary"][row][f["field"]], f, len(seeds)) for f in fields]
        lines.append(table_row([spec["label"], *cells]))
    first = fields[0]
    if len(seeds) > 1:
        lines += ["", f"{first['label']} per seed:", ""]
        lines += table_head(["row", *(f"seed {s}" for s in seeds)])
        for row, spec in study["rows"].items():
            by_seed = {
                r["seed"]: field_value(r, first["field"]) for r in report["runs"] if r["row"] == row
            }
            cells = [_fmt(v, first) if _number(v) else "-" for v in (by_seed.get(s) for s in seeds)]
            lines.append(table_row([spec["label"], *cells]))
    if study["comparisons"]:
        lines += ["", "## Paired comparisons (row minus base of the same seed)", ""]
        for spec in study["comparisons"]:
            comp = report["comparisons"][spec["name"]]
            base = study["rows"][comp["base_row"]]["label"]
            lines.append(
                f"- {spec['label']} (`{spec['field']}`, {study['rows'][spec['row']]['label']} "
                f"{'/' if spec['op'] == 'ratio' else '-'} {base}): {_comparison_text(comp, spec)}"
            )
    if study["checks"]:
        lines += ["", "## Checks (on the mean over seeds)", ""]
        for spec in study["checks"]:
            c = report["checks"][spec["name"]]
            bound = spec["limit"].replace("_", " ")
            lines.append(
                f"- {spec['label']}: {c['mean']:.2f} ({bound} {spec['value']:g}"
                + (", 95 % interval excluding 0" if spec["resolved"] else "")
                + f"; {c['seeds_passing']}/{c['seeds']} seeds pass alone) -> "
                + ("**PASS**" if c["pass"] else "**FAIL**")
            )
    if study["details"]:
        lines += ["", f"## Details (seed {seeds[0]})", ""]
        for row, spec in study["rows"].items():
            run = next(r for r in report["runs"] if r["row"] == row and r["seed"] == seeds[0])
            parts = [
                f"{d} {_value_text(field_value(run, d))}"
                for d in study["details"]
                if field_value(run, d) not in (None, {}, [])
            ]
            lines.append(f"- {spec['label']}: " + ("; ".join(parts) or "-"))
    for spec in study["analyses"]:
        from .plugins import ANALYSES

        result = report["analyses"][f"{spec['kind']}:{spec['row']}"]
        where = f"the {study['rows'][spec['row']]['label']} run of seed {seeds[0]}"
        lines += ["", *ANALYSES[spec["kind"]][1](result, where)]
    for plot in (report.get("plots") or {}).values():
        lines += ["", f"![{plot['title']}]({plot['file']})"]
        if plot["missing"]:
            lines.append(f"(Not drawn, no value: {', '.join(plot['missing'])}.)")
    return "\n".join(lines) + "\n"


def sweep_markdown(sweep: dict) -> str:
    """One line per setting: the first summary field of each row, the paired comparisons
    (**bold** when the 95 % interval excludes 0), then the comparisons pooled over settings."""
    study = sweep["study"]
    first = study["summary"][0]
    comps = study["comparisons"]
    columns = [spec["label"] for spec in study["rows"].values()] + [c["label"] for c in comps]
    lines = [
        f"# {study['title']}: every setting",
        "",
        *header_lines(sweep),
        "",
        *([study["description"], ""] if study["description"] else []),
        f"Seeds {', '.join(map(str, sweep['seeds']))}. Row cells: {first['label']}, mean +- std "
        "over seeds. Comparisons: the per-seed (paired) value, mean +- std (seeds above 0 / "
        "seeds); **bold** when the 95 % paired t-interval excludes 0.",
        "",
        *table_head(["setting", *columns]),
    ]
    for setting in sweep["settings"]:
        rep = setting["report"]
        cells = [_cell(rep["summary"][row][first["field"]], first, 2) for row in study["rows"]]
        for c in comps:
            comp = rep["comparisons"][c["name"]]
            text = f"{_pm(comp, c['format'])} ({comp['wins']}/{comp['seeds']})"
            cells.append(f"**{text}**" if comp["resolved"] else text)
        lines.append(table_row([f"`{setting['name']}`", *cells]))
    if sweep["pooled"]:
        lines += ["", "All settings pooled (every seed of every setting is one pair):", ""]
        for name, p in sweep["pooled"].items():
            spec = next(c for c in comps if c["name"] == name)
            if p["seeds"] < 2:
                continue
            lines.append(
                f"- {spec['label']}: {_pm(p, spec['format'])} over {p['seeds']} pairs "
                f"({p['wins']} above, {p['losses']} below 0); 95 % interval of the mean "
                f"+-{format(p['ci95_half_width'], spec['format'])}: "
                + ("resolved" if p["resolved"] else "not resolved")
            )
    lines += ["", "Settings (their overrides: of every row, then of single rows):", ""]
    for setting in sweep["settings"]:
        s = study["settings"][setting["name"]]
        parts = [f"`{' '.join(s['overrides'])}`"] if s["overrides"] else []
        for row, own in s["rows"].items():
            text = " ".join(own["overrides"])
            if own.get("init_from", "kept") is None:
                text = (text + " " if text else "") + "from scratch"
            parts.append(f"{row}: `{text}`")
        lines.append(f"- `{setting['name']}`: {s['description']} ({'; '.join(parts) or '-'})")
    return "\n".join(lines) + "\n"


def pooled(settings: list[dict], names: list[str]) -> dict:
    return {
        name: paired_stats(
            [v for s in settings for v in s["report"]["comparisons"][name]["per_seed"]]
        )
        for name in names
    }


def write_report(report: dict, out_dir: Path) -> tuple[Path, Path]:
    """``<stem>.json`` and ``<stem>.md`` in ``out_dir`` (the stem is the report's own), and
    next to them ``<stem>_<plot>.png`` for every plot the study declares."""
    from .plots import write_plots

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = sweep_markdown(report) if report["kind"] == "sweep" else report_markdown(report)
    json_path = write_json(out_dir / f"{report['stem']}.json", report)
    md_path = write_text(out_dir / f"{report['stem']}.md", markdown)
    # after the JSON: without matplotlib, --render draws the plots once it is installed
    write_plots(report, out_dir)
    return json_path, md_path


def rerender(path: Path, command: str, study: dict | None = None) -> dict:
    """Load a saved report, recompute its comparisons, checks and plots from its runs (no
    training). ``study``: the report's study as loaded now, whose ``plots`` replace the saved
    ones (the study's name and rows must be the report's)."""
    import json

    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
        if study is not None:
            _take_plots(report, study, path)
        if report.get("kind") == "sweep":
            for s in report["settings"]:
                evaluate_report(s["report"])
            report["pooled"] = pooled(report["settings"], report["study"]["pooled"])
        else:
            evaluate_report(report)
        report["stem"]  # noqa: B018 - the file name of the rendered report comes from it
    except ConfigError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:  # JSON, UTF-8
        raise ConfigError(
            f"{path} is not a report written by `spikequant study`: {exc!r}"
        ) from None
    report["rendered_by"] = command
    return report


def _take_plots(report: dict, study: dict, path: Path) -> None:
    saved = report["study"]
    if saved["name"] != study["name"] or list(saved["rows"]) != list(study["rows"]):
        raise ConfigError(
            f"{path} is a report of study {saved['name']!r} (rows {', '.join(saved['rows'])}), "
            f"not of {study['name']!r} (rows {', '.join(study['rows'])})"
        )
    ran = {a["kind"] for a in saved.get("analyses", [])}
    for plot in study["plots"]:
        if plot["analysis"] and plot["analysis"] not in ran:
            raise ConfigError(f"{path} holds no {plot['analysis']} analysis to plot")
    saved["plots"] = study["plots"]
    for setting in report.get("settings", []):
        setting["report"]["study"]["plots"] = study["plots"]
