"""spikequant report: real runs (direct ATIF-u training with learned thresholds, a QAT run with a
conversion sweep) rendered to one HTML page, checked by parsing it and by a headless Chromium
screenshot."""

import base64
import io
import json
import os
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from matplotlib.image import imread

from spikequant.analysis.run_report import PLOTS
from spikequant.cli import main
from spikequant.pipeline import run as run_recipe

DIRECT = {
    "name": "direct-atif",
    "seed": 0,
    "data": {"name": "digits8x8", "batch_size": 32, "train_subset": 128, "test_subset": 64},
    "model": {
        "name": "mlp",
        "timesteps": 2,
        "neuron": "atif_u",
        "kwargs": {"hidden": [16], "input_size": 8},
    },
    "optim": {"name": "adam", "lr": 0.02},
    "train": {"epochs": 3},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    run_recipe(DIRECT, out_dir=root / "direct", progress=False)
    qat = {
        "name": "qat-convert",
        "seed": 0,
        "data": {"name": "digits8x8", "batch_size": 64},
        "model": {"name": "ann_mlp", "kwargs": {"hidden": [16], "in_shape": [1, 8, 8]}},
        "optim": {"name": "sgd", "lr": 0.05},
        "train": {"epochs": 1},
        "method": {
            "name": "qat",
            "convert": {"methods": ["rate"], "timesteps": [1, 2, 4], "out": str(root / "conv")},
        },
    }
    run_recipe(qat, out_dir=root / "qat", progress=False)
    return root


class Page(HTMLParser):
    """Collects the plot figures and their embedded images."""

    def __init__(self):
        super().__init__()
        self.figures: dict[str, list[str]] = {}
        self.current = None
        self.external = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "figure" and "plot" in (attrs.get("class") or "").split():
            self.current = attrs["data-plot"]
            self.figures[self.current] = []
        elif tag == "img":
            if self.current is not None:
                self.figures[self.current].append(attrs.get("src", ""))
            if not attrs.get("src", "").startswith("data:"):
                self.external.append(attrs.get("src"))
        elif tag in ("script", "link") or (
            tag == "img" and "src" in attrs and "://" in attrs["src"]
        ):
            self.external.append(attrs)

    def handle_endtag(self, tag):
        if tag == "figure":
            self.current = None


def decode_png(src: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    return imread(io.BytesIO(base64.b64decode(src[len(prefix) :])), format="png")


def not_blank(image: np.ndarray) -> bool:
    """More than one colour, and a visible share of non-background pixels."""
    flat = image[..., :3].reshape(-1, 3)
    background = np.median(flat, axis=0)
    differing = np.abs(flat - background).max(axis=1) > 0.1
    return differing.mean() > 0.005


def test_report_holds_every_plot_with_data(runs, capsys):
    direct, qat = runs / "direct", runs / "qat"
    assert main(["report", str(direct), str(qat)]) == 0
    out = direct / "report.html"  # default: the first run's folder
    assert f"wrote {out}" in capsys.readouterr().out
    page = Page()
    page.feed(out.read_text())
    assert list(page.figures) == list(PLOTS)
    assert page.external == []  # self-contained
    for name, sources in page.figures.items():
        assert len(sources) == 1, name
        image = decode_png(sources[0])
        assert image.shape[0] > 100 and image.shape[1] > 200, name
        assert not_blank(image), name
    # the data behind the plots: thresholds recorded per epoch, the conversion sweep
    history = json.loads((direct / "metrics.json").read_text())["history"]
    assert [sorted(r["v_th"]) for r in history] == [["net.2"]] * 3
    assert len({r["v_th"]["net.2"] for r in history}) > 1  # learned: it moves
    conversion = json.loads((qat / "metrics.json").read_text())["conversion"]
    assert [r["T"] for r in conversion["rate"]] == [1, 2, 4]


def test_report_of_one_run_lists_what_is_missing_and_honours_out(runs, tmp_path):
    target = tmp_path / "one.html"
    assert main(["report", str(runs / "direct"), "--out", str(target)]) == 0
    page = Page()
    text = target.read_text()
    page.feed(text)
    assert "accuracy_vs_T" not in page.figures and "thresholds" in page.figures
    assert "Accuracy against timesteps T" in text.split('id="not-shown"')[1]


def test_report_reads_a_run_in_progress_from_its_epoch_log(runs, tmp_path):
    running = tmp_path / "running"
    running.mkdir()
    lines = (runs / "direct" / "metrics.jsonl").read_text().splitlines()[:2]
    (running / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["report", str(running)]) == 0
    page = Page()
    text = (running / "report.html").read_text()
    page.feed(text)
    assert list(page.figures) == ["loss", "accuracy", "thresholds"]
    assert "in progress (metrics.jsonl)" in text


def test_report_refuses_a_folder_without_results(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no metrics.json or metrics.jsonl" in err and "\n" not in err


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_report_renders_in_headless_chromium(runs, tmp_path):
    browser = find_chromium()
    if browser is None:
        if os.environ.get("SPIKEQUANT_NO_BROWSER") == "1":
            pytest.skip("SPIKEQUANT_NO_BROWSER=1: no browser rendering check")
        pytest.fail(
            "no chromium found: apt-get install -y chromium (or set SPIKEQUANT_NO_BROWSER=1)"
        )
    page = tmp_path / "report.html"
    assert main(["report", str(runs / "direct"), str(runs / "qat"), "--out", str(page)]) == 0
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1200,2400",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert shot.stat().st_size > 10_000
    image = imread(shot, format="png")
    assert image.shape[:2] == (2400, 1200)
    assert not_blank(image)
    # the embedded plots are drawn: coloured curve pixels appear (the page itself is grey/black)
    rgb = image[..., :3]
    saturation = rgb.max(axis=2) - rgb.min(axis=2)
    assert (saturation > 0.3).mean() > 0.001
