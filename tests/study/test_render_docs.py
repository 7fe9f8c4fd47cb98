"""The study reports in docs/results re-render (no training) to the very bytes committed: the
report writer keeps its output while its code changes."""

import json
from pathlib import Path

import pytest

from spikequant.study import rerender, write_report

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"
REPORTS = sorted(
    p.name for p in RESULTS.glob("*.json") if json.loads(p.read_text()).get("kind") == "study"
)


def test_docs_hold_study_reports():
    assert {"atif_ablation.json", "spquant_study.json"} <= set(REPORTS)


@pytest.mark.parametrize("name", REPORTS)
def test_a_saved_report_rerenders_to_its_committed_files(name, tmp_path):
    saved = RESULTS / name
    command = json.loads(saved.read_text()).get("rendered_by")  # absent: written by a run
    report = rerender(saved, command)
    if command is None:
        del report["rendered_by"]
    json_path, md_path = write_report(report, tmp_path)
    assert md_path.read_text() == saved.with_suffix(".md").read_text()
    assert json_path.read_bytes() == saved.read_bytes()
