"""``spikequant ablation``: an alias of ``spikequant study atif-ablation`` (fixed threshold vs
ATIF-u vs ATIF-nu vs ANN on the bundled digits, T = 4)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "ablation",
        help="alias of `spikequant study atif-ablation` (the ATIF ablation on bundled digits)",
        description=__doc__,
    )
    add_arguments(p)
    p.add_argument(
        "--sweep", action="store_true", help="every setting of the study (--settings: some)"
    )
    p.add_argument("--settings", default=None, metavar="A,B", help="with --sweep: these settings")
    p.set_defaults(func=run)


def add_arguments(p) -> None:
    from .study import add_run_arguments

    add_run_arguments(p, work_dir_flags=("--work-dir", "--runs"))
    p.add_argument("--setting", default=None, metavar="NAME", help="one setting (e.g. resnet8)")
    p.add_argument(
        "--render", type=Path, default=None, metavar="FILE.json",
        help="train nothing: recompute a saved report's comparisons and checks",
    )  # fmt: skip


def study_args(args, name: str) -> argparse.Namespace:
    """The ``study`` command's arguments for this alias's (no study name with ``--render``)."""
    from ...errors import ConfigError

    sweep = getattr(args, "sweep", False)
    settings = getattr(args, "settings", None)
    if settings is not None and not sweep:
        raise ConfigError("--settings applies only together with --sweep")
    if sweep and args.setting is not None:
        raise ConfigError("--setting picks one setting without --sweep; use --settings with it")
    return argparse.Namespace(
        **{k: v for k, v in vars(args).items() if k not in ("sweep", "settings", "setting")},
        name=None if args.render is not None else name,
        setting=settings if sweep else args.setting,
        sweep=sweep,
        from_scratch=[],
        list=False,
    )


def run(args) -> int:
    from .study import run as run_study

    return run_study(study_args(args, "atif-ablation"))
