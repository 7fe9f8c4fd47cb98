"""Plots declared by a study: drawn from the report's rows (or analyses) into a PNG next to the
report, re-drawn by ``--render`` without training, and strict about their keys. Every report here
is a small fake, written as ``spikequant study`` writes one, so nothing trains."""

import json

import pytest
import yaml

from spikequant import ConfigError
from spikequant.cli import main
from spikequant.study import load_study
from spikequant.study.plots import draw_plot

pytest.importorskip("matplotlib", reason="the plots extra: pip install 'spikequant[plots]'")

STUDY = {
    "title": "membrane bits (fake)",
    "seeds": [0, 1],
    "rows": {
        "fp": {"recipe": "spquant-mnist-fp", "label": "FP SNN"},
        "u1": {"recipe": "spquant-mnist-quant", "label": "1 bit"},
        "u4": {"recipe": "spquant-mnist-quant", "label": "4 bits"},
        "u2": {"recipe": "spquant-mnist-quant", "label": "2 bits"},
        "u32": {"recipe": "spquant-mnist-quant", "label": "float32"},
    },
    "summary": [{"field": "test_accuracy", "scale": 100, "format": ".2f"}],
    "plots": [
        {
            "name": "bits",
            "title": "accuracy vs bits",
            "x": {"label": "bits", "values": {"u1": 1, "u4": 4, "u2": 2}},
            "y": {"field": "test_accuracy", "label": "accuracy %", "scale": 100},
            "marks": ["u32", "fp"],
        },
        {"name": "memory", "title": "memory", "kind": "bar", "y": "memory_mb.membrane",
         "rows": ["u1", "u2", "u32"]},
    ],
}  # fmt: skip
ACCURACY = {"fp": (0.97, 0.95), "u1": (0.90, 0.92), "u2": (0.93, 0.94), "u4": (0.95, 0.95),
            "u32": (0.96, 0.94)}  # fmt: skip
MEMORY = {"fp": 0.5, "u1": 0.01, "u2": 0.02, "u4": 0.04, "u32": 0.32}


