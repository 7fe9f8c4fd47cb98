"""One writer per run folder, through the CLI: while one ``spikequant train`` process writes a run
folder, a second one on the same ``--out`` (even with ``--overwrite``) is refused with one line
and exit code 2 and deletes nothing; the first one finishes normally."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import spikequant
from spikequant.cli import main

SETTINGS = [
    "--set", "train.epochs=3", "--set", "data.train_subset=512", "--set", "data.test_subset=64",
    "--set", "train.threads=1",
]  # fmt: skip


def test_second_train_on_a_folder_being_written_is_refused(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(spikequant.__file__).parents[1])}
    first = subprocess.Popen(
        [sys.executable, "-m", "spikequant.cli", "train", "mnist-quick", "--out", str(out),
         "--no-progress", "--json", *SETTINGS],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while not (out / ".lock").exists():
            assert first.poll() is None, first.communicate()[1]
            assert time.monotonic() < deadline, "the first process never took the lock"
            time.sleep(0.01)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["train", "mnist-quick", "--out", str(out), "--overwrite", *SETTINGS])
        assert first.poll() is None, "the first process ended before the second one tried"
        lines = err.getvalue().strip().splitlines()
        assert code == 2, err.getvalue()
        assert len(lines) == 1 and "Traceback" not in err.getvalue(), err.getvalue()
        assert "being written by another process" in lines[0]
        assert str(first.pid) in lines[0]  # it names the writer
        stdout, stderr = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, stderr
    assert '"test_accuracy"' in stdout
    assert (out / "metrics.json").is_file() and not (out / ".lock").exists()
