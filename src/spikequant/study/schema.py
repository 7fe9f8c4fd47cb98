"""The study file schema: strict, so that a misspelt key is an error, never a silent default.

A study file (YAML, ``src/spikequant/studies/NAME.yaml``) declares rows (a recipe + overrides
each), the seeds every row is trained for, optional stages (a row initialised from another row's
run of the same seed, ``init_from``), the fields summarised over seeds, paired comparisons between
rows and checks on them, analyses, plots, and named settings (override sets; ``--setting``).
``docs/studies.md`` documents every key. :func:`validate_study` returns the study with every
default filled in.
"""

from __future__ import annotations

import difflib
import operator
import re
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError

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


def _where(path: str) -> str:
    return path or "study"


def _mapping(value: Any, path: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{_where(path)} must be a mapping, got {value!r}")
    return value


def _hint(value: Any, known, listing: str) -> str:
    """``; did you mean 'closest'?``, else ``; <listing>: every known name``."""
    close = difflib.get_close_matches(str(value), list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; {listing}: {', '.join(known)}"


def _keys(value: Any, path: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
    """Check a mapping's keys: an unknown one names its full path and the closest valid key."""
    value = _mapping(value, path)
    for key in value:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            raise ConfigError(f"study: unknown key {where!r}{_hint(key, allowed, 'valid keys')}")
    for key in required:
        if key not in value:
            raise ConfigError(f"study: {_where(path)} is missing the required key {key!r}")
    return value


def _str(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"study: {path} must be a non-empty string, got {value!r}")
    return value


def _name(value: Any, path: str) -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise ConfigError(
            f"study: {path} must be a plain name (letters, digits, _ . -), got {value!r}"
        )
    return value


def _number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"study: {path} must be a number, got {value!r}")
    return float(value)


def _overrides(value: Any, path: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and "=" in v for v in value):
        raise ConfigError(f"study: {path} must be a list of 'key.sub=value' strings, got {value!r}")
    return list(value)


def _each(values: Any, path: str, check: Callable[..., Any], *args: Any) -> list:
    """``check(item, 'path[i]', *args)`` for every item of an optional list."""
    return [check(item, f"{path}[{i}]", *args) for i, item in enumerate(values or [])]


def _known(value: Any, path: str, known: dict | tuple, what: str) -> str:
    if value not in known:
        raise ConfigError(
            f"study: {path} names unknown {what} {value!r}{_hint(value, known, 'known')}"
        )
    return value


def seeds_list(value: Any, path: str = "seeds") -> list[int]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)
        or len(set(value)) != len(value)
    ):
        raise ConfigError(f"study: {path} must be a list of distinct non-negative integers")
    return list(value)


def _init_from(value: Any, path: str) -> dict | None:
    if value is None:
        return None
    v = _keys(value, path, ("row", "key"), ("row", "key"))
    return {"row": _name(v["row"], f"{path}.row"), "key": _str(v["key"], f"{path}.key")}


def _row(value: Any, path: str, name: str) -> dict:
    v = _keys(value, path, ("recipe", "label", "overrides", "init_from"), ("recipe",))
    return {
        "recipe": _str(v["recipe"], f"{path}.recipe"),
        "label": _str(v.get("label", name), f"{path}.label"),
        "overrides": _overrides(v.get("overrides"), f"{path}.overrides"),
        "init_from": _init_from(v.get("init_from"), f"{path}.init_from"),
    }


def _field(value: Any, path: str) -> dict:
    if isinstance(value, str):
        value = {"field": value}
    v = _keys(value, path, ("field", "label", "scale", "format"), ("field",))
    field = _str(v["field"], f"{path}.field")
    fmt = _str(v.get("format", ".4g"), f"{path}.format")
    try:
        format(1.0, fmt)
    except ValueError:
        raise ConfigError(f"study: {path}.format {fmt!r} is not a Python number format") from None
    return {
        "field": field,
        "label": _str(v.get("label", field), f"{path}.label"),
        "scale": _number(v.get("scale", 1), f"{path}.scale"),
        "format": fmt,
    }


def _comparison(value: Any, path: str, rows: dict) -> dict:
    v = _keys(
        value, path, ("name", "label", "row", "base", "field", "scale", "op", "format"),
        ("name", "row", "base", "field"),
    )  # fmt: skip
    base = v["base"]
    if not isinstance(base, list):
        base = _known(base, f"{path}.base", rows, "row")
    elif base:
        base = _each(base, f"{path}.base", _known, rows, "row")
    else:
        raise ConfigError(f"study: {path}.base must be a non-empty list of names, got {base!r}")
    op = _known(v.get("op", "difference"), f"{path}.op", OPS, "op")
    name = _name(v["name"], f"{path}.name")
    return {
        "name": name,
        "label": _str(v.get("label", name), f"{path}.label"),
        "row": _known(v["row"], f"{path}.row", rows, "row"),
        "base": base,
        "field": _str(v["field"], f"{path}.field"),
        "scale": _number(v.get("scale", 1), f"{path}.scale"),
        "op": op,
        "format": _str(v.get("format", ".2f"), f"{path}.format"),
    }


