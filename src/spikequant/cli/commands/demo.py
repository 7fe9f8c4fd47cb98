"""``spikequant demo`` (``make demo``): the single-neuron SQNR study, then the ``demo`` study
(the ATIF ablation on the digits ResNet-8, the ``resnet8`` setting of ``atif-ablation``).

The ablation uses the bundled MNIST digits, so the demo needs no download. Its report goes to
``--out`` (default: the study's work dir); the SQNR table there too.
"""

from __future__ import annotations

import time
from pathlib import Path


def register(sub) -> None:
    from .ablation import add_arguments

    p = sub.add_parser(
        "demo", help="SQNR study + ATIF ablation on the bundled digits (what `make demo` runs)"
    )
    p.add_argument(
        "--sqnr-iterations", type=int, default=8000, help="Adam iterations of the SQNR study"
    )
    p.add_argument("--skip-sqnr", action="store_true", help="run only the ablation")
    add_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.console import Console

    from .. import build_parser
    from .ablation import study_args
    from .study import parse_seeds
    from .study import run as run_study

    if args.seeds is not None:
        parse_seeds(args.seeds)  # bad input is refused before the SQNR study runs
    console = Console()
    start = time.perf_counter()
    if not args.skip_sqnr:
        console.rule("1/2  single-neuron SQNR study (ATIF paper, Gaussian input, T = 4)")
        sqnr_out = args.out if args.out is not None else (args.work_dir or Path("runs/study/demo"))
        sqnr_argv = ["sqnr", "--iterations", str(args.sqnr_iterations), "--out", str(sqnr_out)]
        sqnr_args = build_parser().parse_args(sqnr_argv)
        sqnr_args.func(sqnr_args)
        console.print(f"[dim]{time.perf_counter() - start:.0f} s so far[/dim]")
    console.rule("2/2  ATIF ablation on the bundled MNIST digits, T = 4 (study `demo`)")
    run_study(study_args(args, "demo"))
    console.print(f"demo finished in {time.perf_counter() - start:.0f} s")
    return 0
