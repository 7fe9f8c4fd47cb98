"""``spikequant study NAME``: train a declared study (``src/spikequant/studies/NAME.yaml``) and
write its report; ``--render FILE.json`` rewrites a saved report without training (``spikequant
study NAME --render``: with the plots the study file declares)."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path


def parse_seeds(text: str) -> list[int]:
    """``0..2`` (inclusive), ``0,3,5`` or a mix (``0..4,7``)."""
    from ...errors import ConfigError

    seeds: list[int] = []
    for part in (p.strip() for p in str(text).split(",")):
        match = re.fullmatch(r"(\d+)\s*\.\.\s*(\d+)", part)
        if match:
            lo, hi = int(match[1]), int(match[2])
            seeds += list(range(lo, hi + 1))
        elif part.isdigit():
            seeds.append(int(part))
        elif part:
            raise ConfigError(
                f"--seeds takes non-negative integers and ranges like 0..2, got {text!r}"
            )
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds must name distinct seeds, got {text!r}")
    return seeds


def add_run_arguments(p, *, work_dir_flags=("--work-dir",), progress_flags=("--no-progress",)):
    """The options shared by ``study`` and its aliases (``ablation``, ``spquant-study``,
    ``demo``)."""
    p.add_argument("--seeds", default=None, help="seeds, e.g. 0..2 or 0,3,5 (default: the study's)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="[ROW:]KEY=VALUE",
        help="recipe override for every row (KEY=VALUE) or one row (ROW:KEY=VALUE)",
    )
    p.add_argument(
        "--work-dir", *work_dir_flags[1:], dest="work_dir", type=Path, default=None,
        help="run folders (default runs/study/NAME)",
    )  # fmt: skip
    p.add_argument(
        "--out", type=Path, default=None, help="where the report goes (default: the work dir)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="reuse finished runs of the identical recipe, continue interrupted ones",
    )
    p.add_argument(
        "--device", default=None, help="auto | cpu | cuda | cuda:N for every run (train.device)"
    )
    p.add_argument("--jobs", type=int, default=1, help="train N independent runs at once")
    p.add_argument(
        "--executor", choices=("local", "ray"), default="local",
        help="local processes (default) or a ray cluster (needs ray installed)",
    )  # fmt: skip
    p.add_argument(
        *progress_flags, dest="no_progress", action="store_true", help="no progress bars"
    )
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")


def register(sub) -> None:
    p = sub.add_parser(
        "study",
        help="train a declared study (rows x seeds, stages, comparisons, checks) and report it",
        description=__doc__,
    )
    p.add_argument("name", nargs="?", default=None, help="a bundled study or a YAML path")
    p.add_argument(
        "--setting", default=None, help="a named setting of the study (A,B with --sweep)"
    )
    p.add_argument(
        "--sweep", action="store_true", help="every setting (or those of --setting) in one report"
    )
    p.add_argument(
        "--from-scratch", action="append", default=[], metavar="ROW",
        help="train this stage from random weights, not from its init_from row",
    )  # fmt: skip
    p.add_argument(
        "--render",
        nargs="?",
        const="",
        default=None,
        metavar="FILE.json",
        help="train nothing: recompute a saved report's comparisons, checks and plots (with a "
        "study NAME: the plots it declares; FILE.json defaults to the report in --out or the "
        "work dir)",
    )
    p.add_argument("--list", action="store_true", help="list the bundled studies")
    add_run_arguments(p)
    p.set_defaults(func=run)


def canonical_command(args, name: str) -> str:
    """The ``spikequant study`` command equivalent to ``args`` (aliases included), with the
    thread count when it is set, since it can change the last bits of a run."""
    parts = ["spikequant", "study", name]
    if args.seeds is not None:
        parts += ["--seeds", ",".join(map(str, parse_seeds(args.seeds)))]
    if getattr(args, "setting", None):
        parts += ["--setting", args.setting]
    if getattr(args, "sweep", False):
        parts.append("--sweep")
    for item in args.overrides:
        parts += ["--set", item]
    if getattr(args, "device", None):
        parts += ["--device", args.device]
    for row in getattr(args, "from_scratch", []):
        parts += ["--from-scratch", row]
    if args.work_dir is not None:
        parts += ["--work-dir", str(args.work_dir)]
    if args.out is not None:
        parts += ["--out", str(args.out)]
    if args.jobs != 1:
        parts += ["--jobs", str(args.jobs)]
    if args.executor != "local":
        parts += ["--executor", args.executor]
    if args.resume:
        parts.append("--resume")
    env = [f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS",) if k in os.environ]
    return " ".join([*env, shlex.join(parts)])


def run_overrides(args) -> list[str]:
    """The ``--set`` items for every run, with ``--device`` as ``train.device``."""
    device = getattr(args, "device", None)
    return [*args.overrides, *([f"train.device={device}"] if device else [])]


def _print(report: dict, paths, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report))
        return
    checks = (
        report["checks"].items()
        if report["kind"] == "study"
        else (
            (f"{s['name']}: {k}", c)
            for s in report["settings"]
            for k, c in s["report"]["checks"].items()
        )
    )
    for name, c in checks:
        print(
            f"{name}: {'PASS' if c['pass'] else 'FAIL'} (mean {c['mean']:.3f}, "
            f"{c['seeds_passing']}/{c['seeds']} seeds pass alone)"
        )
    plots = [str(Path(paths[0]).parent / p["file"]) for p in (report.get("plots") or {}).values()]
    print(f"wrote {', '.join(map(str, [*paths[:-1], *plots]))} and {paths[-1]}")


def _rerender(args) -> tuple[dict, Path]:
    """``--render [FILE.json]``: the saved report recomputed; with a study NAME, its plots are
    the ones the study file declares now (so saved results get the plots added later)."""
    from ...errors import ConfigError
    from ...study import load_study, rerender
    from ...study.report import report_stem

    study = load_study(args.name) if args.name is not None else None
    if args.render:
        path = Path(args.render)
    elif study is None:
        raise ConfigError("--render needs a saved report (FILE.json) or a study name")
    else:
        folder = args.out or args.work_dir or Path("runs/study") / study["name"]
        path = folder / f"{report_stem(study['name'], args.setting, args.sweep)}.json"
    parts = ["spikequant", "study", *([args.name] if args.name else []), "--render"]
    parts += [str(path)] if args.render else []
    for flag, value in (("--setting", args.setting), ("--work-dir", args.work_dir)):
        if value is not None and not args.render:
            parts += [flag, str(value)]
    if args.sweep and not args.render:
        parts.append("--sweep")
    if args.out is not None:
        parts += ["--out", str(args.out)]
    report = rerender(path, shlex.join(parts), study=study)
    return report, path.parent


def run(args) -> int:
    from ...errors import ConfigError
    from ...io import log_to_stderr
    from ...study import list_studies, load_study, run_study, write_report

    if args.list:
        print("\n".join(list_studies()))
        return 0
    if args.render is not None:
        report, default_out = _rerender(args)
    elif args.name is None:
        raise ConfigError("name a study (spikequant study --list) or give --render FILE.json")
    else:
        study = load_study(args.name)
        if getattr(args, "device", None):
            from ...train.distributed import resolve_device

            resolve_device(args.device)  # refused before the first run starts
        if study["plots"]:
            from ..._optional import require

            require("matplotlib", "the plots of a study report")  # before training, not after
        default_out = args.work_dir or Path("runs/study") / study["name"]
        report = run_study(
            study,
            command=canonical_command(args, args.name),
            work_dir=default_out,
            setting=args.setting,
            sweep=args.sweep,
            seeds=None if args.seeds is None else parse_seeds(args.seeds),
            overrides=run_overrides(args),
            from_scratch=tuple(args.from_scratch),
            jobs=args.jobs,
            executor=args.executor,
            resume=args.resume,
            progress=not args.no_progress,
            log=(lambda m: None) if args.json else log_to_stderr,
        )
    paths = write_report(report, args.out if args.out is not None else default_out)
    _print(report, paths, args.json)
    return 0
