"""``spikequant spquant-study``: FP SNN vs Quant-SNN vs SpQuant-SNN on the bundled MNIST digits."""

from __future__ import annotations

import sys
from pathlib import Path


def _seeds(text: str) -> list[int]:
    from ...errors import ConfigError

    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--seeds takes comma-separated integers, got {text!r}") from None


def run(args) -> int:
    from ...errors import ConfigError
    from ...io import results_dir
    from ...spquant.study import run_study

    for name in ("fp_epochs", "quant_epochs", "finetune_epochs", "train_subset", "test_subset"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}")
    report = run_study(
        out_dir=results_dir(args.out),
        work_dir=Path(args.work_dir),
        seeds=_seeds(args.seeds),
        quant_init=args.quant_init,
        fp_epochs=args.fp_epochs,
        quant_epochs=args.quant_epochs,
        finetune_epochs=args.finetune_epochs,
        overrides=args.set,
        variant=args.variant,
        train_subset=args.train_subset,
        test_subset=args.test_subset,
        progress=not args.quiet,
        log=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    for name, check in report["checks"].items():
        print(
            f"{name}: {'PASS' if check['pass'] else 'FAIL'} (mean {check['mean']:.3f}, "
            f"std {check['std']:.3f}, {check['seeds_passing']}/{len(report['seeds'])} seeds)"
        )
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "spquant-study",
        help="train FP / Quant / SpQuant SNNs on mnist5k and write the results table",
        description=__doc__,
    )
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument(
        "--quant-init",
        choices=("fp", "scratch"),
        default="fp",
        help="start the Quant-SNN from the FP SNN of the same seed (default) or from scratch",
    )
    p.add_argument("--fp-epochs", type=int, default=None, help="epochs of the FP SNN (recipe)")
    p.add_argument("--quant-epochs", type=int, default=None, help="epochs of the Quant-SNN")
    p.add_argument(
        "--finetune-epochs", type=int, default=None, help="epochs of SpQuant from Quant (recipe)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override applied to all three recipes, e.g. spquant.learn_threshold=false",
    )
    p.add_argument(
        "--variant",
        default=None,
        help="run the SpQuant-SNN stage into spquant-VARIANT, reusing the work dir's FP and "
        "Quant-SNN runs (for options that change only the pruning stage)",
    )
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--test-subset", type=int, default=None)
    p.add_argument("--work-dir", default="runs/spquant-study", help="checkpoints of the runs")
    p.add_argument("--out", default=None, help="results folder (default docs/results)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)
