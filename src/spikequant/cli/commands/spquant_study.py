"""``spikequant spquant-study``: an alias of ``spikequant study spquant-study`` (FP SNN ->
Quant-SNN -> SpQuant-SNN per seed on the bundled digits). Its runs are always resumed: a
finished run of the identical recipe in the work dir is reused."""

from __future__ import annotations

import argparse

# each size option and the override it stands for
SIZES = {
    "fp_epochs": "fp:train.epochs",
    "quant_epochs": "quant:train.epochs",
    "finetune_epochs": "spquant:train.epochs",
    "train_subset": "data.train_subset",
    "test_subset": "data.test_subset",
}


def register(subparsers) -> None:
    from .study import add_run_arguments

    p = subparsers.add_parser(
        "spquant-study",
        help="alias of `spikequant study spquant-study` (FP / Quant / SpQuant SNNs on mnist5k)",
        description=__doc__,
    )
    add_run_arguments(p, progress_flags=("--quiet", "--no-progress"))
    p.add_argument(
        "--quant-init", choices=("fp", "scratch"), default="fp",
        help="start the Quant-SNN from the FP SNN of the same seed (default) or from scratch",
    )  # fmt: skip
    p.add_argument("--fp-epochs", type=int, default=None, help="epochs of the FP SNN")
    p.add_argument("--quant-epochs", type=int, default=None, help="epochs of the Quant-SNN")
    p.add_argument("--finetune-epochs", type=int, default=None, help="epochs of the SpQuant-SNN")
    p.add_argument(
        "--variant", default=None,
        help="apply --set to the SpQuant-SNN stage only (the FP and Quant-SNN runs are reused)",
    )  # fmt: skip
    p.add_argument("--setting", default=None, help="a named setting of the study")
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--test-subset", type=int, default=None)
    p.set_defaults(func=run)


def run(args) -> int:
    from ...errors import ConfigError
    from ...study.schema import NAME
    from .study import run as run_study

    for name in SIZES:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if args.variant is not None and not NAME.fullmatch(args.variant):
        raise ConfigError(f"--variant must be a plain name, got {args.variant!r}")
    overrides = [f"spquant:{o}" for o in args.overrides] if args.variant else list(args.overrides)
    overrides += [f"{key}={getattr(args, n)}" for n, key in SIZES.items() if getattr(args, n)]
    keep = "seeds work_dir out device jobs executor no_progress json setting".split()
    ns = argparse.Namespace(
        **{k: getattr(args, k) for k in keep},
        name="spquant-study",
        overrides=overrides,
        from_scratch=["quant"] if args.quant_init == "scratch" else [],
        resume=True,
        sweep=False,
        render=None,
        list=False,
    )
    return run_study(ns)
