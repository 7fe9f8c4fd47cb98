"""A tiny staged study end to end on scikit-learn's 8x8 digits: sequential and with --jobs 2
(the same metrics, bit for bit), resumed, re-rendered; and the demo alias."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from spikequant.cli import main
from spikequant.study.runner import cores

# FP SNN -> Quant-SNN fine-tuned from it, two seeds: four runs, two of them waiting for the others
TINY = {
    "title": "tiny staged study",
    "seeds": [0, 1],
    "overrides": [
        "data.name=digits8x8", "data.train_subset=512", "data.test_subset=128",
        "data.batch_size=32", "train.epochs=2", "model.timesteps=2", "optim.lr=0.03",
        "model.kwargs={widths: [4, 8], hidden: 16, input_size: 8}",
    ],
    "rows": {
        "fp": {"recipe": "spquant-mnist-fp"},
        "quant": {"recipe": "spquant-mnist-quant",
                  "init_from": {"row": "fp", "key": "method.init_from"}},
    },
    "summary": [{"field": "test_accuracy", "scale": 100, "format": ".2f"}, "test_loss"],
    "comparisons": [{"name": "drop", "row": "fp", "base": "quant", "field": "test_accuracy",
                     "scale": 100}],
    "checks": [{"name": "quant_close", "comparison": "drop", "at_most": 50}],
}  # fmt: skip
JOBS = 2
# per run: what differs between two runs of the same recipe in different work dirs
VOLATILE = {"train_seconds", "checkpoint"}


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    """The sequential run, at the thread count each of the --jobs 2 workers gets (the thread
    count fixes the order of float sums, so it is part of what makes two runs identical)."""
    root = tmp_path_factory.mktemp("study")
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, cores() // JOBS))
    try:
        code = main(["study", str(root / "tiny.yaml"), "--work-dir", str(root / "seq"),
                     "--no-progress"])  # fmt: skip
    finally:
        torch.set_num_threads(before)
    assert code == 0
    return root, json.loads((root / "seq" / "tiny.json").read_text())


def _stable(run, work_dir):
    """A run's metrics with the work dir taken out of its paths and the wall time left out."""
    metrics = {k: v for k, v in run["metrics"].items() if k not in VOLATILE}
    text = json.dumps(metrics).replace(str(work_dir), "WORK")
    return run["row"], run["seed"], run["threads"], json.loads(text)


def test_a_staged_study_trains_every_run_and_reports(sequential):
    root, report = sequential
    assert [(r["row"], r["seed"]) for r in report["runs"]] == [
        ("fp", 0), ("quant", 0), ("fp", 1), ("quant", 1)
    ]  # fmt: skip
    fp = {r["seed"]: r for r in report["runs"] if r["row"] == "fp"}
    for run in report["runs"]:
        assert run["recipe"]["data"]["name"] == "digits8x8" and run["metrics"]["samples"] == 128
        if run["row"] == "quant":  # started from its own seed's FP SNN
            assert run["recipe"]["method"]["init_from"] == fp[run["seed"]]["dir"]
            assert run["metrics"]["initialised_missing_keys"]
    accuracy = report["summary"]["fp"]["test_accuracy"]
    assert accuracy["mean"] > 0.3  # chance is 0.1
    assert accuracy["values"] == [
        fp[0]["metrics"]["test_accuracy"],
        fp[1]["metrics"]["test_accuracy"],
    ]
    drop = report["comparisons"]["drop"]
    assert drop["seeds"] == 2 and drop["per_seed"] == [
        round(100 * (fp[s]["metrics"]["test_accuracy"] - r["metrics"]["test_accuracy"]), 9)
        for s, r in ((r["seed"], r) for r in report["runs"] if r["row"] == "quant")
    ]
    assert report["checks"]["quant_close"]["pass"] == (drop["mean"] <= 50)
    md = (root / "seq" / "tiny.md").read_text()
    md = re.sub(r"`OMP_NUM_THREADS=\d+ ", "`", md)  # present when the variable is set
    assert md.startswith("# tiny staged study\n\nWritten by `spikequant study ")
    assert "| fp | " in md and "quant_close" in md


