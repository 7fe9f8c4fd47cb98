"""Recipes: YAML files with command-line overrides (``--set optim.lr=0.01``).

A recipe is a mapping in the one schema of :mod:`spikequant.train.recipe`; its ``method``
section selects the training method (``direct``, ``spquant``, ``qat``, ``ttfs``, ...;
:mod:`spikequant.methods`). :func:`run_recipe` runs any of them through the one pipeline.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

# Shipped inside the package (so an installed wheel has them); `recipes/` at the repository root
# is a symlink to this folder.
RECIPE_DIR = Path(__file__).resolve().parent / "recipes"


def find_yaml(name_or_path: str, folder: Path, what: str) -> Path:
    """A path, or the name of a YAML file bundled in ``folder`` (``NAME`` or ``NAME.yaml``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    for candidate in (folder / name_or_path, folder / f"{name_or_path}.yaml"):
        if candidate.is_file():
            return candidate
    known = ", ".join(list_yaml(folder)) or "(none)"
    raise ConfigError(f"{what} {name_or_path!r} not found (a YAML path or one of: {known})")


def list_yaml(folder: Path) -> list[str]:
    """Names of the YAML files bundled in ``folder``, sorted."""
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def read_yaml(path: Path, what: str) -> dict:
    """The mapping a YAML file holds (safe loader: no tags that build Python objects); a
    :class:`ConfigError` naming what is wrong with the file otherwise."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigError(f"{what} {path} is not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must be a mapping at the top level")
    return data


def find_recipe(name_or_path: str) -> Path:
    """A path, or the name of a bundled recipe (``mnist-atif-u``: ``recipes/mnist-atif-u.yaml``)."""
    return find_yaml(name_or_path, RECIPE_DIR, "recipe")


def list_recipes() -> list[str]:
    """Names of the bundled recipes, sorted."""
    return list_yaml(RECIPE_DIR)


_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def parse_value(text: str) -> Any:
    """Parse an override value with YAML rules (``0.01`` -> float, ``[1,2]`` -> list); numbers
    in exponent form without a dot (``1e-3``, a string in YAML 1.1) are floats too."""
    stripped = text.strip()
    if _FLOAT.match(stripped) and not re.fullmatch(r"[-+]?\d+", stripped):
        return float(stripped)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` overrides; unknown top-level sections are an error."""
    cfg = copy.deepcopy(cfg)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.subkey=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = cfg
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                if i == 0:
                    raise ConfigError(f"override {key!r}: recipe has no section {part!r}")
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {key!r}: {'.'.join(parts[: i + 1])} is not a section")
            node = child
        if isinstance(node.get(parts[-1]), dict) and not value.strip().startswith("{"):
            raise ConfigError(f"override {key!r}: {key} is a section; set one of its keys")
        node[parts[-1]] = parse_value(value)
    return cfg


def load_recipe(name_or_path: str, overrides: list[str] | None = None) -> dict:
    """Read a recipe, apply ``overrides`` and validate it (defaults filled in)."""
    from .train.recipe import validate_recipe

    path = find_recipe(name_or_path)
    cfg = apply_overrides(read_yaml(path, "recipe"), overrides or [])
    cfg.setdefault("name", path.stem)
    return validate_recipe(cfg)


def run_recipe(cfg: dict, *, out_dir, resume: bool = False, progress: bool = True, **options):
    """Run a loaded recipe (:func:`load_recipe`) into the run folder ``out_dir``; returns its
    final metrics (also written to ``out_dir/metrics.json``). The one entry point for every
    method: commands and studies call this. ``options``: ``overwrite``, ``force``,
    ``stop_after`` of :func:`spikequant.pipeline.run`."""
    from .pipeline import run

    return run(cfg, out_dir=Path(out_dir), resume=resume, progress=progress, **options)
