"""Bad input through every command: exit code 2, exactly one line on stderr, no traceback, and no
pre-existing file of the run / output folder changed.

The commands run in this process (``spikequant.cli.main``), on tiny finished runs of every
training method (1 epoch on 32 digits) made once per module.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from spikequant.cli import build_parser, main
from spikequant.config import RECIPE_DIR, list_recipes

TINY = [
    "--set",
    "train.epochs=1",
    "--set",
    "data.train_subset=32",
    "--set",
    "data.test_subset=32",
    "--set",
    "data.batch_size=16",
    "--set",
    "data.eval_batch_size=32",
]
# method -> (recipe, extra overrides keeping its run small)
METHOD_RECIPES = {
    "direct": ("mnist-quick", []),
    "spquant": ("spquant-mnist-quant", []),
    "qat": ("qat-mnist", ["--set", "method.fold_epochs=1"]),
    "ttfs": ("ttfs-fc100", []),
}


def quiet_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One finished tiny run folder per training method."""
    root = tmp_path_factory.mktemp("runs")
    made = {}
    for method, (recipe, extra) in METHOD_RECIPES.items():
        out = root / method
        code, _, err = quiet_main(
            ["train", recipe, "--out", str(out), "--no-progress", "--json", *TINY, *extra]
        )
        assert code == 0, err
        made[method] = out
    # a converted network saved as a run (convert --save-run): the fifth kind of run
    code, _, err = quiet_main(
        [
            "convert",
            str(made["qat"]),
            "--method",
            "rate",
            "--timesteps",
            "4",
            "--test-samples",
            "16",
            "--calibration-samples",
            "16",
            "--out",
            str(root / "conversion-report"),
            "--save-run",
            str(root / "conversion"),
        ]
    )
    assert code == 0, err
    made["conversion"] = root / "conversion"
    return made


