"""The documentation site builds with ``mkdocs build --strict``: every page in the nav exists,
every link and anchor resolves, and mkdocstrings renders the API reference without a warning
about a broken docstring (a parameter documented but not in the signature, a bad reference)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_mkdocs_build_strict(tmp_path):
    missing = [
        name
        for name in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers")
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        pytest.fail(
            f"documentation tools missing ({', '.join(missing)}): pip install -e '.[docs]'",
            pytrace=False,
        )
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    problems = [line for line in done.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    assert done.returncode == 0, "\n".join(problems) or done.stderr[-3000:]
    home = (site / "index.html").read_text(encoding="utf-8")
    assert 'id="spikequant"' in home and "README" not in home  # the README, put in by the hook
    for page in ("tutorials/atif", "api/pipeline", "reports/conversion", "conversion"):
        assert (site / page / "index.html").is_file(), page
    api = (site / "api" / "pipeline" / "index.html").read_text(encoding="utf-8")
    assert "load_run_model" in api  # mkdocstrings rendered the docstrings, not an empty page
    results = (site / "reports" / "conversion" / "index.html").read_text(encoding="utf-8")
    assert "msat-mnist.png" in results and (site / "results" / "msat-mnist.png").is_file()


def test_public_api_has_docstrings():
    """Every public function and class on the API pages has a docstring (mkdocstrings hides the
    ones without, so a missing docstring would silently drop it from the reference)."""
    griffe = _require("griffe")
    pages = sorted((ROOT / "docs" / "api").glob("*.md"))
    modules = [
        line.removeprefix("::: ").strip()
        for page in pages
        for line in page.read_text(encoding="utf-8").splitlines()
        if line.startswith("::: ")
    ]
    assert "spikequant.pipeline" in modules, modules
    package = griffe.load("spikequant", search_paths=[str(ROOT / "src")], resolve_aliases=True)
    missing = []
    for path in modules:
        module = package if path == "spikequant" else package[path.removeprefix("spikequant.")]
        exported = set(module.exports or [])
        for name, member in module.members.items():
            if name.startswith("_") or (member.is_alias and name not in exported):
                continue
            target = member.final_target if member.is_alias else member
            if target.kind.value in ("function", "class") and not target.docstring:
                missing.append(target.path)
    assert not missing, f"public names without a docstring: {', '.join(sorted(set(missing)))}"


def _require(name: str):
    if importlib.util.find_spec(name) is None:
        pytest.fail(f"{name} missing: pip install -e '.[docs]'", pytrace=False)
    return importlib.import_module(name)