def test_jobs_give_the_metrics_of_the_sequential_run(sequential):
    root, report = sequential
    code = main(["study", str(root / "tiny.yaml"), "--work-dir", str(root / "par"),
                 "--jobs", str(JOBS), "--no-progress"])  # fmt: skip
    assert code == 0
    parallel = json.loads((root / "par" / "tiny.json").read_text())
    assert "--jobs 2" in parallel["command"]
    seq = [_stable(r, root / "seq") for r in report["runs"]]
    par = [_stable(r, root / "par") for r in parallel["runs"]]
    assert "WORK/seed0/fp-" in json.dumps(par[1])  # the Quant-SNN's init_from, work dir out
    assert len({m["test_loss"] for _, _, _, m in seq}) == 4  # four different runs
    assert par == seq  # exactly: every metric, every run
    assert parallel["summary"] == report["summary"]


def test_resume_reuses_finished_runs(sequential):
    root, report = sequential
    out = root / "resumed"
    argv = ["study", str(root / "tiny.yaml"), "--work-dir", str(root / "seq"), "--resume",
            "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    again = json.loads((out / "tiny.json").read_text())
    assert all(r["reused"] for r in again["runs"])
    assert [r["metrics"] for r in again["runs"]] == [r["metrics"] for r in report["runs"]]


def test_resume_runs_again_a_run_whose_marker_is_unreadable(sequential, tmp_path):
    root, report = sequential
    work = tmp_path / "work"
    shutil.copytree(root / "seq", work)
    fp = next(r for r in report["runs"] if r["row"] == "fp")
    marker = work / Path(fp["dir"]).relative_to(root / "seq") / "study_run.json"
    marker.write_bytes(b"\xff\xfe not UTF-8")
    argv = ["study", str(root / "tiny.yaml"), "--work-dir", str(work), "--resume",
            "--out", str(tmp_path / "out"), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    again = json.loads((tmp_path / "out" / "tiny.json").read_text())
    reused = [r["reused"] for r in again["runs"]]
    assert reused == [r["dir"] != fp["dir"] for r in report["runs"]] and not all(reused)
    scores = [(r["row"], r["seed"], r["metrics"]["test_accuracy"], r["metrics"]["test_loss"])
              for r in report["runs"]]  # fmt: skip
    assert scores == [(r["row"], r["seed"], r["metrics"]["test_accuracy"],
                       r["metrics"]["test_loss"]) for r in again["runs"]]  # fmt: skip


def test_render_writes_the_input_reports_name_and_nothing_else(sequential, capsys):
    root, report = sequential
    out = root / "rendered"
    out.mkdir()
    other = {"atif_ablation.json": "{}", "atif_ablation.md": "# another study\n"}
    for name, text in other.items():
        (out / name).write_text(text)
    saved = root / "saved-copy.json"
    shutil.copy(root / "seq" / "tiny.json", saved)
    assert main(["study", "--render", str(saved), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([*other, "tiny.json", "tiny.md"])
    for name, text in other.items():
        assert (out / name).read_text() == text
    rendered = json.loads((out / "tiny.json").read_text())
    assert rendered["checks"] == report["checks"] and rendered["command"] == report["command"]
    md = (out / "tiny.md").read_text()
    assert f"Written by `{report['command']}`" in md
    assert f"Re-rendered (no training) by `spikequant study --render {saved}" in md
    # without --out the report is rewritten next to its input, under its own name
    assert main(["study", "--render", str(saved)]) == 0
    assert (root / "tiny.md").is_file()


def test_ray_executor_without_ray_is_one_line(sequential, monkeypatch, capsys):
    import sys

    root, _ = sequential
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    argv = ["study", str(root / "tiny.yaml"), "--work-dir", str(root / "ray"), "--executor", "ray"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "needs the 'ray' package" in err and "\n" not in err


def test_demo_alias_runs_the_demo_study(tmp_path):
    code = main(
        ["demo", "--skip-sqnr", "--seeds", "0", "--work-dir", str(tmp_path / "runs"),
         "--out", str(tmp_path / "out"), "--no-progress",
         "--set", "data.train_subset=128", "--set", "data.test_subset=64",
         "--set", "train.epochs=1", "--set", "model.kwargs.width=4"]
    )  # fmt: skip
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "demo_resnet8.json",
        "demo_resnet8.md",
    ]
    report = json.loads((tmp_path / "out" / "demo_resnet8.json").read_text())
    assert report["setting"]["name"] == "resnet8"
    assert {r["recipe"]["model"]["name"] for r in report["runs"]} >= {"resnet8_kws"}
    assert re.sub(r"^OMP_NUM_THREADS=\d+ ", "", report["command"]).startswith(
        "spikequant study demo --seeds 0 "
    )


def test_ray_executor_schedules_every_run_once_after_its_stage(sequential, monkeypatch):
    """The Ray path with a stand-in module that runs each task when its result is asked for:
    every run is submitted once, a stage only after the run it starts from (all reused here)."""
    import sys
    import types

    from spikequant.study import runner

    submitted = []

    class Ref:
        def __init__(self, task):
            self.task = task

    def remote(num_cpus):
        assert num_cpus >= 1

        def wrap(fn):
            def submit(task):
                submitted.append(task["run_dir"])
                return Ref(task)

            return types.SimpleNamespace(remote=submit)

        return wrap

    fake = types.SimpleNamespace(
        init=lambda **kw: None,
        remote=remote,
        wait=lambda refs, num_returns: (refs[:num_returns], refs[num_returns:]),
        get=lambda ref: runner.execute(ref.task),
    )
    monkeypatch.setitem(sys.modules, "ray", fake)
    root, report = sequential
    before = torch.get_num_threads()
    try:
        argv = ["study", str(root / "tiny.yaml"), "--work-dir", str(root / "seq"), "--resume",
                "--executor", "ray", "--jobs", "2", "--out", str(root / "ray-out")]  # fmt: skip
        assert main(argv) == 0
    finally:
        torch.set_num_threads(before)
    again = json.loads((root / "ray-out" / "tiny.json").read_text())
    assert sorted(submitted) == sorted(r["dir"] for r in report["runs"])
    fp_dirs = [r["dir"] for r in report["runs"] if r["row"] == "fp"]
    for run in report["runs"]:
        if run["row"] == "quant":
            assert submitted.index(run["dir"]) > submitted.index(
                run["recipe"]["method"]["init_from"]
            )
    assert set(fp_dirs) <= set(submitted[:2])
    assert all(r["reused"] for r in again["runs"])
    assert [r["metrics"] for r in again["runs"]] == [r["metrics"] for r in report["runs"]]


@pytest.mark.ray
def test_a_local_ray_instance_gives_the_metrics_of_the_sequential_run(sequential):
    """The study's runs as Ray tasks on a real local Ray instance (``make test-ray``): the same
    metrics as the sequential run, bit for bit."""
    import ray

    root, report = sequential
    argv = ["study", str(root / "tiny.yaml"), "--work-dir", str(root / "ray-real"),
            "--executor", "ray", "--jobs", str(JOBS), "--no-progress"]  # fmt: skip
    try:
        assert main(argv) == 0
    finally:
        ray.shutdown()
    on_ray = json.loads((root / "ray-real" / "tiny.json").read_text())
    assert "--executor ray" in on_ray["command"]
    seq = [_stable(r, root / "seq") for r in report["runs"]]
    assert [_stable(r, root / "ray-real") for r in on_ray["runs"]] == seq
    assert on_ray["summary"] == report["summary"]