def tree_hashes(folder: Path) -> dict[str, str]:
    if not folder.is_dir():
        return {}
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            found[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def assert_one_line_refusal(code: int, err: str) -> None:
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("spikequant "), err


@dataclass
class Ctx:
    tmp: Path
    runs: dict[str, Path]

    def copy(self, method: str) -> Path:
        """A private copy of a finished run (rows that damage it)."""
        dest = self.tmp / f"copy-{method}"
        shutil.copytree(self.runs[method], dest)
        return dest

    def epoch(self, run: Path) -> Path:
        return run / json.loads((run / "latest.json").read_text())["checkpoint"]

    def file(self) -> Path:
        path = self.tmp / "a-file"
        path.write_text("not a folder\n")
        return path

    def folder(self) -> Path:
        path = self.tmp / "a-folder"
        path.mkdir(exist_ok=True)
        (path / "keep.txt").write_text("pre-existing\n")
        return path

    def loop(self) -> Path:
        a, b = self.tmp / "loop-a", self.tmp / "loop-b"
        a.symlink_to(b)
        b.symlink_to(a)
        return a

    def readonly(self) -> Path:
        """A folder nobody may write in (as root, where mode bits do not bind: sysfs)."""
        path = self.tmp / "read-only"
        path.mkdir()
        (path / "keep.txt").write_text("pre-existing\n")
        path.chmod(0o555)
        try:
            (path / ".probe").write_bytes(b"")
        except OSError:
            return path
        (path / ".probe").unlink()
        return Path("/sys/spikequant-test-out")

    def recipe_bytes(self, data: bytes) -> Path:
        path = self.tmp / "recipe.yaml"
        path.write_bytes(data)
        return path

    def meta_edit(self, method: str, edit) -> Path:
        run = self.copy(method)
        meta_path = self.epoch(run) / "meta.json"
        meta = json.loads(meta_path.read_text())
        edit(meta)
        meta_path.write_text(json.dumps(meta))
        return run

    def damage(self, method: str, name: str, data: bytes | None = None) -> Path:
        """Truncate (or replace with ``data``) one file of the newest epoch and re-hash it in
        meta.json, so that the file content itself is what gets refused."""
        run = self.copy(method)
        epoch = self.epoch(run)
        target = epoch / name
        raw = target.read_bytes()
        target.write_bytes(raw[: len(raw) // 3] if data is None else data)
        meta = json.loads((epoch / "meta.json").read_text())
        meta["files"][name] = hashlib.sha256(target.read_bytes()).hexdigest()
        (epoch / "meta.json").write_text(json.dumps(meta))
        return run


def _lock_held_by_me(ctx: Ctx) -> Path:
    import socket

    run = ctx.copy("direct")
    (run / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
    return run


def _garbage_recipe(ctx: Ctx) -> Path:
    return ctx.recipe_bytes(b"name: bad\ndata: {name: mnist5k}\n# \xff\xfe\xfa bytes\n")


def _render_other(ctx: Ctx) -> Path:
    path = ctx.tmp / "other.json"
    path.write_text(json.dumps({"format": "spikequant-run/1", "recipe": {"name": "x"}}))
    return path


# Each row: (id, build(ctx) -> (argv, folder whose files must not change)).
def rows():
    T = TINY
    r = []

    def add(name, build):
        r.append(pytest.param(build, id=name))

    # ---- train: recipes and overrides
    add(
        "train-recipe-not-utf8",
        lambda c: (["train", str(_garbage_recipe(c)), "--out", str(c.folder())], c.folder()),
    )
    for method, (recipe, _) in METHOD_RECIPES.items():
        add(
            f"train-epochs-abc-{method}",  # every method's recipe goes through one validation
            lambda c, recipe=recipe: (
                ["train", recipe, "--out", str(c.folder()), "--set", "train.epochs=abc"],
                c.folder(),
            ),
        )
    add(
        "train-num-classes-3",
        lambda c: (
            [
                "train",
                "mnist-quick",
                "--out",
                str(c.folder()),
                *T,
                "--set",
                "model.kwargs.num_classes=3",
            ],
            c.folder(),
        ),
    )
    add(
        "train-input-size-32",
        lambda c: (
            [
                "train",
                "mnist-quick",
                "--out",
                str(c.folder()),
                *T,
                "--set",
                "model.kwargs.input_size=32",
            ],
            c.folder(),
        ),
    )
    add(
        "train-set-unknown-section",
        lambda c: (
            ["train", "mnist-quick", "--out", str(c.folder()), "--set", "trian.epochs=1"],
            c.folder(),
        ),
    )
    add(
        "train-set-no-equals",
        lambda c: (
            ["train", "mnist-quick", "--out", str(c.folder()), "--set", "train.epochs"],
            c.folder(),
        ),
    )
    add(
        "train-unknown-recipe",
        lambda c: (["train", "no-such-recipe", "--out", str(c.folder())], c.folder()),
    )
    add(
        "train-out-is-file", lambda c: (["train", "mnist-quick", "--out", str(c.file()), *T], c.tmp)
    )
    add(
        "train-out-read-only",
        lambda c: (["train", "mnist-quick", "--out", str(c.readonly() / "run"), *T], c.tmp),
    )
    add(
        "train-out-symlink-loop",
        lambda c: (["train", "mnist-quick", "--out", str(c.loop()), *T], c.tmp),
    )
    add(
        "train-out-holds-run",
        lambda c: (["train", "mnist-quick", "--out", str(c.copy("direct")), *T], c.tmp),
    )
    add(
        "train-overwrite-locked-run",
        lambda c: (
            ["train", "mnist-quick", "--overwrite", "--out", str(_lock_held_by_me(c)), *T],
            c.tmp,
        ),
    )
    add(
        "train-resume-truncated-trainer-state",
        lambda c: (
            [
                "train",
                "mnist-quick",
                "--resume",
                "--out",
                str(c.damage("direct", "trainer_state.safetensors")),
                *T,
            ],
            c.tmp,
        ),
    )
    add(
        "train-resume-garbage-trainer-json",
        lambda c: (
            [
                "train",
                "mnist-quick",
                "--resume",
                "--out",
                str(c.damage("direct", "trainer_state.json", b"\xff{garbage")),
                *T,
            ],
            c.tmp,
        ),
    )
    add(
        "train-resume-truncated-weights",
        lambda c: (
            [
                "train",
                "mnist-quick",
                "--resume",
                "--out",
                str(c.damage("direct", "model.safetensors")),
                *T,
            ],
            c.tmp,
        ),
    )
    add(
        "train-resume-other-settings",
        lambda c: (
            [
                "train",
                "mnist-quick",
                "--resume",
                "--out",
                str(c.copy("direct")),
                *T,
                "--set",
                "optim.lr=0.5",
            ],
            c.tmp,
        ),
    )
    add(
        "train-force-without-resume",
        lambda c: (["train", "mnist-quick", "--force", "--out", str(c.folder())], c.folder()),
    )
    add(
        "train-nproc-zero",
        lambda c: (["train", "mnist-quick", "--nproc", "0", "--out", str(c.folder())], c.folder()),
    )
    # ---- eval
    add(
        "eval-truncated-weights",
        lambda c: (["eval", str(c.damage("direct", "model.safetensors"))], c.tmp),
    )
    add("eval-garbage-weights-unhashed", lambda c: (["eval", str(_unhashed_garbage(c))], c.tmp))
    add(
        "eval-latest-not-utf8",
        lambda c: (
            ["eval", str(_latest_bytes(c, b'{"epoch": 1, "checkpoint": "\xff\xfe"}'))],
            c.tmp,
        ),
    )
    add(
        "eval-latest-outside",
        lambda c: (
            ["eval", str(_latest_bytes(c, b'{"epoch": 1, "checkpoint": "../../etc"}'))],
            c.tmp,
        ),
    )
    add(
        "eval-digits8x8-on-28x28",
        lambda c: (["eval", str(c.runs["direct"]), "--dataset", "digits8x8"], c.runs["direct"]),
    )
    add(
        "eval-meta-unknown-model-keyword",
        lambda c: (
            [
                "eval",
                str(c.meta_edit("direct", lambda m: m["model"]["kwargs"].update(bogus_width=3))),
            ],
            c.tmp,
        ),
    )
    add(
        "eval-meta-kwargs-list",
        lambda c: (
            ["eval", str(c.meta_edit("direct", lambda m: m["model"].update(kwargs=[1, 2])))],
            c.tmp,
        ),
    )
    add(
        "eval-meta-unknown-model",
        lambda c: (
            ["eval", str(c.meta_edit("direct", lambda m: m["model"].update(name="no_such_net")))],
            c.tmp,
        ),
    )
    add("eval-missing-folder", lambda c: (["eval", str(c.tmp / "nothing-here")], c.tmp))
    add(
        "eval-subset-zero",
        lambda c: (["eval", str(c.runs["direct"]), "--subset", "0"], c.runs["direct"]),
    )
    add(
        "eval-batch-size-zero",
        lambda c: (["eval", str(c.runs["direct"]), "--batch-size", "0"], c.runs["direct"]),
    )
    # ---- export
    add(
        "export-out-is-folder",
        lambda c: (["export", str(c.runs["direct"]), "--out", str(c.folder())], c.tmp),
    )
    add(
        "export-out-under-file",
        lambda c: (["export", str(c.runs["direct"]), "--out", str(c.file() / "m.nir")], c.tmp),
    )
    add(
        "export-out-read-only",
        lambda c: (["export", str(c.runs["direct"]), "--out", str(c.readonly() / "m.nir")], c.tmp),
    )
    add(
        "export-out-symlink-loop",
        lambda c: (["export", str(c.runs["direct"]), "--out", str(c.loop())], c.tmp),
    )
    add(
        "export-truncated-weights",
        lambda c: (
            ["export", str(c.damage("direct", "model.safetensors")), "--out", str(c.tmp / "m.nir")],
            c.tmp,
        ),
    )
    add(
        "export-input-size-garbage",
        lambda c: (
            ["export", str(c.runs["direct"]), "--out", str(c.tmp / "m.nir"), "--input-size", "1,x"],
            c.tmp,
        ),
    )
    # ---- cost
    add(
        "cost-timesteps-huge",
        lambda c: (["cost", "vgg9", "--input-size", "3,32,32", "--timesteps", "100000000"], c.tmp),
    )
    add(
        "cost-input-size-huge",
        lambda c: (["cost", "vgg9", "--input-size", "3,100000,100000"], c.tmp),
    )
    add("cost-unknown-model", lambda c: (["cost", "no_such_net", "--input-size", "3,32,32"], c.tmp))
    add(
        "cost-out-is-folder",
        lambda c: (["cost", "vgg9", "--input-size", "2,8,8", "--out", str(c.folder())], c.tmp),
    )
    add(
        "cost-out-read-only",
        lambda c: (
            ["cost", "vgg9", "--input-size", "2,8,8", "--out", str(c.readonly() / "c.json")],
            c.tmp,
        ),
    )
    add(
        "cost-out-symlink-loop",
        lambda c: (["cost", "vgg9", "--input-size", "2,8,8", "--out", str(c.loop())], c.tmp),
    )
    add(
        "cost-truncated-weights",
        lambda c: (["cost", str(c.damage("direct", "model.safetensors"))], c.tmp),
    )
    # ---- convert
    add(
        "convert-timesteps-huge",
        lambda c: (
            ["convert", str(c.runs["qat"]), "--timesteps", "100000000", "--out", str(c.folder())],
            c.tmp,
        ),
    )
    add(
        "convert-out-is-file",
        lambda c: (
            ["convert", str(c.runs["qat"]), "--timesteps", "1", "--out", str(c.file())],
            c.tmp,
        ),
    )
    add(
        "convert-out-read-only",
        lambda c: (
            ["convert", str(c.runs["qat"]), "--timesteps", "1", "--out", str(c.readonly())],
            c.tmp,
        ),
    )
    add(
        "convert-out-symlink-loop",
        lambda c: (
            ["convert", str(c.runs["qat"]), "--timesteps", "1", "--out", str(c.loop())],
            c.tmp,
        ),
    )
    add(
        "convert-unknown-method",
        lambda c: (["convert", str(c.runs["qat"]), "--method", "magic"], c.tmp),
    )
    add(
        "convert-spiking-run",
        lambda c: (
            ["convert", str(c.runs["direct"]), "--timesteps", "1", "--out", str(c.folder())],
            c.tmp,
        ),
    )
    # ---- robustness
    for flag, value in (
        ("--snr", "nan"),
        ("--jitter", "nan"),
        ("--jitter", "-1"),
        ("--snr", "inf"),
    ):
        add(
            f"robustness{flag}-{value}",
            lambda c, flag=flag, value=value: (
                [
                    "robustness",
                    str(c.runs["ttfs"]),
                    flag,
                    value,
                    "--test-limit",
                    "8",
                    "--out",
                    str(c.folder()),
                ],
                c.tmp,
            ),
        )
    add(
        "robustness-not-ttfs",
        lambda c: (["robustness", str(c.runs["direct"]), "--out", str(c.folder())], c.tmp),
    )
    # ---- sqnr
    add(
        "sqnr-lr-inf",
        lambda c: (
            [
                "sqnr",
                "--lr",
                "inf",
                "--iterations",
                "2",
                "--eval-samples",
                "1000",
                "--out",
                str(c.folder()),
            ],
            c.tmp,
        ),
    )
    add(
        "sqnr-sigma-nan",
        lambda c: (
            [
                "sqnr",
                "--sigma",
                "nan",
                "--iterations",
                "2",
                "--eval-samples",
                "1000",
                "--out",
                str(c.folder()),
            ],
            c.tmp,
        ),
    )
    add(
        "sqnr-timesteps-zero",
        lambda c: (
            [
                "sqnr",
                "--timesteps",
                "0",
                "--iterations",
                "2",
                "--eval-samples",
                "1000",
                "--out",
                str(c.folder()),
            ],
            c.tmp,
        ),
    )
    add(
        "sqnr-out-is-file",
        lambda c: (
            ["sqnr", "--iterations", "2", "--eval-samples", "1000", "--out", str(c.file())],
            c.tmp,
        ),
    )
    add(
        "sqnr-out-read-only",
        lambda c: (
            ["sqnr", "--iterations", "2", "--eval-samples", "1000", "--out", str(c.readonly())],
            c.tmp,
        ),
    )
    add(
        "sqnr-out-symlink-loop",
        lambda c: (
            ["sqnr", "--iterations", "2", "--eval-samples", "1000", "--out", str(c.loop())],
            c.tmp,
        ),
    )
    # ---- list, demo, ablation, spquant-study, seqdigits
    add("list-unknown-kind", lambda c: (["list", "bogus"], c.tmp))
    add(
        "demo-seeds-abc",
        lambda c: (
            [
                "demo",
                "--seeds",
                "abc",
                "--out",
                str(c.folder()),
                "--runs",
                str(c.tmp / "demo-runs"),
            ],
            c.tmp,
        ),
    )
    add(
        "ablation-seeds-abc",
        lambda c: (
            [
                "ablation",
                "--seeds",
                "abc",
                "--out",
                str(c.folder()),
                "--runs",
                str(c.tmp / "abl-runs"),
            ],
            c.tmp,
        ),
    )
    add(
        "ablation-render-other-schema",
        lambda c: (
            ["ablation", "--render", str(_render_other(c)), "--out", str(c.folder())],
            c.tmp,
        ),
    )
    add(
        "ablation-render-not-utf8",
        lambda c: (
            ["ablation", "--render", str(c.recipe_bytes(b"\xff\xfe{")), "--out", str(c.folder())],
            c.tmp,
        ),
    )
    add(
        "spquant-study-seeds-abc",
        lambda c: (
            [
                "spquant-study",
                "--seeds",
                "abc",
                "--out",
                str(c.folder()),
                "--work-dir",
                str(c.tmp / "sq"),
            ],
            c.tmp,
        ),
    )
    add(
        "spquant-study-fp-epochs-zero",
        lambda c: (
            [
                "spquant-study",
                "--fp-epochs",
                "0",
                "--out",
                str(c.folder()),
                "--work-dir",
                str(c.tmp / "sq"),
            ],
            c.tmp,
        ),
    )
    add(
        "study-unknown-name",
        lambda c: (
            ["study", "no-such-study", "--out", str(c.folder()), "--work-dir", str(c.tmp / "st")],
            c.tmp,
        ),
    )
    add(
        "study-file-not-utf8",
        lambda c: (["study", str(_garbage_recipe(c)), "--work-dir", str(c.tmp / "st")], c.tmp),
    )
    add(
        "study-seeds-abc",
        lambda c: (
            [
                "study",
                "atif-ablation",
                "--seeds",
                "abc",
                "--out",
                str(c.folder()),
                "--work-dir",
                str(c.tmp / "st"),
            ],
            c.tmp,
        ),
    )
    add(
        "study-jobs-zero",
        lambda c: (
            [
                "study",
                "atif-ablation",
                "--jobs",
                "0",
                "--out",
                str(c.folder()),
                "--work-dir",
                str(c.tmp / "st"),
            ],
            c.tmp,
        ),
    )
    add(
        "study-render-other-schema",
        lambda c: (["study", "--render", str(_render_other(c)), "--out", str(c.folder())], c.tmp),
    )
    # ---- deploy, run (the integer runtime)
    add(
        "deploy-direct-run",
        lambda c: (["deploy", str(c.runs["direct"]), "--out", str(c.tmp / "m.sqrt")], c.tmp),
    )
    add(
        "deploy-out-is-folder",
        lambda c: (["deploy", str(c.runs["spquant"]), "--out", str(c.folder())], c.tmp),
    )
    add(
        "deploy-out-symlink-loop",
        lambda c: (["deploy", str(c.runs["spquant"]), "--out", str(c.loop())], c.tmp),
    )
    add(
        "deploy-truncated-weights",
        lambda c: (
            ["deploy", str(c.damage("spquant", "model.safetensors")), "--out", str(c.tmp / "m")],
            c.tmp,
        ),
    )
    add(
        "run-garbage-program",
        lambda c: (["run", str(c.recipe_bytes(b"\x00garbage")), str(_npy(c))], c.tmp),
    )
    add(
        "run-missing-program",
        lambda c: (["run", str(c.tmp / "none.sqrt"), str(_npy(c))], c.tmp),
    )
    add(
        "run-garbage-input",
        lambda c: (["run", str(c.recipe_bytes(b"\x00garbage")), str(c.file())], c.tmp),
    )
    add(
        "seqdigits-unknown-model",
        lambda c: (["seqdigits", "--models", "gru", "--out", str(c.folder())], c.tmp),
    )
    add(
        "seqdigits-timesteps-zero",
        lambda c: (["seqdigits", "--timesteps", "0", "--out", str(c.folder())], c.tmp),
    )
    add(
        "report-missing-run",
        lambda c: (["report", str(c.tmp / "no-such-run"), "--out", str(c.tmp / "r.html")], c.tmp),
    )
    add(
        "report-folder-without-metrics",
        lambda c: (["report", str(c.folder()), "--out", str(c.tmp / "r.html")], c.tmp),
    )
    # ---- --device on every command that computes (an unknown kind; CUDA where there is none)
    devices = ["tpu"] + ([] if torch.cuda.is_available() else ["cuda"])
    for device in devices:
        add(
            f"train-device-{device}",
            lambda c, d=device: (
                ["train", "mnist-quick", "--out", str(c.folder()), *T, "--device", d],
                c.folder(),
            ),
        )
        add(
            f"eval-device-{device}",
            lambda c, d=device: (["eval", str(c.runs["direct"]), "--device", d], c.runs["direct"]),
        )
        add(
            f"robustness-device-{device}",
            lambda c, d=device: (
                ["robustness", str(c.runs["ttfs"]), "--out", str(c.folder()), "--device", d],
                c.runs["ttfs"],
            ),
        )
        add(
            f"cost-device-{device}",
            lambda c, d=device: (["cost", str(c.runs["direct"]), "--device", d], c.runs["direct"]),
        )
        add(
            f"sqnr-device-{device}",
            lambda c, d=device: (["sqnr", "--out", str(c.folder()), "--device", d], c.folder()),
        )
        add(
            f"study-device-{device}",
            lambda c, d=device: (
                ["study", "demo", "--work-dir", str(c.folder()), "--seeds", "0", "--device", d],
                c.folder(),
            ),
        )
    return r


def _npy(ctx: Ctx) -> Path:
    import numpy as np

    path = ctx.tmp / "input.npy"
    np.save(path, np.zeros((1, 28, 28), dtype=np.float32))
    return path


def _unhashed_garbage(ctx: Ctx) -> Path:
    """Weights replaced by garbage without re-hashing: the SHA-256 check refuses them."""
    run = ctx.copy("direct")
    (ctx.epoch(run) / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    return run


def _latest_bytes(ctx: Ctx, data: bytes) -> Path:
    run = ctx.copy("direct")
    (run / "latest.json").write_bytes(data)
    return run


# Known failures in files other helpers own right now: {row id: reason}.
XFAIL: dict[str, str] = {}
# What the one line must say, where the reason matters (a bound, not an allocator failure).
MATCH = {
    "train-overwrite-locked-run": "being written by another process",
    "train-num-classes-3": "num_classes",
    "train-input-size-32": "does not fit the data",
    "train-recipe-not-utf8": "not UTF-8",
    "study-file-not-utf8": "not UTF-8",
    "train-out-holds-run": "already holds a run",
    "eval-digits8x8-on-28x28": "does not fit the data",
    "eval-latest-outside": "refused",
    "cost-timesteps-huge": "--timesteps must be in 1..",
    "cost-input-size-huge": "GiB",
    "convert-timesteps-huge": "--timesteps must be integers in 1..",
    "robustness--snr-nan": "--snr",
    "robustness--jitter-nan": "--jitter",
    "robustness--jitter--1": "--jitter",
    "sqnr-lr-inf": "lr",
    "demo-seeds-abc": "--seeds",
    "ablation-render-other-schema": "not a report written by",
    **{
        f"{command}-device-{device}": repr(device)
        for command in ("train", "eval", "robustness", "sqnr", "study")
        for device in ("tpu", "cuda")
    },
}


@pytest.mark.parametrize("build", rows())
def test_bad_input_is_refused_with_one_line(build, runs, tmp_path, request):
    ctx = Ctx(tmp_path, runs)
    argv, watched = build(ctx)
    before = tree_hashes(watched)
    reason = XFAIL.get(request.node.callspec.id)
    if reason:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
    code, _, err = quiet_main(argv)
    assert_one_line_refusal(code, err)
    assert MATCH.get(request.node.callspec.id, "") in err
    assert tree_hashes(watched) == before, "a refused command changed pre-existing files"


def test_rows_cover_every_command():
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    commands = set(sub.choices)
    covered = {p.id.split("-")[0] for p in rows()}
    covered |= {"spquant-study"} if any(p.id.startswith("spquant-study") for p in rows()) else set()
    assert commands - covered == set(), f"no bad-input rows for {sorted(commands - covered)}"
    assert len(rows()) >= 40


def _misspell(cfg: dict) -> str:
    """Misspell one key of the recipe in place (the first key of its first section); returns
    the misspelled key."""
    for section in ("data", "model", "optim", "train", "schedule", "method"):
        node = cfg.get(section)
        if isinstance(node, dict):
            keys = [k for k in node if k != "name"] or list(node)
            key = keys[0]
            wrong = key[:-1] + ("x" if key[-1] != "x" else "y") + "s"
            node[wrong] = node.pop(key)
            return wrong
    raise AssertionError("recipe without sections")


@pytest.mark.parametrize("recipe", list_recipes())
def test_misspelled_key_in_every_bundled_recipe(recipe, tmp_path):
    cfg = yaml.safe_load((RECIPE_DIR / f"{recipe}.yaml").read_text())
    wrong = _misspell(cfg)
    path = tmp_path / f"{recipe}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    code, _, err = quiet_main(["train", str(path), "--out", str(out)])
    assert_one_line_refusal(code, err)
    assert wrong in err
    assert not out.exists() or tree_hashes(out) == {}


# Which command works on which method's run (0); the others refuse with one line (2): export
# needs NIR-expressible neurons (hard reset, real membrane), cost needs spiking neurons (or a
# rate/msat conversion: its energy against the ANN), convert an ANN (a converted run is already a
# spiking network). A QAT run whose BN was folded mid-run
# must load back folded.
WORKS = {
    "eval": {"direct": 0, "spquant": 0, "qat": 0, "ttfs": 0, "conversion": 0},
    "export": {},
    "cost": {"direct": 0, "spquant": 0, "conversion": 0},
    "convert": {"qat": 0},
}


@pytest.mark.parametrize("method", [*METHOD_RECIPES, "conversion"])
@pytest.mark.parametrize("command", ["eval", "export", "cost", "convert"])
def test_commands_on_every_method_work_or_refuse(command, method, runs, tmp_path):
    run = runs[method]
    before = tree_hashes(run)
    argv = {
        "eval": ["eval", str(run), "--subset", "16", "--device", "cpu", "--json"],
        "export": ["export", str(run), "--out", str(tmp_path / "m.nir"), "--json"],
        "cost": ["cost", str(run), "--samples", "8", "--json"],
        "convert": [
            "convert",
            str(run),
            "--timesteps",
            "1,2",
            "--test-samples",
            "16",
            "--calibration-samples",
            "16",
            "--out",
            str(tmp_path / "conv"),
        ],
    }[command]
    code, out, err = quiet_main(argv)
    assert "Traceback" not in err, err
    assert code == WORKS[command].get(method, 2), err
    if code == 0:
        assert out.strip(), "a command that worked prints its result"
    else:
        assert_one_line_refusal(code, err)
    assert tree_hashes(run) == before
