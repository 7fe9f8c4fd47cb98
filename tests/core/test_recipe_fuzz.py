"""Property tests of the recipe loader and of ``--set``: whatever a file or an override holds,
loading gives a validated recipe or a ConfigError, never another exception."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikequant.config import RECIPE_DIR, apply_overrides, list_recipes, load_recipe
from spikequant.errors import ConfigError
from spikequant.methods import list_methods
from spikequant.train.recipe import SCHEMA, TOP_LEVEL, validate_recipe

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KNOWN_KEYS = sorted(
    {
        *TOP_LEVEL,
        *(f.name for section in SCHEMA.values() for f in dataclasses.fields(section)),
        "kind",
        "kwargs",
        "bits",
        "fold_epochs",
        "weight_bits",
        "K",
        "form",
        "crop_padding",
        "num_classes",
        "input_size",
    }
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(list_methods() + ["sgd", "adam", "cosine", "mnist5k", "cnn_digits", "32"]),
)
keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=8), st.integers(-3, 3))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)
BASES = [yaml.safe_load((RECIPE_DIR / f"{name}.yaml").read_text()) for name in list_recipes()]


def load_text(text: str) -> dict | None:
    """``load_recipe`` on a file holding ``text``: the validated recipe, or None on ConfigError."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recipe.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        try:
            cfg = load_recipe(str(path))
        except ConfigError:
            return None
    assert isinstance(cfg, dict) and cfg["method"]["name"] in list_methods()
    return cfg


@FUZZ
@given(st.dictionaries(keys, values, max_size=7))
def test_random_mappings_load_or_raise_config_error(mapping):
    load_text(yaml.safe_dump(mapping))


@FUZZ
@given(
    base=st.sampled_from(BASES),
    section=st.sampled_from([*SCHEMA, "method", "seed", "name"]),
    key=keys,
    value=values,
)
def test_one_random_value_in_a_bundled_recipe_loads_or_raises_config_error(
    base, section, key, value
):
    cfg = dict(base)
    node = cfg.get(section)
    if isinstance(node, dict):
        cfg[section] = {**node, key: value}
    else:
        cfg[section] = value
    load_text(yaml.safe_dump(cfg))


@FUZZ
@given(st.text(max_size=80))
def test_random_text_loads_or_raises_config_error(text):
    load_text(text)


override_keys = st.one_of(
    st.sampled_from(
        [
            "train.epochs",
            "optim.lr",
            "model.kwargs.num_classes",
            "model.timesteps",
            "seed",
            "method.name",
            "method.fold_epochs",
            "data.augment",
            "data.augment.flip",
            "name",
            "train",
            "model.kwargs",
            "schedule.name",
            "train.precision",
        ]
    ),
    st.text(max_size=16),
)


@FUZZ
@given(base=st.sampled_from(BASES), key=override_keys, value=st.text(max_size=24))
def test_random_overrides_validate_or_raise_config_error(base, key, value):
    try:
        cfg = validate_recipe(apply_overrides(base, [f"{key}={value}"]))
    except ConfigError:
        return
    assert isinstance(cfg, dict)
