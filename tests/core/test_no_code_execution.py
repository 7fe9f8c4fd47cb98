"""Nothing spikequant loads can run code: no unpickling (except CIFAR's restricted unpickler,
which admits numpy arrays and plain values only), yaml.safe_load only, no eval/exec, no shell."""

import ast
from pathlib import Path

import pytest

import spikequant
from spikequant.config import load_recipe
from spikequant.errors import ConfigError
from spikequant.study import load_study

SOURCE = Path(spikequant.__file__).parent
UNSAFE_ATTRIBUTES = {
    ("torch", "load"),
    ("pickle", "load"),
    ("pickle", "loads"),
    ("yaml", "load"),
    ("yaml", "unsafe_load"),
    ("yaml", "full_load"),
    ("marshal", "loads"),
    ("np", "load"),
    ("numpy", "load"),
}


def _calls():
    for path in sorted(SOURCE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                yield path.relative_to(SOURCE), node


def test_no_unsafe_loading_or_code_execution_in_the_source():
    found = []
    for path, call in _calls():
        fn = call.func
        where = f"{path}:{call.lineno}"
        if isinstance(fn, ast.Name) and fn.id in ("eval", "exec", "compile", "__import__"):
            found.append(f"{where} {fn.id}()")
        if isinstance(fn, ast.Attribute) and isinstance(fn.value, ast.Name):
            if (fn.value.id, fn.attr) in UNSAFE_ATTRIBUTES:
                pickle_off = any(
                    k.arg == "allow_pickle"
                    and isinstance(k.value, ast.Constant)
                    and k.value.value is False
                    for k in call.keywords
                )
                if not (fn.value.id in ("np", "numpy") and pickle_off):
                    found.append(f"{where} {fn.value.id}.{fn.attr}()")
        for keyword in call.keywords:
            if keyword.arg == "shell" and not (
                isinstance(keyword.value, ast.Constant) and keyword.value.value is False
            ):
                found.append(f"{where} shell=...")
    assert not found, found


@pytest.mark.parametrize("load", [load_recipe, load_study])
def test_a_recipe_or_study_with_a_python_object_tag_is_refused(tmp_path, load):
    marker = tmp_path / "ran"
    recipe = tmp_path / "evil.yaml"
    recipe.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(str(recipe))
    assert not marker.exists()
