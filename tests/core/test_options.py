"""Options dataclasses (spikequant.options): every field checked when the object is made, with
the key path in every message; the recipe, the training methods and the conversion methods use
them (their own tests check their fields)."""

from __future__ import annotations

import dataclasses

import pytest

from spikequant.errors import ConfigError
from spikequant.options import OptionError, Options, build, option


@dataclasses.dataclass(frozen=True)
class Inner(Options):
    k: int = option(1, low=0)
    rate: float = option(0.5, above=0, below=1)


@dataclasses.dataclass(frozen=True)
class Outer(Options):
    name: str
    inner: Inner = option(factory=Inner)
    modes: list[str] = option(factory=lambda: ["a"], choices=("a", "b"))
    limit: int | None = option(None, high=10)


def _even(value: int) -> str | None:
    return None if value % 2 == 0 else "must be even"


@dataclasses.dataclass(frozen=True)
class Sections(Options):
    """Sections inside lists, mappings and unions; a check and bounds on each list item."""

    items: list[Inner] = option(factory=list)
    by_name: dict[str, Inner] = option(factory=dict)
    either: Inner | str | None = None
    evens: list[int] = option(factory=list, low=0, check=_even)
    weights: dict[str, float] = option(factory=dict)


def test_defaults_fill_and_nested_sections_are_built():
    made = build(Outer, {"name": "x", "inner": {"k": 3}}, "top")
    assert made == Outer(name="x", inner=Inner(k=3, rate=0.5), modes=["a"], limit=None)
    assert dataclasses.asdict(made)["inner"] == {"k": 3, "rate": 0.5}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({}, "cfg: top.name is required"),
        ({"name": "x", "nme": 1}, "cfg: unknown key top.nme (did you mean top.name?)"),
        ({"name": 3}, "cfg: top.name must be str, got 3"),
        ({"name": "x", "inner": {"k": -1}}, "cfg: top.inner.k must be >= 0, got -1"),
        ({"name": "x", "inner": {"k": True}}, "cfg: top.inner.k must be int, got True"),
        ({"name": "x", "inner": {"rate": 1}}, "cfg: top.inner.rate must be < 1, got 1"),
        ({"name": "x", "inner": {"rate": 0.0}}, "cfg: top.inner.rate must be > 0, got 0.0"),
        ({"name": "x", "inner": {"rate": float("nan")}}, "top.inner.rate must be finite"),
        ({"name": "x", "inner": []}, "cfg: top.inner must be a mapping, got []"),
        ({"name": "x", "modes": ["a", "c"]}, "top.modes must hold only a, b, got 'c'"),
        ({"name": "x", "modes": "a"}, "top.modes must be a list, got 'a'"),
        ({"name": "x", "limit": 11}, "top.limit must be <= 10, got 11"),
        ({"name": "x", "limit": "9"}, "top.limit must be int, got '9'"),
    ],
)
def test_every_problem_is_one_config_error_naming_the_key_path(given, message):
    with pytest.raises(ConfigError) as err:
        build(Outer, given, "top", context="cfg")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_sections_in_lists_mappings_and_unions_are_built():
    given = {"items": [{"k": 2}, {}], "by_name": {"a": {"rate": 0.25}}, "either": {"k": 5}}
    made = build(Sections, {**given, "evens": [0, 4], "weights": {"a": 1}}, "s")
    assert made.items == [Inner(k=2), Inner()] and made.by_name == {"a": Inner(rate=0.25)}
    assert made.either == Inner(k=5) and made.evens == [0, 4]
    assert build(Sections, {"either": "plain"}, "s").either == "plain"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"items": [{}, {"kk": 1}]}, "cfg: unknown key s.items[1].kk (did you mean s.items[1].k?)"),
        ({"by_name": {"a": {"k": -2}}}, "cfg: s.by_name.a.k must be >= 0, got -2"),
        ({"by_name": {"a": 3}}, "cfg: s.by_name.a must be a mapping, got 3"),
        ({"either": {"rat": 0.1}}, "cfg: unknown key s.either.rat (did you mean s.either.rate?)"),
        ({"either": 4}, "cfg: s.either must be Inner or str or null, got 4"),
        ({"evens": [2, 3]}, "cfg: s.evens must be even, got 3"),
        ({"evens": [-2]}, "cfg: s.evens must be >= 0, got -2"),
        ({"weights": {"a": "x"}}, "cfg: s.weights.a must be int or float, got 'x'"),
    ],
)  # fmt: skip
def test_problems_inside_nested_sections_name_their_item(given, message):
    with pytest.raises(ConfigError) as err:
        build(Sections, given, "s", context="cfg")
    assert message in str(err.value)


def test_made_directly_the_fields_are_checked_too():
    with pytest.raises(OptionError, match="rate must be < 1, got 2") as err:
        Inner(rate=2)
    assert err.value.path == "rate" and isinstance(err.value, ConfigError)
    assert Outer(name="x", limit=None).limit is None
