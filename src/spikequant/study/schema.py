"""The study file schema: strict, so that a misspelt key is an error, never a silent default.

A study file (YAML, ``src/spikequant/studies/NAME.yaml``) declares rows (a recipe + overrides
each), the seeds every row is trained for, optional stages (a row initialised from another row's
run of the same seed, ``init_from``), the fields summarised over seeds, paired comparisons between
rows and checks on them, analyses, plots, and named settings (override sets; ``--setting``).
``docs/studies.md`` documents every key.

Each section is an options dataclass (:mod:`spikequant.options`, like the recipe's sections), so
an unknown key names its path and the closest valid key and a bad value names its field.
:func:`validate_study` adds the checks across sections (the rows, comparisons and analyses a
section names must exist) and returns the study as plain data with every default filled in.
"""

from __future__ import annotations

import dataclasses
import difflib
import operator
import re
from typing import Any

from ..errors import ConfigError
from ..options import Options, build, option

NAME = re.compile(r"[A-Za-z0-9_.-]+")
# Comparisons: ``difference`` is ``scale * (row - base)`` per seed, ``ratio`` is ``row / base``.
OPS = ("difference", "ratio")
PLOT_KINDS = ("line", "bar")
# A check passes when ``LIMITS[limit](mean, value)``.
LIMITS = {
    "at_most": operator.le,
    "at_least": operator.ge,
    "greater_than": operator.gt,
    "less_than": operator.lt,
}


def _plain_name(value: str) -> str | None:
    return None if NAME.fullmatch(value) else "must be a plain name (letters, digits, _ . -)"


def _not_empty(value: str) -> str | None:
    return None if value else "must not be empty"


def _override(value: str) -> str | None:
    return None if "=" in value else "must look like key.sub=value"


def _number_format(value: str) -> str | None:
    try:
        format(1.0, value)
    except ValueError:
        return "is not a Python number format"
    return None


section = dataclasses.dataclass(kw_only=True)


@section
class InitFrom(Options):
    """A stage: start from this seed's run of ``row``, whose folder is set at recipe key ``key``."""

    row: str = option(check=_plain_name)
    key: str = option(check=_not_empty)


@section
class Row(Options):
    recipe: str = option(check=_not_empty)
    label: str | None = None  # default: the row's name
    overrides: list[str] = option(factory=list, check=_override)
    init_from: InitFrom | None = None


@section
class Field(Options):
    """A run metric (``a.b``: a nested one), shown as ``format(scale * value)``."""

    field: str = option(check=_not_empty)
    label: str | None = None
    scale: float = 1.0
    format: str = option(".4g", check=_number_format)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.label, self.scale = self.label or self.field, float(self.scale)


@section
class Comparison(Options):
    name: str = option(check=_plain_name)
    label: str | None = None
    row: str
    base: str | list[str]  # a list: the one of those rows with the highest mean
    field: str = option(check=_not_empty)
    scale: float = 1.0
    op: str = option("difference", choices=OPS)
    format: str = option(".2f", check=_number_format)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.label, self.scale = self.label or self.name, float(self.scale)


@section
class Check(Options):
    """Exactly one limit on a comparison's mean (``resolved``: its 95 % interval excludes 0)."""

    name: str = option(check=_plain_name)
    label: str | None = None
    comparison: str
    at_most: float | None = None
    at_least: float | None = None
    greater_than: float | None = None
    less_than: float | None = None
    resolved: bool = False


@section
class Analysis(Options):
    kind: str
    row: str
    clips: list[float] | None = option(None, high=0)  # spquant-clipping's boundaries c


@section
class PlotX(Options):
    """A line plot's x: a row field (its mean over seeds) or one number per row."""

    field: str | None = option(None, check=_not_empty)
    values: dict[str, float] | None = None
    label: str | None = None


@section
class Plot(Options):
    """Rows' values (``y`` against ``x``, or one bar per row) or an analysis's series."""

    name: str = option(check=_plain_name)
    title: str = option(check=_not_empty)
    kind: str = option("line", choices=PLOT_KINDS)
    analysis: str | None = None
    label: str | None = None  # of the points' series
    x: PlotX | str | None = None
    y: Field | str | None = None
    rows: list[str] | None = None
    marks: list[str] | None = None  # rows drawn as labelled horizontal lines