def _study_file(tmp_path, study=STUDY, name="bits"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def _fake_report(tmp_path, study_path, analyses=None):
    """A report as ``spikequant study`` saves it, with made-up metrics (the writer reads
    nothing else)."""
    study = load_study(str(study_path))
    runs = [
        {"row": row, "seed": seed, "dir": f"runs/seed{seed}/{row}", "overrides": [],
         "init_from_row": None, "recipe": {},
         "metrics": {"test_accuracy": ACCURACY[row][seed],
                     "memory_mb": {"membrane": MEMORY[row]}},
         "extras": {}, "reused": False, "threads": 1}
        for seed in study["seeds"] for row in study["rows"]
    ]  # fmt: skip
    report = {
        "kind": "study", "command": "spikequant study fake", "stem": "fake", "study": study,
        "setting": None, "seeds": study["seeds"], "overrides": [], "from_scratch": [],
        "work_dir": "runs", "runs": runs, "analyses": analyses or {},
    }  # fmt: skip
    path = tmp_path / "saved" / "fake.json"
    path.parent.mkdir()
    path.write_text(json.dumps(report))
    return path


def _mean(values):
    return sum(values) / len(values)


def test_render_draws_each_plot_into_a_png_from_the_report_rows(tmp_path, capsys):
    from matplotlib.image import imread

    saved = _fake_report(tmp_path, _study_file(tmp_path))
    out = tmp_path / "out"
    assert main(["study", "--render", str(saved), "--out", str(out)]) == 0
    assert "fake_bits.png" in capsys.readouterr().out
    report = json.loads((out / "fake.json").read_text())
    markdown = (out / "fake.md").read_text()
    for name in ("bits", "memory"):
        image = imread(out / f"fake_{name}.png")  # a PNG matplotlib reads back
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        assert f"]({report['plots'][name]['file']})" in markdown

    # the points are the rows' means over seeds, sorted by x; the marks are lines across
    data = report["plots"]["bits"]
    (series,) = data["series"]
    assert series["rows"] == ["u1", "u2", "u4"] and series["x"] == [1, 2, 4]
    assert series["y"] == pytest.approx([100 * _mean(ACCURACY[r]) for r in ("u1", "u2", "u4")])
    assert series["yerr"][0] == pytest.approx(100 * 0.02 / 2**0.5)
    assert [(m["row"], m["y"]) for m in data["marks"]] == [
        ("u32", pytest.approx(95.0)), ("fp", pytest.approx(96.0))
    ]  # fmt: skip

    # and the figure holds exactly those numbers (read back from the drawn artists)
    _, drawn = draw_plot(data)
    assert drawn["series"][0]["x"] == [1.0, 2.0, 4.0]
    assert drawn["series"][0]["y"] == pytest.approx(series["y"])
    assert [m["y"] for m in drawn["marks"]] == pytest.approx([95.0, 96.0])
    _, bars = draw_plot(report["plots"]["memory"])
    assert bars["series"][0]["x"] == ["1 bit", "2 bits", "float32"]
    assert bars["series"][0]["y"] == pytest.approx([0.01, 0.02, 0.32])


def test_render_with_the_study_name_adds_the_plots_of_the_study_file(tmp_path, capsys):
    without = {k: v for k, v in STUDY.items() if k != "plots"}
    saved = _fake_report(tmp_path, _study_file(tmp_path, without, "fake"))
    assert main(["study", "--render", str(saved), "--out", str(tmp_path / "a")]) == 0
    assert not list((tmp_path / "a").glob("*.png"))
    study = _study_file(tmp_path / "saved", STUDY, "fake")  # same name and rows, with plots
    assert main(["study", str(study), "--render", str(saved)]) == 0
    report = json.loads(saved.read_text())
    assert set(report["plots"]) == {"bits", "memory"}
    assert report["rendered_by"] == f"spikequant study {study} --render {saved}"
    assert (saved.parent / "fake_bits.png").is_file()
    # without FILE.json: the report of the study's name in --out
    (saved.parent / "fake_bits.png").unlink()
    assert main(["study", str(study), "--render", "--out", str(saved.parent)]) == 0
    assert (saved.parent / "fake_bits.png").is_file()
    # a study file without plots removes them
    _study_file(tmp_path / "saved", without, "fake")
    assert main(["study", str(study), "--render", str(saved)]) == 0
    assert "plots" not in json.loads(saved.read_text())
    assert "](fake_bits.png)" not in saved.with_suffix(".md").read_text()
    # a study file of other rows is refused
    other = dict(STUDY, rows={k: v for k, v in STUDY["rows"].items() if k != "fp"}, plots=[])
    capsys.readouterr()
    assert main(["study", str(_study_file(tmp_path, other, "fake")), "--render", str(saved)]) == 2
    assert "not of 'fake' (rows u1, u4, u2, u32)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("plot", "message"),
    [
        ({"tite": "t"}, "unknown key plots[0].tite (did you mean plots[0].title?)"),
        ({"kind": "pie"}, "plots[0].kind must be one of line, bar, got 'pie'"),
        ({"marks": ["u9"]}, "unknown row 'u9'"),
        ({"marks": ["u1"]}, "u1 also plotted as points"),
        ({"x": {"values": {"u1": "one"}}}, "plots[0].x.values.u1 must be int or float"),
        ({"kind": "bar"}, "a bar plot has one bar per row"),
        ({"analysis": "spquant-clipping"}, "plots an analysis"),
    ],
)
def test_a_bad_plot_is_refused_in_one_line(tmp_path, capsys, plot, message):
    study = dict(STUDY, plots=[{**STUDY["plots"][0], **plot}])
    assert main(["study", str(_study_file(tmp_path, study)), "--work-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_plot_names_must_be_distinct(tmp_path):
    with pytest.raises(ConfigError, match="distinct names"):
        load_study(str(_study_file(tmp_path, dict(STUDY, plots=[STUDY["plots"][0]] * 2))))


def test_without_matplotlib_render_says_which_extra_in_one_line(tmp_path, monkeypatch, capsys):
    import sys

    saved = _fake_report(tmp_path, _study_file(tmp_path))
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if not installed
    assert main(["study", "--render", str(saved), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'spikequant[plots]'" in err and "\n" not in err
    assert (tmp_path / "o" / "fake.json").is_file()  # the report is kept; --render draws later


CLIPPING = {
    "r_s": {"net.1": {"u_min": -3.5, "clips": {"-2.0": {"silent_fraction": 0.1, "r_s": 0.0},
                                              "0.0": {"silent_fraction": 0.4, "r_s": 0.25}}}},
    "accuracy_with_clip": {"none": 0.95, "-2.0": 0.95, "0.0": 0.80},
}  # fmt: skip


def test_an_analysis_plot_draws_accuracy_against_the_clipping_boundary(tmp_path):
    study = dict(
        STUDY,
        analyses=[{"kind": "spquant-clipping", "row": "fp", "clips": [-2, 0]},
                  {"kind": "spquant-clipping", "row": "u32", "clips": [-2, 0]}],
        plots=[{"name": "clip", "title": "clipping", "analysis": "spquant-clipping"}],
    )  # fmt: skip
    analyses = {"spquant-clipping:fp": CLIPPING, "spquant-clipping:u32": CLIPPING}
    saved = _fake_report(tmp_path, _study_file(tmp_path, study), analyses)
    assert main(["study", "--render", str(saved)]) == 0
    report = json.loads(saved.read_text())
    data = report["plots"]["clip"]
    assert [s["label"] for s in data["series"]] == ["FP SNN", "float32"]
    assert data["series"][0]["x"] == [-2.0, 0.0]
    assert data["series"][0]["y"] == pytest.approx([95.0, 80.0])
    assert [m["y"] for m in data["marks"]] == pytest.approx([95.0, 95.0])
    markdown = saved.with_suffix(".md").read_text()
    assert "| 0 | 80.00 | -15.00 | 0.2500 | 0.4000 .. 0.4000 |" in markdown
    assert "| net.1 | -3.50 | 0.0000 (0.1000) | 0.2500 (0.4000) |" in markdown
    assert (saved.parent / "fake_clip.png").is_file()


def test_a_study_runs_its_clipping_analyses_at_their_boundaries_and_plots_them(tmp_path):
    """End to end on the 8x8 digits (a few seconds): two networks, each analysed at c = -1, 0."""
    tiny = ["data.name=digits8x8", "data.train_subset=64", "data.test_subset=32",
            "data.batch_size=32", "model.timesteps=2", "train.epochs=1"]  # fmt: skip
    study = {
        "title": "clipping (tiny)",
        "seeds": [0],
        "overrides": tiny,
        "rows": {
            "cnn": {"recipe": "spquant-mnist-fp", "overrides": [
                "model.kwargs={widths: [4, 8], hidden: 16, input_size: 8}"]},
            "mlp": {"recipe": "spquant-mnist-fp", "overrides": [
                "model.name=mlp", "model.kwargs={hidden: [16], input_size: 8}"]},
        },
        "summary": ["test_accuracy"],
        "analyses": [{"kind": "spquant-clipping", "row": r, "clips": [-1, 0]}
                     for r in ("cnn", "mlp")],
        "plots": [{"name": "clip", "title": "clipping", "analysis": "spquant-clipping"}],
    }  # fmt: skip
    path = _study_file(tmp_path, study, "tiny")
    assert main(["study", str(path), "--work-dir", str(tmp_path / "w"), "--no-progress"]) == 0
    report = json.loads((tmp_path / "w" / "tiny.json").read_text())
    for row in ("cnn", "mlp"):
        result = report["analyses"][f"spquant-clipping:{row}"]
        assert list(result["accuracy_with_clip"]) == ["none", "-1.0", "0.0"]
        for layer in result["r_s"].values():
            assert layer["u_min"] <= 0 and set(layer["clips"]) == {"-1.0", "0.0"}
    series = report["plots"]["clip"]["series"]
    assert [s["x"] for s in series] == [[-1.0, 0.0]] * 2
    assert series[1]["y"][1] == pytest.approx(
        100 * report["analyses"]["spquant-clipping:mlp"]["accuracy_with_clip"]["0.0"]
    )
    assert (tmp_path / "w" / "tiny_clip.png").is_file()


def test_the_clipping_study_analyses_three_different_networks():
    from spikequant.config import load_recipe
    from spikequant.registry import create_model

    study = load_study("spquant-clipping")
    names = set()
    for row, spec in study["rows"].items():
        cfg = load_recipe(spec["recipe"], [*study["overrides"], *spec["overrides"]])
        assert cfg["model"]["neuron_kwargs"]["membrane"] == "fp"  # clipping a float membrane
        names.add(cfg["model"]["name"])
        kwargs = {**cfg["model"].get("kwargs", {}), "input_size": 28, "in_channels": 1}
        model = create_model(cfg["model"]["name"], neuron="qlif", **kwargs)
        assert any(type(m).__name__ == "QLIF" for m in model.modules()), row
    assert names == {"cnn_digits", "resnet20", "vgg9"}
    assert [a["row"] for a in study["analyses"]] == list(study["rows"])
    assert study["plots"][0]["analysis"] == "spquant-clipping"
