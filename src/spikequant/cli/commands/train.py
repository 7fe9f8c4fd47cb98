"""``spikequant train RECIPE``: run any recipe (dispatched on its ``kind``), print its metrics."""

from __future__ import annotations

import json
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train from a YAML recipe (methods direct, spquant, qat, ttfs, ...)",
        description="Run a recipe: a path or a bundled name (see `spikequant list recipes`). "
        "Checkpoints are written every epoch under --out; --resume continues a killed run.",
    )
    p.add_argument("recipe", help="recipe path or bundled name, e.g. mnist-atif-u")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value, e.g. --set optim.lr=0.01 (repeatable)",
    )
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/<recipe name>)")
    p.add_argument(
        "--resume", action="store_true", help="continue from the run folder's last good epoch"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="with --resume: continue although the recipe settings changed",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace a run already in the --out folder"
    )
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (sets train.device)")
    p.add_argument(
        "--nproc",
        type=int,
        default=None,
        metavar="N",
        help="distributed data-parallel training in N local processes (torchrun; gloo on CPU, "
        "NCCL on CUDA); data.batch_size stays the global batch",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar or per-epoch lines")
    p.add_argument("--json", action="store_true", help="print the final metrics as one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    from ...config import load_recipe, run_recipe
    from ...errors import ConfigError

    if args.force and not args.resume:
        raise ConfigError("--force goes with --resume")
    if args.overwrite and args.resume:
        raise ConfigError("--overwrite and --resume exclude each other")
    if args.nproc is not None and args.nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {args.nproc}")
    overrides = list(args.overrides)
    if args.device:
        overrides.append(f"train.device={args.device}")
    cfg = load_recipe(args.recipe, overrides)
    out = args.out or Path("runs") / str(cfg["name"])
    if args.nproc is not None and args.nproc > 1:
        return _launch(args, out)
    result = run_recipe(
        cfg,
        out_dir=out,
        resume=args.resume,
        overwrite=args.overwrite,
        force=args.force,
        progress=not args.no_progress and not args.json,
    )
    from ...train.distributed import world

    if not world().main:
        return 0
    if args.json:
        print(json.dumps(result, default=str))
    else:
        print_summary(result, out)
    return 0


def _launch(args, out: Path) -> int:
    """``--nproc N``: run this same command in N local processes under torchrun."""
    import subprocess
    import sys

    from ...train.distributed import launched_by_torchrun, torchrun_command

    if launched_by_torchrun():
        from ...errors import ConfigError

        raise ConfigError("--nproc inside a torchrun launch: pass one or the other")
    argv = sys.argv[1:] if args.argv is None else list(args.argv)
    argv = _without_option(argv, "--nproc")
    if "--out" not in argv:
        argv += ["--out", str(out)]
    return subprocess.run(torchrun_command(args.nproc, argv)).returncode


def _without_option(argv: list[str], name: str) -> list[str]:
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
            continue
        if item == name:
            skip = True
            continue
        if item.startswith(name + "="):
            continue
        out.append(item)
    return out


# The common metrics first, in this order; then any other scalar a runner reports, except these.
SUMMARY_KEYS = (
    "test_accuracy",
    "timesteps",
    "theta",
    "spikes_per_neuron",
    "synops",
    "dense_macs",
    "epochs",
    "train_seconds",
)
NOT_SHOWN = ("test_loss", "samples", "spiking_neurons", "resumed_from_epoch")


def print_summary(result: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    def text(key, value) -> str:
        if key == "test_accuracy":
            return f"{100 * value:.2f} %"
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    table = Table(title=f"{result.get('name', 'run')}: final test metrics", show_header=False)
    for key in SUMMARY_KEYS:
        if result.get(key) is not None:
            table.add_row(key, text(key, result[key]))
    for key, value in result.items():  # other runners report their own scalar metrics
        if isinstance(value, (int, float)) and key not in SUMMARY_KEYS + NOT_SHOWN:
            table.add_row(key, text(key, value))
    console = Console()
    console.print(table)
    console.print(f"run folder: {out}")
