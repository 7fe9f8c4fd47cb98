"""SIGKILL a training run of each method mid-run, resume it: the final weights are bit-identical
to an unbroken run's (all RNG, optimizer and schedule state restored; QAT across its BN fold)."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from spikequant.checkpoint import load_checkpoint
from spikequant.runfolder import resolve

pytestmark = pytest.mark.slow

SMALL = ["data.train_subset=160", "data.test_subset=64"]
CASES = {
    "direct": (
        "mnist-atif-nu",
        [
            *SMALL,
            "train.epochs=3",
            "model.timesteps=2",
            "model.kwargs.widths=[4,8]",
            "model.kwargs.hidden=16",
        ],
    ),
    "spquant": (
        "spquant-mnist-spquant",
        [
            *SMALL,
            "train.epochs=3",
            "model.timesteps=2",
            "model.kwargs.widths=[4,8]",
            "model.kwargs.hidden=16",
        ],
    ),
    "qat": (
        "qat-mnist",
        # augmented, so that the resumed run must also repeat the crop/flip draws
        [*SMALL, "train.epochs=2", "method.fold_epochs=2", "data.augment.crop_padding=2"],
    ),
    "ttfs": (
        "ttfs-fc100",
        [
            "data.train_subset=300",
            "data.test_subset=50",
            "train.epochs=2",
            "method.bits=[32, 4]",
            "model.kwargs.sizes=[784, 16, 10]",
            "data.augment.crop_padding=2",
        ],
    ),
}


def _train(recipe, sets, out, extra=()):
    cmd = [
        sys.executable,
        "-m",
        "spikequant.cli",
        "train",
        recipe,
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]
    for item in sets:
        cmd += ["--set", item]
    return cmd


def total_epochs(run):
    return json.loads((run / "latest.json").read_text())["epoch"]


@pytest.mark.parametrize("method", sorted(CASES))
def test_killed_run_resumes_bit_identically(tmp_path, method):
    recipe, sets = CASES[method]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the thread count changes float sums
    quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
    done = subprocess.run(_train(recipe, sets, tmp_path / "a"), **quiet)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    pointer = tmp_path / "b" / "latest.json"
    delay = random.Random(method).uniform(0.0, 0.3)  # somewhere in epoch 2 or its save
    for _attempt in range(4):  # a run that finished before the kill is no test: kill sooner
        proc = subprocess.Popen(_train(recipe, sets, tmp_path / "b", ["--overwrite"]), **quiet)
        deadline = time.monotonic() + 600
        while proc.poll() is None and not pointer.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = json.loads(pointer.read_text())["epoch"]
        if killed_at < total_epochs(tmp_path / "a"):
            break
        pointer.unlink()
        delay /= 4
    resumed = subprocess.run(_train(recipe, sets, tmp_path / "b", ["--resume"]), **quiet)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    wa, meta_a = load_checkpoint(resolve(tmp_path / "a"))
    wb, meta_b = load_checkpoint(resolve(tmp_path / "b"))
    total = total_epochs(tmp_path / "a")
    assert meta_b["epoch"] == total and 1 <= killed_at < total  # really killed mid-run
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    assert not (tmp_path / "b" / ".lock").exists()
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert a["test_accuracy"] == b["test_accuracy"]
