"""train.loggers: recipe validation, CSV rewritten from history (no duplicate rows after a
resume), tensorboard scalars, and the one-line message when tensorboard is missing."""

import csv
import importlib.util
import json

import pytest

from spikequant.errors import ConfigError, MissingDependencyError
from spikequant.pipeline import run as run_recipe
from spikequant.train import loggers
from spikequant.train.recipe import validate_recipe


def small_recipe(**train):
    return {
        "name": "log",
        "seed": 1,
        "data": {"name": "digits8x8", "batch_size": 32, "train_subset": 96, "test_subset": 64},
        "model": {
            "name": "mlp",
            "timesteps": 2,
            "neuron": "if",
            "kwargs": {"hidden": [16], "input_size": 8},
        },
        "optim": {"name": "adam", "lr": 0.01},
        "train": {"epochs": 3, **train},
    }


def test_loggers_default_and_validation():
    assert validate_recipe(small_recipe())["train"]["loggers"] == ["jsonl"]
    assert validate_recipe(small_recipe(loggers=["jsonl", "csv"]))["train"]["loggers"] == [
        "jsonl",
        "csv",
    ]
    with pytest.raises(ConfigError, match=r"train.loggers must hold only .*got 'wandb'"):
        validate_recipe(small_recipe(loggers=["csv", "wandb"]))
    with pytest.raises(ConfigError, match="twice"):
        validate_recipe(small_recipe(loggers=["csv", "csv"]))
    with pytest.raises(ConfigError, match="train.loggers must be a list"):
        validate_recipe(small_recipe(loggers="csv"))


def test_missing_tensorboard_is_one_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorboard" else real(name, *a),
    )
    with pytest.raises(MissingDependencyError, match="pip install tensorboard") as info:
        validate_recipe(small_recipe(loggers=["tensorboard"]))
    assert "\n" not in str(info.value)


def test_csv_text_fills_missing_keys_and_flattens():
    history = [
        {"epoch": 1, "train_loss": 0.5, "v_th": {"net.1": 1.0}},
        {"epoch": 2, "train_loss": 0.25, "test_accuracy": 0.75, "v_th": {"net.1": 0.5}},
    ]
    rows = list(csv.DictReader(loggers.csv_text(history).splitlines()))
    assert list(rows[0]) == ["epoch", "train_loss", "v_th/net.1", "test_accuracy"]
    assert rows[0]["test_accuracy"] == "" and rows[1]["test_accuracy"] == "0.75"
    assert [r["v_th/net.1"] for r in rows] == ["1.0", "0.5"]


def test_csv_and_tensorboard_survive_resume_without_duplicates(tmp_path):
    # tensorboard is in the dev extra: this test must not skip
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = small_recipe(loggers=["jsonl", "csv", "tensorboard"])
    out = tmp_path / "run"
    assert run_recipe(cfg, out_dir=out, progress=False, stop_after=1) == {"stopped_after_epoch": 1}
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1"]
    run_recipe(cfg, out_dir=out, progress=False, resume=True)
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    jsonl = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    for row, record in zip(rows, jsonl, strict=True):
        assert float(row["train_loss"]) == record["train_loss"]
        assert float(row["test_accuracy"]) == record["test_accuracy"]
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    losses = events.Scalars("train_loss")
    assert [e.step for e in losses] == [1, 2, 3]
    assert [e.value for e in losses] == pytest.approx([r["train_loss"] for r in jsonl], rel=1e-6)


def test_only_jsonl_by_default(tmp_path):
    run_recipe(small_recipe(epochs=1), out_dir=tmp_path, progress=False)
    assert (tmp_path / "metrics.jsonl").is_file()
    assert not (tmp_path / "metrics.csv").exists()
    assert not (tmp_path / "tensorboard").exists()
