"""``spikequant demo`` (``make demo``): the single-neuron SQNR study, then the ATIF ablation
(on the digits ResNet-8 of the ablation sweep's ``resnet8`` setting).

Both write their tables to the results folder (``docs/results`` by default). The ablation uses
the bundled MNIST digits, so the demo needs no download.
"""

from __future__ import annotations

import time
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="SQNR study + ATIF ablation on the bundled digits (what `make demo` runs)",
    )
    p.add_argument(
        "--sqnr-iterations",
        type=int,
        default=8000,
        help="Adam iterations of the SQNR study (default 8000)",
    )
    p.add_argument("--skip-sqnr", action="store_true", help="run only the ablation")
    from .ablation import add_arguments

    add_arguments(p)
    # The residual net: in a plain CNN a per-layer threshold is a rescaling the weights absorb
    # (docs/atif.md), across a shortcut it is not. `--setting` picks another sweep setting.
    p.set_defaults(func=run, setting="resnet8")


def run(args) -> int:
    from rich.console import Console

    from .. import build_parser
    from . import ablation

    console = Console()
    start = time.perf_counter()
    if not args.skip_sqnr:
        console.rule("1/2  single-neuron SQNR study (ATIF paper, Gaussian input, T = 4)")
        sqnr_argv = ["sqnr", "--iterations", str(args.sqnr_iterations)]
        if args.out is not None:
            sqnr_argv += ["--out", str(Path(args.out))]
        sqnr_args = build_parser().parse_args(sqnr_argv)
        sqnr_args.func(sqnr_args)
        console.print(f"[dim]{time.perf_counter() - start:.0f} s so far[/dim]")
    console.rule("2/2  ATIF ablation on the bundled MNIST digits, T = 4")
    ablation.run(args)
    console.print(f"demo finished in {time.perf_counter() - start:.0f} s")
    return 0
