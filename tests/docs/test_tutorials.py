"""Every tutorial page (and the quickstart) runs: its ```python blocks are executed in order,
in one fresh namespace, in a temporary working directory, so a renamed function or recipe key
breaks this test rather than the reader's session. The tutorials train on the bundled 8x8 digits
with tiny networks for one or two epochs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
TUTORIALS = sorted((DOCS / "tutorials").glob("*.md"))
PAGES = [*TUTORIALS, DOCS / "quickstart.md"]
PYTHON_BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks(page: Path) -> list[str]:
    return PYTHON_BLOCK.findall(page.read_text(encoding="utf-8"))


def test_every_tutorial_has_code():
    assert len(TUTORIALS) >= 5, TUTORIALS
    for page in TUTORIALS:
        assert python_blocks(page), f"{page.name} has no ```python block"


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_tutorial_runs(page: Path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = DOCS / "results"
    before = {p: p.stat().st_mtime_ns for p in results.rglob("*")}
    namespace: dict = {"__name__": f"tutorial_{page.stem}"}
    for number, block in enumerate(python_blocks(page), 1):
        code = compile(block, f"{page.name} (python block {number})", "exec")
        exec(code, namespace)  # noqa: S102  (the repository's own documentation)
    after = {p: p.stat().st_mtime_ns for p in results.rglob("*")}
    assert after == before, f"{page.name} wrote into docs/results"