@section
class SettingRow(Options):
    overrides: list[str] = option(factory=list, check=_override)
    init_from: InitFrom | None = None  # null: this row is trained from scratch


@section
class Setting(Options):
    description: str = option(check=_not_empty)
    overrides: list[str] = option(factory=list, check=_override)
    rows: dict[str, SettingRow] = option(factory=dict)


@section
class Study(Options):
    name: str | None = option(None, check=_plain_name)
    title: str = option(check=_not_empty)
    description: str = ""
    seeds: list[int] = option(low=0)
    overrides: list[str] = option(factory=list, check=_override)
    rows: dict[str, Row]
    summary: list[Field | str]
    details: list[str] = option(factory=list, check=_not_empty)
    collect: list[str] = option(factory=list)
    comparisons: list[Comparison] = option(factory=list)
    checks: list[Check] = option(factory=list)
    analyses: list[Analysis] = option(factory=list)
    plots: list[Plot] = option(factory=list)
    settings: dict[str, Setting] = option(factory=dict)
    setting: str | None = None
    pooled: list[str] = option(factory=list)


def _known(value: Any, path: str, known, what: str) -> Any:
    """``value`` if it is one of ``known``, else an error naming the closest one."""
    if value not in known:
        close = difflib.get_close_matches(str(value), list(known), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"
        raise ConfigError(f"study: {path} names unknown {what} {value!r}; {hint}")
    return value


def _distinct(values: list, path: str, what: str) -> list:
    if not values or len(set(map(str, values))) != len(values):
        raise ConfigError(
            f"study: {path} must be a non-empty list of distinct {what}, got {values}"
        )
    return values


def _rows_named(values: list, path: str, rows: dict) -> list[str]:
    return [_known(r, path, rows, "row") for r in _distinct(values, path, "rows")]


def _field(value: Field | str, path: str) -> dict:
    if isinstance(value, str):
        value = build(Field, {"field": value}, path, "study")
    return dataclasses.asdict(value)


def _check(c: Check, path: str, comparisons: dict) -> dict:
    limits = [k for k in LIMITS if getattr(c, k) is not None]
    if len(limits) != 1:
        raise ConfigError(f"study: {path} needs exactly one of {', '.join(LIMITS)}")
    return {
        "name": c.name,
        "label": c.label or c.name,
        "comparison": _known(c.comparison, f"{path}.comparison", comparisons, "comparison"),
        "limit": limits[0],
        "value": float(getattr(c, limits[0])),
        "resolved": c.resolved,
    }


def _plot(p: Plot, path: str, rows: dict, analyses: tuple[str, ...]) -> dict:
    plot = {"name": p.name, "title": p.title, "kind": p.kind}
    if p.analysis is not None:
        given = [k for k in ("x", "y", "rows", "marks", "label") if getattr(p, k) is not None]
        if given or p.kind != "line":
            raise ConfigError(
                f"study: {path} plots an analysis, whose series give x and y: drop "
                f"{', '.join(given) or 'kind'}"
            )
        analysis = _known(p.analysis, f"{path}.analysis", analyses, "analysis of the study")
        return {**plot, "analysis": analysis, "label": None, "x": None, "y": None, "rows": [],
                "marks": []}  # fmt: skip
    if p.y is None:
        raise ConfigError(f"study: {path} is missing the required key 'y' (or 'analysis')")
    if p.kind == "bar" and p.x is not None:
        raise ConfigError(f"study: {path}.x: a bar plot has one bar per row (drop x)")
    if p.kind == "line" and p.x is None:
        raise ConfigError(f"study: {path} is missing the required key 'x' (a line plot)")
    x = None
    if p.kind == "line":
        x = p.x if isinstance(p.x, PlotX) else build(PlotX, {"field": p.x}, f"{path}.x", "study")
        if (x.field is None) == (x.values is None):
            raise ConfigError(f"study: {path}.x needs exactly one of field, values")
        if x.values is not None and not x.values:
            raise ConfigError(f"study: {path}.x.values must map at least one row to a number")
        for row in x.values or ():
            _known(row, f"{path}.x.values", rows, "row")
        values = None if x.values is None else {r: float(v) for r, v in x.values.items()}
        x = {"field": x.field, "values": values, "label": x.label or x.field or "x"}
    marks = [] if p.marks is None else _rows_named(p.marks, f"{path}.marks", rows)
    if x is not None and x["values"] is not None:
        if p.rows is not None:
            raise ConfigError(f"study: {path}.rows: the rows are those of {path}.x.values")
        plotted = list(x["values"])
    elif p.rows is not None:
        plotted = _rows_named(p.rows, f"{path}.rows", rows)
    else:
        plotted = [r for r in rows if r not in marks]
    both = [r for r in marks if r in plotted]
    if both:
        raise ConfigError(f"study: {path}.marks: {', '.join(both)} also plotted as points")
    y = _field(p.y, f"{path}.y")
    return {**plot, "analysis": None, "label": p.label or y["label"], "x": x, "y": y,
            "rows": plotted, "marks": marks}  # fmt: skip


def validate_study(raw: Any, name: str) -> dict:
    """The study with defaults filled; :class:`ConfigError` naming the key path on any problem."""
    from .plugins import ANALYSES, COLLECTORS

    s = build(Study, raw, "", "study")
    if not s.rows:
        raise ConfigError("study: rows must name at least one row")
    rows = {}
    for key, row in s.rows.items():
        if _plain_name(key):
            raise ConfigError(f"study: rows.{key} {_plain_name(key)}")
        if row.init_from:  # a stage comes after the row it starts from (no cycles)
            start = _known(row.init_from.row, f"rows.{key}.init_from.row", s.rows, "row")
            if start not in rows:
                raise ConfigError(f"study: rows.{key}.init_from must name an earlier row")
        rows[key] = {**dataclasses.asdict(row), "label": row.label or key}
    if not s.summary:
        raise ConfigError("study: summary must be a non-empty list of fields")
    comparisons = {}
    for i, c in enumerate(s.comparisons):
        path = f"comparisons[{i}]"
        _known(c.row, f"{path}.row", rows, "row")
        _rows_named([c.base] if isinstance(c.base, str) else c.base, f"{path}.base", rows)
        comparisons[c.name] = dataclasses.asdict(c)
    analyses = []
    for i, a in enumerate(s.analyses):
        _known(a.kind, f"analyses[{i}].kind", ANALYSES, "analysis")
        _known(a.row, f"analyses[{i}].row", rows, "row")
        if a.clips is not None:
            _distinct(a.clips, f"analyses[{i}].clips", "numbers <= 0")
        analyses.append({"kind": a.kind, "row": a.row, **(
            {} if a.clips is None else {"clips": [float(c) for c in a.clips]})})  # fmt: skip
    ran = tuple(a["kind"] for a in analyses)
    plots = [_plot(p, f"plots[{i}]", rows, ran) for i, p in enumerate(s.plots)]
    if len({p["name"] for p in plots}) != len(plots):
        raise ConfigError(
            f"study: plots must have distinct names, got {[p['name'] for p in plots]}"
        )
    settings = {}
    for key, setting in s.settings.items():
        if _plain_name(key):
            raise ConfigError(f"study: settings.{key} {_plain_name(key)}")
        own = {}
        for row, r in setting.rows.items():
            _known(row, f"settings.{key}.rows.{row}", rows, "row")
            own[row] = {"overrides": r.overrides}
            if "init_from" in raw["settings"][key]["rows"][row]:  # given: null detaches the row
                own[row]["init_from"] = r.init_from and dataclasses.asdict(r.init_from)
        settings[key] = {**dataclasses.asdict(setting), "rows": own}
    if s.setting is not None:
        _known(s.setting, "setting", settings, "setting")
    return {
        "name": s.name or name,
        "title": s.title,
        "description": s.description.strip(),
        "seeds": _distinct(s.seeds, "seeds", "non-negative integers"),
        "overrides": s.overrides,
        "rows": rows,
        "summary": [_field(f, f"summary[{i}]") for i, f in enumerate(s.summary)],
        "details": s.details,
        "collect": [_known(c, "collect", COLLECTORS, "collector") for c in s.collect],
        "comparisons": list(comparisons.values()),
        "checks": [_check(c, f"checks[{i}]", comparisons) for i, c in enumerate(s.checks)],
        "analyses": analyses,
        "plots": plots,
        "settings": settings,
        "setting": s.setting,
        "pooled": [_known(p, "pooled", comparisons, "comparison") for p in s.pooled],
    }