def _check(value: Any, path: str, comparisons: dict) -> dict:
    v = _keys(
        value, path, ("name", "label", "comparison", "resolved", *LIMITS), ("name", "comparison")
    )
    limits = [k for k in LIMITS if k in v]
    if len(limits) != 1:
        raise ConfigError(f"study: {path} needs exactly one of {', '.join(LIMITS)}")
    resolved = v.get("resolved", False)
    if not isinstance(resolved, bool):
        raise ConfigError(f"study: {path}.resolved must be true or false, got {resolved!r}")
    name = _name(v["name"], f"{path}.name")
    return {
        "name": name,
        "label": _str(v.get("label", name), f"{path}.label"),
        "comparison": _known(v["comparison"], f"{path}.comparison", comparisons, "comparison"),
        "limit": limits[0],
        "value": _number(v[limits[0]], f"{path}.{limits[0]}"),
        "resolved": resolved,
    }


def _clips(value: Any, path: str) -> list[float]:
    if (
        not isinstance(value, list)
        or not value
        or any(isinstance(c, bool) or not isinstance(c, (int, float)) or c > 0 for c in value)
        or len(set(value)) != len(value)
    ):
        raise ConfigError(f"study: {path} must be a list of distinct numbers <= 0, got {value!r}")
    return [float(c) for c in value]


def _analysis(value: Any, path: str, rows: dict) -> dict:
    from .plugins import ANALYSES

    v = _keys(value, path, ("kind", "row", "clips"), ("kind", "row"))
    spec = {
        "kind": _known(v["kind"], f"{path}.kind", ANALYSES, "analysis"),
        "row": _known(v["row"], f"{path}.row", rows, "row"),
    }
    if "clips" in v:  # the clipping boundaries c of spquant-clipping (its only option)
        spec["clips"] = _clips(v["clips"], f"{path}.clips")
    return spec


def _row_list(value: Any, path: str, rows: dict) -> list[str]:
    if not isinstance(value, list) or not value or len(set(map(str, value))) != len(value):
        raise ConfigError(f"study: {path} must be a non-empty list of distinct rows, got {value!r}")
    return _each(value, path, _known, rows, "row")


def _plot_x(value: Any, path: str, rows: dict) -> dict:
    """``x``: a row field (its mean over seeds per row) or ``{values: {ROW: number}}``."""
    if isinstance(value, str):
        value = {"field": value}
    v = _keys(value, path, ("field", "values", "label"))
    if ("field" in v) == ("values" in v):
        raise ConfigError(f"study: {path} needs exactly one of field, values")
    if "field" in v:
        field = _str(v["field"], f"{path}.field")
        label = _str(v.get("label", field), f"{path}.label")
        return {"field": field, "values": None, "label": label}
    values = _mapping(v["values"], f"{path}.values")
    if not values:
        raise ConfigError(f"study: {path}.values must map at least one row to a number")
    return {
        "field": None,
        "values": {
            _known(row, f"{path}.values", rows, "row"): _number(x, f"{path}.values.{row}")
            for row, x in values.items()
        },
        "label": _str(v.get("label", "x"), f"{path}.label"),
    }


def _plot(value: Any, path: str, rows: dict, analyses: list[dict]) -> dict:
    """A plot of the report: rows' values (``y`` against ``x``, or one bar per row), or the
    series of every analysis of one kind (``analysis``)."""
    v = _keys(
        value, path, ("name", "title", "kind", "x", "y", "rows", "marks", "label", "analysis"),
        ("name", "title"),
    )  # fmt: skip
    kind = _known(v.get("kind", "line"), f"{path}.kind", PLOT_KINDS, "plot kind")
    plot = {"name": _name(v["name"], f"{path}.name"), "title": _str(v["title"], f"{path}.title")}
    if "analysis" in v:
        given = [k for k in ("x", "y", "rows", "marks", "label") if k in v]
        if given or kind != "line":
            raise ConfigError(
                f"study: {path} plots an analysis, whose series give x and y: drop "
                f"{', '.join(given) or 'kind'}"
            )
        ran = [a["kind"] for a in analyses]
        analysis = _known(v["analysis"], f"{path}.analysis", tuple(ran), "analysis of the study")
        return {**plot, "kind": kind, "analysis": analysis, "label": None, "x": None,
                "y": None, "rows": [], "marks": []}  # fmt: skip
    if "y" not in v:
        raise ConfigError(f"study: {path} is missing the required key 'y' (or 'analysis')")
    if kind == "bar" and "x" in v:
        raise ConfigError(f"study: {path}.x: a bar plot has one bar per row (drop x)")
    if kind == "line" and "x" not in v:
        raise ConfigError(f"study: {path} is missing the required key 'x' (a line plot)")
    x = _plot_x(v["x"], f"{path}.x", rows) if kind == "line" else None
    marks = _row_list(v["marks"], f"{path}.marks", rows) if "marks" in v else []
    if x is not None and x["values"] is not None:
        if "rows" in v:
            raise ConfigError(f"study: {path}.rows: the rows are those of {path}.x.values")
        plotted = list(x["values"])
    elif "rows" in v:
        plotted = _row_list(v["rows"], f"{path}.rows", rows)
    else:
        plotted = [r for r in rows if r not in marks]
    both = [r for r in marks if r in plotted]
    if both:
        raise ConfigError(f"study: {path}.marks: {', '.join(both)} also plotted as points")
    y = _field(v["y"], f"{path}.y")
    return {
        **plot,
        "kind": kind,
        "analysis": None,
        "label": _str(v.get("label", y["label"]), f"{path}.label"),  # of the points' series
        "x": x,
        "y": y,
        "rows": plotted,
        "marks": marks,
    }


