"""``spikequant spquant-study``: FP SNN vs Quant-SNN vs SpQuant-SNN on the bundled MNIST digits."""

from __future__ import annotations

import sys
from pathlib import Path


def run(args) -> int:
    from ...errors import ConfigError
    from ...io import results_dir
    from ...spquant.study import run_study

    for name in ("epochs", "finetune_epochs", "train_subset", "test_subset"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}")
    report = run_study(
        out_dir=results_dir(args.out),
        work_dir=Path(args.work_dir),
        epochs=args.epochs,
        finetune_epochs=args.finetune_epochs,
        train_subset=args.train_subset,
        test_subset=args.test_subset,
        progress=not args.quiet,
        log=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    for name, check in report["checks"].items():
        print(f"{name}: {'PASS' if check['pass'] else 'FAIL'} ({check})")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "spquant-study",
        help="train FP / Quant / SpQuant SNNs on mnist5k and write the results table",
        description=__doc__,
    )
    p.add_argument("--epochs", type=int, default=None, help="epochs of FP and Quant (recipe: 6)")
    p.add_argument(
        "--finetune-epochs",
        type=int,
        default=None,
        help="epochs of SpQuant fine-tuned from Quant (recipe: 6)",
    )
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--test-subset", type=int, default=None)
    p.add_argument("--work-dir", default="runs/spquant-study", help="checkpoints of the three runs")
    p.add_argument("--out", default=None, help="results folder (default docs/results)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)
