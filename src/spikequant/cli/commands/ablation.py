"""``spikequant ablation``: fixed threshold vs ATIF-u vs ATIF-nu vs ANN on bundled digits, T = 4."""

from __future__ import annotations

import json
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "ablation",
        help="ATIF ablation on the bundled MNIST digits at T = 4 (paper-style table)",
        description="Trains recipes mnist-fixed, mnist-atif-u, mnist-atif-nu and mnist-ann with "
        "the "
        "same budget and writes atif_ablation.{md,json} to the results folder.",
    )
    add_arguments(p)
    p.add_argument(
        "--sweep",
        action="store_true",
        help="run the ablation under every training setting of the sweep (BN or not, weight "
        "decay, optimiser, budget, width) and write atif_ablation_sweep.{md,json}",
    )
    p.add_argument(
        "--settings",
        default=None,
        metavar="A,B",
        help="with --sweep: only these settings (default all; see docs/training.md)",
    )
    p.set_defaults(func=run)


def add_arguments(p) -> None:
    p.add_argument(
        "--seeds",
        default="0,1,2",
        help="comma-separated seeds (default 0,1,2); rows report the mean",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override applied to all four recipes, e.g. --set train.epochs=2",
    )
    p.add_argument(
        "--setting",
        default=None,
        metavar="NAME",
        help="apply one training setting of the sweep (e.g. resnet8) before --set and write "
        "atif_ablation_NAME.{md,json}; default: the recipes as written",
    )
    p.add_argument(
        "--runs", type=Path, default=Path("runs/ablation"), help="checkpoint folder root"
    )
    p.add_argument("--out", type=Path, default=None, help="results folder (default docs/results)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--resume",
        action="store_true",
        help="reuse or continue run folders made from the identical recipe (e.g. to add seeds)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument(
        "--render",
        type=Path,
        default=None,
        metavar="JSON",
        help="train nothing: recompute the checks of a saved atif_ablation.json, rewrite the table",
    )


def parse_seeds(text: str) -> list[int]:
    from ...errors import ConfigError

    try:
        seeds = [int(s) for s in str(text).split(",") if s.strip() != ""]
    except ValueError:
        raise ConfigError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds):
        raise ConfigError(f"--seeds must list non-negative integers, got {text!r}")
    return seeds


def run(args) -> int:
    from ...io import results_dir
    from ...train.ablation import ablation_markdown, rerender, run_ablation, write_ablation

    if getattr(args, "sweep", False):
        return run_sweep_command(args)
    if getattr(args, "settings", None) is not None:
        from ...errors import ConfigError

        raise ConfigError("--settings applies only together with --sweep")
    setting_overrides: list[str] = []
    if args.setting is not None:
        from ...train.ablation import sweep_settings

        ((_, _, setting_overrides),) = sweep_settings([args.setting])
    if getattr(args, "render", None) is not None:
        summary = rerender(args.render)
    else:
        summary = run_ablation(
            seeds=parse_seeds(args.seeds),
            overrides=[*setting_overrides, *args.overrides],
            runs_dir=args.runs,
            progress=not args.no_progress,
            log=(lambda m: None) if args.json else print,
            resume=args.resume,
        )
    json_path, md_path = write_ablation(summary, results_dir(args.out), args.setting)
    if args.json:
        print(json.dumps(summary))
    else:
        print(ablation_markdown(summary))
        print(f"wrote {json_path} and {md_path}")
    return 0


def run_sweep_command(args) -> int:
    from ...errors import ConfigError
    from ...io import results_dir
    from ...train.ablation import run_sweep, sweep_markdown, write_sweep

    if args.render is not None:
        raise ConfigError("--render re-renders a single ablation summary, not a sweep")
    if args.setting is not None:
        raise ConfigError("--setting picks one setting without --sweep; use --settings with it")
    runs = args.runs if args.runs != Path("runs/ablation") else Path("runs/ablation-sweep")
    names = None if args.settings is None else [n.strip() for n in args.settings.split(",")]
    sweep = run_sweep(
        seeds=parse_seeds(args.seeds),
        settings=names,
        overrides=args.overrides,
        runs_dir=runs,
        progress=not args.no_progress,
        log=(lambda m: None) if args.json else print,
        resume=args.resume,
    )
    json_path, md_path = write_sweep(sweep, results_dir(args.out))
    if args.json:
        print(json.dumps(sweep))
    else:
        print(sweep_markdown(sweep))
        print(f"wrote {json_path} and {md_path}")
    return 0
