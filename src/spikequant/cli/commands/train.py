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
    cfg = load_recipe(args.recipe, args.overrides)
    out = args.out or Path("runs") / str(cfg["name"])
    result = run_recipe(
        cfg,
        out_dir=out,
        resume=args.resume,
        overwrite=args.overwrite,
        force=args.force,
        progress=not args.no_progress and not args.json,
    )
    if args.json:
        print(json.dumps(result, default=str))
    else:
        print_summary(result, out)
    return 0


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