def _setting(value: Any, path: str, rows: dict) -> dict:
    v = _keys(value, path, ("description", "overrides", "rows"), ("description",))
    own: dict[str, dict] = {}
    for name, row in _mapping(v.get("rows") or {}, f"{path}.rows").items():
        where = f"{path}.rows.{name}"
        _known(name, where, rows, "row")
        r = _keys(row, where, ("overrides", "init_from"))
        own[name] = {"overrides": _overrides(r.get("overrides"), f"{where}.overrides")}
        if "init_from" in r:  # null detaches the row from its stage (trained from scratch)
            own[name]["init_from"] = _init_from(r["init_from"], f"{where}.init_from")
    return {
        "description": _str(v["description"], f"{path}.description"),
        "overrides": _overrides(v.get("overrides"), f"{path}.overrides"),
        "rows": own,
    }


TOP = (
    "name", "title", "description", "seeds", "overrides", "rows", "summary", "details",
    "collect", "comparisons", "checks", "analyses", "plots", "settings", "setting", "pooled",
    "extends",
)  # fmt: skip


def validate_study(raw: Any, name: str) -> dict:
    """The study with defaults filled; :class:`ConfigError` naming the key path on any problem."""
    from .plugins import COLLECTORS

    v = _keys(raw, "", TOP, ("title", "seeds", "rows", "summary"))
    rows_raw = _mapping(v["rows"], "rows")
    if not rows_raw:
        raise ConfigError("study: rows must name at least one row")
    rows = {_name(k, f"rows.{k}"): _row(r, f"rows.{k}", k) for k, r in rows_raw.items()}
    order = list(rows)  # a stage must come after the row it starts from (no cycles)
    for key, row in rows.items():
        if row["init_from"]:
            start = _known(row["init_from"]["row"], f"rows.{key}.init_from.row", rows, "row")
            if order.index(start) >= order.index(key):
                raise ConfigError(f"study: rows.{key}.init_from must name an earlier row")
    if not isinstance(v["summary"], list) or not v["summary"]:
        raise ConfigError("study: summary must be a non-empty list of fields")
    comparisons = {
        c["name"]: c for c in _each(v.get("comparisons"), "comparisons", _comparison, rows)
    }
    settings = {
        _name(k, f"settings.{k}"): _setting(s, f"settings.{k}", rows)
        for k, s in _mapping(v.get("settings") or {}, "settings").items()
    }
    analyses = _each(v.get("analyses"), "analyses", _analysis, rows)
    plots = _each(v.get("plots"), "plots", _plot, rows, analyses)
    names = [p["name"] for p in plots]
    if len(set(names)) != len(names):
        raise ConfigError(f"study: plots must have distinct names, got {names}")
    setting = v.get("setting")
    if setting is not None:
        _known(setting, "setting", settings, "setting")
    return {
        "name": _name(v.get("name", name), "name"),
        "title": _str(v["title"], "title"),
        "description": _str(v["description"], "description").strip() if "description" in v else "",
        "seeds": seeds_list(v["seeds"]),
        "overrides": _overrides(v.get("overrides"), "overrides"),
        "rows": rows,
        "summary": _each(v["summary"], "summary", _field),
        "details": _each(v.get("details"), "details", _str),
        "collect": _each(v.get("collect"), "collect", _known, COLLECTORS, "collector"),
        "comparisons": list(comparisons.values()),
        "checks": _each(v.get("checks"), "checks", _check, comparisons),
        "analyses": analyses,
        "plots": plots,
        "settings": settings,
        "setting": setting,
        "pooled": _each(v.get("pooled"), "pooled", _known, comparisons, "comparison"),
    }
