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


def test_made_directly_the_fields_are_checked_too():
    with pytest.raises(OptionError, match="rate must be < 1, got 2") as err:
        Inner(rate=2)
    assert err.value.path == "rate" and isinstance(err.value, ConfigError)
    assert Outer(name="x", limit=None).limit is None
