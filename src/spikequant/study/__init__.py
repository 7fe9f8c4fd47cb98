"""Studies as data: rows of recipes trained over seeds, summarised, compared and checked.

``load_study("atif-ablation")`` reads ``studies/atif-ablation.yaml`` (shipped in the package) or
a path; :func:`run_study` trains its runs (:mod:`.runner`) and builds the reports
(:mod:`.report`). ``spikequant study NAME`` is the command; ``docs/studies.md`` the manual.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..config import find_yaml, list_yaml, read_yaml
from ..errors import ConfigError
from ..io import log_to_stderr
from .report import evaluate_report, pooled, report_stem, rerender, write_report
from .runner import check_cli_overrides, execute_runs, plan_runs, row_overrides
from .schema import validate_study

STUDY_DIR = Path(__file__).resolve().parent.parent / "studies"


def list_studies() -> list[str]:
    """Names of the bundled studies, sorted."""
    return list_yaml(STUDY_DIR)


def find_study(name_or_path: str) -> Path:
    """A path, or the name of a bundled study (``atif-ablation``)."""
    return find_yaml(name_or_path, STUDY_DIR, "study")


def _raw(name_or_path: str, seen: tuple[str, ...] = ()) -> tuple[dict, str]:
    path = find_study(name_or_path)
    if str(path) in seen:
        raise ConfigError(f"study {path}: 'extends' forms a cycle")
    raw = read_yaml(path, "study")
    if "extends" in raw:
        # the keys given replace the base study's (a shallow merge)
        base, _ = _raw(str(raw["extends"]), (*seen, str(path)))
        base.pop("name", None)
        raw = {**base, **{k: v for k, v in raw.items() if k != "extends"}}
    return raw, path.stem


def load_study(name_or_path: str) -> dict:
    """The validated study (every default filled); :class:`ConfigError` naming any bad key."""
    raw, stem = _raw(name_or_path)
    try:
        return validate_study(raw, stem)
    except ConfigError as exc:
        raise ConfigError(f"{find_study(name_or_path)}: {exc}") from None


def resolve_settings(study: dict, setting: str | None, sweep: bool = False) -> list[str | None]:
    """The settings a run covers: one (``setting``, else the study's default), or for a sweep
    every setting (``setting`` may narrow it to a comma-separated list)."""
    names = [n.strip() for n in setting.split(",") if n.strip()] if setting else []
    if sweep:
        names = names or list(study["settings"])
        if not names:
            raise ConfigError(f"study {study['name']} declares no settings to sweep")
    elif len(names) > 1:
        raise ConfigError("several settings make a sweep: add --sweep")
    elif not names:
        names = [study["setting"]]
    known = ", ".join(study["settings"]) or "(none)"
    for name in names:
        if name is not None and name not in study["settings"]:
            raise ConfigError(f"unknown setting {name!r} of study {study['name']}; known: {known}")
    return names


def run_study(
    study: dict,
    *,
    command: str,
    work_dir: Path,
    setting: str | None = None,
    sweep: bool = False,
    seeds: list[int] | None = None,
    overrides: list[str] = (),
    from_scratch: tuple[str, ...] = (),
    jobs: int = 1,
    executor: str = "local",
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = log_to_stderr,
) -> dict:
    """Train every run of the study (of each setting for a ``sweep``) and build the report; a
    sweep's report holds one report per setting and the pooled comparisons.

    ``overrides``: ``key=value`` for every row, ``row:key=value`` for one; ``from_scratch``:
    rows trained from random weights instead of from their ``init_from`` row."""
    from .plugins import ANALYSES

    names = resolve_settings(study, setting, sweep)
    check_cli_overrides(study, list(overrides))
    for row in from_scratch:
        if row not in study["rows"]:
            raise ConfigError(f"--from-scratch names unknown row {row!r}")
    seeds = list(seeds if seeds is not None else study["seeds"])
    work_dir = Path(work_dir)
    plans = {
        name: plan_runs(study, name, seeds, list(overrides), work_dir, tuple(from_scratch))
        for name in names
    }
    results = execute_runs(
        [run for runs in plans.values() for run in runs],
        jobs=jobs,
        executor=executor,
        resume=resume,
        progress=progress,
        collect=study["collect"],
        log=log,
    )
    reports = []
    for name, runs in plans.items():
        key_row = {run.key: run.row for run in runs}
        report = {
            "kind": "study",
            "command": command,
            "stem": report_stem(study["name"], name),
            "study": study,
            "setting": None if name is None else {"name": name, **study["settings"][name]},
            "seeds": seeds,
            "overrides": list(overrides),
            "from_scratch": list(from_scratch),
            "work_dir": str(work_dir),
            "runs": [
                {
                    "row": run.row,
                    "seed": run.seed,
                    "dir": str(run.run_dir),
                    "overrides": row_overrides(study, name, run.row, list(overrides)),
                    "init_from_row": key_row.get(run.depends_on),
                    "recipe": run.cfg,
                    **results[run.key],
                }
                for run in runs
            ],
            "analyses": {},
        }
        for spec in study["analyses"]:
            run = next(r for r in runs if r.row == spec["row"] and r.seed == seeds[0])
            log(f"[study] {spec['kind']} on {run.run_dir}")
            options = {k: v for k, v in spec.items() if k not in ("kind", "row")}
            report["analyses"][f"{spec['kind']}:{spec['row']}"] = ANALYSES[spec["kind"]][0](
                run.run_dir, run.cfg, **options
            )
        reports.append(evaluate_report(report))
    if not sweep:
        return reports[0]
    settings = [{"name": n, "report": r} for n, r in zip(names, reports, strict=True)]
    return {
        "kind": "sweep",
        "command": command,
        "stem": report_stem(study["name"], None, sweep=True),
        "study": study,
        "seeds": seeds,
        "overrides": list(overrides),
        "settings": settings,
        "pooled": pooled(settings, study["pooled"]),
    }


__all__ = [
    "STUDY_DIR",
    "find_study",
    "list_studies",
    "load_study",
    "rerender",
    "resolve_settings",
    "run_study",
    "write_report",
]
