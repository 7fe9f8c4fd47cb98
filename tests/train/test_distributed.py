"""Distributed data parallel on torch.distributed (gloo, CPU, 2 processes launched by torchrun
through ``spikequant train --nproc 2``): same weights as one process with the same global batch,
and a killed 2-process run resumes to the same final weights."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from spikequant.checkpoint import load_checkpoint
from spikequant.config import load_recipe, run_recipe
from spikequant.runfolder import resolve

pytestmark = pytest.mark.slow

SETS = [
    "data.train_subset=192",
    "data.test_subset=64",
    "data.batch_size=32",
    "model.timesteps=2",
    "model.kwargs.norm=false",  # BN statistics are per rank unless train.sync_batchnorm
    "model.kwargs.widths=[4,8]",
    "model.kwargs.hidden=16",
    "optim.name=sgd",
    "optim.lr=0.05",
    "optim.momentum=0.9",
]


def _cmd(out, epochs, nproc=2, extra=()):
    cmd = [
        sys.executable,
        "-m",
        "spikequant.cli",
        "train",
        "mnist-quick",
        "--out",
        str(out),
        "--no-progress",
        "--nproc",
        str(nproc),
        "--set",
        f"train.epochs={epochs}",
        *extra,
    ]
    for item in SETS:
        cmd += ["--set", item]
    return cmd


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _weights(run):
    return load_checkpoint(resolve(run))[0]


def test_two_processes_equal_one_process_with_the_global_batch(tmp_path):
    done = subprocess.run(_cmd(tmp_path / "ddp", 2), env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    torch.set_num_threads(1)
    cfg = load_recipe("mnist-quick", [*SETS, "train.epochs=2"])
    single = run_recipe(cfg, out_dir=tmp_path / "one", progress=False)
    ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert ddp["processes"] == 2 and single["processes"] == 1
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "ddp")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6, msg=key)


def test_killed_two_process_run_resumes_to_the_same_weights(tmp_path):
    done = subprocess.run(_cmd(tmp_path / "a", 3), env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    proc = subprocess.Popen(
        _cmd(tmp_path / "b", 3),
        env=ENV,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pointer = tmp_path / "b" / "latest.json"
    deadline = time.monotonic() + 600
    while proc.poll() is None and not pointer.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks
    proc.wait()
    killed_at = json.loads(pointer.read_text())["epoch"]
    lock = tmp_path / "b" / ".lock"
    assert lock.exists()  # left by the killed rank 0; its pid is gone, so it is taken over
    resumed = subprocess.run(
        _cmd(tmp_path / "b", 3, extra=["--resume"]), env=ENV, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 1 <= killed_at < 3
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    for key in a:
        assert torch.equal(a[key], b[key]), key
