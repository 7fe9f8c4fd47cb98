"""The ATIF paper's VGG-16 CIFAR-10 recipe, unchanged but for its length and batch size, trains end
to end on a CIFAR-10 folder in the standard layout: on an explicit device, and data-parallel in
two processes (torchrun, gloo)."""

import json
import os
import subprocess
import sys

import pytest

from spikequant.cli import main

from .conftest import make_cifar10

pytestmark = pytest.mark.slow

SHORT = ["--set", "train.epochs=1", "--set", "data.batch_size=4", "--set", "data.num_workers=0"]


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    make_cifar10(root, per_batch=2)  # 10 training and 2 test images
    return root


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_vgg16_recipe_on_cpu(cifar_root, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "cifar10-vgg16-atif", "--out", str(out), "--device", "cpu", "--no-progress"]
    code = main([*argv, "--set", f"data.root={cifar_root}", *SHORT, "--json"])
    assert code == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= result["test_accuracy"] <= 1.0
    (row,) = [r for r in _metrics(out) if "train_loss" in r]
    assert row["epoch"] == 1 and row["train_loss"] > 0


def test_vgg16_recipe_in_two_processes(cifar_root, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "spikequant.cli", "train", "cifar10-vgg16-atif"]
    cmd += ["--out", str(out), "--nproc", "2", "--device", "cpu", "--no-progress"]
    cmd += ["--set", f"data.root={cifar_root}", *SHORT]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "latest.json").is_file()
    (row,) = [r for r in _metrics(out) if "train_loss" in r]  # rank 0 alone writes the log
    assert row["epoch"] == 1
