"""Contract of every registered training method (parametrised over list_methods())."""

import dataclasses

import pytest

from spikequant.config import list_recipes, load_recipe
from spikequant.errors import ConfigError
from spikequant.methods import Method, get_method, list_methods
from spikequant.train.recipe import validate_recipe


def test_the_four_methods_are_registered():
    assert {"direct", "spquant", "qat", "ttfs"} <= set(list_methods())


@pytest.mark.parametrize("name", list_methods())
def test_method_contract(name):
    cls = get_method(name)
    assert issubclass(cls, Method) and cls.name == name
    options = cls.Options()  # every option has a default
    assert dataclasses.is_dataclass(options)
    with pytest.raises(dataclasses.FrozenInstanceError):
        for field in dataclasses.fields(options):
            setattr(options, field.name, None)
        raise dataclasses.FrozenInstanceError  # a method without options is trivially frozen
    used = [n for n in list_recipes() if load_recipe(n)["method"]["name"] == name]
    assert used, f"no bundled recipe uses method {name}"
    cfg = load_recipe(used[0])
    assert validate_recipe(cfg) == cfg  # validation is idempotent
    with pytest.raises(ConfigError, match=r"unknown key method\.bogus"):
        validate_recipe({**cfg, "method": {**cfg["method"], "bogus": 1}})


def test_unknown_method_names_the_closest():
    with pytest.raises(ConfigError, match="did you mean spquant"):
        validate_recipe(
            {"data": {"name": "mnist5k"}, "model": {"name": "mlp"}, "method": {"name": "spqant"}}
        )
