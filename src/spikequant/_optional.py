"""The one place optional packages are imported.

The core install (torch, numpy, safetensors, pyyaml, rich, ninja) runs models, neurons, training
and the CLI; datasets, plots and NIR export need extras. Every import of an optional package goes
through :func:`require`, so a missing one is reported as a single line naming the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

# top-level package -> the extra of pyproject.toml that installs it
EXTRAS = {
    "librosa": "audio",
    "soundfile": "audio",
    "tonic": "events",
    "matplotlib": "plots",
    "nir": "nir",
    "nirtorch": "nir",
    "mlxtend": "digits",
    "sklearn": "digits",
    "scipy": "digits",
    "pycocotools": "detection",
}

# import name -> the name pip knows it by, where they differ
_DISTRIBUTIONS = {"sklearn": "scikit-learn"}


def install_hint(package: str) -> str:
    """The pip command that installs ``package`` (through its spikequant extra when it has one)."""
    top = package.split(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        return f"pip install {_DISTRIBUTIONS.get(top, top)}"
    return f"pip install 'spikequant[{extra}]'"


def require(module: str, feature: str) -> ModuleType:
    """Import and return ``module`` (e.g. ``"librosa"`` or ``"tonic.io"``), or raise
    :class:`MissingDependencyError` saying that ``feature`` needs it and how to install it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.split(".")[0]
        # only a missing optional package itself is ours to explain; a broken install is not
        if exc.name is None or exc.name.split(".")[0] != top:
            raise
        raise MissingDependencyError(
            f"{feature} needs the optional package {_DISTRIBUTIONS.get(top, top)}: "
            f"{install_hint(top)}"
        ) from None


def pyplot(feature: str) -> ModuleType:
    """``matplotlib.pyplot`` on the file-only Agg backend (reports never open a window)."""
    require("matplotlib", feature).use("Agg")
    return require("matplotlib.pyplot", feature)
